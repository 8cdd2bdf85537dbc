"""The Kafka on-failure destination sends a failure record that fits its topic."""

from __future__ import annotations

import pytest

from adapter.errors import DestinationRecordTooLargeError
from adapter.invokers.destinations import Delivery, KafkaTopicWriter, parse_destination


class _Topic:
    """A topic that takes messages up to ``limit`` bytes (key and value)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messages: list[tuple[bytes | None, bytes | None]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> None:
        if len(value or b"") + len(key or b"") > self.limit:
            raise DestinationRecordTooLargeError(f"Kafka topic {topic}: too large")
        self.messages.append((key, value))


async def test_a_failure_record_goes_without_its_payload_then_without_its_key() -> None:
    topic = _Topic(limit=1000)
    writer = KafkaTopicWriter(topic, parse_destination("kafka://failures"))
    await writer.deliver(Delivery(b"x" * 5000, b"k", without_payload=b"{}"))
    assert topic.messages == [(b"k", b"{}")]
    huge_key = b"k" * 5000
    await writer.deliver(Delivery(b"x" * 5000, huge_key, without_payload=b"{}"))
    assert topic.messages[-1] == (None, b"{}")
    with pytest.raises(DestinationRecordTooLargeError):
        await writer.deliver(Delivery(b"x" * 5000, huge_key, without_payload=b"y" * 5000))
