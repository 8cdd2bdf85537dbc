"""One partition's records delivered as AWS's Kafka event source mapping delivers them.

Pure: the shell reports what happened (records fetched, time passing, a batch's outcome, a
delivery to the on-failure destination done, a kill, a revocation) and asks :meth:`step`
what to do next; it does the I/O. Time is passed in (milliseconds), so tests run on a
manual clock.

    step(now) ──▶ Idle                 nothing queued
              ──▶ Wait(until_ms)       a batch is forming: ask again then (or when more arrive)
              ──▶ Invoke(entries, n)   call the function with these records (attempt n)
              ──▶ Deliver(entries, c)  write them to the on-failure destination (condition c)
    reported(failed) / delivered() / killed()  ──▶ the entries settled by it, in offset order

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from adapter.invokers.bisect import BisectPlanner, Discard, Done, Invoke
from adapter.invokers.failure_record import FailureCondition

__all__ = [
    "BatchPolicy",
    "Deliver",
    "Entry",
    "Idle",
    "InvokeBatch",
    "PartitionBatches",
    "Settled",
    "Step",
    "Wait",
]

T = TypeVar("T")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's limit of a synchronous invocation's request payload."""


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
    expired: list[Entry[T]] = field(default_factory=list)
    """Records of the planner's current unit sent to the destination instead of invoked."""


class PartitionBatches(Generic[T]):
    """The ESM line of one partition assignment (see the module docstring)."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._queue: deque[Entry[T]] = deque()
        self._batch: _Batch[T] | None = None
        self._pending: Step[T] | None = None
        """The step handed out and not answered yet (an invoke or a delivery)."""
        self._lone: Entry[T] | None = None
        """A record too large for any batch, on its way to the destination."""
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

    # -- events -----------------------------------------------------------------------------

    def add(self, entries: Sequence[Entry[T]]) -> None:
        """Records fetched, in offset order."""
        if self.revoked:
            return
        self._queue.extend(entries)

    def step(self, now_ms: int) -> Step[T]:
        """What to do next. Only one step is outstanding at a time."""
        if self._pending is not None:
            raise RuntimeError(f"{self._pending!r} is not answered yet")
        if self.revoked:
            return Idle()
        if self._batch is None and self._lone is None:
            formed = self._form(now_ms)
            if formed is not None:
                return formed
        batch = self._batch
        if batch is None:
            assert self._lone is not None
            return self._hand_out(
                Deliver((self._lone,), FailureCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED, 0)
            )
        action = batch.action
        batch.action = None
        if isinstance(action, Discard):
            return self._hand_out(
                Deliver(action.items, FailureCondition.RETRY_ATTEMPTS_EXHAUSTED, action.attempts)
            )
        assert action is not None, "a batch in flight always has its next action"
        max_age = self.policy.max_age_ms
        if max_age is not None:
            expired = [e for e in action.items if now_ms - e.timestamp_ms > max_age]
            if expired:
                live = tuple(e for e in action.items if e not in expired)
                batch.expired.extend(expired)
                # The live ones are invoked after the expired ones were delivered.
                batch.action = Invoke(live, action.attempt) if live else None
                attempts = max(e.attempts for e in expired)
                return self._hand_out(
                    Deliver(tuple(expired), FailureCondition.RECORD_AGE_EXCEEDED, attempts)
                )
        return self._invoke(batch, action.items, action.attempt)

    def reported(self, failed: Sequence[bool]) -> list[Settled[T]]:
        """The outcome of the last :class:`InvokeBatch`: ``failed[i]`` for its ``entries[i]``."""
        step = self._pending
        if not isinstance(step, InvokeBatch):
            raise RuntimeError(f"no batch invocation is outstanding (have {step!r})")
        self._pending = None
        batch = self._batch
        if self.revoked or batch is None:
            return []
        if len(failed) != len(step.entries):
            raise ValueError(f"{len(failed)} results for {len(step.entries)} records")
        done = tuple(e for e, bad in zip(step.entries, failed, strict=True) if not bad)
        # The planner judges its whole unit: records that expired before this attempt are
        # settled already and count as not failed.
        verdict = dict(zip((id(e) for e in step.entries), failed, strict=True))
        unit_failed = [verdict.get(id(e), False) for e in self._unit(batch, step)]
        batch.expired = []
        settled = [self._settle(batch, done, "succeeded")] if done else []
        self._advance(batch, batch.planner.report(unit_failed))
        return settled

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
        settled = [self._settle(batch, step.entries, "discarded", step.condition)]
        if step.condition is FailureCondition.RECORD_AGE_EXCEEDED:
            if batch.action is None:  # every record of the unit expired
                unit_failed = [False] * len(batch.expired)
                batch.expired = []
                self._advance(batch, batch.planner.report(unit_failed))
        else:
            self._advance(batch, batch.planner.resume())
        return settled

    def killed(self) -> list[Settled[T]]:
        """An operator killed the batch in flight: every record of it not settled yet is
        settled as killed, and the partition moves on."""
        if self.revoked:
            return []
        self._pending = None
        batch, self._batch = self._batch, None
        if batch is None:
            return []
        remaining = tuple(batch.open.values())
        return [Settled(remaining, "killed")] if remaining else []

    def revoke(self) -> None:
        """The partition was taken away: nothing is invoked or settled any more."""
        self.revoked = True
        self._queue.clear()
        self._queued_bytes = 0
        self._batch = None
        self._lone = None

    # -- internals --------------------------------------------------------------------------

    def _form(self, now_ms: int) -> Step[T] | None:
        queue = self._queue
        if not queue:
            return Idle()
        policy = self.policy
        head = queue[0]
        if head.size > policy.max_bytes:
            self._lone = queue.popleft()
            return None
        count = 0
        size = 0
        full = False
        for entry in queue:
            if count == policy.size or size + entry.size > policy.max_bytes:
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
        batch = _Batch(planner, None, {id(e): e for e in items})
        self._batch = batch
        first = planner.start()
        assert isinstance(first, Invoke)
        batch.action = first
        return None

    def _unit(self, batch: _Batch[T], step: InvokeBatch[T]) -> list[Entry[T]]:
        """The planner's current unit, in its order: the expired records and the invoked."""
        if not batch.expired:
            return list(step.entries)
        return sorted([*batch.expired, *step.entries], key=_by_offset)

    def _invoke(self, batch: _Batch[T], items: tuple[Entry[T], ...], attempt: int) -> Step[T]:
        for entry in items:
            entry.attempts += 1
        return self._hand_out(InvokeBatch(items, attempt))

    def _advance(
        self, batch: _Batch[T], action: Invoke[Entry[T]] | Discard[Entry[T]] | Done
    ) -> None:
        if isinstance(action, Done):
            self._batch = None
            return
        batch.action = action

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


def _by_offset(entry: Entry[T]) -> int:
    return entry.offset
