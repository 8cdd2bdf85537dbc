"""Dead letters: the original record (key, value, headers) plus headers saying why it failed.

``dead_letter_headers`` is pure; ``DeadLetterProducer`` is the thin shell that produces to the
subscription's dead-letter topic and waits for the broker's acknowledgement, because the source
offset may only be committed once the dead letter is safely stored.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError

from adapter.errors import KafkaError
from adapter.model import KafkaRecord

__all__ = ["ERROR_HEADER_PREFIX", "DeadLetterProducer", "dead_letter_headers"]

ERROR_HEADER_PREFIX = "x-kafka-ingress-"


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
    kept = [(k, v or b"") for k, v in record.headers if k not in ours]
    return kept + [(k, v.encode()) for k, v in ours.items()]


class DeadLetterProducer:
    """An idempotent producer shared by the subscriptions of one poller on one cluster.

    Its failures name the *dead-letter* topic: the producer's tasks run outside any
    subscription consumer's connection watch (``adapter.kafka.errors``), so a missing
    dead-letter topic is never reported as the source topic missing, and a send first checks
    (within ``metadata_timeout_s``) that the topic exists instead of waiting out the client's
    request timeout.
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
            await producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)
        except AIOKafkaError as exc:
            raise KafkaError(f"cannot write dead letter to topic {topic!r}: {exc}") from exc

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
