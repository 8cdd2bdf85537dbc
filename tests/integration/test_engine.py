"""The ingestion engine end to end: real broker, moto server over HTTP, uvicorn handlers."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from starlette.responses import JSONResponse, Response

from adapter.engine.lifecycle import InvocationStatus
from adapter.model import HandlerType, InputKind, ServiceType
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import (
    Call,
    Ingress,
    PollerProcess,
    RecordingHandler,
    committed_offsets,
    consume_all,
    eventually,
    produce,
    record_id,
    topic_key_of,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

JSON = InputKind.JSON
RAW = InputKind.RAW


@pytest.mark.promise("p-ops-per-key-order")
async def test_exclusive_handler_keeps_per_key_order_and_runs_keys_concurrently(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    rng = random.Random(7)

    async def slow(call: Call) -> None:
        await asyncio.sleep(rng.random() * 0.004)

    handler = RecordingHandler(slow)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Account", ServiceType.VIRTUAL_OBJECT, {"apply": (HandlerType.EXCLUSIVE, JSON)}
    )
    topic = await topic_factory(partitions=2)
    await ingress.start()
    sub = await ingress.subscribe(topic, "Account", "apply")

    records = [(f"acct-{i % 200}".encode(), orjson.dumps({"seq": i})) for i in range(2000)]
    placed = await produce(ingress.bootstrap, topic, records)
    await eventually(
        lambda: len(handler.acked()) >= 2000,
        timeout=120,
        message=lambda: f"{len(handler.acked())}/2000 acked",
    )

    # Every key's records arrived in offset order, one at a time.
    by_key: dict[str, list[tuple[int, int]]] = {}
    for call in handler.calls:
        assert call.key is not None
        by_key.setdefault(call.key, []).append((call.partition, call.offset))
    expected: dict[str, list[tuple[int, int]]] = {}
    for (key, _), (partition, offset) in zip(records, placed, strict=True):
        expected.setdefault(key.decode(), []).append((partition, offset))
    assert by_key == expected
    assert handler.key_overlaps == 0
    assert handler.max_active > 1, "different keys must run concurrently"
    assert len({c.invocation_id for c in handler.calls}) == 2000

    # Everything finished is committed, as explicit offsets.
    ends = {p: max(o for q, o in placed if q == p) + 1 for p in (0, 1)}
    await eventually(
        lambda: _committed_equals(ingress, sub.id, topic, ends),
        timeout=30,
        message="committed offsets did not reach the end offsets",
    )


async def _committed_equals(ingress: Ingress, group: str, topic: str, ends: dict[int, int]) -> bool:
    return await committed_offsets(ingress.bootstrap, group, topic, len(ends)) == ends


async def test_service_handler_runs_records_concurrently_each_exactly_once(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    release = asyncio.Event()

    async def gate(call: Call) -> None:
        # Hold the first calls until several are in flight at once.
        await asyncio.wait_for(release.wait(), 10)

    handler = RecordingHandler(gate)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, JSON)}
    )
    topic = await topic_factory(partitions=1)
    await ingress.start()
    await ingress.subscribe(topic, "Greeter", "greet")
    await produce(ingress.bootstrap, topic, [(None, orjson.dumps({"n": i})) for i in range(300)])

    await eventually(lambda: handler.active >= 10, timeout=30, message="no concurrency")
    release.set()
    await eventually(lambda: len(handler.acked()) >= 300, timeout=60)
    ids = [c.invocation_id for c in handler.calls]
    assert len(ids) == len(set(ids)) == 300
    assert sorted(c.offset for c in handler.calls) == list(range(300))


@pytest.mark.promise("p-ops-invocation-id-stable")
async def test_headers_idempotency_key_and_raw_body_arrive_as_documented(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(
        url,
        "Sink",
        ServiceType.VIRTUAL_OBJECT,
        {"raw": (HandlerType.SHARED, RAW), "json": (HandlerType.SHARED, JSON)},
    )
    raw_topic = await topic_factory(partitions=1)
    json_topic = await topic_factory(partitions=1)
    await ingress.start()
    raw_sub = await ingress.subscribe(raw_topic, "Sink", "raw")
    await ingress.subscribe(json_topic, "Sink", "json")

    payload = bytes(range(256)) * 3
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await produce(
        ingress.bootstrap,
        raw_topic,
        [(b"k-1", payload, [("tenant", b"acme"), ("traceparent", trace.encode())])],
    )
    await produce(ingress.bootstrap, json_topic, [(b"k-2", b'{"a": 1}'), (b"k-3", None)])
    await eventually(lambda: len(handler.acked()) >= 3, timeout=30)

    raw_call = next(c for c in handler.calls if c.handler == "raw")
    assert raw_call.body == payload
    assert raw_call.key == "k-1"
    h = raw_call.headers
    expected_id = await record_id(ingress.bootstrap, raw_sub.id, raw_topic, 0, 0)
    assert h["idempotency-key"] == expected_id
    assert h["restate.subscription.id"] == raw_sub.id
    assert h["kafka.topic"] == raw_topic
    assert h["kafka.partition"] == "0"
    assert h["kafka.offset"] == "0"
    assert h["kafka.key"] == "k-1"
    assert int(h["kafka.timestamp"]) > 0
    assert h["tenant"] == "acme"
    assert h["traceparent"] == trace
    assert h["content-type"] == "application/octet-stream"

    json_calls = sorted((c for c in handler.calls if c.handler == "json"), key=lambda c: c.offset)
    assert json_calls[0].body == b'{"a": 1}'
    assert json_calls[0].headers["content-type"] == "application/json"
    assert json_calls[1].body == b""  # null value = empty body
    assert json_calls[1].headers["traceparent"].startswith("00-")


@pytest.mark.promise("p-ops-commit-never-passes", "p-fault-poison", "p-dlq-record", "p-dlq-headers")
async def test_poison_records_are_dead_lettered_and_the_partition_moves_on(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    async def reject(call: Call) -> Response | None:
        if orjson.loads(call.body).get("reject"):
            return JSONResponse({"message": "amount must be positive"}, status_code=400)
        return None

    handler = RecordingHandler(reject)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Ledger", ServiceType.VIRTUAL_OBJECT, {"post": (HandlerType.EXCLUSIVE, JSON)}
    )
    topic = await topic_factory(partitions=1)
    dlq = await topic_factory(partitions=1)
    await ingress.start()
    sub = await ingress.subscribe(topic, "Ledger", "post", {"dead.letter.topic": dlq})

    records = [
        (b"a", b'{"ok": 1}'),
        (b"\xff\xfe", b'{"bad key": 1}'),  # not UTF-8
        (None, b'{"no key": 1}'),  # keyed sink needs a key
        (b"a", b"{not json"),
        (b"a", b'{"reject": true}', [("origin", b"test")]),
        (b"a", b'{"ok": 2}'),
        (b"b", b'{"ok": 3}'),
    ]
    await produce(ingress.bootstrap, topic, records)
    await eventually(lambda: len(handler.acked()) >= 3, timeout=30)
    assert sorted(orjson.loads(c.body)["ok"] for c in handler.acked()) == [1, 2, 3]

    letters = await consume_all(ingress.bootstrap, dlq, 4)
    assert [m.offset for m in letters] == [0, 1, 2, 3]
    by_source = {}
    for m in letters:
        headers = dict(m.headers)
        by_source[int(headers["x-kafka-ingress-source-offset"])] = (m, headers)
    assert sorted(by_source) == [1, 2, 3, 4]
    assert "UTF-8" in by_source[1][1]["x-kafka-ingress-error"].decode()
    assert by_source[1][0].key == b"\xff\xfe"
    assert "key" in by_source[2][1]["x-kafka-ingress-error"].decode().lower()
    assert "JSON" in by_source[3][1]["x-kafka-ingress-error"].decode()
    rejected, rejected_headers = by_source[4]
    assert rejected.value == b'{"reject": true}'
    assert rejected_headers["origin"] == b"test"
    assert b"amount must be positive" in rejected_headers["x-kafka-ingress-error"]
    assert rejected_headers["x-kafka-ingress-source-topic"] == topic.encode()
    assert (
        rejected_headers["x-kafka-ingress-invocation-id"]
        == (await record_id(ingress.bootstrap, sub.id, topic, 0, 4)).encode()
    )
    assert rejected_headers["x-kafka-ingress-attempts"] == b"1"
    assert by_source[3][1]["x-kafka-ingress-attempts"] == b"0"  # never sent
    assert rejected_headers["x-kafka-ingress-subscription-id"] == sub.id.encode()
    assert rejected_headers["x-kafka-ingress-source-partition"] == b"0"
    source_ms = int(rejected_headers["x-kafka-ingress-source-timestamp"])
    failed_ms = int(rejected_headers["x-kafka-ingress-failed-at"])
    assert 0 < source_ms <= failed_ms <= time.time() * 1000

    poison = await record_id(ingress.bootstrap, sub.id, topic, 0, 3)

    async def recorded() -> bool:
        # The dead letter goes out first; the ledger row follows with the writer's next batch.
        return await ingress.store.get_entry(poison) is not None

    await eventually(recorded, timeout=10, message="dead-lettered record not in the ledger")
    entry = await ingress.store.get_entry(poison)
    assert entry is not None
    assert entry.status == InvocationStatus.DEAD_LETTERED
    assert entry.last_error is not None
    assert "JSON" in entry.last_error
    await eventually(
        lambda: _committed_equals(ingress, sub.id, topic, {0: 7}),
        timeout=30,
        message="partition did not move past the poison records",
    )


@pytest.mark.promise("p-fault-poison", "p-fault-dlq-too-large")
async def test_dead_letters_too_large_for_their_topic_go_without_the_value(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    async def reject(call: Call) -> Response:
        return JSONResponse({"message": "rejected"}, status_code=400)  # terminal

    handler = RecordingHandler(reject)
    url = await handler_server(handler.app)
    await ingress.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = await topic_factory(config={"max.message.bytes": str(2 * 1024 * 1024)})
    dlq = await topic_factory(config={"max.message.bytes": str(64 * 1024)})
    await ingress.start()
    sub = await ingress.subscribe(topic, "Svc", "h", {"dead.letter.topic": dlq})

    def json_of(size: int) -> bytes:
        return b'"' + b"x" * (size - 2) + b'"'

    records = [
        # Above the topic's 64 KiB, below the producer's max_request_size: the broker refuses.
        (b"k0", json_of(100_000), [("origin", b"test")]),
        # Above the producer's max_request_size (1 MiB): refused before it is sent.
        (b"k1", json_of(1_500_000), []),
        (b"k2", b'{"small": true}', []),
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=ingress.bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()

    letters = await consume_all(ingress.bootstrap, dlq, 3)
    by_source = {int(dict(m.headers)["x-kafka-ingress-source-offset"]): m for m in letters}
    assert sorted(by_source) == [0, 1, 2], "a dead letter is missing"
    for offset in (0, 1):
        letter = by_source[offset]
        headers = dict(letter.headers)
        assert letter.key == records[offset][0]
        assert letter.value is None
        size = len(records[offset][1])
        assert headers["x-kafka-ingress-omitted"] == f"value={size}".encode()
        assert headers["x-kafka-ingress-source-topic"] == topic.encode()
        assert headers["x-kafka-ingress-source-partition"] == b"0"
        assert b"rejected" in headers["x-kafka-ingress-error"]
    assert dict(by_source[0].headers)["origin"] == b"test"
    assert by_source[2].value == b'{"small": true}'
    assert "x-kafka-ingress-omitted" not in dict(by_source[2].headers)

    await eventually(
        lambda: _committed_equals(ingress, sub.id, topic, {0: 3}),
        timeout=30,
        message="partition did not move past the oversized records",
    )
    entry = await ingress.store.get_entry(await record_id(ingress.bootstrap, sub.id, topic, 0, 1))
    assert entry is not None
    assert entry.status == InvocationStatus.DEAD_LETTERED


@pytest.mark.promise("p-fault-poison")
async def test_failures_without_dead_letter_topic_are_recorded_as_failed(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = await topic_factory(partitions=1)
    await ingress.start()
    sub = await ingress.subscribe(topic, "Svc", "h")
    await produce(ingress.bootstrap, topic, [(None, b"nope"), (None, b"{}")])
    await eventually(lambda: len(handler.acked()) >= 1, timeout=30)
    await eventually(lambda: _committed_equals(ingress, sub.id, topic, {0: 2}), timeout=30)
    entry = await ingress.entry_of(sub.id, topic, 0, 0)
    assert entry is not None
    assert entry.status == InvocationStatus.FAILED
    assert entry.attempts == 0


@pytest.mark.promise("p-ops-commit-never-passes", "p-fault-retrying-key")
async def test_retrying_key_holds_back_only_its_own_key_and_commit_never_passes_it(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    failures: dict[str, int] = {}
    allow_stuck = asyncio.Event()

    async def flaky(call: Call) -> Response | None:
        body = orjson.loads(call.body)
        if body.get("stuck") and not allow_stuck.is_set():
            return Response(status_code=503, headers={"Retry-After": "0"})
        if body.get("flaky"):
            failures[call.invocation_id] = failures.get(call.invocation_id, 0) + 1
            if failures[call.invocation_id] <= 2:
                return Response(status_code=500)
        return None

    handler = RecordingHandler(flaky)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Obj", ServiceType.VIRTUAL_OBJECT, {"h": (HandlerType.EXCLUSIVE, JSON)}
    )
    topic = await topic_factory(partitions=1)
    await ingress.start()
    sub = await ingress.subscribe(
        topic,
        "Obj",
        "h",
        {
            "retry.initial.interval.ms": "20",
            "retry.max.interval.ms": "100",
            "retry.max.attempts": "unlimited",
        },
    )
    records = [(b"stuck", b'{"stuck": true}'), (b"stuck", b'{"after": "stuck"}')]
    records += [(f"k{i}".encode(), b'{"flaky": true}' if i % 3 == 0 else b"{}") for i in range(40)]
    await produce(ingress.bootstrap, topic, records)

    # Every other key completes although "stuck" keeps failing.
    await eventually(
        lambda: len(handler.acked()) >= 40,
        timeout=60,
        message=lambda: f"{len(handler.acked())}/40 acked",
    )
    assert all(c.key != "stuck" for c in handler.acked())
    # The record behind the stuck one (same key) was never attempted.
    assert not any(orjson.loads(c.body).get("after") for c in handler.calls)
    committed = await committed_offsets(ingress.bootstrap, sub.id, topic, 1)
    assert committed[0] in (None, 0), "commit passed an unfinished record"
    flaky_ids = [i for i, n in failures.items() if n >= 3]
    assert len(flaky_ids) == 14  # every flaky record failed twice, then succeeded

    entry = await ingress.entry_of(sub.id, topic, 0, 0)
    assert entry is not None
    assert entry.status == InvocationStatus.BACKING_OFF
    assert entry.attempts >= 1

    allow_stuck.set()
    await eventually(lambda: len(handler.acked()) >= 42, timeout=30)
    after = [c for c in handler.acked() if c.key == "stuck"]
    assert [c.offset for c in after] == [0, 1]
    await eventually(lambda: _committed_equals(ingress, sub.id, topic, {0: 42}), timeout=30)


@pytest.mark.promise("p-ops-workflow-once")
async def test_workflow_run_executes_once_per_key(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory, dynamo_client: Any
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Signup", ServiceType.WORKFLOW, {"run": (HandlerType.WORKFLOW, JSON)}
    )
    topic = await topic_factory(partitions=1)
    await ingress.start()
    sub = await ingress.subscribe(topic, "Signup", "run")
    await produce(
        ingress.bootstrap,
        topic,
        [(b"user-1", b"{}"), (b"user-2", b"{}"), (b"user-1", b'{"again": 1}'), (b"user-3", b"{}")],
    )
    await eventually(lambda: _committed_equals(ingress, sub.id, topic, {0: 4}), timeout=30)
    assert sorted(c.key or "" for c in handler.calls) == ["user-1", "user-2", "user-3"]
    dup = await ingress.entry_of(sub.id, topic, 0, 2)
    assert dup is not None
    assert dup.status == InvocationStatus.DUPLICATE
    # The claim lasts the ledger retention (7 days by default), then DynamoDB's TTL removes it.
    workflows = ingress.store.names.workflows
    claim = dynamo_client.get_item(TableName=workflows, Key={"id": {"S": "Signup/user-1"}})
    expires_at = int(claim["Item"]["expires_at"]["N"])
    assert abs(expires_at - (time.time() + 7 * 86400)) < 300
    ttl = dynamo_client.describe_time_to_live(TableName=workflows)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveStatus"] == "ENABLED"


async def test_subscriptions_start_and_stop_on_a_running_poller(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = await topic_factory(partitions=1)
    poller = await ingress.start()
    sub = await ingress.subscribe(topic, "Svc", "h")
    await produce(ingress.bootstrap, topic, [(None, b"{}")])
    await eventually(lambda: len(handler.acked()) == 1, timeout=20)

    await ingress.store.delete_subscription(sub.id)
    poller.supervisor.wake()
    await eventually(lambda: sub.id not in poller.supervisor.runners(), timeout=20)
    await produce(ingress.bootstrap, topic, [(None, b"{}")])
    # A second subscription on the same topic proves records are flowing, while the deleted one
    # delivered nothing more.
    other = RecordingHandler()
    await ingress.register(
        await handler_server(other.app),
        "Other",
        ServiceType.SERVICE,
        {"h": (HandlerType.SERVICE, JSON)},
    )
    await ingress.subscribe(topic, "Other", "h")
    await eventually(lambda: len(other.acked()) == 2, timeout=20)
    assert len(handler.calls) == 1


@pytest.mark.promise("p-ops-repeat-window")
@pytest.mark.parametrize("successes", ["rows", "pages"])
@pytest.mark.promise("p-ops-every-record", "p-ops-completed-never-again", "p-fault-sigkill")
async def test_crash_and_restart_lose_nothing_and_never_reinvoke_completed_records(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    tmp_path: Path,
    successes: str,
) -> None:
    async def slowish(call: Call) -> None:
        await asyncio.sleep(0.002)

    handler = RecordingHandler(slowish)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Obj", ServiceType.VIRTUAL_OBJECT, {"h": (HandlerType.EXCLUSIVE, JSON)}
    )
    topic = await topic_factory(partitions=2)
    sub = await ingress.subscribe(topic, "Obj", "h")
    total = 1500
    await produce(ingress.bootstrap, topic, [(f"k{i % 50}".encode(), b"{}") for i in range(total)])

    env = {**ingress.env(), "KAFKA_INGRESS_LEDGER_SUCCESSES": successes}
    first = PollerProcess(env)
    await first.start(tmp_path)

    async def plenty_durable() -> bool:
        return len(await _durable_successes(ingress, sub.id, topic, handler.calls)) >= 200

    try:
        await eventually(
            lambda: len(handler.acked()) >= 300,
            timeout=60,
            message=lambda: first.output.decode(errors="replace")[-3000:],
        )
        await eventually(plenty_durable, timeout=30, message="ledger did not catch up")
    except BaseException:
        # A failed wait must not leave the poller process running after the test.
        if first.proc is not None and first.proc.returncode is None:
            first.proc.kill()
            await first.proc.wait()
        raise
    await first.kill()  # SIGKILL: no drain, no final commit
    durable = await _durable_successes(ingress, sub.id, topic, handler.calls)
    calls_before_restart = len(handler.calls)
    if successes == "pages":
        # Successes left no rows: what the ledger knows of them is in the pages.
        assert not await ingress.store.get_statuses({c.invocation_id for c in handler.calls})

    second = PollerProcess(env)
    await second.start(tmp_path)
    try:
        # Up and consuming (its signal handlers are installed by then) before it is judged: the
        # first poller may have finished every record before its kill.
        await eventually(
            lambda: b"assigned [" in second.output,
            timeout=60,
            message=lambda: second.output.decode(errors="replace")[-3000:],
        )
        await eventually(
            lambda: len({c.invocation_id for c in handler.acked()}) >= total,
            timeout=90,
            message=lambda: second.output.decode(errors="replace")[-3000:],
        )
        await eventually(lambda: _committed_total(ingress, sub.id, topic), timeout=30)
    finally:
        code = await second.terminate()
        assert code == 0, second.output.decode(errors="replace")[-4000:]

    # No loss: every record was acknowledged.
    assert len({c.invocation_id for c in handler.acked()}) == total
    # A record whose completion was durable in the ledger at the kill is never invoked again;
    # only the ones in flight (invoked, result not yet recorded) may repeat.
    again = [c.invocation_id for c in handler.calls[calls_before_restart:]]
    assert not durable & set(again)
    assert len(durable) >= 200  # the kill came after plenty had completed


async def _durable_successes(
    ingress: Ingress, sub_id: str, topic: str, calls: list[Call]
) -> set[str]:
    """IDs of the invoked records whose success is in the ledger, as a row or in a page."""
    recorded = await ingress.store.get_statuses({c.invocation_id for c in calls})
    durable = {i for i, status in recorded.items() if status == "SUCCEEDED"}
    key = await topic_key_of(ingress.bootstrap, topic)
    for partition in (0, 1):
        offsets = {c.offset: c.invocation_id for c in calls if c.partition == partition}
        if offsets:
            paged = await ingress.store.paged_offsets(
                sub_id, key, partition, min(offsets), max(offsets)
            )
            durable |= {offsets[o] for o in paged}
    return durable


async def _committed_total(ingress: Ingress, group: str, topic: str) -> bool:
    committed = await committed_offsets(ingress.bootstrap, group, topic, 2)
    return sum(v or 0 for v in committed.values()) == 1500
