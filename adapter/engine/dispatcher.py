"""Driving admitted records to a final result: attempts, backoff, dead letters, the ledger.

The dispatcher owns the :class:`~adapter.engine.lanes.Lanes` (which record may run now) and
one :class:`Work` per admitted record. Each record's status moves only along the edges of
:data:`adapter.engine.lifecycle.TRANSITIONS`; every step here is one
:func:`~adapter.engine.lifecycle.transition`, so an illegal step (a late outcome after a kill)
is refused by the same table the admin API checks.

Fencing: before *every* attempt — the first, a retry after its backoff, and the next record
of a key that a finished record handed its lane to — the dispatcher asks the runner's
``may_start`` whether the record's partition assignment is still current and the poller
still provably in its group (``adapter.engine.ownership``). A record that may not start
waits; once its assignment is gone it is abandoned, never started (Kafka redelivers it to
the partition's new owner).

A final result goes to the ledger; only when it is durable does the runner finish the
record's offset (``on_durable``), so no commit ever passes a result that could be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from adapter.engine import tracing
from adapter.engine.dead_letters import DeadLetters, write_dead_letter
from adapter.engine.lanes import Lanes
from adapter.engine.ledger import LedgerWriter
from adapter.engine.lifecycle import (
    TERMINAL_STATUSES,
    InvocationEvent,
    InvocationStatus,
    can_transition,
    transition,
)
from adapter.engine.mapping import HEADER_TRACEPARENT, build_request, with_attempt
from adapter.engine.partition import PartitionState
from adapter.engine.retry import RetryPolicy, until_ok
from adapter.engine.timings import AttemptTimings
from adapter.engine.tracing import RecordTracer
from adapter.errors import IngressError, StoreError, TerminalInvokeError
from adapter.invokers.base import (
    InvocationRequest,
    Invoker,
    NotSent,
    Outcome,
    OutcomeKind,
    SendFence,
    fence_sends,
)
from adapter.kafka.dead_letter import dead_letter_headers
from adapter.logs import bind_invocation
from adapter.model import HandlerType, KafkaRecord, LedgerEntry, Target

__all__ = ["DeadLetters", "Dispatcher", "DispatcherStats", "Work", "WorkflowClaims"]

log = logging.getLogger(__name__)

_S = InvocationStatus
_E = InvocationEvent

_EVENT_OF = {
    _S.SUCCEEDED: _E.SUCCEED,
    _S.FAILED: _E.FAIL,
    _S.DEAD_LETTERED: _E.DEAD_LETTER,
    _S.DUPLICATE: _E.DUPLICATE,
    _S.KILLED: _E.KILL,
    _S.CANCELLED: _E.CANCEL,
}

_COUNTERS = {  # DispatcherStats fields of the results other than success
    _S.FAILED: "failed",
    _S.DEAD_LETTERED: "dead_lettered",
    _S.DUPLICATE: "duplicates",
}


class WorkflowClaims(Protocol):
    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool: ...


@dataclass(slots=True)
class DispatcherStats:
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    retries: int = 0
    """Retryable failures, each counted once as its retry is scheduled (so a failure shows at
    once, not a backoff later); an attempt given back unsent is not a failure. Partition
    batches count batch calls, not records."""
    abandoned: int = 0
    held: int = 0
    """Attempts that had to wait for proof of ownership (after a pause or a lost heartbeat),
    each counted once however often it waited: an attempt is the next call of a record (of a
    batch, in partition-batch mode), by its number, and it may have to wait before a workflow
    claim and again after it, or again after an invoker gave it back unsent. A record failed
    without an attempt (refused input, expired) counts its failing as one."""
    unsent: int = 0
    """Attempts an invoker did not send because that proof lapsed while it waited."""

    def count_held(self, work: Work) -> None:
        """``work``'s next attempt has to wait for proof of ownership: count it in
        :attr:`held` unless it was counted already."""
        attempt = work.attempts + 1
        if work.held_attempt != attempt:
            work.held_attempt = attempt
            self.held += 1


@dataclass(slots=True, eq=False)
class Work:
    """One admitted record on its way to a final result."""

    inv_id: str
    partition: PartitionState
    """The assignment it was admitted under; stale once the runner holds another."""
    record: KafkaRecord
    request: InvocationRequest | None = None
    status: InvocationStatus = _S.PENDING
    attempts: int = 0
    created_ms: int = 0
    task: asyncio.Task[None] | None = None
    # Only a retrying invocation waits on these; made at its first retry, not per record.
    slot: asyncio.Event | None = None
    wake: asyncio.Event | None = None
    in_lanes: bool = False
    last_error: str | None = None
    replaces_row: bool = False  # the ledger holds a row of it already (see LedgerEntry)
    held_attempt: int = 0
    """The attempt (by number) last counted in :attr:`DispatcherStats.held`."""

    def ledger_entry(
        self,
        status: InvocationStatus,
        *,
        subscription_id: str,
        sink: str,
        error: str | None = None,
        delay: float | None = None,
        dead_letter_topic: str | None = None,
    ) -> LedgerEntry:
        """Its ledger row as of now (the per-record and the batch path write the same rows)."""
        now = _now_ms()
        record = self.record
        key: str | None = None
        if self.request is not None:
            key = self.request.key
        elif record.key is not None:  # refused before a request was made: still findable
            key = record.key.decode("utf-8", "backslashreplace")
        return LedgerEntry(
            id=self.inv_id,
            subscription_id=subscription_id,
            topic=self.partition.topic_key,
            partition=record.partition,
            offset=record.offset,
            key=key,
            target=sink,
            status=status.value,
            attempts=self.attempts,
            last_error=error if error is not None else self.last_error,
            created_at_ms=self.created_ms,
            updated_at_ms=now,
            completed_at_ms=now if status in TERMINAL_STATUSES else None,
            next_retry_at_ms=now + int(delay * 1000) if delay is not None else None,
            dead_letter_topic=dead_letter_topic if status is _S.DEAD_LETTERED else None,
            replaces_row=self.replaces_row,
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


class Dispatcher:
    """Runs one subscription's admitted records (see the module docstring)."""

    def __init__(
        self,
        *,
        subscription_id: str,
        target: Target,
        invoker: Invoker,
        ledger: LedgerWriter,
        claims: WorkflowClaims,
        dead_letters: DeadLetters | None,
        dead_letter_topic: str | None,
        retry: RetryPolicy,
        max_in_flight: int,
        max_record_bytes: int,
        invocation_timeout_s: float,
        may_start: Callable[[Work], bool | Coroutine[Any, Any, bool]],
        may_send: SendFence,
        on_durable: Callable[[Work], None],
        on_error: Callable[[str], None],
        rng: random.Random | None = None,
    ) -> None:
        self._subscription_id = subscription_id
        self._target = target
        self._invoker = invoker
        self._ledger = ledger
        self._claims = claims
        self._dead_letters = dead_letters
        self._dead_letter_topic = dead_letter_topic
        self._retry = retry
        self._max_record_bytes = max_record_bytes
        self._timeout_s = invocation_timeout_s
        self._may_start = may_start
        self._may_send = may_send
        self._on_durable = on_durable
        self._on_error = on_error
        self._rng = rng or random.Random()
        self._lanes: Lanes[str, PartitionState] = Lanes(max_in_flight)
        self._work: dict[str, Work] = {}
        self.stats = DispatcherStats()
        self._timings = AttemptTimings(subscription_id)
        self._tracer = tracing.current()  # None unless OTEL_* configures traces

    @property
    def in_flight(self) -> int:
        return self._lanes.in_flight

    def get(self, inv_id: str) -> Work | None:
        return self._work.get(inv_id)

    # -- admission -------------------------------------------------------------------------

    def admit(self, work: Work) -> None:
        try:
            work.request = build_request(
                subscription_id=self._subscription_id,
                record=work.record,
                target=self._target,
                max_body_bytes=self._max_record_bytes,
                invocation_id=work.inv_id,
                timeout_s=self._timeout_s,
            )
        except TerminalInvokeError as exc:
            # Bad input fails this one record; nothing about it may block its key or partition.
            self._work[work.inv_id] = work
            work.task = asyncio.ensure_future(self._fail_refused(work, str(exc)))
            return
        self._work[work.inv_id] = work
        work.in_lanes = True
        lane_key = work.request.key if self._target.ordered else None
        self._start(self._lanes.offer(work.inv_id, work.partition, lane_key))

    def _start(self, inv_ids: list[str]) -> None:
        for inv_id in inv_ids:
            work = self._work.get(inv_id)
            if work is None:
                continue
            if work.task is None:
                work.task = asyncio.create_task(self._invoke(work))
            elif work.slot is not None:
                work.slot.set()

    # -- attempts --------------------------------------------------------------------------

    async def _fail_refused(self, work: Work, error: str) -> None:
        """A record refused before any attempt (bad input) fails as a tried one does: only
        while this poller provably owns its partition, so a poller woken from a pause leaves
        its dead letter and ledger row to the partition's new owner."""
        allowed = self._may_start(work)
        if allowed is not True and (allowed is False or not await self._held(work, allowed)):
            return  # abandoned: the partition's next owner decides
        await self._fail(work, error)

    async def _held(self, work: Work, pending: Awaitable[bool]) -> bool:
        self.stats.count_held(work)
        return await pending

    async def _invoke(self, work: Work) -> None:
        assert work.request is not None
        fence_sends(self._may_send)  # this task's context only: the invoker's waits
        tracer = self._tracer
        if tracer is None:
            self._bind_log_context(work, work.request.headers.get(HEADER_TRACEPARENT, "")[3:35])
            await self._attempts(work)
            return
        with tracer.record(work.request, self._subscription_id) as span:
            self._bind_log_context(work, f"{span.get_span_context().trace_id:032x}")
            await self._attempts(work)

    async def _traced_invoke(self, tracer: RecordTracer, request: InvocationRequest) -> Outcome:
        """One attempt in a client span whose context the handler receives as traceparent."""
        with tracer.attempt(request) as (sent, span):
            outcome = await self._invoker.invoke(sent)
            tracer.outcome(span, outcome)
        return outcome

    async def _attempts(self, work: Work) -> None:
        assert work.request is not None
        # Decided without a coroutine in the common case (this runs for every record).
        allowed = self._may_start(work)
        if allowed is not True and (allowed is False or not await self._held(work, allowed)):
            return  # abandoned: the partition's next owner decides
        is_run = self._target.handler_type is HandlerType.WORKFLOW
        if is_run and work.request.key is not None:
            if not await self._claim_workflow(work):
                self._complete(work, _S.DUPLICATE, "workflow already ran")
                return
            # The claim waits for DynamoDB (retried while it fails): the evidence of
            # ownership may have gone stale meanwhile.
            allowed = self._may_start(work)
            if allowed is not True and (allowed is False or not await self._held(work, allowed)):
                return
        while True:
            work.attempts += 1
            work.status = transition(work.status, _E.START)
            request = (
                work.request if work.attempts == 1 else with_attempt(work.request, work.attempts)
            )
            began = time.perf_counter()
            try:
                if self._tracer is None:
                    outcome = await self._invoker.invoke(request)
                else:
                    outcome = await self._traced_invoke(self._tracer, request)
            except NotSent:
                # The invoker waited (an address check, a batch's linger, a credentials
                # refresh) and the proof of ownership lapsed meanwhile: nothing went out, so
                # the attempt is not counted and waits for the proof like any other.
                work.attempts -= 1
                work.status = transition(work.status, _E.ABANDON)
                self.stats.unsent += 1
                allowed = self._may_start(work)
                if allowed is not True and (
                    allowed is False or not await self._held(work, allowed)
                ):
                    return
                continue
            self._timings.attempt(outcome.kind, time.perf_counter() - began)
            if outcome.kind is OutcomeKind.ACK:
                self._timings.acked(work.record.timestamp_ms)
                self._complete(work, _S.SUCCEEDED, None)
                return
            work.last_error = outcome.error
            if outcome.kind is OutcomeKind.TERMINAL:
                await self._fail(work, outcome.error or "terminal error")
                return
            delay = self._retry.next_delay(work.attempts, outcome.retry_after, self._rng)
            if delay is None:
                await self._fail(work, f"gave up after {work.attempts} attempts: {outcome.error}")
                return
            self.stats.retries += 1
            work.status = transition(work.status, _E.BACK_OFF)
            self._ledger.submit(self._entry(work, _S.BACKING_OFF, delay=delay))
            self._start(self._lanes.park(work.inv_id))
            wake = work.wake = work.wake or asyncio.Event()
            slot = work.slot = work.slot or asyncio.Event()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            slot.clear()
            work.status = transition(work.status, _E.WAKE)
            started = self._lanes.unpark(work.inv_id)
            self._start([i for i in started if i != work.inv_id])
            if work.inv_id not in started:
                await slot.wait()
            allowed = self._may_start(work)
            if allowed is not True and (allowed is False or not await self._held(work, allowed)):
                return

    def _bind_log_context(self, work: Work, trace_id: str) -> None:
        """Every line logged by this invocation's task names it (adapter.logs)."""
        record = work.record
        bind_invocation(
            subscription=self._subscription_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            invocation_id=work.inv_id,
            trace_id=trace_id or None,
        )

    async def _claim_workflow(self, work: Work) -> bool:
        assert work.request is not None
        assert work.request.key is not None
        key = work.request.key
        return await until_ok(
            lambda: self._claims.claim_workflow(self._target.service, key, work.inv_id),
            on_error=self._report,
            errors=(StoreError,),
        )

    def _report(self, exc: IngressError) -> None:
        self._on_error(str(exc))

    async def _fail(self, work: Work, reason: str) -> None:
        work.last_error = reason
        topic = self._dead_letter_topic
        if topic is None or self._dead_letters is None:
            self._complete(work, _S.FAILED, reason)
            return
        headers = dead_letter_headers(
            work.record,
            reason=reason,
            attempts=work.attempts,
            invocation_id=work.inv_id,
            subscription_id=self._subscription_id,
            failed_at_ms=_now_ms(),
        )
        dead_letters = self._dead_letters
        warned: list[str] = []

        def report(exc: IngressError) -> None:
            # The offset stays unfinished until the dead letter is stored: nothing is lost.
            self._on_error(str(exc))
            if not warned:
                warned.append(str(exc))
                log.warning("dead letter of %s not stored yet (will retry): %s", work.inv_id, exc)

        # Too large for the topic, it goes in a smaller form (adapter.engine.dead_letters).
        await write_dead_letter(dead_letters, topic, work.record, headers, on_error=report)
        if warned:
            log.info("dead letter of %s stored in %s", work.inv_id, topic)
        self._complete(work, _S.DEAD_LETTERED, reason)

    # -- results ---------------------------------------------------------------------------

    def _complete(self, work: Work, status: InvocationStatus, error: str | None) -> None:
        work.status = transition(work.status, _EVENT_OF[status])
        if status is _S.SUCCEEDED:
            self.stats.succeeded += 1
        else:
            name = _COUNTERS.get(status)
            if name is not None:
                setattr(self.stats, name, getattr(self.stats, name) + 1)
            record = work.record
            log.info(
                "invocation %s (%s/%d@%d) %s: %s",
                work.inv_id,
                record.topic,
                record.partition,
                record.offset,
                status.value,
                error,
                extra={
                    "subscription": self._subscription_id,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "invocation_id": work.inv_id,
                },
            )
        if work.in_lanes:
            work.in_lanes = False
            # The next record of this key may start now; only the commit waits for the ledger.
            self._start(self._lanes.done(work.inv_id))
        self._ledger.submit(self._entry(work, status, error=error), lambda: self._durable(work))

    def _durable(self, work: Work) -> None:
        if self._work.get(work.inv_id) is work:
            del self._work[work.inv_id]
        self._on_durable(work)

    def _entry(
        self,
        work: Work,
        status: InvocationStatus,
        *,
        error: str | None = None,
        delay: float | None = None,
    ) -> LedgerEntry:
        return work.ledger_entry(
            status,
            subscription_id=self._subscription_id,
            sink=self._target.sink,
            error=error,
            delay=delay,
            dead_letter_topic=self._dead_letter_topic,
        )

    # -- operator actions --------------------------------------------------------------------

    def retry_now(self, inv_id: str) -> bool:
        """End the backoff of a backing-off invocation; False if it is not backing off here."""
        work = self._work.get(inv_id)
        if work is None or work.wake is None or work.status is not _S.BACKING_OFF:
            return False
        work.wake.set()
        return True

    def kill(self, inv_id: str, status: InvocationStatus) -> bool:
        """Stop an unfinished invocation and record it as ``status`` (KILLED or CANCELLED);
        False if there is no such invocation here.

        The record completes through the normal path, so its offset finishes (and can be
        committed) once the row is durable, and the next record of its key may start.
        """
        work = self._work.get(inv_id)
        if work is None or not work.in_lanes:
            return False
        if not can_transition(work.status, _EVENT_OF[status]):
            return False
        if work.task is not None and not work.task.done():
            work.task.cancel()
        self._complete(work, status, f"{status.value.lower()} by an operator")
        return True

    # -- revocation --------------------------------------------------------------------------

    async def release(self, partitions: list[PartitionState], deadline_s: float) -> None:
        """Stop work of these partition assignments: records not running are forgotten
        (redelivered to the next owner), running ones may finish within ``deadline_s`` and
        are cancelled after it."""
        states = set(partitions)
        parked: list[Work] = []
        for state in partitions:
            dropped = self._lanes.drop_partition(state)
            for inv_id in dropped.abandoned:
                work = self._work.pop(inv_id, None)
                if work is not None:
                    work.in_lanes = False
                    if work.task is not None:
                        parked.append(work)
            self._start(dropped.start)
        for work in parked:
            assert work.task is not None
            work.task.cancel()
        running = [w.task for w in self._work.values() if w.partition in states and w.task]
        if running:
            _, still = await asyncio.wait(running, timeout=deadline_s)
            for task in still:
                task.cancel()
            if still:
                self.stats.abandoned += len(still)
                await asyncio.wait(still, timeout=1.0)
        for work in [w for w in self._work.values() if w.partition in states]:
            if work.in_lanes:
                work.in_lanes = False
                self._start(self._lanes.done(work.inv_id))

    def forget(self, partitions: list[PartitionState]) -> None:
        states = set(partitions)
        for inv_id in [i for i, w in self._work.items() if w.partition in states]:
            del self._work[inv_id]

    async def abandon_all(self) -> None:
        tasks = [w.task for w in self._work.values() if w.task is not None and not w.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self._work.clear()
