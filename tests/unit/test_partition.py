"""Per-assignment partition state (fence, backlog bound, revocation), ownership evidence and
topic identity: the engine's pure cores."""

from __future__ import annotations

import pytest

from adapter.engine.ownership import Ownership
from adapter.engine.partition import Growth, PartitionState, Pause, Resume
from adapter.engine.topic_watch import TopicChange, TopicWatch
from adapter.kafka.commit_marks import Handover
from adapter.kafka.topics import TopicInfo

TP = ("t", 0)


def state(pause_at: int = 4) -> PartitionState:
    return PartitionState(TP, "t@id", pause_at=pause_at)


class TestFence:
    def test_until_the_fence_is_read_every_record_is_checked(self) -> None:
        s = state()
        assert s.needs_ledger_check(0)
        assert s.needs_ledger_check(10**9)
        assert s.fence is None

    def test_only_records_at_or_below_the_fence_are_checked(self) -> None:
        s = state()
        s.fence_read(7)
        assert s.needs_ledger_check(7)
        assert not s.needs_ledger_check(8)

    def test_an_empty_ledger_checks_nothing(self) -> None:
        s = state()
        s.fence_read(None)
        assert not s.needs_ledger_check(0)


class TestSuccessorDone:
    """What a graceful owner hands over about the records above its commit."""

    def test_nothing_decided_above_the_commit_is_said_as_such(self) -> None:
        # Known, and empty: the next owner's decisions count as sound (an unknown would not).
        assert state().successor_done(0) == (-1, ())
        assert state().successor_done(10) == (9, ())

    def test_own_decisions_give_through_and_the_finished_runs(self) -> None:
        s = state(pause_at=100)
        s.fetched(list(range(10, 16)))
        for offset in (11, 12, 14):
            s.finished(offset)
        s.decided(15, sound=True)
        assert s.successor_done(10) == (15, ((11, 12), (14, 14)))

    def test_decisions_made_before_the_fence_settled_are_not_handed_on(self) -> None:
        # Such a check may have missed a page the index did not show yet: a record that
        # finished elsewhere, decided as not finished here, must not be handed on so.
        s = state(pause_at=100)
        s.fetched(list(range(10, 16)))
        s.decided(12, sound=False)
        s.decided(15, sound=True)
        s.finished(11)
        assert s.successor_done(10) == (None, ())
        for offset in (10, 12):
            s.finished(offset)  # the position passes the last unsound decision
        assert s.successor_done(13) == (15, ())

    def test_records_fetched_but_not_decided_are_not_claimed(self) -> None:
        s = state(pause_at=100)
        s.fetched(list(range(10, 16)))
        s.finished(11)
        s.finished(14)  # finished, but its fetch's ledger check did not end (revoked)
        s.decided(12, sound=True)
        assert s.successor_done(10) == (12, ((11, 11),))

    def test_what_the_predecessor_handed_over_beyond_this_owners_reach_is_passed_on(
        self,
    ) -> None:
        s = state(pause_at=100)
        s.take_handover(Handover(1, 30, "sub", through=30, done=((11, 12), (20, 25), (28, 30))), 10)
        s.fetched([10, 11, 12, 13])
        for offset in (11, 12):
            s.finished(offset)  # skipped as handed over
        s.decided(13, sound=True)
        assert s.successor_done(10) == (30, ((11, 12), (20, 25), (28, 30)))
        s.decided(22, sound=True)  # reached into a handed-over range: its rest is passed on
        assert s.successor_done(10) == (30, ((11, 12), (23, 25), (28, 30)))

    def test_an_owner_that_decided_nothing_passes_the_handover_on(self) -> None:
        s = state()
        s.take_handover(Handover(1, 30, "sub", through=30, done=((11, 12), (20, 25))), 10)
        assert s.successor_done(10) == (30, ((11, 12), (20, 25)))
        assert s.successor_done(31) == (30, ())

    def test_what_was_handed_over_holds_only_from_the_commit_it_came_with(self) -> None:
        # A seek back to the log's start (a truncated log) fetches records below it again:
        # the previous owner said nothing of those.
        s = state(pause_at=100)
        s.take_handover(Handover(1, 9, "sub", through=9, done=((6, 9),)), 5)
        assert [s.handed_finished(o) for o in (0, 4, 5, 6, 10)] == [None, None, False, True, None]
        s.fetched([0, 1, 2])
        s.decided(2, sound=True)
        # Its own decisions (0..2) do not reach the handed-over part (5..9): not passed on.
        assert s.successor_done(0) == (2, ())
        s.fetched([3, 4])
        s.decided(4, sound=True)
        assert s.successor_done(0) == (9, ((6, 9),))

    def test_decisions_on_a_handover_that_said_nothing_are_not_handed_on(self) -> None:
        # The previous owner's late pages may land after any check of this assignment.
        s = state()
        s.take_handover(Handover(1, 9, "sub"), 5)
        assert s.unproven
        s.take_handover(Handover(1, 9, "sub", through=4), 5)
        assert not s.unproven


class TestBacklog:
    def test_pause_at_the_bound_and_resume_at_half(self) -> None:
        s = state(pause_at=4)
        assert s.fetched([0, 1, 2]) is None
        assert s.fetched([3]) == Pause(TP)
        assert s.fetched([4]) is None  # paused already: said once
        assert s.finished(0) is None
        assert s.finished(1) is None  # 3 pending > 2: hysteresis
        assert s.finished(2) == Resume(TP)
        assert not s.paused

    def test_a_revoking_partition_admits_nothing_and_never_resumes(self) -> None:
        s = state(pause_at=2)
        assert s.fetched([0, 1]) == Pause(TP)
        s.revoke()
        assert not s.admits
        assert s.finished(0) is None
        assert s.finished(1) is None

    @pytest.mark.parametrize(("pause_at", "resume_at"), [(0, None), (4, 4), (4, -1)])
    def test_invalid_bounds(self, pause_at: int, resume_at: int | None) -> None:
        with pytest.raises(ValueError, match=r"pause_at|resume_at"):
            PartitionState(TP, "t", pause_at=pause_at, resume_at=resume_at)

    def test_a_growing_bound_takes_small_records_up_to_its_records(self) -> None:
        s = PartitionState(TP, "t", pause_at=4, growth=Growth(records=10, bytes=1000))
        assert s.fetched(list(range(8)), size=8 * 10) is None  # 10 bytes each: 100 fit
        assert s.pause_at == 10
        assert s.fetched([8, 9], size=20) == Pause(TP)
        for offset in range(4):
            assert s.finished(offset) is None
        assert s.finished(4) == Resume(TP)  # 5 pending: half of the grown bound

    def test_a_growing_bound_keeps_its_least_for_large_records(self) -> None:
        s = PartitionState(TP, "t", pause_at=4, growth=Growth(records=10, bytes=1000))
        assert s.fetched([0, 1], size=2 * 200) is None  # 200 bytes each: 5 fit
        assert s.pause_at == 5
        assert s.fetched([2, 3], size=2 * 2000) == Pause(TP)  # 1,100 on average: 0 fit
        assert s.pause_at == 4

    def test_a_growing_bound_resumes_at_half_of_itself(self) -> None:
        with pytest.raises(ValueError, match="resume_at"):
            PartitionState(TP, "t", pause_at=4, resume_at=1, growth=Growth(10, 1000))

    def test_each_assignment_is_its_own_object(self) -> None:
        assert state() is not state()
        assert "fence=unknown" in repr(state())


class TestOwnership:
    def test_nothing_may_start_before_any_evidence(self) -> None:
        assert not Ownership(10).may_start(0.0)

    def test_evidence_holds_for_most_of_the_session(self) -> None:
        o = Ownership(10)
        o.confirmed(100.0)
        assert o.may_start(107.9)
        assert not o.may_start(108.0)
        assert o.age(103.0) == 3.0

    def test_older_evidence_never_replaces_newer(self) -> None:
        o = Ownership(10)
        o.confirmed(100.0)
        o.confirmed(90.0)
        assert o.may_start(107.0)

    def test_lost_membership_stops_starts_until_confirmed_again(self) -> None:
        o = Ownership(10)
        o.confirmed(100.0)
        o.lost(100.0)
        assert not o.may_start(100.1)
        o.confirmed(101.0)
        assert o.may_start(101.1)

    def test_a_refusal_of_an_older_request_leaves_newer_evidence(self) -> None:
        """A heartbeat of the old generation refused after the member rejoined (its
        SyncGroup, sent later, accepted) says nothing about the new membership."""
        o = Ownership(10)
        o.confirmed(105.0)
        o.lost(104.0)
        assert o.may_start(105.1)

    def test_an_answer_to_a_request_sent_before_the_member_left_restores_nothing(self) -> None:
        """A heartbeat sent before the LeaveGroup (aiokafka leaves after max.poll.interval.ms)
        and answered after it: the broker read it first, so it says nothing about after."""
        o = Ownership(10)
        o.confirmed(100.0)
        o.lost(103.0)  # LeaveGroup sent
        o.confirmed(102.0)  # the heartbeat sent before it, answered late
        assert not o.may_start(103.5)
        o.confirmed(104.0)  # a rejoin's SyncGroup, sent after it
        assert o.may_start(104.1)

    def test_session_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="session_timeout_s"):
            Ownership(0)


class TestTopicWatch:
    def test_a_topic_that_appears_later(self) -> None:
        watch = TopicWatch("t")
        assert watch.observe(None) is TopicChange.MISSING
        assert watch.observe(None) is TopicChange.UNCHANGED  # said once
        assert not watch.exists
        assert watch.waiting_reason() == "waiting for topic 't': it does not exist yet"
        assert watch.observe(TopicInfo("t", "A" * 22, 1)) is TopicChange.APPEARED
        assert watch.exists
        assert watch.key == "t@" + "A" * 22

    def test_another_topic_id_is_a_recreated_topic(self) -> None:
        watch = TopicWatch("t")
        watch.observe(TopicInfo("t", "A" * 22, 1))
        assert watch.observe(TopicInfo("t", "A" * 22, 1)) is TopicChange.UNCHANGED
        assert watch.observe(TopicInfo("t", "B" * 22, 1)) is TopicChange.RECREATED
        assert (watch.previous_id, watch.topic_id) == ("A" * 22, "B" * 22)

    def test_a_deleted_topic_is_waited_for_as_deleted(self) -> None:
        watch = TopicWatch("t")
        watch.observe(TopicInfo("t", "A" * 22, 1))
        assert watch.observe(None) is TopicChange.MISSING
        assert watch.waiting_reason() == "waiting for topic 't': it was deleted"
        assert watch.observe(TopicInfo("t", "B" * 22, 1)) is TopicChange.RECREATED
        assert watch.exists
