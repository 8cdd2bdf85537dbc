"""Chaos with sharding: three poller processes share six subscriptions (each on two of them,
``pollers.count = 2``); the poller owning the most shards is SIGKILLed mid-stream and
restarted — and nothing is lost, nothing durable runs again, and every key keeps its order.

The kill hits both maps at once: the survivors take the dead poller's partitions through each
subscription's consumer group (the other poller of every subscription is already a member),
and its shards through the control group; the restarted poller then takes shards back.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from adapter.errors import StoreError
from adapter.ids import invocation_id
from adapter.local.kafka import KafkaBroker
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType, Subscription
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests.harness import Call, Ingress, PollerProcess, RecordingHandler, eventually, topic_key_of
from tests.integration.test_rebalance import first_call_order_violations
from tests.integration.test_shards import group_members
from tests.reliability.test_chaos import committed, end_offsets, succeeded_ids

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.timeout(420)]

SUBSCRIPTIONS = 6
PARTITIONS = 4  # as test_chaos.succeeded_ids reads them
KEYS_PER_TOPIC = 40
RECORDS_PER_TOPIC = 600


def shards_owned(poller: PollerProcess) -> int:
    """The shards this poller owned at its last shard map (its log says so at every change)."""
    found = re.findall(rb"owns (\d+) of \d+ shards", poller.output)
    return int(found[-1]) if found else 0


@pytest.mark.promise("p-ops-shards-chaos")
async def test_killing_the_poller_with_most_shards_loses_nothing_and_keeps_order(
    chaos_broker: KafkaBroker,
    chaos_moto: MotoServer,
    chaos_store: DynamoStore,
    handler_server: HandlerServer,
    tmp_path: Path,
) -> None:
    bootstrap = chaos_broker.bootstrap_servers

    async def work(call: Call) -> None:
        await asyncio.sleep(0.002)  # the handler's work

    handler = RecordingHandler(work)
    url = await handler_server(handler.app)
    harness = Ingress(bootstrap, chaos_store, chaos_moto.endpoint_url)
    await harness.register(
        url,
        "Account",
        ServiceType.VIRTUAL_OBJECT,
        {"apply": (HandlerType.EXCLUSIVE, InputKind.JSON)},
    )
    topics = [f"shard-chaos-{i}-{time.time_ns()}" for i in range(SUBSCRIPTIONS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()
    subs: list[Subscription] = []
    for topic in topics:
        subs.append(
            await harness.subscribe(
                topic,
                "Account",
                "apply",
                {
                    "pollers.count": "2",
                    # A killed poller's partitions move after the session timeout.
                    "session.timeout.ms": "6000",
                    "heartbeat.interval.ms": "1000",
                    "retry.initial.interval.ms": "50",
                    "retry.max.attempts": "unlimited",
                },
            )
        )
    keys = {t: await topic_key_of(bootstrap, t) for t in topics}
    env = {**harness.env(), "KAFKA_INGRESS_POLLER_SHARDS": "64"}  # the shard map is opt-in
    pollers = [PollerProcess(env) for _ in range(3)]
    durable: list[tuple[float, set[str]]] = []
    stop_snapshots = asyncio.Event()
    events: list[str] = []
    snapshots: asyncio.Task[None] | None = None
    try:
        for poller in pollers:
            await poller.start(tmp_path)

        async def placed() -> bool:
            members = await group_members(bootstrap, [s.id for s in subs])
            return all(members.get(s.id) == 2 for s in subs)

        await eventually(placed, timeout=120, interval=0.5, message="not on 2 pollers each")

        async def produce_all() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
            await producer.start()
            try:
                for start in range(0, RECORDS_PER_TOPIC, 30):
                    futures = []
                    for index, topic in enumerate(topics):
                        for n in range(start, start + 30):
                            key = f"{index}-acct-{n % KEYS_PER_TOPIC}".encode()
                            value = json.dumps({"n": n}).encode()
                            futures.append(await producer.send(topic, value=value, key=key))
                    await asyncio.gather(*futures)
                    await asyncio.sleep(0.5)  # ~10 s of steady traffic around the kill
            finally:
                await producer.stop()

        async def snapshot_ledger() -> None:
            while not stop_snapshots.is_set():
                done: set[str] = set()
                try:
                    for sub in subs:
                        done |= await succeeded_ids(chaos_store, sub.id, keys[sub.topic])
                except StoreError:
                    done = set()
                if done:
                    durable.append((time.monotonic(), done))
                await asyncio.sleep(2.0)  # sampling interval of the durable set

        async def kill_the_busiest() -> None:
            # Kill mid-stream: once records flow and every poller has its shards.
            def flowing() -> bool:
                return len(handler.calls) >= 100 and all(shards_owned(p) > 0 for p in pollers)

            await eventually(flowing, timeout=60, message="no traffic or no shard map yet")
            index = max(range(3), key=lambda i: shards_owned(pollers[i]))
            owned = shards_owned(pollers[index])
            await pollers[index].kill()
            events.append(f"SIGKILL poller {index} owning {owned} shards")
            assert owned >= 16  # "many": at least a fair share of 64 among 3
            await asyncio.sleep(1.5)  # downtime: the survivors take its shards meanwhile
            pollers[index] = PollerProcess(env)
            await pollers[index].start(tmp_path)
            events.append(f"restarted poller {index}")

        snapshots = asyncio.create_task(snapshot_ledger())
        await asyncio.gather(produce_all(), kill_the_busiest())

        expected: set[str] = set()
        ends = {t: await end_offsets(bootstrap, t) for t in topics}
        for sub in subs:
            key = keys[sub.topic]
            expected |= {
                invocation_id(sub.id, key, p, o)
                for p, end in ends[sub.topic].items()
                for o in range(end)
            }
        assert len(expected) == SUBSCRIPTIONS * RECORDS_PER_TOPIC
        await eventually(
            lambda: expected <= handler.acked_ids(),
            timeout=180,
            message=lambda: (
                f"{len(expected - handler.acked_ids())} records not completed; " + "; ".join(events)
            ),
        )

        async def all_committed() -> bool:
            for sub in subs:
                if await committed(bootstrap, sub.id, sub.topic) != ends[sub.topic]:
                    return False
            return True

        await eventually(all_committed, timeout=60, message="committed offsets != end offsets")
    finally:
        stop_snapshots.set()
        for poller in pollers:
            if poller.proc is not None and poller.proc.returncode is None:
                await poller.terminate(timeout=60)
        if snapshots is not None:
            await asyncio.gather(snapshots, return_exceptions=True)

    calls = handler.calls
    reinvoked = sum(
        1
        for call in calls
        for at, done in durable
        if call.started > at and call.invocation_id in done
    )
    assert events[0].startswith("SIGKILL")
    assert expected - handler.acked_ids() == set()  # 0 lost
    assert reinvoked == 0  # 0 re-runs of work recorded as done
    assert first_call_order_violations(calls) == 0  # per-key order
    assert handler.key_overlaps == 0  # one at a time per key
