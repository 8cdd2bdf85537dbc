"""The invocation context a handler receives: who is calling, for which record.

Built from the request headers (HTTP) or the event (Lambda) by :func:`context_from_headers`,
so a handler sees exactly the same values whichever way it is deployed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from adapter.sdk.protocol import (
    HEADER_ATTEMPT,
    HEADER_INVOCATION_ID,
    HEADER_KAFKA_HEADERS,
    HEADER_KAFKA_KEY,
    HEADER_KAFKA_OFFSET,
    HEADER_KAFKA_PARTITION,
    HEADER_KAFKA_TIMESTAMP,
    HEADER_KAFKA_TOPIC,
    HEADER_SUBSCRIPTION_ID,
    HEADER_TRACEPARENT,
    OWN_HEADERS,
)

__all__ = ["Context", "KafkaMetadata", "context_from_headers"]

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class KafkaMetadata:
    """Where the record came from. ``key`` is the record key as text (``None`` if null)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    subscription_id: str | None


@dataclass(frozen=True, slots=True)
class Context:
    """One invocation of a handler.

    ``invocation_id`` is stable across retries and redeliveries of the same record: use it as
    the idempotency key of side effects. ``key`` is the virtual-object key / workflow ID
    (``None`` for service handlers). ``record_headers`` are the Kafka record's headers in
    record order, duplicates included.
    """

    invocation_id: str
    service: str
    handler: str
    key: str | None = None
    attempt: int = 1
    kafka: KafkaMetadata | None = None
    record_headers: tuple[tuple[str, bytes], ...] = ()
    traceparent: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def header(self, name: str) -> str | None:
        """A request header by name, case-insensitively."""
        return self.headers.get(name.lower())

    def record_header(self, name: str) -> bytes | None:
        """The last record header called ``name`` (case-insensitive), or ``None``."""
        lowered = name.lower()
        found = None
        for header_name, value in self.record_headers:
            if header_name.lower() == lowered:
                found = value
        return found


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _record_headers(headers: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    complete = headers.get(HEADER_KAFKA_HEADERS)
    if complete is not None:
        try:
            return tuple(
                (str(name), base64.b64decode(data, validate=True))
                for name, data in json.loads(complete)
            )
        except (ValueError, TypeError):
            pass  # a malformed list falls back to the individually passed headers
    return tuple(
        (name, value.encode("utf-8"))
        for name, value in headers.items()
        if name not in OWN_HEADERS and not name.startswith("x-kafka-ingress-")
    )


def context_from_headers(
    headers: Mapping[str, str], *, service: str, handler: str, key: str | None
) -> Context:
    """Build the context from request headers whose names are already lower-case."""
    kafka = None
    topic = headers.get(HEADER_KAFKA_TOPIC)
    if topic is not None:
        raw_key = headers.get(HEADER_KAFKA_KEY)
        kafka = KafkaMetadata(
            topic=topic,
            partition=_int(headers.get(HEADER_KAFKA_PARTITION), -1),
            offset=_int(headers.get(HEADER_KAFKA_OFFSET), -1),
            timestamp_ms=_int(headers.get(HEADER_KAFKA_TIMESTAMP), -1),
            key=unquote(raw_key) if raw_key is not None else None,
            subscription_id=headers.get(HEADER_SUBSCRIPTION_ID),
        )
    return Context(
        invocation_id=headers.get(HEADER_INVOCATION_ID) or headers.get("idempotency-key") or "",
        service=service,
        handler=handler,
        key=key,
        attempt=_int(headers.get(HEADER_ATTEMPT), 1),
        kafka=kafka,
        record_headers=_record_headers(headers),
        traceparent=headers.get(HEADER_TRACEPARENT),
        headers=MappingProxyType(dict(headers)),
    )
