"""AWS's invocation record for a Kafka batch that failed for good (on-failure destinations).

Pure: the discarded records, the cluster and what happened in; the JSON document out.
Sources: docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html ("SNS and SQS example
invocation record", "S3 destination example invocation record") and
".../kafka-on-failure-destination.html" ("Record format for a Kafka destination").

SQS, SNS and S3 get one document per discarded batch::

    {"requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "responseContext": {"statusCode", "executedVersion", "functionError"} | null,
     "version": "1.0", "timestamp": "2019-11-14T00:38:06.021Z",
     "KafkaBatchInfo": {"batchSize", "eventSourceArn" (MSK only), "bootstrapServers",
                        "payloadSize", "recordsInfo": {"<topic>-<partition>": {
                            "firstRecordOffset", "lastRecordOffset",
                            "firstRecordTimestamp", "lastRecordTimestamp"}}},
     "payload": "<the whole event as a JSON string>"}            (S3 only)

A Kafka topic gets one message per record, keyed by the record's key, with
``KafkaBatchInfo.recordInfo`` ``{"offset", "timestamp"}`` and ``payload`` the one-record event
as an object. Offsets are strings, timestamps ISO 8601 UTC with milliseconds, as in AWS's
examples. ``responseContext`` is null when the function was never called
(``MaximumPayloadSizeExceeded``, and here also ``RecordAgeExceeded`` before any call);
``functionError`` is left out when the function answered without one (a partial response).

AWS's examples spell the retry condition ``RetryAttemptsExhausted`` (SQS/SNS/S3 page) and
``RetriesExhausted`` (Kafka destination page); both pages are followed. The age condition is
``RecordAgeExceeded``, the name AWS's stream event sources use.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from adapter.invokers.kafka_event import EventSource, build_kafka_event, partition_key
from adapter.model import KafkaRecord

__all__ = [
    "FailureCondition",
    "FailureContext",
    "build_batch_failure_record",
    "build_kafka_failure_record",
    "iso_millis",
]


class FailureCondition(enum.StrEnum):
    RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
    RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
    MAXIMUM_PAYLOAD_SIZE_EXCEEDED = "MaximumPayloadSizeExceeded"


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureContext:
    """What happened to the batch. ``status_code=None`` = the function was never called."""

    request_id: str
    function_arn: str
    condition: FailureCondition
    approximate_invoke_count: int
    failed_at_ms: int
    status_code: int | None = 200
    executed_version: str = "$LATEST"
    function_error: str | None = "Unhandled"


def iso_millis(epoch_ms: int) -> str:
    """``2019-11-14T00:38:06.021Z``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _contexts(ctx: FailureContext, condition: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] | None = None
    if ctx.status_code is not None:
        response = {"statusCode": ctx.status_code, "executedVersion": ctx.executed_version}
        if ctx.function_error:
            response["functionError"] = ctx.function_error
    return {
        "requestContext": {
            "requestId": ctx.request_id,
            "functionArn": ctx.function_arn,
            "condition": condition or str(ctx.condition),
            "approximateInvokeCount": ctx.approximate_invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": iso_millis(ctx.failed_at_ms),
    }


def _batch_info(source: EventSource, size: int, payload_size: int) -> dict[str, Any]:
    info: dict[str, Any] = {"batchSize": size}
    if source.msk_cluster_arn:
        info["eventSourceArn"] = source.msk_cluster_arn
    info["bootstrapServers"] = ",".join(source.bootstrap_servers)
    info["payloadSize"] = payload_size
    return info


def build_batch_failure_record(
    records: Sequence[KafkaRecord],
    source: EventSource,
    ctx: FailureContext,
    *,
    with_payload: bool,
) -> dict[str, Any]:
    """The SQS/SNS document, or the S3 one (``with_payload``: the event as a JSON string)."""
    if not records:
        raise ValueError("a failure record describes at least one record")
    event = orjson.dumps(build_kafka_event(records, source))
    by_partition: dict[str, list[KafkaRecord]] = {}
    for record in records:
        by_partition.setdefault(partition_key(record.topic, record.partition), []).append(record)
    info = _batch_info(source, len(records), len(event))
    info["recordsInfo"] = {
        tp: {
            "firstRecordOffset": str(first.offset),
            "lastRecordOffset": str(last.offset),
            "firstRecordTimestamp": iso_millis(first.timestamp_ms),
            "lastRecordTimestamp": iso_millis(last.timestamp_ms),
        }
        for tp, group in by_partition.items()
        for first, last in [(min(group, key=_offset), max(group, key=_offset))]
    }
    document = _contexts(ctx)
    document["KafkaBatchInfo"] = info
    if with_payload:
        document["payload"] = event.decode("utf-8")
    return document


def build_kafka_failure_record(
    record: KafkaRecord, source: EventSource, ctx: FailureContext
) -> dict[str, Any]:
    """The message for a Kafka topic destination: one record, its event as ``payload``."""
    event = build_kafka_event([record], source)
    info = _batch_info(source, 1, len(orjson.dumps(event)))
    info["recordInfo"] = {
        "offset": str(record.offset),
        "timestamp": iso_millis(record.timestamp_ms),
    }
    # The Kafka destination page spells the retry condition "RetriesExhausted".
    condition = (
        "RetriesExhausted" if ctx.condition is FailureCondition.RETRY_ATTEMPTS_EXHAUSTED else None
    )
    document = _contexts(ctx, condition)
    document["KafkaBatchInfo"] = info
    document["payload"] = event
    return document


def _offset(record: KafkaRecord) -> int:
    return record.offset
