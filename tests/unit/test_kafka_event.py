"""Golden tests: the Kafka event we build against AWS's documented example events."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEvent
from aws_lambda_powertools.utilities.kafka import ConsumerRecords, SchemaConfig, kafka_consumer
from hypothesis import given
from hypothesis import strategies as st

from adapter.invokers.kafka_event import EventSource, build_kafka_event, event_record
from adapter.model import KafkaRecord

_AWS_ARN = (
    "arn:aws:kafka:us-east-1:123456789012:cluster/vpc-2priv-2pub/"
    "751d2973-a626-431c-9d4e-d7975eb44dd7-2"
)
_AWS_SERVERS = (
    "b-2.demo-cluster-1.a1bcde.c1.kafka.us-east-1.amazonaws.com:9092,"
    "b-1.demo-cluster-1.a1bcde.c1.kafka.us-east-1.amazonaws.com:9092"
)


def _example(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        text.replace("$ARN", _AWS_ARN).replace("$SERVERS", _AWS_SERVERS)
    )
    return loaded


# docs.aws.amazon.com/lambda/latest/dg/with-msk.html, "Example event" (also Powertools'
# tests/events/kafkaEventMsk.json, which has the same fields with a decodable key).
AWS_MSK_EXAMPLE = _example(
    """{
  "eventSource": "aws:kafka",
  "eventSourceArn": "$ARN",
  "bootstrapServers": "$SERVERS",
  "records": {
    "mytopic-0": [
      {
        "topic": "mytopic",
        "partition": 0,
        "offset": 15,
        "timestamp": 1545084650987,
        "timestampType": "CREATE_TIME",
        "key": "cmVjb3JkS2V5",
        "value": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
        "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}]
      }
    ]
  }
}"""
)

# docs.aws.amazon.com/lambda/latest/dg/with-kafka.html, "Example event".
AWS_SELF_MANAGED_EXAMPLE = _example(
    """{
  "eventSource": "SelfManagedKafka",
  "bootstrapServers": "$SERVERS",
  "records": {
    "mytopic-0": [
      {
        "topic": "mytopic",
        "partition": 0,
        "offset": 15,
        "timestamp": 1545084650987,
        "timestampType": "CREATE_TIME",
        "key": "cmVjb3JkS2V5",
        "value": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
        "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}]
      }
    ]
  }
}"""
)
# AWS's page shows the key as the placeholder "abcDEFghiJKLmnoPQRstuVWXyz1234==", which is not
# canonical base64 of any bytes; the key above is Powertools' ("recordKey").

BROKERS = _AWS_SERVERS.split(",")
ARN = AWS_MSK_EXAMPLE["eventSourceArn"]

RECORD = KafkaRecord(
    topic="mytopic",
    partition=0,
    offset=15,
    key=b"recordKey",
    value=b"Hello, this is a test.",
    timestamp_ms=1545084650987,
    headers=(("headerKey", b"headerValue"),),
)


def _assert_field_by_field(built: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(built) == list(expected)  # same top-level fields, in AWS's order
    for name in expected:
        if name != "records":
            assert built[name] == expected[name], name
    assert list(built["records"]) == list(expected["records"])
    for tp, records in expected["records"].items():
        assert len(built["records"][tp]) == len(records)
        for got, want in zip(built["records"][tp], records, strict=True):
            assert list(got) == list(want)
            for field in want:
                assert got[field] == want[field], f"{tp}.{field}"


def test_msk_event_matches_aws_documented_example_field_by_field() -> None:
    event = build_kafka_event([RECORD], EventSource(bootstrap_servers=BROKERS, msk_cluster_arn=ARN))
    _assert_field_by_field(event, AWS_MSK_EXAMPLE)
    # And byte for byte once serialised the way the invoker sends it.
    assert orjson.loads(orjson.dumps(event)) == AWS_MSK_EXAMPLE


def test_self_managed_event_matches_aws_documented_example_field_by_field() -> None:
    event = build_kafka_event([RECORD], EventSource(bootstrap_servers=BROKERS))
    _assert_field_by_field(event, AWS_SELF_MANAGED_EXAMPLE)
    assert "eventSourceArn" not in event


def test_timestamp_type_is_the_records_own() -> None:
    appended = KafkaRecord("t", 0, 1, None, b"v", 5, timestamp_type="LOG_APPEND_TIME")
    assert event_record(appended)["timestampType"] == "LOG_APPEND_TIME"
    assert event_record(RECORD)["timestampType"] == "CREATE_TIME"


def test_headers_repeated_names_and_null_values_as_aws_sends_them() -> None:
    record = KafkaRecord(
        "t", 0, 1, None, b"v", 5, headers=(("a", b"1"), ("a", b"2"), ("gone", None), ("e", b""))
    )
    # One object per header in record order; a null value is {} (the name is not sent).
    assert event_record(record)["headers"] == [{"a": [49]}, {"a": [50]}, {}, {"e": []}]


def test_tombstone_and_null_key() -> None:
    item = event_record(KafkaRecord("t", 3, 9, None, None, 5))
    assert "key" not in item
    assert item["value"] is None
    assert list(item) == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestampType",
        "value",
        "headers",
    ]
    empty = event_record(KafkaRecord("t", 3, 9, b"", b"", 5))
    assert (empty["key"], empty["value"]) == ("", "")  # empty is not null


def test_records_are_grouped_by_topic_partition_in_the_order_given() -> None:
    records = [
        KafkaRecord("orders", 1, 7, None, b"a", 1),
        KafkaRecord("orders", 0, 3, None, b"b", 1),
        KafkaRecord("orders", 1, 8, None, b"c", 1),
        KafkaRecord("orders-1", 0, 1, None, b"d", 1),
    ]
    event = build_kafka_event(records, EventSource(bootstrap_servers=["h:9092"]))
    assert list(event["records"]) == ["orders-1", "orders-0", "orders-1-0"]
    assert [r["offset"] for r in event["records"]["orders-1"]] == [7, 8]
    assert "kafkaIngress" not in event


def test_our_metadata_only_when_opted_in() -> None:
    source = EventSource(bootstrap_servers=["h:9092"])
    assert "kafkaIngress" not in build_kafka_event([RECORD], source)
    ext = build_kafka_event([RECORD], source, extension={"version": 1})
    assert ext["kafkaIngress"] == {"version": 1}


def test_powertools_reads_our_event() -> None:
    """Powertools' data class and its @kafka_consumer records read what we build."""
    record = KafkaRecord(
        "t", 0, 1, b"k", b'{"a": 1}', 5, headers=(("h", b"x"), ("n", None), ("h", b"y"))
    )
    built = build_kafka_event([record], EventSource(bootstrap_servers=["h:9092"]))
    (got,) = list(KafkaEvent(built).records)
    assert got.decoded_key == b"k"
    assert got.json_value == {"a": 1}
    assert got.decoded_headers["h"] == b"y"
    assert got.timestamp_type == "CREATE_TIME"
    (consumed,) = list(ConsumerRecords(built).records)
    assert consumed.value == '{"a": 1}'  # no schema: the decoded text
    tombstone = build_kafka_event(
        [KafkaRecord("t", 0, 2, b"k", None, 5)], EventSource(bootstrap_servers=[])
    )
    (gone,) = list(ConsumerRecords(tombstone).records)
    assert gone.original_value is None


@given(
    key=st.none() | st.binary(max_size=32),
    value=st.none() | st.binary(max_size=64),
    headers=st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.none() | st.binary(max_size=8)), max_size=4
    ),
)
def test_every_record_round_trips_through_the_event(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    record = KafkaRecord("t", 2, 4, key, value, 9, headers=tuple(headers))
    item = orjson.loads(orjson.dumps(event_record(record)))
    assert (base64.b64decode(item["key"]) if "key" in item else None) == key
    assert (base64.b64decode(item["value"]) if item["value"] is not None else None) == value
    decoded = [next(iter(h.items()), (None, None)) for h in item["headers"]]
    assert [(n, bytes(v)) for n, v in decoded if n is not None] == [
        (n, v) for n, v in headers if v is not None
    ]
    assert len(item["headers"]) == len(headers)


def test_powertools_kafka_consumer_with_a_json_schema_reads_our_event() -> None:
    @kafka_consumer(schema_config=SchemaConfig(value_schema_type="JSON"))
    def handler(event: ConsumerRecords, context: Any) -> list[Any]:
        return [
            (r.topic, r.partition, r.offset, r.key, r.value, dict(r.headers))
            if r.original_value is not None  # how a handler tells a tombstone
            else ("tombstone", r.offset)
            for r in event.records
        ]

    records = [
        KafkaRecord("t", 0, 1, b"k", b'{"a": 1}', 5, headers=(("h", b"x"), ("n", None))),
        KafkaRecord("t", 0, 2, b"k", None, 6),
    ]
    event = build_kafka_event(records, EventSource(bootstrap_servers=["h:9092"]))
    assert handler(event, None) == [
        ("t", 0, 1, "k", {"a": 1}, {"h": b"x"}),
        ("tombstone", 2),
    ]
