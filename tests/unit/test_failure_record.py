"""Golden tests: AWS's failure (invocation) records for Kafka event sources."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from adapter.errors import ConfigError, DestinationError
from adapter.invokers.destinations import (
    Delivery,
    DestinationKind,
    SnsWriter,
    parse_destination,
    s3_object_key,
)
from adapter.invokers.failure_record import (
    FailureCondition,
    FailureContext,
    build_batch_failure_record,
    build_kafka_failure_record,
    iso_millis,
)
from adapter.invokers.kafka_event import EventSource, build_kafka_event
from adapter.model import KafkaRecord

MSK_ARN = (
    "arn:aws:kafka:us-east-1:123456789012:cluster/vpc-2priv-2pub/"
    "751d2973-a626-431c-9d4e-d7975eb44dd7-2"
)

# docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html, "SNS and SQS example invocation
# record" (its placeholder offsets are replaced by Kafka offsets; "..." by the servers).
AWS_SQS_EXAMPLE: dict[str, Any] = {
    "requestContext": {
        "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 1,
    },
    "responseContext": {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    },
    "version": "1.0",
    "timestamp": "2019-11-14T00:38:06.021Z",
    "KafkaBatchInfo": {
        "batchSize": 4,
        "eventSourceArn": MSK_ARN,
        "bootstrapServers": "b-1:9092,b-2:9092",
        "payloadSize": 0,  # compared separately: the size of the event we built
        "recordsInfo": {
            "Topic-0": {
                "firstRecordOffset": "100",
                "lastRecordOffset": "101",
                "firstRecordTimestamp": "2019-11-14T00:38:04.835Z",
                "lastRecordTimestamp": "2019-11-14T00:38:05.580Z",
            },
            "Topic-1": {
                "firstRecordOffset": "7",
                "lastRecordOffset": "8",
                "firstRecordTimestamp": "2019-11-14T00:38:04.835Z",
                "lastRecordTimestamp": "2019-11-14T00:38:05.580Z",
            },
        },
    },
}

FIRST_MS, LAST_MS, FAILED_MS = 1573691884835, 1573691885580, 1573691886021
RECORDS = [
    KafkaRecord("Topic", 0, 100, b"k", b"a", FIRST_MS),
    KafkaRecord("Topic", 0, 101, b"k", b"b", LAST_MS),
    KafkaRecord("Topic", 1, 7, None, b"c", FIRST_MS),
    KafkaRecord("Topic", 1, 8, None, None, LAST_MS),
]
SOURCE = EventSource(bootstrap_servers=["b-1:9092", "b-2:9092"], msk_cluster_arn=MSK_ARN)
CTX = FailureContext(
    request_id="316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
    function_arn="arn:aws:lambda:us-east-1:123456789012:function:myfunction",
    condition=FailureCondition.RETRY_ATTEMPTS_EXHAUSTED,
    approximate_invoke_count=1,
    failed_at_ms=FAILED_MS,
)


def _same_shape(got: Any, want: Any, path: str = "") -> None:
    """Same keys in the same order, recursively, and equal leaves (payloadSize aside)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        assert list(got) == list(want), path
        for name in want:
            if name != "payloadSize":
                _same_shape(got[name], want[name], f"{path}.{name}")
    else:
        assert got == want, path


def test_sqs_and_sns_record_matches_aws_example() -> None:
    record = build_batch_failure_record(RECORDS, SOURCE, CTX, with_payload=False)
    _same_shape(record, AWS_SQS_EXAMPLE)
    event = build_kafka_event(RECORDS, SOURCE)
    assert record["KafkaBatchInfo"]["payloadSize"] == len(orjson.dumps(event))
    assert "payload" not in record


def test_s3_record_adds_the_whole_event_as_a_json_string() -> None:
    record = build_batch_failure_record(RECORDS, SOURCE, CTX, with_payload=True)
    assert list(record) == [*AWS_SQS_EXAMPLE, "payload"]
    assert isinstance(record["payload"], str)
    assert json.loads(record["payload"]) == build_kafka_event(RECORDS, SOURCE)


def test_self_managed_has_no_event_source_arn() -> None:
    source = EventSource(bootstrap_servers=["h:9092"])
    info = build_batch_failure_record(RECORDS, source, CTX, with_payload=False)["KafkaBatchInfo"]
    assert "eventSourceArn" not in info
    assert info["bootstrapServers"] == "h:9092"


def test_response_context_when_the_function_never_ran_or_answered_partially() -> None:
    never = FailureContext(
        request_id="r",
        function_arn="f",
        condition=FailureCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED,
        approximate_invoke_count=0,
        failed_at_ms=FAILED_MS,
        status_code=None,
    )
    assert (
        build_batch_failure_record(RECORDS, SOURCE, never, with_payload=False)["responseContext"]
        is None
    )
    partial = FailureContext(
        request_id="r",
        function_arn="f",
        condition=FailureCondition.RETRY_ATTEMPTS_EXHAUSTED,
        approximate_invoke_count=3,
        failed_at_ms=FAILED_MS,
        function_error=None,
    )
    response = build_batch_failure_record(RECORDS, SOURCE, partial, with_payload=False)[
        "responseContext"
    ]
    assert response == {"statusCode": 200, "executedVersion": "$LATEST"}


# docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure-destination.html, "Failure metadata"
# (its recordInfo shows a placeholder offset and a timestamp unrelated to the record; here
# both are the record's own).
AWS_KAFKA_EXAMPLE: dict[str, Any] = {
    "requestContext": {
        "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:my-function:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    },
    "responseContext": {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    },
    "version": "1.0",
    "timestamp": "2019-11-14T18:16:05.568Z",
    "KafkaBatchInfo": {
        "batchSize": 1,
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123",
        "bootstrapServers": "b-1.mycluster.abc123.kafka.us-east-1.amazonaws.com:9098",
        "payloadSize": 0,
        "recordInfo": {"offset": "100", "timestamp": "2025-06-05T09:44:52.330Z"},
    },
    "payload": {
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123",
        "bootstrapServers": "b-1.mycluster.abc123.kafka.us-east-1.amazonaws.com:9098",
        "records": {
            "my-topic-0": [
                {
                    "topic": "my-topic",
                    "partition": 0,
                    "offset": 100,
                    "timestamp": 1749116692330,
                    "timestampType": "CREATE_TIME",
                    "key": "dGVzdC1rZXk=",
                    "value": "dGVzdC12YWx1ZQ==",
                    "headers": [],
                }
            ]
        },
    },
}


def test_kafka_destination_record_matches_aws_example() -> None:
    source = EventSource(
        bootstrap_servers=["b-1.mycluster.abc123.kafka.us-east-1.amazonaws.com:9098"],
        msk_cluster_arn="arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123",
    )
    ctx = FailureContext(
        request_id="e4b46cbf-b738-xmpl-8880-a18cdf61200e",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:my-function:$LATEST",
        condition=FailureCondition.RETRY_ATTEMPTS_EXHAUSTED,
        approximate_invoke_count=3,
        failed_at_ms=1573755365568,
    )
    record = KafkaRecord("my-topic", 0, 100, b"test-key", b"test-value", 1749116692330)
    built = build_kafka_failure_record(record, source, ctx)
    _same_shape(built, AWS_KAFKA_EXAMPLE)
    assert built["KafkaBatchInfo"]["payloadSize"] == len(orjson.dumps(built["payload"]))


def test_iso_millis() -> None:
    assert iso_millis(1573691886021) == "2019-11-14T00:38:06.021Z"
    assert iso_millis(0) == "1970-01-01T00:00:00.000Z"
    assert iso_millis(1573691886000) == "2019-11-14T00:38:06.000Z"


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        build_batch_failure_record([], SOURCE, CTX, with_payload=False)


# --------------------------------------------------------------------------------------------
# Destination names, as DestinationConfig.OnFailure.Destination takes them


def test_destinations_parse_from_aws_arns_and_kafka_uris() -> None:
    sqs = parse_destination("arn:aws:sqs:us-east-1:123456789012:dest-queue")
    assert (sqs.kind, sqs.name, sqs.region, sqs.account) == (
        DestinationKind.SQS,
        "dest-queue",
        "us-east-1",
        "123456789012",
    )
    sns = parse_destination("arn:aws:sns:eu-west-1:123456789012:failures")
    assert (sns.kind, sns.name, sns.arn) == (
        DestinationKind.SNS,
        "failures",
        "arn:aws:sns:eu-west-1:123456789012:failures",
    )
    s3 = parse_destination("arn:aws:s3:::dest-bucket")
    assert (s3.kind, s3.name, s3.region, s3.account) == (
        DestinationKind.S3,
        "dest-bucket",
        None,
        None,
    )
    kafka = parse_destination("kafka://failed-records-topic")
    assert (kafka.kind, kafka.name) == (DestinationKind.KAFKA, "failed-records-topic")
    assert parse_destination("arn:aws-cn:sqs:cn-north-1:123456789012:q").kind is DestinationKind.SQS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sqs://queue", "expected an SQS queue"),
        ("arn:aws:lambda:us-east-1:123456789012:function:f", "expected an SQS queue"),
        ("arn:aws:sqs:::q", "has a region and an account"),
        ("arn:aws:s3:us-east-1:123456789012:b", "has no region or account"),
        ("kafka://", "not a Kafka topic name"),
        ("kafka://__consumer_offsets", "not a Kafka topic name"),
        ("kafka://a b", "not a Kafka topic name"),
    ],
)
def test_bad_destinations_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_destination(text)


def test_s3_object_key_follows_aws_layout() -> None:
    key = s3_object_key("sub_1", "orders-0", 1573691886021, "u-1")
    assert key == "aws/lambda/sub_1/orders-0/2019/11/14/2019-11-14T00.38.06-u-1"


class _RefusingSns:
    """An SNS client stand-in whose Publish fails with a given error (pure unit test)."""

    def __init__(self, code: str, status: int) -> None:
        self.error = ClientError(
            {
                "Error": {"Code": code, "Message": "no"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "Publish",
        )

    def publish(self, **_: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("ThrottlingException", 400, True),
        ("Throttling", 400, True),
        ("InternalError", 500, True),
        ("Whatever", 503, True),
        ("TooMany", 429, True),
        ("AuthorizationError", 403, False),
        ("NotFound", 404, False),
        ("InvalidParameter", 400, False),
    ],
)
async def test_client_errors_say_whether_a_retry_may_help(
    code: str, status: int, retryable: bool
) -> None:
    writer = SnsWriter(
        _RefusingSns(code, status), parse_destination("arn:aws:sns:us-east-1:123456789012:t")
    )
    with pytest.raises(DestinationError) as caught:
        await writer.deliver(Delivery(b"{}"))
    assert caught.value.retryable is retryable
    assert str(caught.value) == f"SNS arn:aws:sns:us-east-1:123456789012:t: {code}: no"
    assert isinstance(caught.value.__cause__, ClientError)
