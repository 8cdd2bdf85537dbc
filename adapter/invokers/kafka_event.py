"""AWS's Lambda Kafka event, built from records exactly as AWS's event source mapping sends it.

Pure: records in, the event ``dict`` out. Sources for every field (read field by field; the
golden tests in ``tests/unit/test_kafka_event.py`` compare against these examples):

* docs.aws.amazon.com/lambda/latest/dg/with-msk.html, "Example event" (``aws:kafka``,
  ``eventSourceArn`` = the MSK cluster ARN, ``bootstrapServers`` comma-joined);
* docs.aws.amazon.com/lambda/latest/dg/with-kafka.html, "Example event" (``SelfManagedKafka``,
  no ``eventSourceArn``);
* Powertools for AWS Lambda (Python): ``utilities/data_classes/kafka_event.py``,
  ``utilities/parser/models/kafka.py``, ``utilities/kafka/consumer_records.py`` and their test
  events ``tests/events/kafkaEventMsk.json`` / ``kafkaEventSelfManaged.json``.

The shape, one record::

    {"eventSource": "aws:kafka", "eventSourceArn": "arn:aws:kafka:…", "bootstrapServers":
     "b-1:9092,b-2:9092", "records": {"mytopic-0": [{"topic": "mytopic", "partition": 0,
     "offset": 15, "timestamp": 1545084650987, "timestampType": "CREATE_TIME",
     "key": "<base64>", "value": "<base64>", "headers": [{"headerKey": [104, 101, …]}]}]}}

Details AWS's examples do not show, and where they come from:

* records are grouped under ``"<topic>-<partition>"`` in the order given (offset order);
* ``timestampType`` is the record's own (``CREATE_TIME`` or ``LOG_APPEND_TIME``);
* a null key leaves ``key`` out (AWS's filtering example record has none; Powertools reads it
  with ``.get("key")``);
* a tombstone (null value) is sent as ``"value": null`` (reported from real MSK triggers in
  aws-powertools/powertools-lambda-typescript#4988; a later report, #5016, saw the field
  missing). With ``null``, Python handlers can test ``record["value"] is None`` (Powertools:
  ``original_value is None``) where a missing field would raise ``KeyError``;
* headers are one object per header, in record order, so a repeated name appears twice; a
  header whose value is null is sent as ``{}`` (observed from AWS in Nike-Inc/hal#144);
  Powertools' ``decoded_headers`` reads both forms.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from adapter.model import KafkaRecord

__all__ = [
    "MSK_EVENT_SOURCE",
    "SELF_MANAGED_EVENT_SOURCE",
    "EventSource",
    "build_kafka_event",
    "envelope_bytes",
    "event_record",
    "partition_key",
]

MSK_EVENT_SOURCE = "aws:kafka"
SELF_MANAGED_EVENT_SOURCE = "SelfManagedKafka"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSource:
    """Where the records come from, as the event names it.

    ``bootstrap_servers`` are the cluster's brokers as ``host:port``; ``msk_cluster_arn`` (the
    cluster option ``msk.cluster.arn``) makes the event an MSK one.
    """

    bootstrap_servers: Sequence[str]
    msk_cluster_arn: str | None = None

    @property
    def name(self) -> Literal["aws:kafka", "SelfManagedKafka"]:
        return "aws:kafka" if self.msk_cluster_arn else "SelfManagedKafka"


_ENVELOPE_BYTES = 1024
"""A batch event's fixed part beyond its source's addresses and the handler's names: field
names, the event source's name, the records map's key (a topic name is at most 249
characters)."""


def envelope_bytes(source: EventSource | None, service: str = "", handler: str = "") -> int:
    """An upper bound of a batch event's bytes that belong to no record (the records' shares
    are :func:`adapter.invokers.aws_lambda.record_event_bytes`): its source's addresses, and
    the service and handler it names once (an ``ingress`` batch, the SDK's extension)."""
    size = _ENVELOPE_BYTES + len(orjson.dumps([service, handler]))
    if source is None:
        return size
    size += len(orjson.dumps(source.msk_cluster_arn or ""))
    return size + sum(len(server) + 1 for server in source.bootstrap_servers)


def partition_key(topic: str, partition: int) -> str:
    """AWS's key of a partition's records: ``"<topic>-<partition>"``."""
    return f"{topic}-{partition}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def event_record(record: KafkaRecord) -> dict[str, Any]:
    """One record as it appears in the event, fields in AWS's order."""
    item: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "timestampType": record.timestamp_type,
    }
    if record.key is not None:
        item["key"] = _b64(record.key)
    item["value"] = _b64(record.value) if record.value is not None else None
    item["headers"] = [
        {name: list(value)} if value is not None else {} for name, value in record.headers
    ]
    return item


def build_kafka_event(
    records: Sequence[KafkaRecord],
    source: EventSource,
    *,
    extension: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The event for ``records`` (one batch); ``extension`` adds ``kafkaIngress`` (opt-in)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(partition_key(record.topic, record.partition), []).append(
            event_record(record)
        )
    event: dict[str, Any] = {"eventSource": source.name}
    if source.msk_cluster_arn:
        event["eventSourceArn"] = source.msk_cluster_arn
    event["bootstrapServers"] = ",".join(source.bootstrap_servers)
    event["records"] = grouped
    if extension is not None:
        event["kafkaIngress"] = dict(extension)
    return event
