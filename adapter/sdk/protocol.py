"""Wire names of the handler protocol (``docs/protocol.md``), as the handler side sees them.

Kept here rather than imported from the poller so the SDK stays importable on its own (a
Lambda package holds only ``adapter/sdk``); ``tests/unit/test_sdk_protocol.py`` pins them to
the poller's definitions.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = [
    "HEADER_ATTEMPT",
    "HEADER_IDEMPOTENCY_KEY",
    "HEADER_INVOCATION_ID",
    "HEADER_JWT",
    "HEADER_KAFKA_HEADERS",
    "HEADER_KAFKA_KEY",
    "HEADER_KAFKA_OFFSET",
    "HEADER_KAFKA_PARTITION",
    "HEADER_KAFKA_TIMESTAMP",
    "HEADER_KAFKA_TOPIC",
    "HEADER_SIGNATURE_SCHEME",
    "HEADER_SUBSCRIPTION_ID",
    "HEADER_TRACEPARENT",
    "LAMBDA_PROTOCOL",
    "OWN_HEADERS",
    "PROTOCOL_VERSION",
    "SIGNATURE_SCHEME",
    "discover_path",
    "invoke_path",
    "path_segment",
]

PROTOCOL_VERSION = 1
LAMBDA_PROTOCOL = "kafka-ingress/v1"

HEADER_SUBSCRIPTION_ID = "restate.subscription.id"
HEADER_KAFKA_TOPIC = "kafka.topic"
HEADER_KAFKA_PARTITION = "kafka.partition"
HEADER_KAFKA_OFFSET = "kafka.offset"
HEADER_KAFKA_TIMESTAMP = "kafka.timestamp"
HEADER_KAFKA_KEY = "kafka.key"
HEADER_IDEMPOTENCY_KEY = "idempotency-key"
HEADER_INVOCATION_ID = "x-kafka-ingress-invocation-id"
HEADER_ATTEMPT = "x-kafka-ingress-attempt"
HEADER_KAFKA_HEADERS = "x-kafka-headers"
HEADER_TRACEPARENT = "traceparent"
HEADER_SIGNATURE_SCHEME = "x-kafka-ingress-signature-scheme"
HEADER_JWT = "x-kafka-ingress-jwt-v1"
SIGNATURE_SCHEME = "v1"

# Headers the poller adds itself: never record headers (lower-case).
OWN_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "user-agent",
        "host",
        "connection",
        "accept",
        "accept-encoding",
        "traceparent",
        "tracestate",
        HEADER_SUBSCRIPTION_ID,
        HEADER_KAFKA_TOPIC,
        HEADER_KAFKA_PARTITION,
        HEADER_KAFKA_OFFSET,
        HEADER_KAFKA_TIMESTAMP,
        HEADER_KAFKA_KEY,
        HEADER_IDEMPOTENCY_KEY,
        HEADER_KAFKA_HEADERS,
    }
)


def path_segment(value: str) -> str:
    """One percent-encoded path segment; ``.``/``..`` are escaped so no normaliser drops them."""
    # quote() returns letters, digits and "-._~" unchanged. Most names and keys are made of
    # them with at least one letter or digit (so never a dots-only segment, escaped below),
    # and this runs for every invocation.
    bare = value.replace("-", "").replace(".", "").replace("_", "").replace("~", "")
    if bare.isalnum() and value.isascii():
        return value
    encoded = quote(value, safe="")
    if encoded in (".", ".."):
        return "%2E" * len(encoded)
    return encoded


def invoke_path(service: str, handler: str, key: str | None) -> str:
    """The invoke route relative to the deployment base; also the signature's audience."""
    if key is None:
        return f"/invoke/{path_segment(service)}/{path_segment(handler)}"
    return f"/invoke/{path_segment(service)}/{path_segment(key)}/{path_segment(handler)}"


def discover_path() -> str:
    return "/discover"
