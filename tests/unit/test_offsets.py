"""Commit-position bookkeeping: contiguity, gaps, misuse, and random completion orders."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.engine.offsets import OffsetTracker

PROPERTY = settings(max_examples=150, deadline=None, database=None)


def tracked(*offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.track(offset)
    return tracker


class TestOffsetTracker:
    def test_empty_tracker_has_nothing_to_commit(self) -> None:
        tracker = OffsetTracker()
        assert tracker.committable() is None
        assert tracker.pending == 0
        assert tracker.oldest_unfinished() is None
        assert tracker.position is None
        assert tracker.committed is None
        assert tracker.last_tracked is None

    def test_tracked_but_unfinished_is_not_committable(self) -> None:
        tracker = tracked(0, 1, 2)
        assert tracker.committable() is None
        assert tracker.pending == 3
        assert tracker.oldest_unfinished() == 0

    def test_in_order_finishes_advance_one_by_one(self) -> None:
        tracker = tracked(0, 1, 2)
        for offset in (0, 1, 2):
            tracker.finish(offset)
            assert tracker.committable() == offset + 1
        assert tracker.pending == 0
        assert tracker.oldest_unfinished() is None

    def test_out_of_order_finish_waits_for_the_oldest(self) -> None:
        tracker = tracked(0, 1, 2, 3, 4)
        tracker.finish(3)
        tracker.finish(1)
        assert tracker.committable() is None
        assert tracker.oldest_unfinished() == 0
        tracker.finish(0)
        assert tracker.committable() == 2
        assert tracker.oldest_unfinished() == 2
        tracker.finish(2)
        assert tracker.committable() == 4  # 3 was already finished
        assert tracker.pending == 1
        tracker.finish(4)
        assert tracker.committable() == 5

    def test_gaps_do_not_block(self) -> None:
        tracker = tracked(5, 9)
        tracker.finish(5)
        assert tracker.committable() == 6
        tracker.finish(9)
        assert tracker.committable() == 10

    def test_gap_after_out_of_order_finish(self) -> None:
        tracker = tracked(5, 9, 20)
        tracker.finish(9)
        tracker.finish(20)
        assert tracker.committable() is None
        tracker.finish(5)
        assert tracker.committable() == 21

    def test_first_tracked_offset_need_not_be_zero(self) -> None:
        tracker = tracked(1_000_000)
        tracker.finish(1_000_000)
        assert tracker.committable() == 1_000_001

    def test_mark_committed_suppresses_until_progress(self) -> None:
        tracker = tracked(0, 1, 2)
        tracker.finish(0)
        assert tracker.committable() == 1
        tracker.mark_committed(1)
        assert tracker.committed == 1
        assert tracker.committable() is None
        tracker.finish(2)
        assert tracker.committable() is None  # 1 still holds it back
        tracker.finish(1)
        assert tracker.committable() == 3

    def test_commit_acknowledged_after_more_progress(self) -> None:
        tracker = tracked(0, 1)
        tracker.finish(0)
        in_flight = tracker.committable()
        assert in_flight == 1
        tracker.finish(1)
        tracker.mark_committed(in_flight)
        assert tracker.committable() == 2

    def test_stale_commit_ack_is_ignored(self) -> None:
        tracker = tracked(0, 1)
        tracker.finish(0)
        tracker.finish(1)
        tracker.mark_committed(2)
        tracker.mark_committed(1)  # an older commit acknowledged late
        assert tracker.committed == 2
        assert tracker.committable() is None

    def test_marking_an_uncommittable_position_is_a_bug(self) -> None:
        tracker = tracked(0, 1)
        with pytest.raises(ValueError, match="only None is committable"):
            tracker.mark_committed(1)
        tracker.finish(0)
        with pytest.raises(ValueError, match="only 1 is committable"):
            tracker.mark_committed(2)

    def test_finish_untracked_raises(self) -> None:
        tracker = tracked(5)
        with pytest.raises(ValueError, match="cannot finish offset 6: not tracked"):
            tracker.finish(6)
        with pytest.raises(ValueError, match="not tracked"):
            OffsetTracker().finish(0)

    def test_finish_twice_raises_when_folded(self) -> None:
        tracker = tracked(5)
        tracker.finish(5)
        with pytest.raises(ValueError, match="cannot finish offset 5: already finished"):
            tracker.finish(5)

    def test_finish_twice_raises_when_behind_unfinished(self) -> None:
        tracker = tracked(5, 6)
        tracker.finish(6)
        with pytest.raises(ValueError, match="already finished"):
            tracker.finish(6)
        assert tracker.pending == 1

    def test_failed_finish_leaves_state_unchanged(self) -> None:
        tracker = tracked(1, 2)
        with pytest.raises(ValueError, match="not tracked"):
            tracker.finish(3)
        tracker.finish(1)
        assert tracker.committable() == 2

    @pytest.mark.parametrize("offset", [3, 4])
    def test_track_must_strictly_increase(self, offset: int) -> None:
        tracker = tracked(4)
        with pytest.raises(ValueError, match="out of order"):
            tracker.track(offset)

    def test_track_must_increase_even_after_everything_finished(self) -> None:
        tracker = tracked(4)
        tracker.finish(4)
        with pytest.raises(ValueError, match="out of order"):
            tracker.track(2)

    def test_negative_offset_rejected(self) -> None:
        with pytest.raises(ValueError, match=">= 0"):
            OffsetTracker().track(-1)

    def test_reset_forgets_everything(self) -> None:
        tracker = tracked(10, 11)
        tracker.finish(10)
        tracker.mark_committed(11)
        tracker.reset()
        assert tracker.pending == 0
        assert tracker.committable() is None
        assert tracker.committed is None
        assert tracker.oldest_unfinished() is None
        tracker.track(3)  # a seek back is fine after a reset
        tracker.finish(3)
        assert tracker.committable() == 4

    def test_repr_shows_state(self) -> None:
        tracker = tracked(1, 2)
        tracker.finish(1)
        assert repr(tracker) == (
            "OffsetTracker(pending=1, position=2, committed=None, oldest_unfinished=2)"
        )

    def test_reverse_completion_of_many_is_linear(self) -> None:
        # A quadratic implementation takes seconds here; the sweep must be amortised O(1).
        n = 100_000
        tracker = OffsetTracker()
        for offset in range(0, 2 * n, 2):
            tracker.track(offset)
        for offset in range(2 * n - 2, 0, -2):
            tracker.finish(offset)
        assert tracker.committable() is None
        tracker.finish(0)
        assert tracker.committable() == 2 * n - 1
        assert tracker.pending == 0


def reference_position(tracked_offsets: list[int], finished: set[int]) -> int | None:
    """Straight from the definition: highest offset such that it and every tracked offset
    before it are finished, plus one."""
    position = None
    for offset in tracked_offsets:
        if offset not in finished:
            break
        position = offset + 1
    return position


offset_lists = st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=60).map(
    lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))]
)


@PROPERTY
@given(offsets=offset_lists, seed=st.randoms(use_true_random=False))
def test_any_completion_order_never_passes_an_unfinished_offset(
    offsets: list[int], seed: random.Random
) -> None:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.track(offset)
    order = list(offsets)
    seed.shuffle(order)
    finished: set[int] = set()
    committed: int | None = None
    for offset in order:
        tracker.finish(offset)
        finished.add(offset)
        expected = reference_position(offsets, finished)
        assert tracker.position == expected
        position = tracker.committable()
        if position is not None:
            assert all(o in finished for o in offsets if o < position)
            assert position - 1 in finished
            if seed.random() < 0.3:
                tracker.mark_committed(position)
                committed = position
        assert tracker.committed == committed
        unfinished = [o for o in offsets if o not in finished]
        assert tracker.oldest_unfinished() == (min(unfinished) if unfinished else None)
        assert tracker.pending == len(unfinished)
    assert tracker.position == offsets[-1] + 1
    assert tracker.committable() == (None if committed == offsets[-1] + 1 else offsets[-1] + 1)


@PROPERTY
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("track"), st.integers(min_value=1, max_value=5)),
            st.tuples(st.just("finish"), st.integers(min_value=0, max_value=10_000)),
        ),
        max_size=120,
    )
)
def test_interleaved_tracking_and_finishing_matches_the_definition(
    ops: list[tuple[str, int]],
) -> None:
    tracker = OffsetTracker()
    tracked_offsets: list[int] = []
    finished: set[int] = set()
    next_offset = 0
    for op, arg in ops:
        if op == "track":
            next_offset += arg  # random gap
            tracker.track(next_offset)
            tracked_offsets.append(next_offset)
        else:
            pending = [o for o in tracked_offsets if o not in finished]
            if not pending:
                continue
            offset = pending[arg % len(pending)]
            tracker.finish(offset)
            finished.add(offset)
        position = reference_position(tracked_offsets, finished)
        assert tracker.committable() == position
    for offset in tracked_offsets:
        if offset not in finished:
            tracker.finish(offset)
    if tracked_offsets:
        assert tracker.committable() == tracked_offsets[-1] + 1


def test_the_start_position_is_committable_before_anything_finishes() -> None:
    tracker = OffsetTracker()
    tracker.start_at(100)
    assert tracker.committable() == 100
    tracker.mark_committed(100)
    tracker.track(100)
    tracker.track(101)
    assert tracker.committable() is None
    tracker.finish(100)
    assert tracker.committable() == 101


def test_a_start_position_past_an_unfinished_record_is_ignored() -> None:
    # The consumer fetched on: its position is past records still running.
    tracker = OffsetTracker()
    tracker.track(100)
    tracker.start_at(103)
    assert tracker.committable() is None
    tracker.finish(100)
    assert tracker.committable() == 101


def test_a_start_position_after_a_record_finished_is_ignored() -> None:
    tracker = OffsetTracker()
    tracker.track(5)
    tracker.finish(5)
    tracker.start_at(9)
    assert tracker.committable() == 6


def test_finished_runs_span_neither_an_unfinished_offset_nor_an_untracked_one() -> None:
    tracker = tracked(5, 6, 7, 9, 10, 12, 13, 20, 21)
    for offset in (6, 9, 10, 12, 21):
        tracker.finish(offset)
    # 5 unfinished; 6 finished; 7 unfinished; 9..10; 12 (11 never tracked: under
    # read_committed, maybe a record of an aborted transaction); 13 and 20 unfinished; 21
    # beyond ``through``.
    assert tracker.finished_runs(20) == [(6, 6), (9, 10), (12, 12)]
    assert tracker.finished_runs(21) == [(6, 6), (9, 10), (12, 12), (21, 21)]
    tracker.finish(5)  # the position moves past 6: only what lies above it is listed
    assert tracker.finished_runs(21) == [(9, 10), (12, 12), (21, 21)]


@PROPERTY
@given(
    offsets=st.lists(st.integers(0, 200), min_size=1, max_size=60, unique=True).map(sorted),
    data=st.data(),
)
def test_finished_runs_cover_exactly_the_finished_offsets_above_the_position(
    offsets: list[int], data: st.DataObject
) -> None:
    tracker = tracked(*offsets)
    done = data.draw(st.sets(st.sampled_from(offsets)))
    for offset in offsets:
        if offset in done:
            tracker.finish(offset)
    through = data.draw(st.integers(0, 210))
    runs = tracker.finished_runs(through)
    covered = {o for o in offsets if any(lo <= o <= hi for lo, hi in runs)}
    position = tracker.position if tracker.position is not None else 0
    assert covered == {o for o in done if position <= o <= through}
    assert all(set(range(lo, hi + 1)) <= done for lo, hi in runs)
    assert all(hi < lo2 for (_, hi), (lo2, _) in itertools.pairwise(runs))
