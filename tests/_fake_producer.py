"""A stand-in for aiokafka's producer, writing to topics with the size limits a test sets.

``FakeTopics.producer`` takes the place of ``AIOKafkaProducer`` where
:class:`~adapter.kafka.dead_letter.DeadLetterProducer` builds one. Like the real client and
broker (both seen on Kafka 4 with aiokafka 0.14):

- the client refuses a record larger than its ``max_request_size`` before sending it:
  ``send()`` raises ``MessageSizeTooLargeError``;
- the broker refuses one larger than the topic's ``max.message.bytes``: the future fails with
  ``MessageSizeTooLargeError`` (error 10);
- that refused batch had taken its sequence numbers, so every later send of the same
  idempotent producer to the partition fails with ``OutOfOrderSequenceNumber`` (error 45)
  until a new producer (a new producer ID) is started.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber

__all__ = ["FakeProducer", "FakeTopics", "Letter", "record_bytes"]

# aiokafka's default max_request_size.
CLIENT_LIMIT = 1024 * 1024


def record_bytes(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """Key, value, header names and values: close to what the limits count."""
    return len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v) for k, v in headers)


@dataclass(frozen=True, slots=True)
class Letter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class FakeTopics:
    """What the broker stored and refused, for every producer made by :meth:`producer`."""

    max_message_bytes: int
    letters: list[Letter] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)
    """(``"client"`` or ``"broker"``, size) of each refused record."""
    started: int = 0
    producers: list[FakeProducer] = field(default_factory=list)

    def producer(self, **kwargs: Any) -> FakeProducer:
        made = FakeProducer(self, int(kwargs.get("max_request_size", CLIENT_LIMIT)))
        self.producers.append(made)
        return made


class FakeProducer:
    def __init__(self, topics: FakeTopics, max_request_size: int) -> None:
        self._topics = topics
        self._max_request_size = max_request_size
        self._gapped: set[str] = set()
        self.stopped = False

    def lose_sequence(self, topic: str) -> None:
        """As if a batch of this producer to ``topic`` had been refused (another caller's)."""
        self._gapped.add(topic)

    async def start(self) -> None:
        self._topics.started += 1

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        headers = headers or []
        size = record_bytes(key, value, headers)
        if size > self._max_request_size:
            self._topics.refused.append(("client", size))
            raise MessageSizeTooLargeError(f"The message is {size} bytes when serialized")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if topic in self._gapped:
            future.set_exception(OutOfOrderSequenceNumber())
        elif size > self._topics.max_message_bytes:
            self._topics.refused.append(("broker", size))
            self._gapped.add(topic)
            future.set_exception(MessageSizeTooLargeError())
        else:
            self._topics.letters.append(Letter(topic, key, value, headers))
            future.set_result(None)
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await (await self.send(topic, value=value, key=key, headers=headers))
