"""Chaos on a real broker: a paused ("zombie") poller, and a topic deleted and re-created.

* **Zombie.** Two poller processes share a subscription (4 partitions, 200 keys, an exclusive
  handler that answers ``503 + Retry-After`` to a share of first attempts, so records sit in
  backoff). One poller is SIGSTOPped for longer than the session timeout: the group moves its
  partitions to the other, which finishes and commits their records. Then it is SIGCONTed.
  Checked: no invocation of a record the group had committed by the time it started, no two
  invocations of one key at once, nothing lost. Requests are signed, so each says when the
  poller handed it to its HTTP client: one handed over before the pause but written by the
  client only after the wake is an attempt in flight at the pause (allowed), not a start.
* **Re-created topic.** A subscription consumes 400 records of a topic, the topic is deleted
  and created again under the same name with 500 records, and every record of the new topic
  reaches the handler (the group's committed offset 400 is inside the new log: only the topic
  ID tells it belongs to the dead topic).

Seeded by ``CHAOS_SEED`` (default 1): the pause's moment and the handler's refusals.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from starlette.responses import JSONResponse, Response

from adapter.invokers.signing import generate_private_key_pem
from adapter.local.kafka import KafkaBroker
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.sdk.protocol import HEADER_JWT
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import delete_topic, wait_for_leaders
from tests.harness import Call, Ingress, PollerProcess, RecordingHandler, eventually

pytestmark = [pytest.mark.reliability, pytest.mark.kafka, pytest.mark.timeout(300)]

SEED = int(os.environ.get("CHAOS_SEED", "1"))
PARTITIONS = 4
KEYS = 200
SESSION_MS = 6000
PAUSE_S = 14.0
REPORT_DIR = Path(__file__).resolve().parents[2] / ".cache"


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
        await wait_for_leaders(admin, topic, partitions)
    finally:
        await admin.close()


async def produce_json(
    bootstrap: str, topic: str, records: list[tuple[bytes, dict[str, int]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, json.dumps(v).encode(), key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def signed_at(call: Call) -> int:
    """When the poller signed the request: its token's ``iat`` (whole seconds, wall clock)."""
    payload = call.headers[HEADER_JWT].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["iat"])


def assignments(poller: PollerProcess) -> int:
    """How many non-empty partition assignments the poller has logged."""
    return poller.output.count(b"assigned [(")


class CommitWatch:
    """Samples the group's committed offsets: when each offset was first seen committed."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._topic = topic
        self.first_seen: dict[int, list[tuple[float, int]]] = {p: [] for p in range(PARTITIONS)}

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            while not stop.is_set():
                for p in range(PARTITIONS):
                    offset = await self._consumer.committed(TopicPartition(self._topic, p))
                    seen = self.first_seen[p]
                    if offset is not None and (not seen or offset > seen[-1][1]):
                        seen.append((time.monotonic(), offset))
                await asyncio.sleep(0.2)
        finally:
            await self._consumer.stop()

    def committed_before(self, partition: int, offset: int, at: float) -> bool:
        """Had the group committed past ``offset`` of ``partition`` before ``at``?"""
        return any(t < at and committed > offset for t, committed in self.first_seen[partition])


@pytest.mark.promise("p-ops-paused-starts-nothing")
async def test_a_paused_poller_reinvokes_nothing_the_group_committed(
    chaos_broker: KafkaBroker,
    chaos_moto: MotoServer,
    chaos_store: DynamoStore,
    handler_server: HandlerServer,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    refuse = random.Random(SEED + 1)
    refused: set[str] = set()

    async def sometimes_busy(call: Call) -> Response | None:
        await asyncio.sleep(0.005)
        if call.headers.get("x-kafka-ingress-attempt", "1") == "1" and refuse.random() < 0.05:
            refused.add(call.invocation_id)
            return JSONResponse({"busy": True}, status_code=503, headers={"retry-after": "1"})
        return None

    handler = RecordingHandler(sometimes_busy)
    url = await handler_server(handler.app)
    bootstrap = chaos_broker.bootstrap_servers
    harness = Ingress(bootstrap, chaos_store, chaos_moto.endpoint_url)
    # Signed requests say when the poller handed each one to its HTTP client (the token's iat).
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(generate_private_key_pem())
    harness.signing_key_file = str(key_file)
    await harness.register(
        url,
        "Account",
        ServiceType.VIRTUAL_OBJECT,
        {"apply": (HandlerType.EXCLUSIVE, InputKind.JSON)},
    )
    topic = f"zombie-{SEED}-{time.time_ns()}"
    await create_topic(bootstrap, topic, PARTITIONS)
    sub = await harness.subscribe(
        topic,
        "Account",
        "apply",
        {
            "session.timeout.ms": str(SESSION_MS),
            "heartbeat.interval.ms": "1000",
            "retry.initial.interval.ms": "200",
            "retry.max.attempts": "unlimited",
        },
    )
    # One poller first, then the second: the pause must hit a member that owns partitions,
    # not one still joining (which would have nothing to give up).
    pollers = [PollerProcess(harness.env()) for _ in range(2)]
    await pollers[0].start(tmp_path)
    await eventually(lambda: assignments(pollers[0]) >= 1, timeout=60, message="no assignment")
    await pollers[1].start(tmp_path)
    await eventually(
        lambda: assignments(pollers[0]) >= 2 and assignments(pollers[1]) >= 1,
        timeout=60,
        message="the second poller's join did not settle",
    )
    watch = CommitWatch(bootstrap, sub.id, topic)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch.run(stop))
    total = 0
    try:
        # Steady traffic before, during and after the pause.
        for _ in range(8):
            batch = [(f"k-{rng.randrange(KEYS)}".encode(), {"n": total + i}) for i in range(100)]
            await produce_json(bootstrap, topic, batch)
            total += len(batch)
        await eventually(lambda: len(refused) >= 5, timeout=60, message="no retries in flight")
        zombie = pollers[rng.randrange(2)]
        assert zombie.proc is not None
        zombie.proc.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        paused_wall = time.time()
        for _ in range(4):
            batch = [(f"k-{rng.randrange(KEYS)}".encode(), {"n": total + i}) for i in range(100)]
            await produce_json(bootstrap, topic, batch)
            total += len(batch)
        await asyncio.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
        zombie.proc.send_signal(signal.SIGCONT)
        woke_at = time.monotonic()
        mark = len(zombie.output)
        await produce_json(
            bootstrap,
            topic,
            [(f"k-{rng.randrange(KEYS)}".encode(), {"n": total + i}) for i in range(100)],
        )
        total += 100
        await eventually(
            lambda: len({c.invocation_id for c in handler.acked()}) >= total,
            timeout=120,
            message=lambda: f"{len({c.invocation_id for c in handler.acked()})}/{total} acked",
        )
        # The woken poller learns from the group that it lost its partitions (and only then
        # would its held retries and lane hand-offs be decided).
        await eventually(
            lambda: b"revoking" in zombie.output[mark:],
            timeout=60,
            message="the woken poller never gave its partitions up",
        )
    finally:
        stop.set()
        await watcher
        REPORT_DIR.mkdir(exist_ok=True)
        for index, poller in enumerate(pollers):
            (REPORT_DIR / f"zombie-{SEED}-poller-{index}.log").write_bytes(poller.output)
        for poller in pollers:
            if poller.proc is not None and poller.proc.returncode is None:
                poller.proc.send_signal(signal.SIGCONT)
                await poller.terminate(timeout=60)

    repeated = [
        c
        for c in handler.calls
        if c.started > paused_at and watch.committed_before(c.partition, c.offset, c.started)
    ]
    # A request the poller had already handed to its HTTP client when the pause began may be
    # written only after the wake (the client's own task steps, pyreqwest's I/O thread): an
    # attempt in flight at the pause, which the promise allows. Its token was issued before
    # the pause; one issued after the wake (a whole second later at least) would be a start.
    stale = [c for c in repeated if signed_at(c) > paused_wall]
    report = {
        "seed": SEED,
        "records": total,
        "calls": len(handler.calls),
        "refused_first_attempts": len(refused),
        "calls_after_wake": sum(1 for c in handler.calls if c.started > woke_at),
        "reinvoked_after_commit": len(stale),
        "in_flight_at_pause_arrived_after_commit": len(repeated) - len(stale),
        "key_overlaps": handler.key_overlaps,
        "lost": total - len({c.invocation_id for c in handler.acked()}),
    }
    (REPORT_DIR / f"zombie-report-{SEED}.json").write_text(json.dumps(report, indent=2))
    print("\nzombie report:", json.dumps(report))
    assert report["reinvoked_after_commit"] == 0, [
        (c.partition, c.offset, c.started - woke_at) for c in stale[:10]
    ]
    assert report["key_overlaps"] == 0
    assert report["lost"] == 0


@pytest.mark.promise("p-ops-recreated-topic")
async def test_every_record_of_a_recreated_topic_is_delivered(
    chaos_broker: KafkaBroker,
    chaos_moto: MotoServer,
    chaos_store: DynamoStore,
    handler_server: HandlerServer,
    tmp_path: Path,
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    bootstrap = chaos_broker.bootstrap_servers
    harness = Ingress(bootstrap, chaos_store, chaos_moto.endpoint_url)
    await harness.register(
        url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = f"recreated-{SEED}-{time.time_ns()}"
    await create_topic(bootstrap, topic, 1)
    await harness.subscribe(topic, "Svc", "h")
    poller = PollerProcess(harness.env())
    await poller.start(tmp_path)

    def received(generation: int) -> set[int]:
        out = set()
        for call in handler.acked():
            body = json.loads(call.body)
            if body["gen"] == generation:
                out.add(body["n"])
        return out

    try:
        await produce_json(bootstrap, topic, [(b"k", {"gen": 1, "n": i}) for i in range(400)])
        await eventually(lambda: len(received(1)) == 400, timeout=60)
        await delete_topic(bootstrap, topic)
        await create_topic(bootstrap, topic, 1)
        # More records than the dead topic had: the group's committed offset (400) is inside
        # the new topic's log, so only its topic ID tells that it belongs to another topic.
        await produce_json(bootstrap, topic, [(b"k", {"gen": 2, "n": i}) for i in range(500)])
        await eventually(
            lambda: received(2) == set(range(500)),
            timeout=90,
            message=lambda: (
                f"{len(received(2))}/500 of the new topic; "
                + poller.output.decode(errors="replace")[-3000:]
            ),
        )
    finally:
        REPORT_DIR.mkdir(exist_ok=True)
        (REPORT_DIR / f"recreated-{SEED}-poller.log").write_bytes(poller.output)
        if poller.proc is not None and poller.proc.returncode is None:
            assert await poller.terminate(timeout=60) == 0
