"""Chaos: three poller processes, random SIGKILLs and restarts, handler 5xx bursts and latency
spikes, one DynamoDB (moto) outage and one broker restart — and nothing is lost.

Seeded and reproducible in its schedule (``CHAOS_SEED``, default 1; ``CHAOS_RECORDS`` for the
workload size). At the end it checks:

* every record in the topic completed (handler acknowledged it, ledger says SUCCEEDED);
* no invocation whose completion was durable in the ledger was invoked again afterwards (the
  only repeats are invocations that were in flight at a kill; they are counted and reported);
* per key, first invocations came in offset order and never two at once;
* committed offsets equal the end offsets;
* no poller's resident memory exceeded the ceiling.

Runs twice: with ledger rows for every result, and with success pages (``[ledger] successes =
"pages"``). The figures are printed and written to ``.cache/chaos-report-<seed>-<ledger>.json``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from starlette.responses import Response

from adapter.errors import StoreError
from adapter.ids import invocation_id
from adapter.local.kafka import KafkaBroker
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests.harness import (
    Call,
    Ingress,
    PollerProcess,
    RecordingHandler,
    eventually,
    topic_key_of,
)
from tests.integration.test_rebalance import first_call_order_violations

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.timeout(420)]

SEED = int(os.environ.get("CHAOS_SEED", "1"))
RECORDS = int(os.environ.get("CHAOS_RECORDS", "4000"))
PARTITIONS = 4
KEYS = 200
POLLERS = 3
RSS_CEILING_MB = 300
REPORT_DIR = Path(__file__).resolve().parents[2] / ".cache"


@dataclass
class Report:
    seed: int
    ledger: str
    records: int = 0
    calls: int = 0
    kills: int = 0
    restarts: int = 0
    moto_outages: int = 0
    broker_restarts: int = 0
    error_bursts: int = 0
    latency_spikes: int = 0
    duplicates_in_flight: int = 0
    lost: int = 0
    reinvoked_after_durable: int = 0
    order_violations: int = 0
    key_overlaps: int = 0
    max_rss_mb: float = 0.0
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


async def succeeded_ids(store: DynamoStore, sub_id: str, topic: str) -> set[str]:
    """Invocations the ledger records as succeeded: rows, and offsets in success pages.

    ``topic`` is the topic's key (:func:`tests.harness.topic_key_of`), as the ledger keys it."""
    done = {e.id for e in await store.scan_entries() if e.status == "SUCCEEDED"}
    for partition in range(PARTITIONS):
        paged = await store.paged_offsets(sub_id, topic, partition, 0, 2**40)
        done |= {invocation_id(sub_id, topic, partition, o) for o in paged}
    return done


@pytest.mark.parametrize("successes", ["rows", "pages"])
@pytest.mark.promise("p-ops-every-record", "p-fault-sigkill")
async def test_chaos_loses_nothing(
    chaos_broker: KafkaBroker,
    chaos_moto: MotoServer,
    chaos_store: DynamoStore,
    handler_server: HandlerServer,
    tmp_path: Path,
    successes: str,
) -> None:
    rng = random.Random(SEED)
    report = Report(seed=SEED, ledger=successes)
    started = time.monotonic()
    bootstrap = chaos_broker.bootstrap_servers
    mode: dict[str, float] = {"error_rate": 0.0, "delay": 0.0}
    behaviour_rng = random.Random(SEED + 1)

    async def flaky(call: Call) -> Response | None:
        if mode["delay"]:
            await asyncio.sleep(mode["delay"])
        else:
            await asyncio.sleep(behaviour_rng.random() * 0.003)
        if mode["error_rate"] and behaviour_rng.random() < mode["error_rate"]:
            return Response(status_code=503)
        return None

    handler = RecordingHandler(flaky)
    url = await handler_server(handler.app)
    harness = Ingress(bootstrap, chaos_store, chaos_moto.endpoint_url)
    await harness.register(
        url,
        "Account",
        ServiceType.VIRTUAL_OBJECT,
        {"apply": (HandlerType.EXCLUSIVE, InputKind.JSON)},
    )
    topic = f"chaos-{SEED}-{int(time.time())}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    key = await topic_key_of(bootstrap, topic)
    sub = await harness.subscribe(
        topic,
        "Account",
        "apply",
        {
            # A killed poller's partitions move after the session timeout: keep it short here.
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "1000",
            "retry.initial.interval.ms": "50",
            "retry.max.interval.ms": "1000",
            "retry.max.attempts": "unlimited",
        },
    )

    env = {**harness.env(), "KAFKA_INGRESS_LEDGER_SUCCESSES": successes}
    pollers = [PollerProcess(env) for _ in range(POLLERS)]
    for poller in pollers:
        await poller.start(tmp_path)

    durable_snapshots: list[tuple[float, set[str]]] = []
    stop_background = asyncio.Event()

    async def produce_all() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            sent = 0
            while sent < RECORDS:
                batch = [
                    (f"acct-{(sent + i) % KEYS}".encode(), json.dumps({"n": sent + i}).encode())
                    for i in range(min(100, RECORDS - sent))
                ]
                try:
                    futures = [await producer.send(topic, value=v, key=k) for k, v in batch]
                    await asyncio.gather(*futures)
                except KafkaError:
                    # The broker is restarting; this batch may or may not be in the topic,
                    # which is fine: the checks count whatever the topic holds.
                    await asyncio.sleep(0.5)
                    continue
                sent += len(batch)
                await asyncio.sleep(0.6)  # ~30 s of steady traffic, chaos happening meanwhile
        finally:
            await producer.stop()

    async def snapshot_ledger() -> None:
        while not stop_background.is_set():
            try:
                done = await succeeded_ids(chaos_store, sub.id, key)
            except StoreError:
                done = None
            if done is not None:
                durable_snapshots.append((time.monotonic(), done))
            await asyncio.sleep(3.0)

    async def watch_memory() -> None:
        while not stop_background.is_set():
            for poller in pollers:
                if poller.proc is not None and poller.proc.returncode is None:
                    report.max_rss_mb = max(report.max_rss_mb, rss_mb(poller.proc.pid))
            await asyncio.sleep(0.5)

    def log(event: str) -> None:
        report.events.append(f"{time.monotonic() - started:6.1f}s {event}")

    async def chaos() -> None:
        schedule: list[tuple[float, str]] = []
        for _ in range(3):
            schedule.append((rng.uniform(4, 30), "kill"))
        schedule.append((rng.uniform(5, 25), "errors"))
        schedule.append((rng.uniform(5, 25), "latency"))
        schedule.append((rng.uniform(8, 22), "moto"))
        schedule.append((rng.uniform(10, 28), "broker"))
        t0 = time.monotonic()
        for at, what in sorted(schedule):
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            if what == "kill":
                index = rng.randrange(POLLERS)
                await pollers[index].kill()
                report.kills += 1
                log(f"SIGKILL poller {index}")
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                pollers[index] = PollerProcess(env)
                await pollers[index].start(tmp_path)
                report.restarts += 1
                log(f"restarted poller {index}")
            elif what == "errors":
                mode["error_rate"] = 0.5
                log("handler 5xx burst")
                await asyncio.sleep(2.0)
                mode["error_rate"] = 0.0
                report.error_bursts += 1
            elif what == "latency":
                mode["delay"] = 0.2
                log("handler latency spike")
                await asyncio.sleep(2.0)
                mode["delay"] = 0.0
                report.latency_spikes += 1
            elif what == "moto":
                chaos_moto.stop()
                log("moto down")
                await asyncio.sleep(3.0)
                chaos_moto.start()
                report.moto_outages += 1
                log("moto up")
            elif what == "broker":
                log("broker restarting")
                await asyncio.to_thread(chaos_broker.restart)
                report.broker_restarts += 1
                log("broker up")

    background = [
        asyncio.create_task(snapshot_ledger()),
        asyncio.create_task(watch_memory()),
    ]
    try:
        await asyncio.gather(produce_all(), chaos())
        ends = await end_offsets(bootstrap, topic)
        expected = {invocation_id(sub.id, key, p, o) for p, end in ends.items() for o in range(end)}
        report.records = len(expected)

        await eventually(
            lambda: expected <= handler.acked_ids(),
            timeout=180,
            message=lambda: (
                f"{len(expected - handler.acked_ids())} records not completed; "
                + "; ".join(report.events)
                + "".join(
                    f"\n--- poller {i} ---\n" + p.output.decode(errors="replace")[-6000:]
                    for i, p in enumerate(pollers)
                )
                + "\n--- broker: rebalances ---\n"
                + rebalance_reasons(chaos_broker)
            ),
        )

        async def all_committed() -> bool:
            return await committed(bootstrap, sub.id, topic) == ends

        await eventually(all_committed, timeout=60, message="committed offsets != end offsets")
        # Targeted reads, as the engine does them (a full scan of the table can take moto
        # longer than the client's read timeout on a loaded machine).
        statuses = await chaos_store.get_statuses(expected)
        succeeded = {i for i, status in statuses.items() if status == "SUCCEEDED"}
        for partition, end in ends.items():
            if end:
                paged = await chaos_store.paged_offsets(sub.id, key, partition, 0, end - 1)
                succeeded |= {invocation_id(sub.id, key, partition, o) for o in paged}
        not_succeeded = expected - succeeded
        assert not not_succeeded, f"{len(not_succeeded)} records not recorded as SUCCEEDED"
    finally:
        stop_background.set()
        await asyncio.gather(*background, return_exceptions=True)
        REPORT_DIR.mkdir(exist_ok=True)
        for index, poller in enumerate(pollers):
            (REPORT_DIR / f"chaos-{SEED}-{successes}-poller-{index}.log").write_bytes(poller.output)
        for poller in pollers:
            if poller.proc is not None and poller.proc.returncode is None:
                await poller.terminate(timeout=60)

    calls = handler.calls
    report.calls = len(calls)
    report.lost = len(expected - handler.acked_ids())
    acks: dict[str, int] = {}
    for call in handler.acked():
        acks[call.invocation_id] = acks.get(call.invocation_id, 0) + 1
    # Completed more than once: only possible for invocations in flight at a kill.
    report.duplicates_in_flight = sum(n - 1 for n in acks.values() if n > 1)
    report.reinvoked_after_durable = sum(
        1
        for call in calls
        for snapshot_at, durable in durable_snapshots
        if call.started > snapshot_at and call.invocation_id in durable
    )
    report.order_violations = first_call_order_violations(calls)
    report.key_overlaps = handler.key_overlaps
    report.events.extend(overlap_examples(calls, started))
    report.seconds = round(time.monotonic() - started, 1)
    write_report(report)

    assert report.lost == 0
    assert report.reinvoked_after_durable == 0
    assert report.order_violations == 0
    assert report.key_overlaps == 0
    assert report.max_rss_mb < RSS_CEILING_MB
    assert report.kills == 3
    assert report.moto_outages == 1
    assert report.broker_restarts == 1


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


def overlap_examples(calls: list[Call], started: float, limit: int = 10) -> list[str]:
    """Where two invocations of one key ran at once (for diagnosis in the report)."""
    by_key: dict[str | None, list[Call]] = {}
    for call in calls:
        by_key.setdefault(call.key, []).append(call)
    out: list[str] = []
    for key, key_calls in by_key.items():
        key_calls.sort(key=lambda c: c.started)
        for before, after in itertools.pairwise(key_calls):
            if after.started < (before.ended or float("inf")) and len(out) < limit:
                out.append(
                    f"{before.started - started:6.1f}s overlap key={key} "
                    f"{before.partition}@{before.offset} (attempt "
                    f"{before.headers.get('x-kafka-ingress-attempt')}, ended "
                    f"{(before.ended or 0) - started:.1f}s) and {after.partition}@{after.offset} "
                    f"(attempt {after.headers.get('x-kafka-ingress-attempt')}, started "
                    f"{after.started - started:.1f}s)"
                )
    return out


def rebalance_reasons(broker: KafkaBroker) -> str:
    """The broker's own account of why the group rebalanced (for failure messages)."""
    try:
        lines = broker.log_path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(broker log unreadable: {exc})"
    wanted = [line for line in lines if "rebalance" in line.lower() or "Member" in line]
    return "\n".join(wanted[-40:])


def write_report(report: Report) -> None:
    REPORT_DIR.mkdir(exist_ok=True)
    data: dict[str, Any] = asdict(report)
    (REPORT_DIR / f"chaos-report-{report.seed}-{report.ledger}.json").write_text(
        json.dumps(data, indent=2)
    )
    print("\nchaos report:", json.dumps({k: v for k, v in data.items() if k != "events"}))
    for event in report.events:
        print("  ", event)
