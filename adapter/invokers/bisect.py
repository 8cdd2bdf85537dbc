"""Retrying one partition's batch, ESM style: retries, bisect on function error, give up.

A pure state machine. The caller invokes what it is told, reports which of those records
failed, and gets the next action; it does the I/O (the call, the on-failure destination).

    start()  ──▶ Invoke(all records, attempt 1)
    report(failed flags):
      none failed                 the unit is done; go on with the next pending unit
      some failed (a partial
        response)                 the failed ones are retried as one unit (a retry)
      all failed on a function
        error, bisect on, more
        than one record           split in two halves, first half first (no retry used)
      all failed otherwise        retried while retries remain, then Discard(unit)
    Done() when nothing is left.

Units run one at a time and the first half before the second, so a partition's records
complete in offset order. With bisect on, one poison record among N is isolated after
``ceil(log2 N) + 1`` failing invocations (one per halving level) and only it is discarded.

AWS's settings (docs.aws.amazon.com/lambda/latest/dg/kafka-retry-configurations.html):
``MaximumRetryAttempts`` does not count the first attempt, -1 (here ``None``) retries until
the record expires; ``BisectBatchOnFunctionError`` splits on a function error; with a
partial response the batch resumes at the reported record. Record age
(``MaximumRecordAgeInSeconds``) is the caller's check before each ``Invoke``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["BisectPlanner", "Discard", "Done", "Invoke"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Invoke(Generic[T]):
    """Call the function with ``items``; ``attempt`` counts tries of this unit (1 = first)."""

    items: tuple[T, ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class Discard(Generic[T]):
    """``items`` failed for good: send them to the on-failure destination, then ``resume()``."""

    items: tuple[T, ...]
    attempts: int


@dataclass(frozen=True, slots=True)
class Done:
    """Every record of the batch succeeded or was discarded."""


Action = Invoke[T] | Discard[T] | Done


@dataclass(slots=True)
class _Unit(Generic[T]):
    items: tuple[T, ...]
    retries_used: int = 0
    attempt: int = 1


class BisectPlanner(Generic[T]):
    """Decides the next call for one batch; ``max_retries=None`` retries without end."""

    def __init__(self, items: Sequence[T], *, bisect: bool, max_retries: int | None) -> None:
        if not items:
            raise ValueError("a batch has at least one record")
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {max_retries}")
        self.bisect = bisect
        self.max_retries = max_retries
        # Pending units, the next one last (a stack: halves go on in offset order).
        self._pending: list[_Unit[T]] = [_Unit(tuple(items))]
        self._current: _Unit[T] | None = None
        self._discarding = False

    def __repr__(self) -> str:
        return (
            f"BisectPlanner(bisect={self.bisect}, max_retries={self.max_retries}, "
            f"pending={len(self._pending)})"
        )

    def start(self) -> Action[T]:
        if self._current is not None or self._discarding:
            raise RuntimeError("start() once, then report()/resume()")
        return self._next()

    def _next(self) -> Action[T]:
        if not self._pending:
            return Done()
        self._current = self._pending.pop()
        return Invoke(self._current.items, self._current.attempt)

    def report(
        self,
        failed: Sequence[bool],
        *,
        function_error: bool = True,
        gone: Sequence[bool] = (),
    ) -> Action[T]:
        """The outcome of the last ``Invoke``: ``failed[i]`` for its ``items[i]``.

        :attr:`adapter.invokers.batch_response.BatchVerdict.failed` has this shape. A unit
        failing as a whole is split only on a ``function_error`` (as AWS's
        BisectBatchOnFunctionError): a partial response naming the unit's first record, or an
        answer that cannot be read, is retried whole. ``gone[i]``: ``items[i]`` left the batch
        meanwhile (expired, killed) and was not sent: the unit is judged without it, so the
        records that were sent and all failed still fail as a whole.
        """
        unit = self._current
        if unit is None:
            raise RuntimeError("report() answers an Invoke")
        if len(failed) != len(unit.items) or len(gone) not in (0, len(unit.items)):
            raise ValueError(f"{len(failed)} results for {len(unit.items)} records")
        self._current = None
        if any(gone):
            kept = [
                (item, bad)
                for item, bad, left in zip(unit.items, failed, gone, strict=True)
                if not left
            ]
            unit = _Unit(tuple(item for item, _ in kept), unit.retries_used, unit.attempt)
            failed = [bad for _, bad in kept]
        failed_set = [item for item, bad in zip(unit.items, failed, strict=True) if bad]
        if not failed_set:
            return self._next()
        if len(failed_set) < len(unit.items):
            # A partial response: resume at the failed records (a retry of those).
            return self._retry_or_discard(_Unit(tuple(failed_set), unit.retries_used, unit.attempt))
        if self.bisect and function_error and len(unit.items) > 1:
            middle = len(unit.items) // 2
            first, second = unit.items[:middle], unit.items[middle:]
            # Splitting uses no retry; each half counts its own invocations from 1.
            self._pending.append(_Unit(second, unit.retries_used))
            self._pending.append(_Unit(first, unit.retries_used))
            return self._next()
        return self._retry_or_discard(unit)

    def _retry_or_discard(self, unit: _Unit[T]) -> Action[T]:
        if self.max_retries is None or unit.retries_used < self.max_retries:
            retry = _Unit(unit.items, unit.retries_used + 1, unit.attempt + 1)
            self._current = retry
            return Invoke(retry.items, retry.attempt)
        self._discarding = True
        return Discard(unit.items, unit.attempt)

    def resume(self) -> Action[T]:
        """After a ``Discard`` has been handled: the next action."""
        if not self._discarding:
            raise RuntimeError("resume() follows a Discard")
        self._discarding = False
        return self._next()
