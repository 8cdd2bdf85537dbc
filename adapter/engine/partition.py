"""One assigned partition, for the length of one assignment.

Kafka may take a partition away from this poller and give it back later; work that began
under the first assignment must not count under the second (its records are redelivered and
re-decided). So every assignment gets a *new* :class:`PartitionState`, and a piece of work
holds the state it was admitted under: ``work.partition is runner.partitions.get(tp)`` says
whether it is still current, by identity, with no generation counters to keep in step (the
shape of aiokafka's ``Assignment``/``TopicPartitionState``).

What one assignment knows::

    assigned ──▶ fence unknown ──fence_read──▶ fence known ──revoke──▶ revoking (admits nothing)
                 (every fetched record is       (records at or below
                  checked against the ledger)    the fence are checked)

* ``topic_key`` — the topic's *identity* (``name@topic-id``): what invocation IDs and the
  ledger are keyed by, so a topic deleted and re-created under the same name is a new topic
  whose records no entry of the old one can mark as done.
* the fence — the highest offset any poller recorded in the ledger for this partition.
  Records above it cannot have finished anywhere, so only records at or below it cost a
  ledger read.
* the offset tracker and the backlog bound — fetching pauses when ``pause_at`` records are
  pending (fetched, not yet durably finished) and resumes at ``resume_at`` (hysteresis, so
  a partition at its bound does not flap on every record). With :class:`Growth` the bound
  grows from ``pause_at`` toward ``Growth.records`` as far as the records fetched so far, at
  their average size, fit in ``Growth.bytes``: room for small records, not for large ones.

Pure: methods take what happened and return what the caller must do (:class:`Pause`,
:class:`Resume`); the runner does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapter.engine.offsets import OffsetTracker, TopicPartition
from adapter.kafka.commit_marks import Handover

__all__ = ["Growth", "PartitionState", "Pause", "Resume"]


@dataclass(frozen=True, slots=True)
class Growth:
    """How far a partition's backlog bound may grow: to ``records`` records, while that many
    at the average size of those fetched stay within ``bytes``."""

    records: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop fetching the partition: its backlog reached the bound."""

    tp: TopicPartition


@dataclass(frozen=True, slots=True)
class Resume:
    """Fetch the partition again: its backlog drained."""

    tp: TopicPartition


class PartitionState:
    """Bookkeeping of one partition for one assignment (see the module docstring)."""

    __slots__ = (
        "_fence",
        "_fence_known",
        "_fetched_bytes",
        "_fetched_records",
        "_growth",
        "_least_pause_at",
        "_pause_at",
        "_resume_at",
        "committed_at_start",
        "decided_through",
        "fence_settled",
        "generation",
        "handed",
        "handed_from",
        "pages_visible_at",
        "paused",
        "revoking",
        "topic_key",
        "tp",
        "tracker",
        "unproven",
        "unsound_through",
    )

    def __init__(
        self,
        tp: TopicPartition,
        topic_key: str,
        *,
        pause_at: int,
        resume_at: int | None = None,
        growth: Growth | None = None,
    ) -> None:
        if pause_at < 1:
            raise ValueError(f"pause_at must be >= 1, got {pause_at}")
        if growth is not None and resume_at is not None:
            raise ValueError("a growing bound resumes at half of itself: give no resume_at")
        if resume_at is None:
            resume_at = pause_at // 2
        if not 0 <= resume_at < pause_at:
            raise ValueError(f"resume_at must be in [0, {pause_at}), got {resume_at}")
        self.tp = tp
        self.topic_key = topic_key
        self.tracker = OffsetTracker()
        self._pause_at = pause_at
        self._resume_at = resume_at
        self._least_pause_at = pause_at
        self._growth = growth
        self._fetched_records = 0
        self._fetched_bytes = 0
        self._fence: int | None = None
        self._fence_known = False
        # The group's commit when this assignment began (None: none, or a dead topic's): the
        # position a handover re-commits when nothing finished since.
        self.committed_at_start: int | None = None
        self.fence_settled = False
        # The group generation this assignment belongs to (None: not known, or the member
        # was in none). Commits are made only while the member is still in it.
        self.generation: int | None = None
        self.paused = False
        self.revoking = False
        # Monotonic time before which success pages the previous owner wrote as it let the
        # partition go may not be found yet (pages are read through an eventually consistent
        # index): ledger checks of this partition's records wait for it.
        self.pages_visible_at = 0.0
        # The previous owner's handover, when this assignment took it: which records above
        # the commit it finished, so they need no ledger read (adapter.kafka.commit_marks).
        self.handed: Handover | None = None
        # The commit it came with: what it says holds only from there on (a seek back to
        # the log's start after a truncation fetches records below it again).
        self.handed_from = 0
        # Taken over with a handover that says nothing of what finished (an earlier
        # version, a ledger flush that ran out of time): late pages of the previous owner
        # may land after any check of this assignment, so none of its decisions is handed on.
        self.unproven = False
        # The highest offset whose record this assignment decided (invoked or found
        # finished): its ledger check is behind it.
        self.decided_through: int | None = None
        # The highest offset decided before the fence was settled: that check may have
        # missed success pages the index did not show yet, so it is not handed on as known.
        self.unsound_through: int | None = None

    def __repr__(self) -> str:
        fence = self._fence if self._fence_known else "unknown"
        return (
            f"PartitionState({self.tp[0]}/{self.tp[1]}, key={self.topic_key!r}, "
            f"fence={fence}, paused={self.paused}, revoking={self.revoking}, {self.tracker!r})"
        )

    # -- the fence ----------------------------------------------------------------------------

    def fence_read(self, fence: int | None, *, settled: bool = True) -> None:
        """The ledger's highest recorded offset for this partition (None: nothing recorded).

        A fence read again only raises it. ``settled=False``: read so soon after the
        assignment that the ledger's index may not show the previous owner's last rows yet;
        good enough to start with, not to hand on (:attr:`fence_settled`)."""
        if self._fence_known and self._fence is not None:
            fence = self._fence if fence is None else max(fence, self._fence)
        self._fence = fence
        self._fence_known = True
        self.fence_settled = self.fence_settled or settled

    @property
    def fence(self) -> int | None:
        return self._fence if self._fence_known else None

    @property
    def fence_known(self) -> bool:
        return self._fence_known

    @property
    def successor_fence(self) -> int | None:
        """The fence to hand the next owner (only meaningful once the fence is known):
        whatever this owner may have recorded lies at or below the last offset it took."""
        fetched = self.tracker.last_tracked
        return max((o for o in (self._fence, fetched) if o is not None), default=None)

    def take_handover(self, handover: Handover, committed: int) -> None:
        """The previous owner's handover, which came with the commit ``committed``."""
        self.handed = handover
        self.handed_from = committed
        self.unproven = handover.through is None

    def handed_finished(self, offset: int) -> bool | None:
        """Did the previous owner finish ``offset``? None: its handover does not say."""
        handed = self.handed
        if handed is None or offset < self.handed_from:
            return None
        return handed.finished(offset)

    def successor_done(self, position: int) -> tuple[int | None, tuple[tuple[int, int], ...]]:
        """What to hand the next owner about the records above ``position`` (the commit the
        handover goes with): the offset through which every one was decided (``position -
        1`` when none was), and the ranges of those that finished -- this owner's, then what
        its own predecessor handed over beyond what this one reached. ``(None, ())``: not
        known (a decision above ``position`` may have missed a page). Only meaningful once
        every finished record is durable."""
        if self.unsound_through is not None and self.unsound_through >= position:
            return None, ()
        own = self.decided_through
        through = max(position - 1, -1 if own is None else own)
        runs = self.tracker.finished_runs(own) if own is not None else []
        handed = self.handed
        if handed is not None and handed.through is not None and handed.through > through:
            base = self.handed_from
            # Passed on only where it joins what this owner decided: nothing below its
            # commit was decided by the owner that handed it over.
            if base <= through + 1:
                runs += [(max(first, through + 1), last) for first, last in handed.done]
                runs = [run for run in runs if run[0] <= run[1]]
                through = handed.through
        return through, tuple(run for run in runs if run[1] >= position)

    def decided(self, through: int, *, sound: bool) -> None:
        """The records of a fetch up to ``through`` were decided; ``sound``: with the fence
        settled when their ledger check began."""
        self.decided_through = through
        if not sound:
            self.unsound_through = through

    def needs_ledger_check(self, offset: int) -> bool:
        """Could this record have been finished by an earlier owner?"""
        if not self._fence_known:
            return True  # until the fence is read, every record is checked
        return self._fence is not None and offset <= self._fence

    # -- records ------------------------------------------------------------------------------

    @property
    def admits(self) -> bool:
        """Fetched records are taken on; a revoking partition's belong to its next owner."""
        return not self.revoking

    @property
    def grows(self) -> bool:
        """Does :meth:`fetched` want the records' size?"""
        return self._growth is not None

    @property
    def pause_at(self) -> int:
        return self._pause_at

    def fetched(self, offsets: list[int], size: int = 0) -> Pause | None:
        """Records were taken on (``size``: their bytes, for a growing bound); pause fetching
        if the backlog reached its bound."""
        track = self.tracker.track
        for offset in offsets:
            track(offset)
        growth = self._growth
        if growth is not None and offsets:
            self._fetched_records += len(offsets)
            self._fetched_bytes += size
            average = max(1, self._fetched_bytes // self._fetched_records)
            fits = min(growth.records, growth.bytes // average)
            self._pause_at = max(self._least_pause_at, fits)
            self._resume_at = self._pause_at // 2
        if not self.paused and self.tracker.pending >= self._pause_at:
            self.paused = True
            return Pause(self.tp)
        return None

    def finished(self, offset: int) -> Resume | None:
        """A record's final result is durable; resume fetching if the backlog drained."""
        self.tracker.finish(offset)
        if self.paused and not self.revoking and self.tracker.pending <= self._resume_at:
            self.paused = False
            return Resume(self.tp)
        return None

    def lag(self, log_end: int | None) -> int | None:
        """Records between the group's position and the log's end: what is left to finish.

        The position is the last commit; before the first one, the oldest record not finished
        (or, with nothing pending, the record after the last one fetched).
        """
        if log_end is None:
            return None
        tracker = self.tracker
        base = tracker.committed
        if base is None:
            oldest = tracker.oldest_unfinished()
            if oldest is not None:
                base = oldest
            elif tracker.position is not None:
                base = tracker.position
            elif tracker.last_tracked is not None:
                base = tracker.last_tracked + 1
            else:
                base = log_end
        return max(0, log_end - base)

    def revoke(self) -> None:
        """The partition is being taken away: nothing more is admitted or resumed."""
        self.revoking = True
