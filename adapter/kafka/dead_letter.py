"""Dead letters: the original record (key, value, headers) plus headers saying why it failed.

``dead_letter_headers`` and ``dead_letter_forms`` are pure; ``DeadLetterProducer`` is the thin
shell that produces to the subscription's dead-letter topic and waits for the broker's
acknowledgement, because the source offset may only be committed once the dead letter is
safely stored.

A dead letter too large to be written (for the producer's ``max_request_size``, or for the
topic's ``max.message.bytes``) fails the same way however often it is sent, so it is written
in a smaller form instead (``adapter.engine.dead_letters`` tries them in order). Each form
leaves out one more part of the source record, in this order::

    1. the whole record             key, value, the record's headers, ours
    2. without the value            the bulk of nearly every record that is too large
    3. ... and the record's headers ours stay: they say why, and where the original is
    4. ... and the key              last: it places the letter and names the entity

A reduced form names what it left out, with the original size in bytes of each part (of a
header: name and value), in ``x-kafka-ingress-omitted``: ``value=5000,headers=20``. The
``x-kafka-ingress-source-*`` headers locate the original in the source topic. A part the
record does not have (a null or empty value or key, no headers) is no step of its own, nor is
a step that would not make the letter smaller (a few bytes of headers, outweighed by the
longer note).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import (
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
)

from adapter.errors import KafkaError, KafkaRecordTooLargeError
from adapter.model import KafkaRecord

__all__ = [
    "ERROR_HEADER_PREFIX",
    "OMITTED_HEADER",
    "DeadLetter",
    "DeadLetterProducer",
    "dead_letter_forms",
    "dead_letter_headers",
]

ERROR_HEADER_PREFIX = "x-kafka-ingress-"
OMITTED_HEADER = f"{ERROR_HEADER_PREFIX}omitted"

# The names of our headers (dead_letter_headers, dead_letter_forms): a source header of one
# of these names is dropped.
_RESERVED = frozenset(
    ERROR_HEADER_PREFIX + name
    for name in (
        "error",
        "attempts",
        "invocation-id",
        "subscription-id",
        "source-topic",
        "source-partition",
        "source-offset",
        "source-timestamp",
        "failed-at",
        "omitted",
    )
)

# Error 10 (MESSAGE_TOO_LARGE; aiokafka raises it for its own max_request_size check too) and
# error 18 (RECORD_LIST_TOO_LARGE): the record, or the batch it went in, is too large.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


def dead_letter_headers(
    record: KafkaRecord,
    *,
    reason: str,
    attempts: int,
    invocation_id: str,
    subscription_id: str,
    failed_at_ms: int,
) -> list[tuple[str, bytes]]:
    """The record's own headers followed by ours; ours replace any same-named earlier ones."""
    ours = {
        f"{ERROR_HEADER_PREFIX}error": reason[:4000],
        f"{ERROR_HEADER_PREFIX}attempts": str(attempts),
        f"{ERROR_HEADER_PREFIX}invocation-id": invocation_id,
        f"{ERROR_HEADER_PREFIX}subscription-id": subscription_id,
        f"{ERROR_HEADER_PREFIX}source-topic": record.topic,
        f"{ERROR_HEADER_PREFIX}source-partition": str(record.partition),
        f"{ERROR_HEADER_PREFIX}source-offset": str(record.offset),
        f"{ERROR_HEADER_PREFIX}source-timestamp": str(record.timestamp_ms),
        f"{ERROR_HEADER_PREFIX}failed-at": str(failed_at_ms),
    }
    # A null header value is written as an empty one (the producer's header type is bytes).
    kept = [(k, v or b"") for k, v in record.headers if k not in _RESERVED]
    return kept + [(k, v.encode()) for k, v in ours.items()]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One form of a dead letter: ``record``'s key and value and ``headers`` are written."""

    record: KafkaRecord
    headers: list[tuple[str, bytes]]
    omitted: tuple[str, ...] = ()
    """The parts of the source record left out: ``value``, ``headers``, ``key``."""


def dead_letter_forms(record: KafkaRecord, headers: list[tuple[str, bytes]]) -> list[DeadLetter]:
    """The forms of ``record``'s dead letter, whole first, then each leaving out one more part
    (the order in the module docstring) and smaller than the one before: a step that would not
    shrink it (a few bytes of headers, outweighed by the longer omitted note) is no form of its
    own. ``headers``: :func:`dead_letter_headers`."""
    theirs = [(k, v) for k, v in headers if k not in _RESERVED]
    ours = [(k, v) for k, v in headers if k in _RESERVED and k != OMITTED_HEADER]
    sizes = {
        "value": len(record.value or b""),
        "headers": _size_of(theirs),
        "key": len(record.key or b""),
    }
    present = {"value": bool(record.value), "headers": bool(theirs), "key": bool(record.key)}
    forms = [DeadLetter(record, headers)]
    last_size = sizes["value"] + sizes["key"] + _size_of(headers)
    omitted: list[str] = []
    written, kept = record, theirs
    for part in ("value", "headers", "key"):
        if not present[part]:
            continue  # nothing to leave out
        omitted.append(part)
        if part == "value":
            written = dataclasses.replace(written, value=None)
        elif part == "headers":
            kept = []
        else:
            written = dataclasses.replace(written, key=None)
        note = ",".join(f"{name}={sizes[name]}" for name in omitted).encode()
        form_headers = [*kept, *ours, (OMITTED_HEADER, note)]
        size = len(written.key or b"") + _size_of(form_headers)
        if size < last_size:
            forms.append(DeadLetter(written, form_headers, tuple(omitted)))
            last_size = size
    return forms


def _size_of(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(k.encode()) + len(v) for k, v in headers)


class DeadLetterProducer:
    """An idempotent producer shared by the subscriptions of one poller on one cluster.

    Its failures name the *dead-letter* topic: the producer's tasks run outside any
    subscription consumer's connection watch (``adapter.kafka.errors``), so a missing
    dead-letter topic is never reported as the source topic missing, and a send first checks
    (within ``metadata_timeout_s``) that the topic exists instead of waiting out the client's
    request timeout. A dead letter too large for the client or the topic raises
    :class:`~adapter.errors.KafkaRecordTooLargeError`; after the broker's refusal the aiokafka
    producer is replaced (see :meth:`send`).
    """

    def __init__(self, *, metadata_timeout_s: float = 5.0, **producer_kwargs: Any) -> None:
        self._metadata_timeout_s = metadata_timeout_s
        self._kwargs = {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            **producer_kwargs,
        }
        self._producer: AIOKafkaProducer | None = None
        # Many failing records may need the producer at once; only one may create it.
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(**self._kwargs)
            try:
                # A fresh context: the producer's background tasks inherit it, and must not
                # report to the watch of whichever consumer happened to need it first.
                await asyncio.create_task(producer.start(), context=contextvars.Context())
            except AIOKafkaError as exc:
                await producer.stop()
                raise KafkaError(f"dead-letter producer cannot connect: {exc}") from exc
            self._producer = producer

    async def send(self, topic: str, record: KafkaRecord, headers: list[tuple[str, bytes]]) -> None:
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        try:
            await asyncio.wait_for(producer.partitions_for(topic), self._metadata_timeout_s)
        except (AIOKafkaError, TimeoutError) as exc:
            raise KafkaError(
                f"dead-letter topic {topic!r} does not exist or cannot be reached "
                f"({exc or 'no metadata within ' + str(self._metadata_timeout_s) + 's'}); "
                "the failed record stays uncommitted until its dead letter is stored"
            ) from exc
        try:
            sent = await producer.send(topic, value=record.value, key=record.key, headers=headers)
        except _TOO_LARGE as exc:
            # aiokafka's own check, before anything was sent.
            raise KafkaRecordTooLargeError(
                f"dead letter too large for the producer (message.max.bytes): {exc}"
            ) from exc
        except AIOKafkaError as exc:
            raise KafkaError(f"cannot write dead letter to topic {topic!r}: {exc}") from exc
        try:
            await sent
        except _TOO_LARGE as exc:
            # The refused batch had taken its sequence numbers, which the broker never saw:
            # every later send of this idempotent producer to the partition would fail with
            # OUT_OF_ORDER_SEQUENCE_NUMBER. A new producer (a new producer ID) starts over.
            await self._replace(producer)
            raise KafkaRecordTooLargeError(
                f"dead letter too large for topic {topic!r} (its max.message.bytes): the "
                f"broker refused it ({exc})"
            ) from exc
        except OutOfOrderSequenceNumber as exc:
            # Such a gap, whatever left it (a batch another caller had refused): start over.
            await self._replace(producer)
            raise KafkaError(f"cannot write dead letter to topic {topic!r}: {exc}") from exc
        except AIOKafkaError as exc:
            raise KafkaError(f"cannot write dead letter to topic {topic!r}: {exc}") from exc

    async def _replace(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer``; the next send starts a new one (unless one already has)."""
        if self._producer is producer:
            self._producer = None
        # Flushes what else is pending; a send still waiting on it fails and is retried.
        # Shielded: a caller cancelled meanwhile must not leave it half closed.
        await asyncio.shield(producer.stop())

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
