"""Coming from Lambda's Kafka trigger: consumer functions written the AWS way run unchanged.

Four functions, none of which knows this project: Powertools' ``KafkaEvent`` data class,
Powertools' ``@kafka_consumer`` with a JSON schema config, a plain handler following AWS's MSK
example ("Using Lambda with Amazon MSK", https://docs.aws.amazon.com/lambda/latest/dg/with-msk.html,
and the self-managed example, https://docs.aws.amazon.com/lambda/latest/dg/with-kafka.html), and
Powertools' ``BatchProcessor(EventType.Kafka)`` answering partial batch failures. They run on
the local Lambda endpoint (``adapter.local.lambda_server``, reached through the real boto3
client), are fed by a real broker, and each is subscribed with ONE CLI command,
``kafka-ingress subscriptions create kafka://<cluster>/<topic> lambda://<function ARN>``.

The last three tests need the trigger's per-partition semantics (bisect, on-failure
destinations, ordering, filtering); their names say which.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import KafkaEvent, event_source
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from aws_lambda_powertools.utilities.kafka import ConsumerRecords, SchemaConfig, kafka_consumer

from adapter.cli import main as cli
from adapter.kafka.options import OPTION_TABLE
from adapter.local.lambda_server import FunctionSpec, LocalLambda
from adapter.local.moto import MotoServer
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Ingress, committed_offsets, consume_all, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

REGION = "us-east-1"
MSK_CLUSTER_ARN = (
    "arn:aws:kafka:us-east-1:123456789012:cluster/demo-cluster-1/"
    "6357e0b2-0e6a-4b86-a0b4-70df934c2e31-5"
)

_lock = threading.Lock()
# function name -> what it saw, one dict per record, in the order it handled them
seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
# function name -> (eventSource, eventSourceArn, bootstrapServers) of every event
sources: dict[str, list[tuple[Any, Any, Any]]] = defaultdict(list)
# (function, n) -> failures still to give before succeeding
failures_left: Counter[tuple[str, int]] = Counter()
# function name -> offsets (per partition) whose processing finished successfully, in order
completed: dict[str, list[tuple[int, int]]] = defaultdict(list)


def _note(function: str, item: dict[str, Any]) -> None:
    with _lock:
        seen[function].append(item)


def _fail_once_more(function: str, n: int) -> bool:
    with _lock:
        if failures_left[(function, n)] > 0:
            failures_left[(function, n)] -= 1
            return True
        return False


# -- 1. Powertools' KafkaEvent data class ------------------------------------------------------


@event_source(data_class=KafkaEvent)
def dataclass_consumer(event: KafkaEvent, context: Any) -> None:
    with _lock:
        sources["dataclass"].append(
            (event.event_source, event.event_source_arn, event.bootstrap_servers)
        )
    for record in event.records:
        _note(
            "dataclass",
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "timestampType": record.timestamp_type,
                "key": record.decoded_key,
                "value": record.json_value,
                "headers": [
                    (name, bytes(value)) for h in record.headers for name, value in h.items()
                ],
                "raw_headers": record.headers,
            },
        )


# -- 2. Powertools' @kafka_consumer with a JSON schema -----------------------------------------


@kafka_consumer(schema_config=SchemaConfig(value_schema_type="JSON"))
def schema_consumer(event: ConsumerRecords, context: Any) -> dict[str, Any]:
    with _lock:
        sources["schema"].append(
            (event.event_source, event.event_source_arn, event.bootstrap_servers)
        )
    for record in event.records:
        _note(
            "schema",
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "timestampType": record.timestamp_type,
                "key": record.key,
                "value": record.value,
            },
        )
    return {"statusCode": 200}


# -- 3. A plain handler, as in AWS's MSK example -----------------------------------------------


def plain_consumer(event: dict[str, Any], context: Any) -> None:
    with _lock:
        sources["plain"].append(
            (event["eventSource"], event.get("eventSourceArn"), event["bootstrapServers"])
        )
    for partition_key in event["records"]:
        for record in event["records"][partition_key]:
            _note(
                "plain",
                {
                    "partition_key": partition_key,
                    "fields": sorted(record),
                    "topic": record["topic"],
                    "partition": record["partition"],
                    "offset": record["offset"],
                    "timestamp": record["timestamp"],
                    "timestampType": record["timestampType"],
                    "key": base64.b64decode(record["key"]),
                    "value": json.loads(base64.b64decode(record["value"])),
                    "headers": record["headers"],
                },
            )


# -- 4. Powertools' BatchProcessor for partial batch failures ----------------------------------

processor = BatchProcessor(event_type=EventType.Kafka)


def _record_handler(record: KafkaEventRecord) -> None:
    value = record.json_value
    _note("batch", {"partition": record.partition, "offset": record.offset, "n": value["n"]})
    if value.get("poison") or _fail_once_more("batch", value["n"]):
        raise ValueError(f"cannot process n={value['n']}")
    with _lock:
        completed["batch"].append((record.partition, record.offset))


def batch_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=_record_handler, processor=processor, context=context
    )


# -- 5. A consumer that fails the whole batch while it holds a poison record -------------------


def strict_consumer(event: dict[str, Any], context: Any) -> None:
    values = [
        (record["partition"], record["offset"], json.loads(base64.b64decode(record["value"])))
        for records in event["records"].values()
        for record in records
    ]
    for partition, offset, value in values:
        _note("strict", {"partition": partition, "offset": offset, "n": value["n"]})
    if any(value.get("poison") for _, _, value in values):
        raise RuntimeError("poison record in the batch")
    with _lock:
        completed["strict"].extend((p, o) for p, o, _ in values)


FUNCTIONS = {
    "dataclass": dataclass_consumer,
    "schema": schema_consumer,
    "plain": plain_consumer,
    "batch": batch_consumer,
    "strict": strict_consumer,
}


@pytest.fixture(autouse=True)
def _fresh_observations() -> Iterator[None]:
    for table in (seen, sources, completed):
        table.clear()
    failures_left.clear()
    yield
    failures_left.clear()


@pytest.fixture
def local_lambda() -> Iterator[LocalLambda]:
    local = LocalLambda(
        [FunctionSpec(name, fn, timeout_s=20) for name, fn in FUNCTIONS.items()], region=REGION
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
    endpoint = await handler_server(local_lambda.app)
    harness = Ingress(
        kafka_bootstrap,
        store,
        moto_server.endpoint_url,
        lambda_endpoint=endpoint,
        # The same broker once more, named as an MSK cluster: events say aws:kafka + its ARN.
        extra_clusters={"msk": (kafka_bootstrap, {"msk.cluster.arn": MSK_CLUSTER_ARN})},
    )
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def subscribe(
    ingress: Ingress, local: LocalLambda, source: str, function: str, *options: str
) -> str:
    """ONE CLI command, as a user coming from Lambda types it; returns the subscription ID."""
    assert ingress.poller is not None
    argv = ["subscriptions", "create", source, f"lambda://{local.arn(function)}"]
    argv += ["-o", "auto.offset.reset=earliest"]
    for option in options:
        argv += ["-o", option]
    argv += ["--admin-url", f"http://{ingress.poller.admin_address}", "--json"]
    code = await asyncio.to_thread(cli, argv)
    assert code == 0, f"kafka-ingress {' '.join(argv)} exited {code}"
    subs = [s for s in await ingress.store.list_subscriptions() if s.topic == source.split("/")[-1]]
    (sub,) = [s for s in subs if s.service == local.arn(function)]
    assert sub.sink == f"lambda://{local.arn(function)}"
    return sub.id


def _payload(n: int, **extra: Any) -> bytes:
    return json.dumps({"n": n, **extra}).encode()


async def _all_committed(ingress: Ingress, group: str, topic: str, ends: dict[int, int]) -> None:
    async def done() -> bool:
        got = await committed_offsets(ingress.bootstrap, group, topic, len(ends))
        return got == ends

    await eventually(done, timeout=90, message=f"{group} did not commit {ends} on {topic}")


def _ends(placed: list[tuple[int, int]], partitions: int) -> dict[int, int]:
    ends = dict.fromkeys(range(partitions), 0)
    for partition, offset in placed:
        ends[partition] = max(ends[partition], offset + 1)
    return ends


# AWS honours batchItemFailures only with FunctionResponseTypes=[ReportBatchItemFailures];
# the same switch here arrives with the trigger's semantics (before it, event.format=msk
# always honours them).
PARTIAL = (
    ("report.batch.item.failures=true",) if "report.batch.item.failures" in OPTION_TABLE else ()
)


# -- what passes today -------------------------------------------------------------------------

HEADERS = [("trace", b"a-1"), ("trace", b"a-2"), ("empty", b""), ("gone", None)]


@pytest.mark.promise("p-function-sink", "p-function-sink-event", "p-esm-table")
async def test_aws_style_consumers_subscribed_in_one_command_receive_every_record_as_aws_sends(
    ingress: Ingress, local_lambda: LocalLambda, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    appended = await topic_factory(1, config={"message.timestamp.type": "LogAppendTime"})
    records = [(f"k-{n}".encode(), _payload(n), HEADERS) for n in range(6)]
    placed = await produce(ingress.bootstrap, topic, records)  # type: ignore[arg-type]
    placed_appended = await produce(ingress.bootstrap, appended, records)  # type: ignore[arg-type]
    on_broker = {m.offset: m for m in await consume_all(ingress.bootstrap, topic, 6)}
    on_broker_appended = {m.offset: m for m in await consume_all(ingress.bootstrap, appended, 6)}
    assert all(m.timestamp_type == 1 for m in on_broker_appended.values())

    groups = {
        "dataclass": await subscribe(
            ingress, local_lambda, f"kafka://local/{appended}", "dataclass", "batch.size=4"
        ),
        "schema": await subscribe(
            ingress, local_lambda, f"kafka://local/{topic}", "schema", "batch.size=4"
        ),
        "plain": await subscribe(
            ingress, local_lambda, f"kafka://msk/{topic}", "plain", "batch.size=10"
        ),
    }
    await _all_committed(ingress, groups["dataclass"], appended, _ends(placed_appended, 1))
    await _all_committed(ingress, groups["schema"], topic, _ends(placed, 1))
    await _all_committed(ingress, groups["plain"], topic, _ends(placed, 1))

    # Where the records come from, as AWS names it.
    brokers = ingress.bootstrap
    assert set(sources["dataclass"]) == {("SelfManagedKafka", None, brokers)}
    assert set(sources["schema"]) == {("SelfManagedKafka", None, brokers)}
    assert set(sources["plain"]) == {("aws:kafka", MSK_CLUSTER_ARN, brokers)}

    # Every record once, in offset order, with AWS's fields.
    by_offset = {r["offset"]: r for r in seen["plain"]}
    assert sorted(by_offset) == [o for _, o in placed]
    for offset, got in by_offset.items():
        produced = on_broker[offset]
        assert got["partition_key"] == f"{topic}-0"
        assert got["fields"] == [
            "headers",
            "key",
            "offset",
            "partition",
            "timestamp",
            "timestampType",
            "topic",
            "value",
        ]
        assert (got["topic"], got["partition"], got["timestamp"]) == (topic, 0, produced.timestamp)
        assert got["timestampType"] == "CREATE_TIME"
        assert (got["key"], got["value"]) == (produced.key, {"n": offset})
        # One object per header, repeated names twice, a null value as {} (as AWS sends it).
        assert got["headers"] == [
            {"trace": list(b"a-1")},
            {"trace": list(b"a-2")},
            {"empty": []},
            {},
        ]
    assert [r["offset"] for r in seen["schema"]] == [o for _, o in placed]
    for got in seen["schema"]:
        produced = on_broker[got["offset"]]
        assert (got["topic"], got["partition"]) == (topic, 0)
        assert (got["timestamp"], got["timestampType"]) == (produced.timestamp, "CREATE_TIME")
        assert (got["key"], got["value"]) == (produced.key.decode(), {"n": got["offset"]})
    assert [r["offset"] for r in seen["dataclass"]] == [o for _, o in placed_appended]
    for got in seen["dataclass"]:
        produced = on_broker_appended[got["offset"]]
        assert got["timestampType"] == "LOG_APPEND_TIME"
        assert got["timestamp"] == produced.timestamp
        assert (got["key"], got["value"]) == (produced.key, {"n": got["offset"]})
        assert got["headers"] == [("trace", b"a-1"), ("trace", b"a-2"), ("empty", b"")]
        assert got["raw_headers"][3] == {}


async def test_batch_processor_partial_failures_are_retried_until_they_succeed(
    ingress: Ingress, local_lambda: LocalLambda, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    failures_left[("batch", 3)] = 2
    placed = await produce(ingress.bootstrap, topic, [(b"k", _payload(n)) for n in range(8)])
    group = await subscribe(
        ingress, local_lambda, f"kafka://local/{topic}", "batch", "batch.size=8", *PARTIAL
    )
    await _all_committed(ingress, group, topic, _ends(placed, 1))
    attempts = Counter(r["n"] for r in seen["batch"])
    assert attempts[3] == 3  # failed twice (reported in batchItemFailures), then succeeded
    assert sorted({o for _, o in completed["batch"]}) == [o for _, o in placed]
    assert failures_left[("batch", 3)] == 0


async def test_deleting_a_function_sinks_subscription_stops_it_and_leaves_nothing(
    ingress: Ingress, local_lambda: LocalLambda, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    placed = await produce(ingress.bootstrap, topic, [(b"k", _payload(n)) for n in range(3)])
    group = await subscribe(ingress, local_lambda, f"kafka://local/{topic}", "plain")
    await _all_committed(ingress, group, topic, _ends(placed, 1))
    assert ingress.poller is not None
    url = f"http://{ingress.poller.admin_address}"
    code = await asyncio.to_thread(cli, ["subscriptions", "delete", group, "--admin-url", url])
    assert code == 0
    assert await ingress.store.list_services() == []
    assert await ingress.store.list_deployments() == []
    # Records produced afterwards reach nobody.
    calls = local_lambda.invocations("plain")
    await produce(ingress.bootstrap, topic, [(b"k", _payload(9))])

    async def stopped() -> bool:
        return ingress.poller is not None and group not in ingress.poller.supervisor.status()

    await eventually(stopped, timeout=30, message="the subscription's consumer did not stop")
    assert local_lambda.invocations("plain") == calls


# -- needs ESM semantics for function sinks (one batch in flight per partition, bisect,
#    on-failure destinations, filtering) ------------------------------------------------------


@pytest.mark.promise("p-esm-bisect")
async def test_esm_bisect_isolates_a_single_poison_record_for_the_sqs_failure_destination(
    ingress: Ingress,
    local_lambda: LocalLambda,
    topic_factory: TopicFactory,
    moto_server: MotoServer,
) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint_url, region_name=REGION)
    queue_url = sqs.create_queue(QueueName=f"on-failure-{uuid.uuid4().hex}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    topic = await topic_factory(1)
    values = [_payload(n, poison=(n == 5)) for n in range(8)]
    placed = await produce(ingress.bootstrap, topic, [(b"k", v) for v in values])
    group = await subscribe(
        ingress,
        local_lambda,
        f"kafka://local/{topic}",
        "strict",
        "batch.size=8",
        "maximum.batching.window.ms=2000",
        "bisect.batch.on.function.error=true",
        "maximum.retry.attempts=0",
        f"destination.on.failure={queue_arn}",
    )
    await _all_committed(ingress, group, topic, _ends(placed, 1))
    # Every other record was processed; only the poison one was given up.
    assert sorted(o for _, o in completed["strict"]) == [o for _, o in placed if o != 5]
    messages: list[dict[str, Any]] = []

    def received() -> bool:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages.extend(json.loads(m["Body"]) for m in got.get("Messages", []))
        return bool(messages)

    await eventually(lambda: asyncio.to_thread(received), timeout=30, message="no failure record")
    (record,) = messages
    info = record["KafkaBatchInfo"]
    assert info["batchSize"] == 1
    assert info["bootstrapServers"] == ingress.bootstrap
    assert info["recordsInfo"][f"{topic}-0"]["firstRecordOffset"] == "5"
    assert info["recordsInfo"][f"{topic}-0"]["lastRecordOffset"] == "5"
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["functionArn"] == local_lambda.arn("strict")
    assert record["responseContext"]["functionError"] == "Unhandled"


@pytest.mark.promise("p-esm-order")
async def test_esm_a_partitions_records_never_complete_out_of_order(
    ingress: Ingress, local_lambda: LocalLambda, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(2)
    # Record n=4 of each partition fails twice: later records of its partition must wait.
    for n in (4, 104):
        failures_left[("batch", n)] = 2
    records = [(b"k", _payload(p * 100 + n)) for p in range(2) for n in range(12)]
    placed = []
    for partition in range(2):
        placed += await produce(
            ingress.bootstrap,
            topic,
            records[partition * 12 : (partition + 1) * 12],
            partition=partition,
        )
    group = await subscribe(
        ingress,
        local_lambda,
        f"kafka://local/{topic}",
        "batch",
        "batch.size=3",
        *PARTIAL,
    )
    await _all_committed(ingress, group, topic, _ends(placed, 2))
    for partition in range(2):
        done = [o for p, o in completed["batch"] if p == partition]
        # A record may run again when the trigger resumes its partition at an earlier failed
        # record; its final success must still come after every earlier record's.
        last_success = {offset: index for index, offset in enumerate(done)}
        final_order = sorted(last_success, key=last_success.__getitem__)
        assert final_order == list(range(12)), f"partition {partition} completed {done}"
        # And the failed record was retried before anything after it finished for good.
        assert Counter(r["n"] for r in seen["batch"])[partition * 100 + 4] == 3


@pytest.mark.promise("p-esm-filter")
async def test_esm_filter_criteria_drops_the_records_the_pattern_excludes(
    ingress: Ingress, local_lambda: LocalLambda, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    values = [_payload(n, kind="keep" if n % 3 else "drop") for n in range(9)]
    placed = await produce(ingress.bootstrap, topic, [(b"k", v) for v in values])
    criteria = json.dumps({"Filters": [{"Pattern": json.dumps({"value": {"kind": ["keep"]}})}]})
    group = await subscribe(
        ingress,
        local_lambda,
        f"kafka://local/{topic}",
        "plain",
        "batch.size=9",
        f"filter.criteria={criteria}",
    )
    # Excluded records are committed too, never invoked.
    await _all_committed(ingress, group, topic, _ends(placed, 1))
    assert sorted(r["offset"] for r in seen["plain"]) == [n for n in range(9) if n % 3]
