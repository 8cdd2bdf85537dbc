"""``GET /invocations/{id}/record``: the Kafka record behind an invocation, as a preview.

The ledger keeps outcomes, not records, so the record is read again from its topic at the
invocation's coordinates by a consumer outside every group (manual assignment, no commits): the
subscription's group and offsets are untouched. The answer is bounded and masked: the value's
first :data:`PREVIEW_BYTES` bytes (UTF-8 text, else base64), header values at most
:data:`HEADER_CHARS` characters, and secrets masked in both (:func:`adapter.masking.mask_secrets`:
known secret values, URI credentials, secret-named fields such as ``"password": ...``, and
header values whose name names a secret). A record retention or compaction removed, or a topic
deleted and created again since, is a 404: the record is not there any more.

:func:`preview` is pure; :func:`read_record` is the Kafka I/O (aiokafka errors become
:class:`~adapter.errors.KafkaError`, a 503).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from adapter.api.endpoint import AdminState, Endpoint, json_response
from adapter.api.invocations import paged_success
from adapter.api.refs import check_invocation_id
from adapter.api.wire import rfc3339
from adapter.errors import KafkaError, UnknownResourceError
from adapter.kafka.options import ClientOptions
from adapter.kafka.security import consumer_security_kwargs
from adapter.kafka.topics import describe_topics
from adapter.masking import MASK, mask_secrets
from adapter.model import topic_name

__all__ = ["ENDPOINTS", "PREVIEW_BYTES", "RecordPreview", "preview", "read_record"]

PREVIEW_BYTES = 4096
HEADER_CHARS = 256
READ_TIMEOUT_S = 10.0


class PreviewHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    value: str


class RecordPreview(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str
    partition: int
    offset: int
    timestamp: str | None
    key: str | None
    headers: list[PreviewHeader]
    value_bytes: int
    """The whole value's size; ``preview`` holds at most its first PREVIEW_BYTES."""
    preview: str | None
    encoding: Literal["utf-8", "base64"]
    truncated: bool


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _text(data: bytes) -> str | None:
    """``data`` as UTF-8, allowing one character cut at the end by the size cap."""
    for cut in range(4):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _masked_header(name: str, value: bytes) -> PreviewHeader:
    shown = value.decode("utf-8", errors="replace")[:HEADER_CHARS]
    # As a name=value pair, so a secret-named header loses its value as a field would.
    masked = mask_secrets(f"{name}={shown}")
    prefix = f"{name}="
    return PreviewHeader(
        name=name, value=masked[len(prefix) :] if masked.startswith(prefix) else MASK
    )


def preview(record: RawRecord) -> RecordPreview:
    value = record.value or b""
    head = value[:PREVIEW_BYTES]
    text = _text(head)
    key = _text(record.key) if record.key is not None else None
    return RecordPreview(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=rfc3339(record.timestamp_ms) if record.timestamp_ms is not None else None,
        key=mask_secrets(key) if key is not None else None,
        headers=[_masked_header(name, raw) for name, raw in record.headers],
        value_bytes=len(value),
        preview=None
        if record.value is None
        else mask_secrets(text)
        if text is not None
        else base64.b64encode(head).decode(),
        encoding="utf-8" if text is not None else "base64",
        truncated=len(value) > PREVIEW_BYTES,
    )


async def read_record(
    options: ClientOptions, topic: str, topic_id: str | None, partition: int, offset: int
) -> RawRecord | None:
    """The record at ``offset``, or None when it is gone (retention, compaction, a topic
    created again under the same name)."""
    kwargs = dict(options.consumer_kwargs)
    kwargs.update(consumer_security_kwargs(options.security))
    # Outside the subscription's group: nothing joins it, nothing is committed.
    kwargs.update(group_id=None, enable_auto_commit=False, auto_offset_reset="none")
    consumer = AIOKafkaConsumer(**kwargs)
    tp = TopicPartition(topic, partition)
    try:
        await consumer.start()
        info = (await describe_topics(consumer._client, [topic])).get(topic)
        if info is None or partition >= info.partitions or (topic_id and info.topic_id != topic_id):
            return None
        first, end = await consumer.beginning_offsets([tp]), await consumer.end_offsets([tp])
        if not first[tp] <= offset < end[tp]:
            return None
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=int(READ_TIMEOUT_S * 1000), max_records=1)
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot read {topic}/{partition} at offset {offset}: {exc}") from exc
    finally:
        await consumer.stop()
    found = [r for r in batch.get(tp, []) if r.offset == offset]
    if not found:
        return None  # compacted away: the next record has a later offset
    record = found[0]
    return RawRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=record.timestamp if record.timestamp is not None else None,
        key=record.key,
        value=record.value,
        headers=[(str(n), bytes(v or b"")) for n, v in record.headers or ()],
    )


async def get_record(request: Request, state: AdminState) -> Response:
    inv_id = check_invocation_id(request.path_params["invocation_id"])
    entry = await state.store.get_entry(inv_id) or await paged_success(state, inv_id)
    if entry is None:
        raise UnknownResourceError(f"invocation {inv_id} is not in the ledger")
    sub = await state.store.get_subscription(entry.subscription_id)
    if sub is None:
        raise UnknownResourceError(f"invocation {inv_id}: its subscription no longer exists")
    options = await state.client_options(sub.cluster, sub.id)
    # The ledger keys the topic as name@topic-id: the ID tells a re-created topic apart.
    name, topic_id = topic_name(entry.topic), entry.topic.partition("@")[2] or None
    record = await read_record(options, name, topic_id, entry.partition, entry.offset)
    if record is None:
        raise UnknownResourceError(
            f"the record of invocation {inv_id} ({name}/{entry.partition} at offset "
            f"{entry.offset}) is no longer in the topic (retention, compaction, or the topic "
            "was created again)"
        )
    return json_response(preview(record))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/invocations/{invocation_id}/record",
        get_record,
        "get_invocation_record",
        "The invocation's Kafka record: headers and a size-capped, masked value preview",
        "invocation",
        {200: RecordPreview, 400: None, 404: None, 503: None},
    ),
]
