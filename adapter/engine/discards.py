"""Where the records of a partition batch that failed for good go, and how they get there.

The on-failure destination (``destination.on.failure``) receives AWS's failure record: one
document per discarded group for SQS, SNS and S3 (S3 with the event as ``payload``), one
message per record, keyed as it was, for a Kafka topic. Without a destination the records go
to the ``dead.letter.topic`` as the per-record path writes them (with error headers); without
either they are only recorded as failed. A write is retried until it succeeds: the records
stay unfinished (uncommitted) meanwhile, so nothing is lost while a destination is down.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from adapter.engine.batches import Deliver
from adapter.engine.dead_letters import DeadLetters, write_dead_letter
from adapter.engine.dispatcher import Work
from adapter.engine.retry import until_ok
from adapter.errors import DestinationError, IngressError, KafkaError
from adapter.failure_destination import DestinationKind
from adapter.invokers.batch_response import BatchAnswer
from adapter.invokers.destinations import Delivery, FailureWriter, s3_object_key
from adapter.invokers.failure_record import (
    FailureCondition,
    FailureContext,
    build_batch_failure_record,
    build_kafka_failure_record,
)
from adapter.invokers.kafka_event import EventSource, partition_key
from adapter.kafka.dead_letter import dead_letter_headers
from adapter.model import Target

__all__ = ["Discards", "FailureDestination"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailureDestination:
    """A writer and the kind of destination behind it (SQS, SNS, S3 or Kafka)."""

    kind: DestinationKind
    writer: FailureWriter


def _now_ms() -> int:
    return int(time.time() * 1000)


class Discards:
    """Delivers discarded records of one subscription (see the module docstring)."""

    def __init__(
        self,
        *,
        subscription_id: str,
        target: Target,
        destination: FailureDestination | None,
        event_source: EventSource | None,
        dead_letters: DeadLetters | None,
        dead_letter_topic: str | None,
        on_error: Callable[[str], None],
    ) -> None:
        self._subscription_id = subscription_id
        self._target = target
        self._destination = destination
        self._event_source = event_source
        self._dead_letters = dead_letters
        self._dead_letter_topic = dead_letter_topic
        self._on_error = on_error

    @property
    def delivers(self) -> bool:
        """Do discarded records go anywhere (else they are only recorded as failed)?"""
        return self._destination is not None or (
            self._dead_letters is not None and self._dead_letter_topic is not None
        )

    @property
    def to_dead_letter_topic(self) -> str | None:
        """The dead-letter topic they go to, when that is where they go."""
        return self._dead_letter_topic if self._destination is None else None

    async def deliver(self, step: Deliver[Work], answer: BatchAnswer | None) -> None:
        """Write ``step``'s records where they go; returns once they are stored there."""
        destination = self._destination
        if destination is not None:
            deliveries = self._failure_records(destination.kind, step, answer)
            writer = destination.writer
            for delivery in deliveries:
                await self._until_stored(functools.partial(writer.deliver, delivery))
            return
        topic, dead_letters = self._dead_letter_topic, self._dead_letters
        if topic is None or dead_letters is None:
            return
        for entry in step.entries:
            work = entry.item
            headers = dead_letter_headers(
                work.record,
                reason=f"{step.condition.value}: {work.last_error or 'failed'}",
                attempts=work.attempts,
                invocation_id=work.inv_id,
                subscription_id=self._subscription_id,
                failed_at_ms=_now_ms(),
            )
            # Too large for the topic, it goes in a smaller form (adapter.engine.dead_letters).
            await write_dead_letter(
                dead_letters, topic, work.record, headers, on_error=self._reporter()
            )

    def _failure_records(
        self, kind: DestinationKind, step: Deliver[Work], answer: BatchAnswer | None
    ) -> list[Delivery]:
        records = [e.item.record for e in step.entries]
        source = self._event_source or EventSource(bootstrap_servers=[])
        # responseContext is null when the function never answered about these records.
        called = (
            step.condition is FailureCondition.RETRY_ATTEMPTS_EXHAUSTED
            and answer is not None
            and answer.called
        )
        ctx = FailureContext(
            request_id=str(uuid.uuid4()),
            function_arn=self._target.deployment.arn or self._target.sink,
            condition=step.condition,
            approximate_invoke_count=step.attempts,
            failed_at_ms=_now_ms(),
            status_code=200 if called else None,
            function_error=answer.function_error if answer is not None else None,
        )
        if kind is DestinationKind.KAFKA:
            deliveries = []
            for r in records:
                document = build_kafka_failure_record(r, source, ctx)
                body = orjson.dumps(document)
                del document["payload"]
                document["payloadOmitted"] = (
                    f"the record's event ({len(body)} bytes with it) is larger than this topic "
                    "accepts: read the record at KafkaBatchInfo's topic, partition and offset"
                )
                deliveries.append(Delivery(body, r.key, without_payload=orjson.dumps(document)))
            return deliveries
        document = build_batch_failure_record(
            records, source, ctx, with_payload=kind is DestinationKind.S3
        )
        key = ""
        if kind is DestinationKind.S3:
            first = records[0]
            where = partition_key(first.topic, first.partition)
            key = s3_object_key(self._subscription_id, where, ctx.failed_at_ms)
        return [Delivery(orjson.dumps(document), s3_key=key)]

    async def _until_stored(self, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await until_ok(send, on_error=self._reporter(), errors=(DestinationError, KafkaError))

    def _reporter(self) -> Callable[[IngressError], None]:
        warned: list[str] = []

        def report(exc: IngressError) -> None:
            # The records stay unfinished until the destination has them: nothing is lost.
            self._on_error(str(exc))
            if not warned:
                warned.append(str(exc))
                log.warning("on-failure destination not written yet (will retry): %s", exc)

        return report
