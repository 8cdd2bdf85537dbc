"""The dead-letter record's headers, exactly as docs/protocol.md ("Dead letters") lists them."""

from __future__ import annotations

import pytest

from adapter.kafka.dead_letter import dead_letter_headers
from adapter.model import KafkaRecord

RECORD = KafkaRecord(
    topic="orders",
    partition=3,
    offset=42,
    key=b"customer-7",
    value=b'{"amount": -1}',
    timestamp_ms=1_700_000_000_123,
    headers=(
        ("origin", b"shop"),
        ("nothing", None),
        ("x-kafka-ingress-attempts", b"99"),  # spoofed by the producer: replaced
        ("bin", b"\x00\xff"),
    ),
)


def headers_of(record: KafkaRecord = RECORD, reason: str = "boom") -> list[tuple[str, bytes]]:
    return dead_letter_headers(
        record,
        reason=reason,
        attempts=3,
        invocation_id="inv_1geyXZub2uGV2wcnz2JN0sTZCLXGuNMADK",
        subscription_id="sub_10tLrXW7fINPmGN7aBLxqOR",
        failed_at_ms=1_700_000_004_567,
    )


@pytest.mark.promise("p-dlq-headers")
@pytest.mark.promise("p-dlq-record")
def test_original_headers_then_every_documented_header_with_its_format() -> None:
    assert headers_of(reason="handler returned HTTP 422 Unprocessable Entity: no") == [
        ("origin", b"shop"),
        ("nothing", b""),
        ("bin", b"\x00\xff"),
        ("x-kafka-ingress-error", b"handler returned HTTP 422 Unprocessable Entity: no"),
        ("x-kafka-ingress-attempts", b"3"),
        ("x-kafka-ingress-invocation-id", b"inv_1geyXZub2uGV2wcnz2JN0sTZCLXGuNMADK"),
        ("x-kafka-ingress-subscription-id", b"sub_10tLrXW7fINPmGN7aBLxqOR"),
        ("x-kafka-ingress-source-topic", b"orders"),
        ("x-kafka-ingress-source-partition", b"3"),
        ("x-kafka-ingress-source-offset", b"42"),
        ("x-kafka-ingress-source-timestamp", b"1700000000123"),
        ("x-kafka-ingress-failed-at", b"1700000004567"),
    ]


@pytest.mark.promise("p-dlq-headers")
def test_the_error_header_is_at_most_4000_characters() -> None:
    error = dict(headers_of(reason="x" * 10_000))["x-kafka-ingress-error"]
    assert error == b"x" * 4000
