"""Partition batches on the wire: the I/O shell around :mod:`adapter.engine.batches`.

Used instead of the :class:`~adapter.engine.dispatcher.Dispatcher` when a subscription runs
in ``batch.mode=partition`` (AWS's event source mapping semantics). Each partition assignment
has one :class:`~adapter.engine.batches.PartitionBatches` line and one task that asks it for
the next step and carries it out: one batch call at a time, discarded records delivered
(:mod:`adapter.engine.discards`), the settled records' final rows submitted to the ledger. A
record's offset finishes (and may be committed) only once its row is durable, as on the
per-record path.

Fencing: before every attempt of a batch — the first, a retry, each half of a bisection — the
runner's ``may_start`` decides whether the partition's assignment is still current and the
poller provably in its group; a batch that may not start is abandoned (its records are
redelivered to the partition's next owner). After a revocation nothing of the line settles:
the answer of a batch still in flight commits nothing.

A kill (admin API) of a record of the batch in flight settles it as killed at once; the
batch's answer about it is ignored and a retry leaves it out. Once every record of the call in
flight is killed, the call (or its backoff) is cancelled and the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from adapter.engine.batches import (
    BatchPolicy,
    Deliver,
    Entry,
    Idle,
    InvokeBatch,
    PartitionBatches,
    Settled,
    Wait,
)
from adapter.engine.discards import Discards, FailureDestination
from adapter.engine.dispatcher import DeadLetters, DispatcherStats, Work
from adapter.engine.ledger import LedgerWriter
from adapter.engine.lifecycle import InvocationStatus
from adapter.engine.mapping import build_request, with_attempt
from adapter.engine.partition import PartitionState
from adapter.engine.retry import RetryPolicy
from adapter.errors import IngressError, TerminalInvokeError
from adapter.invokers.base import InvocationRequest, NotSent, SendFence, fence_sends
from adapter.invokers.batch_response import BatchAnswer
from adapter.invokers.kafka_event import EventSource
from adapter.model import LedgerEntry, Target

__all__ = ["BatchCaller", "BatchDispatcher", "BatchSettings"]

log = logging.getLogger(__name__)

_S = InvocationStatus


@runtime_checkable
class BatchCaller(Protocol):
    async def invoke_records(
        self, requests: Sequence[InvocationRequest], *, report_batch_item_failures: bool
    ) -> BatchAnswer: ...

    def event_bytes(self, request: InvocationRequest) -> int:
        """An upper bound of ``request``'s share of a batch event: batches close before
        their event would pass the call's payload limit."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSettings:
    policy: BatchPolicy
    report_batch_item_failures: bool = False
    destination: FailureDestination | None = None
    event_source: EventSource | None = None


@dataclass(slots=True, eq=False)
class _Line:
    state: PartitionState
    core: PartitionBatches[Work]
    wake: asyncio.Event
    task: asyncio.Task[None] | None = None
    call: asyncio.Task[_Called | None] | None = None
    skip_backoff: bool = False
    in_backoff: bool = False
    """Waiting out a retry's backoff, which ``retry_now`` may end."""
    last_answer: BatchAnswer | None = None
    not_called: int = 0
    """Calls in a row that never reached the function (each backs off longer)."""
    again: bool = False
    """The next step is the last one handed out again (not sent, records expired, the
    function not reached): the same attempt, not another retry."""


@dataclass(frozen=True, slots=True)
class _Called:
    """A call's answer, about ``sent``: the records of the step still open when it went."""

    answer: BatchAnswer
    sent: frozenset[int]


_RECONSIDER = _Called(BatchAnswer(()), frozenset())
"""Not called: records expired during the backoff, the step is to be asked for again."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class BatchDispatcher:
    """Runs one subscription's partitions as ESM batches (see the module docstring)."""

    def __init__(
        self,
        *,
        subscription_id: str,
        target: Target,
        caller: BatchCaller,
        settings: BatchSettings,
        ledger: LedgerWriter,
        dead_letters: DeadLetters | None,
        dead_letter_topic: str | None,
        retry: RetryPolicy,
        invocation_timeout_s: float,
        may_start: Callable[[Work], bool | Coroutine[Any, Any, bool]],
        may_send: SendFence,
        on_durable: Callable[[Work], None],
        on_error: Callable[[str], None],
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._subscription_id = subscription_id
        self._target = target
        self._caller = caller
        self._settings = settings
        self._ledger = ledger
        self._retry = retry
        self._timeout_s = invocation_timeout_s
        self._may_start = may_start
        self._may_send = may_send
        self._on_durable = on_durable
        self._on_error = on_error
        self._clock_ms = clock_ms
        self._discards = Discards(
            subscription_id=subscription_id,
            target=target,
            destination=settings.destination,
            event_source=settings.event_source,
            dead_letters=dead_letters,
            dead_letter_topic=dead_letter_topic,
            on_error=on_error,
        )
        self._lines: dict[PartitionState, _Line] = {}
        self.stats = DispatcherStats()
        self.batches = 0
        """Calls that reached the function: one per attempt of a batch (or of a bisected half),
        counted as the records' attempts are. A call that did not is handed out again as the
        same attempt and counted then: one the invoker gave back unsent (``NotSent``), and one
        answered without reaching the function (``BatchAnswer.called`` False: throttled,
        unreachable, but also not invocable at all, which the answer does not tell apart)."""

    @property
    def in_flight(self) -> int:
        return sum(len(line.core.in_flight) for line in self._lines.values())

    # -- admission --------------------------------------------------------------------------

    def admit_all(self, state: PartitionState, works: Sequence[Work]) -> None:
        """Records of one partition, in offset order, not finished by an earlier owner."""
        line = self._lines.get(state)
        if line is None:
            line = self._lines[state] = _Line(
                state, PartitionBatches(self._settings.policy), asyncio.Event()
            )
            line.task = asyncio.create_task(self._run(line))
            line.task.add_done_callback(self._line_ended)
        now = self._clock_ms()
        entries: list[Entry[Work]] = []
        max_bytes = self._settings.policy.max_bytes
        for work in works:
            record = work.record
            refused = False
            try:
                work.request = build_request(
                    subscription_id=self._subscription_id,
                    record=record,
                    target=self._target,
                    max_body_bytes=max_bytes,
                    invocation_id=work.inv_id,
                    timeout_s=self._timeout_s,
                )
                size = self._caller.event_bytes(work.request)
            except TerminalInvokeError as exc:
                # Bad input (not JSON where JSON is expected): never invoked, delivered alone.
                work.last_error = str(exc)
                refused = True
                size = record.size
            entry = Entry(work, record.offset, record.timestamp_ms, size, now, refused=refused)
            entries.append(entry)
        line.core.add(entries)
        line.wake.set()

    # -- the line's task --------------------------------------------------------------------

    async def _run(self, line: _Line) -> None:
        core = line.core
        while not core.revoked:
            step = core.step(self._clock_ms())
            if isinstance(step, Idle | Wait):
                line.wake.clear()
                timeout = None
                if isinstance(step, Wait):
                    timeout = max(0.0, (step.until_ms - self._clock_ms()) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(line.wake.wait(), timeout)
                continue
            if isinstance(step, Deliver):
                # Failing records writes their failure (destination, ledger) as an attempt
                # would: only while this poller provably owns the partition (a poller woken
                # from a pause must leave expired or refused records to their new owner).
                if core.revoked or not await self._allowed(step.entries[0].item):
                    return  # abandoned: the partition's next owner decides
                # A record never invoked (refused, too large) has no answer of its own.
                await self._discards.deliver(step, line.last_answer if step.attempts else None)
                self._settle(core.delivered(), step)
                continue
            assert isinstance(step, InvokeBatch)
            if not await self._attempt(line, step):
                return  # abandoned: the partition's next owner decides

    def _line_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug, not a handler's failure: the partition stalls (nothing more is committed)
        # rather than skipping records; the error is shown on the subscription.
        exc = task.exception()
        log.error("partition batch line of %s failed", self._subscription_id, exc_info=exc)
        self._on_error(f"partition batches stopped: {exc!r}")

    async def _allowed(self, work: Work) -> bool:
        allowed = self._may_start(work)
        if allowed is True or allowed is False:
            return allowed
        self.stats.count_held(work)  # the step's first record stands for it
        return await allowed

    async def _attempt(self, line: _Line, step: InvokeBatch[Work]) -> bool:
        """One call of the batch; False when the partition was given up (revoked, or this
        poller is no longer provably its owner) and nothing more may be invoked."""
        works = [e.item for e in step.entries]
        retrying = max(step.attempt - 1, line.not_called)
        delay = 0.0
        if step.attempt > 1 and not line.again:
            # Counted as it is scheduled, as the per-record path does (a failure shows at
            # once); a step handed out again is the same retry.
            self.stats.retries += 1
        line.again = False
        if retrying:
            delay = self._retry.backoff(retrying)
            for work in works:
                work.status = _S.BACKING_OFF
        call = line.call = asyncio.create_task(self._call(line, step, delay))
        try:
            await asyncio.wait({call})
        except asyncio.CancelledError:
            call.cancel()  # the line is being abandoned: so is its call
            raise
        finally:
            line.call = None
        if call.cancelled():
            # Every record of it was killed (settled already): nothing is left to learn.
            line.core.reported((False,) * len(works))
            return True
        called = call.result()
        if called is None:
            return False
        if called is _RECONSIDER:
            line.core.not_called()  # the same step again: its expired records are delivered
            line.again = True
            return True
        answer = line.last_answer = called.answer
        if answer.error is not None:
            for work in works:
                work.last_error = answer.error
        if not answer.called:
            # Throttled or unreachable: the same attempt again, after a growing backoff; the
            # function never ran, so no attempt is counted.
            for entry in step.entries:
                if id(entry) in called.sent:
                    entry.item.attempts -= 1
            line.not_called += 1
            line.core.not_called()
            line.again = True
            return True
        line.not_called = 0
        failed, rejected = _spread(answer, step.entries, called.sent)
        self._settle(
            line.core.reported(failed, rejected, function_error=answer.function_error is not None),
            None,
        )
        return True

    async def _call(self, line: _Line, step: InvokeBatch[Work], delay: float) -> _Called | None:
        if delay:
            line.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._backoff(line), delay)
        # Fenced right before the call, after any backoff: the session may have lapsed or the
        # partition been revoked meanwhile, and the next owner must not be overlapped.
        if line.core.revoked or not await self._allowed(step.entries[0].item):
            return None
        # Records killed during the backoff are settled already: a retry leaves them out.
        live = line.core.open_entries(step.entries)
        expired = line.core.expired(live, self._clock_ms())
        if expired:
            # They go to the destination first, not to the function; the others have waited
            # out this backoff already and go on without another one.
            line.skip_backoff = delay > 0 and len(expired) < len(live)
            return _RECONSIDER
        works = [e.item for e in live]
        for work in works:
            work.attempts += 1
            work.status = _S.RUNNING
        requests = [
            w.request if w.attempts == 1 else with_attempt(w.request, w.attempts)
            for w in works
            if w.request is not None
        ]
        sent = frozenset(id(e) for e in live)
        if not requests:
            return _Called(BatchAnswer(()), sent)
        fence_sends(self._may_send)  # this call's task only: the invoker's waits
        try:
            answer = await self._caller.invoke_records(
                requests,
                report_batch_item_failures=self._settings.report_batch_item_failures,
            )
        except NotSent:
            # The invoker waited (a credentials refresh) and the proof of ownership lapsed
            # meanwhile: nothing went out; the same step again, fenced before the call.
            for work in works:
                work.attempts -= 1
            self.stats.unsent += 1
            # It waited out its backoff already; the same step again must not wait twice.
            line.skip_backoff = delay > 0
            return _RECONSIDER
        except IngressError as exc:
            answer = BatchAnswer.whole(len(requests), str(exc), called=False)
        if answer.called:
            self.batches += 1
        return _Called(answer, sent)

    async def _backoff(self, line: _Line) -> None:
        """Wait out a retry's backoff unless an operator ends it (``retry_now``) or the
        partition is revoked."""
        line.in_backoff = True
        try:
            while not line.skip_backoff and not line.core.revoked:
                line.wake.clear()
                await line.wake.wait()
        finally:
            line.in_backoff = False
        line.skip_backoff = False

    # -- results ----------------------------------------------------------------------------

    def _settle(
        self,
        settled: list[Settled[Work]],
        delivered: Deliver[Work] | None,
        *,
        killed: InvocationStatus | None = None,
    ) -> None:
        for group in settled:
            if group.result == "succeeded":
                status = _S.SUCCEEDED
                self.stats.succeeded += len(group.entries)
            elif group.result == "killed":
                status = killed or _S.KILLED
            elif delivered is not None and self._discards.delivers:
                status = _S.DEAD_LETTERED
                self.stats.dead_lettered += len(group.entries)
            else:
                status = _S.FAILED
                self.stats.failed += len(group.entries)
            reason: str | None = None
            if status is not _S.SUCCEEDED:
                condition = group.condition.value if group.condition else status.value.lower()
                reason = f"{condition} after {max(e.attempts for e in group.entries)} attempts"
                if killed is not None:
                    reason = f"{killed.value.lower()} by an operator"
                log.info(
                    "subscription %s: %d records of %s/%d from offset %d %s: %s",
                    self._subscription_id,
                    len(group.entries),
                    group.entries[0].item.record.topic,
                    group.entries[0].item.record.partition,
                    group.entries[0].offset,
                    status.value,
                    reason,
                )
            for entry in group.entries:
                work = entry.item
                work.status = status
                self._ledger.submit(
                    self._entry(work, status, reason), _Durable(self._on_durable, work)
                )

    def _entry(self, work: Work, status: InvocationStatus, error: str | None) -> LedgerEntry:
        return work.ledger_entry(
            status,
            subscription_id=self._subscription_id,
            sink=self._target.sink,
            error=error,
            dead_letter_topic=self._discards.to_dead_letter_topic,
        )

    # -- operator actions -------------------------------------------------------------------

    def retry_now(self, inv_id: str) -> bool:
        """End the backoff of the batch that holds ``inv_id``; False if none is backing off."""
        for line in self._lines.values():
            # Not while its call runs: the flag would outlive it and cut the next backoff.
            if line.in_backoff and any(e.item.inv_id == inv_id for e in line.core.in_flight):
                line.skip_backoff = True
                line.wake.set()
                return True
        return False

    def kill(self, inv_id: str, status: InvocationStatus) -> bool:
        """Settle ``inv_id`` of a batch in flight as ``status`` now; False if no batch holds
        it. The batch's later answer about it is ignored, a retry leaves it out, and once
        every record of the call in flight is killed the call itself is cancelled."""
        for line in self._lines.values():
            settled = line.core.kill(lambda work: work.inv_id == inv_id)
            if not settled:
                continue
            self._settle(settled, None, killed=status)
            if line.call is not None and line.core.open_in_flight() == 0:
                line.call.cancel()
            return True
        return False

    # -- revocation -------------------------------------------------------------------------

    async def release(self, partitions: list[PartitionState], deadline_s: float) -> None:
        """Stop these partitions' lines: a call in flight may end within ``deadline_s`` (so
        the next owner does not overlap it), but its answer settles nothing."""
        lines = [self._lines[s] for s in partitions if s in self._lines]
        for line in lines:
            line.core.revoke()
            line.wake.set()
        tasks = [line.task for line in lines if line.task is not None]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=deadline_s)
            for task in still:
                task.cancel()
            if still:
                self.stats.abandoned += len(still)
                await asyncio.wait(still, timeout=1.0)

    def forget(self, partitions: list[PartitionState]) -> None:
        for state in partitions:
            self._lines.pop(state, None)

    async def abandon_all(self) -> None:
        tasks = [line.task for line in self._lines.values() if line.task is not None]
        for line in self._lines.values():
            line.core.revoke()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self._lines.clear()


class _Durable:
    """The ledger's callback for one row: finish the record's offset."""

    __slots__ = ("_on_durable", "_work")

    def __init__(self, on_durable: Callable[[Work], None], work: Work) -> None:
        self._on_durable = on_durable
        self._work = work

    def __call__(self) -> None:
        self._on_durable(self._work)


def _spread(
    answer: BatchAnswer, entries: tuple[Entry[Work], ...], sent: frozenset[int]
) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """The answer about the records sent, as flags for every entry of the step (a record
    killed before the call was not sent: neither failed nor rejected)."""
    failed = iter(answer.failed)
    rejected = iter(answer.rejected or (False,) * len(answer.failed))
    out_failed: list[bool] = []
    out_rejected: list[bool] = []
    for entry in entries:
        if id(entry) in sent:
            out_failed.append(next(failed))
            out_rejected.append(next(rejected))
        else:
            out_failed.append(False)
            out_rejected.append(False)
    return tuple(out_failed), tuple(out_rejected)
