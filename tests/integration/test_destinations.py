"""On-failure destinations against a real moto server (SQS, SNS, S3) and a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from botocore.config import Config

from adapter.engine.failure_destinations import FailureDestinations
from adapter.errors import DestinationError
from adapter.invokers.destinations import (
    Delivery,
    KafkaTopicWriter,
    S3Writer,
    SnsWriter,
    SqsWriter,
    parse_destination,
    s3_object_key,
)
from adapter.invokers.failure_record import (
    FailureCondition,
    FailureContext,
    build_batch_failure_record,
    build_kafka_failure_record,
)
from adapter.invokers.kafka_event import EventSource
from adapter.kafka.dead_letter import DeadLetterProducer
from adapter.local.moto import MotoServer
from adapter.model import KafkaRecord
from tests._kafka_fixtures import TopicFactory

WAIT = 30.0
ACCOUNT = "123456789012"  # moto's account
RECORDS = [KafkaRecord("orders", 0, 5, b"acct-1", b'{"n": 5}', 1_700_000_000_000)]
SOURCE = EventSource(bootstrap_servers=["127.0.0.1:9092"])
CTX = FailureContext(
    request_id="r-1",
    function_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders",
    condition=FailureCondition.RETRY_ATTEMPTS_EXHAUSTED,
    approximate_invoke_count=3,
    failed_at_ms=1_700_000_001_000,
)


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[dict[str, Any]]:
    clients = {name: _client(name, moto_server.endpoint_url) for name in ("sqs", "sns", "s3")}
    yield clients
    for client in clients.values():
        client.close()


def _name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _receive(sqs: Any, url: str) -> list[str]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
    return [m["Body"] for m in answer.get("Messages", [])]


async def test_sqs_destination_receives_the_failure_record(aws: dict[str, Any]) -> None:
    sqs = aws["sqs"]
    name = _name()
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    writer = SqsWriter(sqs, parse_destination(f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"))
    document = build_batch_failure_record(RECORDS, SOURCE, CTX, with_payload=False)
    await writer.deliver(Delivery(orjson.dumps(document)))
    await writer.deliver(Delivery(orjson.dumps(document)))  # the queue URL is looked up once
    bodies = _receive(sqs, url)
    assert [json.loads(b) for b in bodies] == [document, document]
    assert (
        json.loads(bodies[0])["KafkaBatchInfo"]["recordsInfo"]["orders-0"]["firstRecordOffset"]
        == "5"
    )


async def test_sns_destination_publishes_the_failure_record(aws: dict[str, Any]) -> None:
    sns, sqs = aws["sns"], aws["sqs"]
    topic_arn = sns.create_topic(Name=_name())["TopicArn"]
    queue = _name()
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}",
        Attributes={"RawMessageDelivery": "true"},
    )
    document = build_batch_failure_record(RECORDS, SOURCE, CTX, with_payload=False)
    await SnsWriter(sns, parse_destination(topic_arn)).deliver(Delivery(orjson.dumps(document)))
    assert [json.loads(b) for b in _receive(sqs, url)] == [document]


async def test_s3_destination_stores_the_record_with_the_payload(aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    bucket = _name()
    s3.create_bucket(Bucket=bucket)
    document = build_batch_failure_record(RECORDS, SOURCE, CTX, with_payload=True)
    key = s3_object_key("sub_1", "orders-0", CTX.failed_at_ms)
    writer = S3Writer(s3, parse_destination(f"arn:aws:s3:::{bucket}"))
    await writer.deliver(Delivery(orjson.dumps(document), s3_key=key))
    stored = s3.get_object(Bucket=bucket, Key=key)
    assert json.loads(stored["Body"].read()) == document
    assert stored["ContentType"] == "application/json"
    assert json.loads(document["payload"])["records"]["orders-0"][0]["offset"] == 5


async def test_errors_are_translated_and_say_whether_to_retry(
    aws: dict[str, Any], moto_server: MotoServer
) -> None:
    missing_queue = SqsWriter(
        aws["sqs"], parse_destination(f"arn:aws:sqs:us-east-1:{ACCOUNT}:nope")
    )
    with pytest.raises(DestinationError) as caught:
        await missing_queue.deliver(Delivery(b"{}"))
    assert caught.value.retryable is False
    assert f"arn:aws:sqs:us-east-1:{ACCOUNT}:nope" in str(caught.value)

    missing_bucket = S3Writer(aws["s3"], parse_destination(f"arn:aws:s3:::{_name()}"))
    with pytest.raises(DestinationError, match="NoSuchBucket") as caught:
        await missing_bucket.deliver(Delivery(b"{}", s3_key="k"))
    assert caught.value.retryable is False

    # Nothing listens on this port: a network failure, worth retrying.
    unreachable = _client("sns", "http://127.0.0.1:9")
    try:
        writer = SnsWriter(unreachable, parse_destination(f"arn:aws:sns:us-east-1:{ACCOUNT}:t"))
        with pytest.raises(DestinationError) as caught:
            await asyncio.wait_for(writer.deliver(Delivery(b"{}")), WAIT)
        assert caught.value.retryable is True
    finally:
        unreachable.close()


async def test_kafka_topic_destination_keeps_the_key(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory()
    record = RECORDS[0]
    document = build_kafka_failure_record(record, SOURCE, CTX)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await asyncio.wait_for(producer.start(), WAIT)
    try:
        writer = KafkaTopicWriter(producer, parse_destination(f"kafka://{topic}"))
        await asyncio.wait_for(
            writer.deliver(Delivery(orjson.dumps(document), kafka_key=record.key)), WAIT
        )
    finally:
        await producer.stop()
    message = await _first_message(kafka_bootstrap, topic)
    assert message.key == b"acct-1"
    assert message.value is not None
    assert json.loads(message.value) == document
    assert json.loads(message.value)["payload"]["records"]["orders-0"][0]["key"] == "YWNjdC0x"


async def test_a_failure_record_too_large_for_its_topic_goes_without_the_payload(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(config={"max.message.bytes": str(64 * 1024)})
    big = KafkaRecord("orders", 0, 9, b"acct-1", b'{"v": "' + b"x" * 100_000 + b'"}', 1_700_000)
    document = build_kafka_failure_record(big, SOURCE, CTX)
    body = orjson.dumps(document)
    del document["payload"]
    document["payloadOmitted"] = "too large"
    producer = DeadLetterProducer(bootstrap_servers=kafka_bootstrap)
    destination = FailureDestinations(endpoint_url=None, region="us-east-1").build(
        parse_destination(f"kafka://{topic}"), producer
    )
    try:
        # As shipped: the cluster's shared producer, which reports the broker's refusal.
        delivery = Delivery(body, kafka_key=big.key, without_payload=orjson.dumps(document))
        await asyncio.wait_for(destination.writer.deliver(delivery), WAIT)
    finally:
        await producer.stop()
    message = await _first_message(kafka_bootstrap, topic)
    assert message.key == b"acct-1"
    assert message.value is not None
    assert json.loads(message.value) == document


async def _first_message(bootstrap: str, topic: str) -> Any:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await asyncio.wait_for(consumer.start(), WAIT)
    try:
        return await asyncio.wait_for(consumer.getone(), WAIT)
    finally:
        await consumer.stop()
