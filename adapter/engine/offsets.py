"""Which Kafka offset may be committed, given records that finish in any order.

Records of one partition are dispatched concurrently (different keys, free lanes) and so finish
out of order, but a Kafka commit position says "everything before this is done". Committing
past an unfinished record would lose it on a crash or rebalance, so the commit position is the
end of the contiguous run of finished records:

    tracked   5  6  7  9  12          (8, 10, 11 never arrive: compaction, txn markers)
    finished  ✓  ✓  ·  ✓  ✓
                    ▲
                    └── oldest unfinished; commit position = 7 (= 6 + 1)

Offsets that were never tracked (gaps) do not hold the position back: once 7 finishes the
position jumps to 13. A record counts as finished when it succeeded, was dead-lettered, or
was recorded as terminally failed — anything after which it must never be delivered again.

Pure bookkeeping: no I/O and no clock. The consumer loop calls :meth:`OffsetTracker.track` as
it takes records, the engine calls :meth:`OffsetTracker.finish`, and the committer sends
:meth:`OffsetTracker.committable` and then reports success with ``mark_committed``. One tracker
belongs to one partition assignment (``adapter.engine.partition``).
"""

from __future__ import annotations

from collections import deque

__all__ = ["OffsetTracker", "TopicPartition"]

TopicPartition = tuple[str, int]
"""``(topic, partition)``. aiokafka's ``TopicPartition`` namedtuple hashes and compares equal
to the plain tuple, so either can be used as a key."""


class OffsetTracker:
    """Commit-position bookkeeping for one partition.

    Every operation is amortised O(1): tracked offsets sit in a deque in arrival (= offset)
    order, and the finished ones are popped from its head as soon as they are contiguous.
    """

    __slots__ = ("_committed", "_finished", "_last_tracked", "_pending", "_position", "_queue")

    def __init__(self) -> None:
        # Tracked offsets not yet folded into ``_position``; its head is always unfinished.
        self._queue: deque[int] = deque()
        self._pending: set[int] = set()
        # Finished but still behind an unfinished one; needed so the head can be popped past
        # them in one sweep once the blocker finishes.
        self._finished: set[int] = set()
        self._position: int | None = None
        self._committed: int | None = None
        self._last_tracked: int | None = None

    def __repr__(self) -> str:
        return (
            f"OffsetTracker(pending={self.pending}, position={self._position}, "
            f"committed={self._committed}, oldest_unfinished={self.oldest_unfinished()})"
        )

    def track(self, offset: int) -> None:
        """Register a record taken from the consumer. Offsets must strictly increase."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if self._last_tracked is not None and offset <= self._last_tracked:
            raise ValueError(
                f"offset {offset} tracked out of order: last tracked offset is "
                f"{self._last_tracked} (after a seek, call reset() first)"
            )
        self._last_tracked = offset
        self._queue.append(offset)
        self._pending.add(offset)

    def finish(self, offset: int) -> None:
        """Mark a tracked record finished. Finishing twice or an untracked offset is a bug."""
        try:
            self._pending.remove(offset)
        except KeyError:
            state = "already finished" if self._is_finished(offset) else "not tracked"
            raise ValueError(f"cannot finish offset {offset}: {state}") from None
        queue = self._queue
        if queue[0] != offset:
            self._finished.add(offset)
            return
        queue.popleft()
        last = offset
        finished = self._finished
        while queue and queue[0] in finished:
            last = queue.popleft()
            finished.remove(last)
        self._position = last + 1

    def start_at(self, position: int) -> None:
        """The consumer's position when the partition was assigned with nothing committed:
        committable before any record finishes, so the group learns where this assignment
        began. Ignored once a record has finished (the position is known from it then)."""
        if self._position is None and (self._queue[0] if self._queue else position) >= position:
            self._position = position

    def committable(self) -> int | None:
        """The position to commit now, or ``None`` if it has not moved since the last commit."""
        position = self._position
        if position is None or (self._committed is not None and position <= self._committed):
            return None
        return position

    def mark_committed(self, position: int) -> None:
        """Record that ``position`` was committed to Kafka.

        Commits may be acknowledged out of order, so an older position than one already
        marked is ignored. A position that was never committable is a bug.
        """
        if self._position is None or position > self._position:
            raise ValueError(
                f"cannot mark position {position} committed: only {self._position} is committable"
            )
        if self._committed is None or position > self._committed:
            self._committed = position

    @property
    def pending(self) -> int:
        """Records tracked and not yet finished."""
        return len(self._pending)

    @property
    def position(self) -> int | None:
        """The contiguous-finished position, whether or not it was committed already."""
        return self._position

    @property
    def committed(self) -> int | None:
        """The last position passed to :meth:`mark_committed`, if any."""
        return self._committed

    @property
    def last_tracked(self) -> int | None:
        return self._last_tracked

    def finished_runs(self, through: int) -> list[tuple[int, int]]:
        """The finished offsets above the position and at or below ``through``, as ascending
        inclusive ranges of consecutive offsets. A range never spans an offset that was not
        tracked: a record of an aborted transaction is one under ``read_committed``, and a
        consumer reading ``read_uncommitted`` would be handed it."""
        runs: list[tuple[int, int]] = []
        finished = self._finished
        first: int | None = None
        last = 0
        for offset in self._queue:
            if offset > through:
                break
            if offset in finished and first is not None and offset == last + 1:
                last = offset
                continue
            if first is not None:
                runs.append((first, last))
                first = None
            if offset in finished:
                first = last = offset
        if first is not None:
            runs.append((first, last))
        return runs

    def oldest_unfinished(self) -> int | None:
        """The offset holding the commit position back (useful for lag alerts)."""
        return self._queue[0] if self._queue else None

    def reset(self) -> None:
        """Forget everything: the partition was revoked or the consumer seeked."""
        self._queue.clear()
        self._pending.clear()
        self._finished.clear()
        self._position = None
        self._committed = None
        self._last_tracked = None

    def _is_finished(self, offset: int) -> bool:
        if offset in self._finished:
            return True
        # Below the position every *tracked* offset is finished, but gaps were never tracked;
        # this only picks the wording of an error message, so the ambiguity is harmless.
        return self._position is not None and offset < self._position
