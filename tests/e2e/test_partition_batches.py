"""AWS's Kafka trigger semantics for function sinks, end to end: a real broker, the local
Lambda endpoint through the real boto3 client, moto's SQS over HTTP as the on-failure
destination, and the poller as shipped.

A subscription with ``event.format=msk`` (what a ``lambda://`` sink sets) runs in partition
batches by default: a partition's records complete in offset order, bisect isolates one
poison record and only it reaches the destination, and ``filter.criteria`` drops records
without invoking them (their offsets are still committed).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import orjson
import pytest

from adapter import ids
from adapter.engine.lifecycle import InvocationStatus
from adapter.local.lambda_server import FunctionSpec, LocalLambda
from adapter.local.moto import MotoServer
from adapter.model import HandlerInfo, HandlerType, InputKind, ServiceInfo, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import (
    Ingress,
    committed_offsets,
    consume_all,
    eventually,
    produce,
    record_id,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

REGION = "us-east-1"
MOTO_ACCOUNT = "123456789012"
POISON = 13


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:000000000000:function:{name}"


class Calls:
    """What the functions saw; they run on the local endpoint's worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[list[tuple[int, int]]] = []
        self.completed: dict[int, list[int]] = {}
        self.failures_left: dict[tuple[int, int], int] = {}

    def reset(self) -> None:
        with self.lock:
            self.batches.clear()
            self.completed.clear()
            self.failures_left.clear()


calls = Calls()


def _records(event: dict[str, Any]) -> list[tuple[int, int, Any]]:
    out = []
    for records in event["records"].values():
        for r in records:
            out.append((r["partition"], r["offset"], json.loads(base64.b64decode(r["value"]))))
    return out


def flaky_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Fails a batch while one of its records has failures left; records what completed."""
    records = _records(event)
    with calls.lock:
        calls.batches.append([(p, o) for p, o, _ in records])
        for p, o, _ in records:
            left = calls.failures_left.get((p, o), 0)
            if left:
                calls.failures_left[(p, o)] = left - 1
                raise RuntimeError(f"record {p}@{o} failed")
        for p, o, _ in records:
            calls.completed.setdefault(p, []).append(o)
    return {}


def poison_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An MSK-style handler that fails every batch holding the poison record."""
    records = _records(event)
    with calls.lock:
        calls.batches.append([(p, o) for p, o, _ in records])
    if any(value["n"] == POISON for _, _, value in records):
        raise ValueError("cannot process record 13")
    return {}


@pytest.fixture
def local_lambda() -> Iterator[LocalLambda]:
    local = LocalLambda(
        [
            FunctionSpec("flaky", flaky_consumer, timeout_s=10),
            FunctionSpec("poison", poison_consumer, timeout_s=10),
        ],
        region=REGION,
    )
    try:
        yield local
    finally:
        local.close()


@pytest.fixture
async def ingress(
    kafka_bootstrap: str,
    store: DynamoStore,
    moto_server: MotoServer,
    handler_server: HandlerServer,
    local_lambda: LocalLambda,
) -> AsyncIterator[Ingress]:
    calls.reset()
    endpoint = await handler_server(local_lambda.app)
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url, lambda_endpoint=endpoint)
    try:
        yield harness
    finally:
        await harness.stop()


async def register_function(ingress: Ingress, service: str, function: str) -> None:
    """A plain Kafka consumer function as ``<service>/consume`` (raw input)."""
    dep_id = ids.deployment_id()
    await ingress.store.put_deployment({"id": dep_id, "arn": arn(function)})
    await ingress.store.put_service(
        ServiceInfo(
            service,
            ServiceType.SERVICE,
            dep_id,
            (HandlerInfo("consume", HandlerType.SERVICE, InputKind.RAW),),
        )
    )


async def all_committed(ingress: Ingress, sub_id: str, topic: str, ends: dict[int, int]) -> None:
    async def done() -> bool:
        return await committed_offsets(ingress.bootstrap, sub_id, topic, len(ends)) == ends

    await eventually(done, timeout=90, message=f"not everything of {topic} was committed")


@pytest.mark.promise("p-config-partition-batches")
async def test_a_partitions_records_never_complete_out_of_order(
    ingress: Ingress, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(partitions=2)
    await register_function(ingress, "Orders", "flaky")
    per_partition = 30
    for p in (0, 1):
        await produce(
            ingress.bootstrap,
            topic,
            [(b"k", orjson.dumps({"n": n}), []) for n in range(per_partition)],
            partition=p,
        )
    # Offset 4 of partition 0 fails twice: its batch is retried before anything after it.
    calls.failures_left[(0, 4)] = 2
    await ingress.start()
    sub = await ingress.subscribe(
        topic,
        "Orders",
        "consume",
        {"event.format": "msk", "batch.size": "5", "maximum.batching.window.ms": "20"},
    )
    await all_committed(ingress, sub.id, topic, {0: per_partition, 1: per_partition})
    for p in (0, 1):
        assert calls.completed[p] == list(range(per_partition)), f"partition {p}"
    retried = [b for b in calls.batches if (0, 4) in b]
    assert len(retried) == 3  # failed twice, then succeeded
    assert len(calls.batches) < 2 * per_partition, "records were not batched"


@pytest.mark.promise("p-config-bisect", "p-config-on-failure")
async def test_bisect_isolates_one_poison_record_and_only_it_reaches_sqs(
    ingress: Ingress, topic_factory: TopicFactory, moto_server: MotoServer
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    queue = f"failures-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    topic = await topic_factory(partitions=1)
    await register_function(ingress, "Orders", "poison")
    await produce(ingress.bootstrap, topic, [(b"k", orjson.dumps({"n": n}), []) for n in range(16)])
    await ingress.start()
    sub = await ingress.subscribe(
        topic,
        "Orders",
        "consume",
        {
            "event.format": "msk",
            "batch.size": "16",
            "maximum.batching.window.ms": "200",
            "bisect.batch.on.function.error": "true",
            "maximum.retry.attempts": "1",
            "retry.initial.interval.ms": "10",
            "destination.on.failure": f"arn:aws:sqs:{REGION}:{MOTO_ACCOUNT}:{queue}",
        },
    )
    await all_committed(ingress, sub.id, topic, {0: 16})
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(m["Body"]) for m in messages.get("Messages", [])]
    assert len(bodies) == 1
    document = bodies[0]
    assert document["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert document["requestContext"]["functionArn"] == arn("poison")
    assert document["responseContext"]["functionError"] == "Unhandled"
    info = document["KafkaBatchInfo"]
    assert info["batchSize"] == 1
    where = info["recordsInfo"][f"{topic}-0"]
    assert (where["firstRecordOffset"], where["lastRecordOffset"]) == (str(POISON), str(POISON))
    for offset in range(16):
        entry = await ingress.store.get_entry(
            await record_id(ingress.bootstrap, sub.id, topic, 0, offset)
        )
        assert entry is not None
        expected = InvocationStatus.DEAD_LETTERED if offset == POISON else None
        if expected is not None:
            assert entry.status == expected.value
        else:
            assert entry.status == InvocationStatus.SUCCEEDED.value
    assert [(0, POISON)] in calls.batches  # isolated: invoked alone
    assert calls.batches[0] == [(0, o) for o in range(16)]


FILTER = json.dumps({"Filters": [{"Pattern": json.dumps({"value": {"kind": ["keep"]}})}]})


@pytest.mark.promise("p-config-filter-applied")
async def test_filtering_drops_excluded_records_committed_and_never_invoked(
    ingress: Ingress, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(partitions=1)
    await register_function(ingress, "Orders", "flaky")
    kinds = ["keep" if n % 3 == 0 else "drop" for n in range(12)]
    await produce(
        ingress.bootstrap,
        topic,
        [(b"k", orjson.dumps({"n": n, "kind": kind}), []) for n, kind in enumerate(kinds)],
    )
    poller = await ingress.start()
    sub = await ingress.subscribe(
        topic,
        "Orders",
        "consume",
        {"event.format": "msk", "maximum.batching.window.ms": "20", "filter.criteria": FILTER},
    )
    await all_committed(ingress, sub.id, topic, {0: 12})
    invoked = sorted(o for batch in calls.batches for _, o in batch)
    assert invoked == [n for n, kind in enumerate(kinds) if kind == "keep"]
    assert poller.supervisor.runners()[sub.id].stats.filtered == kinds.count("drop")


@pytest.mark.promise("p-config-on-failure")
async def test_a_kafka_topic_destination_gets_the_poison_record_keyed_as_it_was(
    ingress: Ingress, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(partitions=1)
    failures = await topic_factory(partitions=1)
    await register_function(ingress, "Orders", "poison")
    await produce(
        ingress.bootstrap,
        topic,
        [(f"k{n}".encode(), orjson.dumps({"n": n}), []) for n in range(16)],
    )
    await ingress.start()
    sub = await ingress.subscribe(
        topic,
        "Orders",
        "consume",
        {
            "event.format": "msk",
            "batch.size": "16",
            "maximum.batching.window.ms": "200",
            "bisect.batch.on.function.error": "true",
            "maximum.retry.attempts": "0",
            "destination.on.failure": f"kafka://{failures}",
        },
    )
    await all_committed(ingress, sub.id, topic, {0: 16})
    # Everything was committed after its failure record was written: a second one would be
    # there already (read for a bounded time).
    written = await consume_all(ingress.bootstrap, failures, 2, timeout=3)
    assert [m.key for m in written] == [f"k{POISON}".encode()]
    document = json.loads(written[0].value)
    assert document["requestContext"]["condition"] == "RetriesExhausted"
    assert document["KafkaBatchInfo"]["recordInfo"]["offset"] == str(POISON)
