"""One partition's records delivered as AWS's Kafka event source mapping delivers them.

Pure: the shell reports what happened (records fetched, time passing, a batch's outcome, a
delivery to the on-failure destination done, a kill, a revocation) and asks :meth:`step`
what to do next; it does the I/O. Time is passed in (milliseconds), so tests run on a
manual clock.

    step(now) ──▶ Idle                 nothing queued
              ──▶ Wait(until_ms)       a batch is forming: ask again then (or when more arrive)
              ──▶ Invoke(entries, n)   call the function with these records (attempt n)
              ──▶ Deliver(entries, c)  write them to the on-failure destination (condition c)
    reported(failed) / delivered() / kill(which)  ──▶ the entries settled by it

The rules (docs.aws.amazon.com/lambda/latest/dg/with-kafka-configure.html, "kafka-retry-
configurations.html", "kafka-on-failure.html"):

* one batch in flight per partition, records in offset order; the next batch forms only when
  the previous one settled completely (every record succeeded, was discarded or killed);
* a batch closes when it holds ``size`` records, when the next record would take its payload
  past ``max_bytes`` (Lambda's 6 MB), or ``window_ms`` after its first record arrived;
* a failed batch is retried (:class:`~adapter.invokers.bisect.BisectPlanner`): a partial
  response resumes at the first failed record — the records before it settle as succeeded —,
  with ``bisect`` a batch failing as a whole is split in halves (first half first) until a
  poison record stands alone, and after ``max_retries`` retries (``None``: until the records
  expire) the failing records go to the on-failure destination and the partition moves on;
* before every attempt, records older than ``max_age_ms`` (by their Kafka timestamp) go to the
  destination with ``RecordAgeExceeded`` instead of being invoked;
* a record larger than ``max_bytes`` on its own is never invoked (``MaximumPayloadSizeExceeded``).

After :meth:`revoke` nothing settles any more: the partition's next owner receives the
unfinished records again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from adapter.invokers.bisect import BisectPlanner, Discard, Done, Invoke
from adapter.invokers.failure_record import FailureCondition

__all__ = [
    "RETRIES_WITH_DESTINATION",
    "BatchPolicy",
    "Deliver",
    "Entry",
    "Idle",
    "InvokeBatch",
    "PartitionBatches",
    "Settled",
    "Step",
    "Wait",
    "retries_for",
]

T = TypeVar("T")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's limit of a synchronous invocation's request payload."""


RETRIES_WITH_DESTINATION = 10
"""AWS's cap on retries when they are infinite (-1) and an on-failure destination is set."""


def retries_for(max_retries: int | None, *, has_destination: bool) -> int | None:
    """``maximum.retry.attempts`` as AWS applies it: infinite retries (None) become
    :data:`RETRIES_WITH_DESTINATION` once failed records have somewhere to go."""
    if max_retries is None and has_destination:
        return RETRIES_WITH_DESTINATION
    return max_retries


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPolicy:
    """The ESM settings of one subscription (AWS's defaults for MSK)."""

    size: int = 100
    window_ms: int = 500
    max_bytes: int = MAX_PAYLOAD_BYTES
    bisect: bool = False
    max_retries: int | None = None
    """Retries after the first attempt; ``None`` retries until the records expire."""
    max_age_ms: int | None = None
    """Records older than this are not invoked any more; ``None``: no limit."""

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if self.window_ms < 0 or self.max_bytes < 1:
            raise ValueError("window_ms must be >= 0 and max_bytes >= 1")


@dataclass(slots=True, eq=False)
class Entry(Generic[T]):
    """One record waiting in, or travelling through, the partition's line."""

    item: T
    offset: int
    timestamp_ms: int
    size: int
    """Its share of the event's payload, in bytes."""
    arrived_ms: int
    attempts: int = 0
    refused: bool = False
    """Refused at admission (its request cannot be built): never invoked."""


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing is queued."""


@dataclass(frozen=True, slots=True)
class Wait:
    """A batch is forming; it closes at ``until_ms`` unless more records fill it first."""

    until_ms: int


@dataclass(frozen=True, slots=True)
class InvokeBatch(Generic[T]):
    entries: tuple[Entry[T], ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class Deliver(Generic[T]):
    """Write a failure record of ``entries`` to the on-failure destination, then call
    :meth:`PartitionBatches.delivered`."""

    entries: tuple[Entry[T], ...]
    condition: FailureCondition
    attempts: int


Step = Idle | Wait | InvokeBatch[T] | Deliver[T]


@dataclass(frozen=True, slots=True)
class Settled(Generic[T]):
    """``entries`` reached their final result: ``succeeded``, ``discarded`` or ``killed``."""

    entries: tuple[Entry[T], ...]
    result: str
    condition: FailureCondition | None = None


@dataclass(slots=True)
class _Batch(Generic[T]):
    planner: BisectPlanner[Entry[T]]
    action: Invoke[Entry[T]] | Discard[Entry[T]] | None
    """What the planner asked for and the line has not handed out yet."""
    open: dict[int, Entry[T]] = field(default_factory=dict)
    """The batch's records not settled yet, by identity."""
    unit: tuple[Entry[T], ...] = ()
    """The planner's unit whose invocation is outstanding (settled records left out)."""
    rejected: tuple[Entry[T], ...] = ()
    """Records the function rejected for good, to be delivered before the batch goes on."""
    discarding: bool = False
    """The outstanding delivery is the planner's Discard."""
    done: bool = False
    """The planner has nothing left; the batch ends once ``rejected`` is delivered."""


class PartitionBatches(Generic[T]):
    """The ESM line of one partition assignment (see the module docstring)."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._queue: deque[Entry[T]] = deque()
        self._batch: _Batch[T] | None = None
        self._pending: Step[T] | None = None
        """The step handed out and not answered yet (an invoke or a delivery)."""
        self._lone: Entry[T] | None = None
        """A record never to be invoked (too large, or refused at admission)."""
        self.revoked = False

    def __repr__(self) -> str:
        return (
            f"PartitionBatches(queued={len(self._queue)}, busy={self.busy}, revoked={self.revoked})"
        )

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """A batch is in flight (being invoked, retried or delivered)."""
        return self._batch is not None or self._lone is not None

    @property
    def in_flight(self) -> tuple[Entry[T], ...]:
        """The records of the step handed out and not answered yet."""
        step = self._pending
        if isinstance(step, InvokeBatch | Deliver):
            return step.entries
        return ()

    def expired(self, entries: Sequence[Entry[T]], now_ms: int) -> tuple[Entry[T], ...]:
        """Those of ``entries`` older than ``max_age_ms`` now (by their Kafka timestamp)."""
        max_age = self.policy.max_age_ms
        if max_age is None:
            return ()
        return tuple(e for e in entries if _expired(e, now_ms, max_age))

    def open_entries(self, entries: Sequence[Entry[T]]) -> tuple[Entry[T], ...]:
        """Those of ``entries`` not settled yet (killed or expired records are)."""
        batch = self._batch
        if batch is None:
            return ()
        return tuple(e for e in entries if id(e) in batch.open)

    def open_in_flight(self) -> int:
        """Records of the outstanding invocation not settled yet (0: nothing waits for it)."""
        batch = self._batch
        if batch is None or not isinstance(self._pending, InvokeBatch):
            return 0
        return sum(1 for e in self._pending.entries if id(e) in batch.open)

    # -- events -----------------------------------------------------------------------------

    def add(self, entries: Sequence[Entry[T]]) -> None:
        """Records fetched, in offset order."""
        if not self.revoked:
            self._queue.extend(entries)

    def step(self, now_ms: int) -> Step[T]:
        """What to do next. Only one step is outstanding at a time."""
        if self._pending is not None:
            raise RuntimeError(f"{self._pending!r} is not answered yet")
        while not self.revoked:
            if self._batch is None and self._lone is None:
                formed = self._form(now_ms)
                if formed is not None:
                    return formed
            if self._lone is not None:
                return self._hand_out(Deliver((self._lone,), self._lone_condition(), 0))
            batch = self._batch
            assert batch is not None
            if batch.rejected:
                attempts = max(e.attempts for e in batch.rejected)
                return self._hand_out(
                    Deliver(batch.rejected, FailureCondition.RETRY_ATTEMPTS_EXHAUSTED, attempts)
                )
            if batch.done:
                self._batch = None
                continue
            action = batch.action
            assert action is not None, "a batch in flight always has its next action"
            if isinstance(action, Discard):
                batch.action = None
                left = tuple(e for e in action.items if id(e) in batch.open)
                if left:
                    batch.discarding = True
                    condition = FailureCondition.RETRY_ATTEMPTS_EXHAUSTED
                    # Each record's own count: after a bisection the planner's is per half.
                    attempts = max(e.attempts for e in left)
                    return self._hand_out(Deliver(left, condition, attempts))
                self._advance(batch, batch.planner.resume())
                continue
            max_age = self.policy.max_age_ms
            live = tuple(e for e in action.items if id(e) in batch.open)
            if max_age is not None:
                expired = tuple(e for e in live if _expired(e, now_ms, max_age))
                if expired:
                    # Delivered first; the planner's invocation then goes on without them.
                    attempts = max(e.attempts for e in expired)
                    condition = FailureCondition.RECORD_AGE_EXCEEDED
                    return self._hand_out(Deliver(expired, condition, attempts))
            if not live:
                # Every record of this unit settled otherwise (expired, killed): it succeeded
                # as far as the planner is concerned.
                self._advance(batch, batch.planner.report([False] * len(action.items)))
                continue
            batch.action = None
            batch.unit = action.items
            for entry in live:
                entry.attempts += 1
            return self._hand_out(InvokeBatch(live, action.attempt))
        return Idle()

    def reported(
        self,
        failed: Sequence[bool],
        rejected: Sequence[bool] = (),
        *,
        function_error: bool = True,
    ) -> list[Settled[T]]:
        """The outcome of the last :class:`InvokeBatch`: ``failed[i]`` for its ``entries[i]``
        (to be retried); ``rejected[i]`` when the function refused it for good (never retried,
        delivered to the destination). ``function_error``: the function failed as a whole
        (only then is a failing unit bisected)."""
        step, batch = self._answer_invoke()
        if batch is None:
            return []
        if len(failed) != len(step.entries) or len(rejected) not in (0, len(step.entries)):
            raise ValueError(f"{len(failed)} results for {len(step.entries)} records")
        refused = rejected or (False,) * len(failed)
        verdict = {id(e): bad for e, bad in zip(step.entries, failed, strict=True)}
        done = tuple(
            e
            for e, bad, no in zip(step.entries, failed, refused, strict=True)
            if not bad and not no and id(e) in batch.open
        )
        batch.rejected = tuple(
            e for e, no in zip(step.entries, refused, strict=True) if no and id(e) in batch.open
        )
        # The planner judges its unit without the records that left it before the answer
        # (killed, expired: a unit whose every record sent failed still failed as a whole,
        # and is split); rejected ones count as not failed (never retried).
        unit_failed = [verdict.get(id(e), False) and id(e) in batch.open for e in batch.unit]
        gone = [id(e) not in batch.open for e in batch.unit]
        batch.unit = ()
        settled = [self._settle(batch, done, "succeeded")] if done else []
        self._advance(
            batch, batch.planner.report(unit_failed, function_error=function_error, gone=gone)
        )
        return settled

    def not_called(self) -> None:
        """The last :class:`InvokeBatch` never reached the function (throttled, unreachable,
        no credentials): it is handed out again as the same attempt. AWS counts retries and
        bisects on the function's errors only; such records stay bounded by their age."""
        step, batch = self._answer_invoke()
        if batch is None:
            return
        for entry in step.entries:
            entry.attempts -= 1
        batch.action = Invoke(batch.unit, step.attempt)
        batch.unit = ()

    def delivered(self) -> list[Settled[T]]:
        """The last :class:`Deliver` is written: its records are settled."""
        step = self._pending
        if not isinstance(step, Deliver):
            raise RuntimeError(f"no delivery is outstanding (have {step!r})")
        self._pending = None
        if self.revoked:
            return []
        if self._lone is not None:
            self._lone = None
            return [Settled(step.entries, "discarded", step.condition)]
        batch = self._batch
        assert batch is not None
        # A record killed while it was being delivered is settled already (as killed).
        left = tuple(e for e in step.entries if id(e) in batch.open)
        settled = [self._settle(batch, left, "discarded", step.condition)] if left else []
        if batch.rejected:
            batch.rejected = ()
        elif batch.discarding:
            batch.discarding = False
            self._advance(batch, batch.planner.resume())
        return settled

    def kill(self, match: Callable[[T], bool]) -> list[Settled[T]]:
        """An operator killed a record of the batch in flight: it settles as killed now, and
        whatever the batch's answer says about it later is ignored."""
        batch = self._batch
        if self.revoked or batch is None:
            return []
        found = tuple(e for e in batch.open.values() if match(e.item))
        return [self._settle(batch, found, "killed")] if found else []

    def revoke(self) -> None:
        """The partition was taken away: nothing is invoked or settled any more."""
        self.revoked = True
        self._queue.clear()
        self._batch = None
        self._lone = None

    # -- internals --------------------------------------------------------------------------

    def _form(self, now_ms: int) -> Step[T] | None:
        queue = self._queue
        if not queue:
            return Idle()
        policy = self.policy
        head = queue[0]
        if head.refused or head.size > policy.max_bytes:
            self._lone = queue.popleft()
            return None
        count = 0
        size = 0
        full = False
        for entry in queue:
            if count == policy.size or entry.refused or size + entry.size > policy.max_bytes:
                full = True
                break
            count += 1
            size += entry.size
        full = full or count == policy.size
        if not full and now_ms < head.arrived_ms + policy.window_ms:
            return Wait(head.arrived_ms + policy.window_ms)
        items = tuple(queue.popleft() for _ in range(count))
        planner: BisectPlanner[Entry[T]] = BisectPlanner(
            items, bisect=policy.bisect, max_retries=policy.max_retries
        )
        first = planner.start()
        assert isinstance(first, Invoke)
        self._batch = _Batch(planner, first, {id(e): e for e in items})
        return None

    def _lone_condition(self) -> FailureCondition:
        assert self._lone is not None
        if self._lone.size > self.policy.max_bytes:
            return FailureCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED
        return FailureCondition.RETRY_ATTEMPTS_EXHAUSTED

    def _advance(
        self, batch: _Batch[T], action: Invoke[Entry[T]] | Discard[Entry[T]] | Done
    ) -> None:
        if isinstance(action, Done):
            batch.done = True
            batch.action = None
            return
        batch.action = action

    def _answer_invoke(self) -> tuple[InvokeBatch[T], _Batch[T] | None]:
        """The outstanding invocation, now answered, and its batch (None once revoked)."""
        step = self._pending
        if not isinstance(step, InvokeBatch):
            raise RuntimeError(f"no batch invocation is outstanding (have {step!r})")
        self._pending = None
        return step, None if self.revoked else self._batch

    def _hand_out(self, step: Step[T]) -> Step[T]:
        self._pending = step
        return step

    def _settle(
        self,
        batch: _Batch[T],
        entries: tuple[Entry[T], ...],
        result: str,
        condition: FailureCondition | None = None,
    ) -> Settled[T]:
        for entry in entries:
            batch.open.pop(id(entry), None)
        return Settled(entries, result, condition)


def _expired(entry: Entry[T], now_ms: int, max_age_ms: int) -> bool:
    # A record without a timestamp (-1: an old message format) never expires.
    return entry.timestamp_ms >= 0 and now_ms - entry.timestamp_ms > max_age_ms
