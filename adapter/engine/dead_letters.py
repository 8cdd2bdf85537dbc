"""Storing a record's dead letter: retried until stored, made smaller when it is too large.

A dead letter that cannot be stored *now* (topic missing, broker away) is retried with backoff
while its record's offset stays unfinished, so nothing is lost (``p-fault-dlq-missing``). A
dead letter that is too large for the producer or the topic
(:class:`~adapter.errors.KafkaRecordTooLargeError`) would be refused again on every retry and
hold its partition for ever; the next smaller form of it is sent instead
(:func:`adapter.kafka.dead_letter.dead_letter_forms`: without the value, then without the
record's headers, then without the key). Only the smallest form, which is our headers alone,
is retried when it is too large: a topic that cannot take even that needs its
``max.message.bytes`` raised, and the error says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Protocol

from adapter.engine.retry import until_ok
from adapter.errors import IngressError, KafkaError, KafkaRecordTooLargeError
from adapter.kafka.dead_letter import DeadLetter, dead_letter_forms
from adapter.model import KafkaRecord

__all__ = ["DeadLetters", "write_dead_letter"]

log = logging.getLogger(__name__)


class DeadLetters(Protocol):
    async def send(
        self, topic: str, record: KafkaRecord, headers: list[tuple[str, bytes]]
    ) -> None: ...


async def write_dead_letter(
    dead_letters: DeadLetters,
    topic: str,
    record: KafkaRecord,
    headers: list[tuple[str, bytes]],
    *,
    on_error: Callable[[IngressError], None],
) -> DeadLetter:
    """Store ``record``'s dead letter in ``topic``; returns the form that was stored.

    ``headers``: :func:`~adapter.kafka.dead_letter.dead_letter_headers`. ``on_error`` sees
    every failure that is retried, not a form refused as too large while a smaller one is left.
    """
    forms = dead_letter_forms(record, headers)
    for index, form in enumerate(forms):
        stored = await until_ok(
            functools.partial(_sent, dead_letters, topic, form, last=index == len(forms) - 1),
            on_error=on_error,
            errors=(KafkaError,),
        )
        if stored:
            if form.omitted:
                log.warning(
                    "dead letter of %s/%d@%d stored in %r%s: it was too large for the topic "
                    "or the producer; the original is in the source topic",
                    record.topic,
                    record.partition,
                    record.offset,
                    topic,
                    _without(form),
                )
            return form
    raise AssertionError("the last form is retried until it is stored")


async def _sent(dead_letters: DeadLetters, topic: str, form: DeadLetter, *, last: bool) -> bool:
    """Stored: True; too large while a smaller form is left: False."""
    try:
        await dead_letters.send(topic, form.record, form.headers)
    except KafkaRecordTooLargeError as exc:
        if last:
            raise KafkaRecordTooLargeError(
                f"{exc}; even{_without(form) or ' as it is'}: raise the dead-letter topic's "
                "max.message.bytes (and the subscription's message.max.bytes)"
            ) from exc
        record = form.record
        log.info(
            "dead letter of %s/%d@%d%s too large, trying a smaller form: %s",
            record.topic,
            record.partition,
            record.offset,
            _without(form),
            exc,
        )
        return False
    return True


def _without(form: DeadLetter) -> str:
    return f" without {', '.join(form.omitted)}" if form.omitted else ""
