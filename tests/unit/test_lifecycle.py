"""Invocation lifecycle: every (status, event) pair, terminality, and the admin 409 rules."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.engine import lifecycle
from adapter.engine.lifecycle import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    AdminAction,
    InvocationEvent,
    InvocationStatus,
    admin_event,
    allowed_admin_actions,
    can_transition,
    check_admin,
    is_terminal,
    transition,
)
from adapter.errors import ConflictError

S = InvocationStatus
E = InvocationEvent

# Written out independently of the module's table, so a change to either is noticed.
EXPECTED: dict[tuple[InvocationStatus, InvocationEvent], InvocationStatus] = {
    (S.PENDING, E.START): S.RUNNING,
    (S.PENDING, E.FAIL): S.FAILED,
    (S.PENDING, E.DEAD_LETTER): S.DEAD_LETTERED,
    (S.PENDING, E.DUPLICATE): S.DUPLICATE,
    (S.PENDING, E.CANCEL): S.CANCELLED,
    (S.PENDING, E.KILL): S.KILLED,
    (S.PENDING, E.ABANDON): S.PENDING,
    (S.RUNNING, E.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, E.BACK_OFF): S.BACKING_OFF,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.DEAD_LETTER): S.DEAD_LETTERED,
    (S.RUNNING, E.DUPLICATE): S.DUPLICATE,
    (S.RUNNING, E.CANCEL): S.CANCELLED,
    (S.RUNNING, E.KILL): S.KILLED,
    (S.RUNNING, E.ABANDON): S.PENDING,
    (S.BACKING_OFF, E.WAKE): S.PENDING,
    (S.BACKING_OFF, E.CANCEL): S.CANCELLED,
    (S.BACKING_OFF, E.KILL): S.KILLED,
    (S.BACKING_OFF, E.ABANDON): S.PENDING,
}

ALL_PAIRS = list(itertools.product(InvocationStatus, InvocationEvent))

EXPECTED_ADMIN: dict[InvocationStatus, set[AdminAction]] = {
    S.PENDING: {AdminAction.CANCEL, AdminAction.KILL},
    S.RUNNING: {AdminAction.CANCEL, AdminAction.KILL},
    S.BACKING_OFF: {AdminAction.CANCEL, AdminAction.KILL, AdminAction.RETRY_NOW},
    S.SUCCEEDED: {AdminAction.PURGE},
    S.FAILED: {AdminAction.PURGE},
    S.DEAD_LETTERED: {AdminAction.PURGE},
    S.DUPLICATE: {AdminAction.PURGE},
    S.CANCELLED: {AdminAction.PURGE},
    S.KILLED: {AdminAction.PURGE},
}


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS, ids=lambda v: v.value)
def test_transition_table(status: InvocationStatus, event: InvocationEvent) -> None:
    expected = EXPECTED.get((status, event))
    assert can_transition(status, event) is (expected is not None)
    if expected is None:
        with pytest.raises(ConflictError, match=f"invocation is {status.value}: {event.value}"):
            transition(status, event)
    else:
        assert transition(status, event) is expected


def test_module_table_matches_expected() -> None:
    actual = {(s, e): t for s, row in TRANSITIONS.items() for e, t in row.items()}
    assert actual == EXPECTED
    assert set(TRANSITIONS) == set(InvocationStatus)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[S.PENDING][E.SUCCEED] = S.SUCCEEDED  # type: ignore[index]


def test_terminal_statuses() -> None:
    assert {s for s in InvocationStatus if is_terminal(s)} == {
        S.SUCCEEDED,
        S.FAILED,
        S.DEAD_LETTERED,
        S.DUPLICATE,
        S.CANCELLED,
        S.KILLED,
    }
    assert frozenset(s for s in InvocationStatus if is_terminal(s)) == TERMINAL_STATUSES


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_are_absorbing(status: InvocationStatus) -> None:
    for event in InvocationEvent:
        assert not can_transition(status, event)


def test_every_status_is_reachable_and_every_live_status_can_finish() -> None:
    reachable = {S.PENDING}
    frontier = deque([S.PENDING])
    while frontier:
        for nxt in TRANSITIONS[frontier.popleft()].values():
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(InvocationStatus)
    for status in set(InvocationStatus) - TERMINAL_STATUSES:
        assert any(is_terminal(t) for t in TRANSITIONS[status].values())


def test_statuses_serialise_as_their_names() -> None:
    for status in InvocationStatus:
        assert str(status) == status.name
    assert InvocationStatus("BACKING_OFF") is S.BACKING_OFF


def test_docstring_diagram_names_every_status_and_event() -> None:
    doc = lifecycle.__doc__
    assert doc is not None
    for member in [*InvocationStatus, *InvocationEvent]:
        assert member.value in doc


@pytest.mark.parametrize(
    ("status", "action"), list(itertools.product(InvocationStatus, AdminAction))
)
def test_admin_rules(status: InvocationStatus, action: AdminAction) -> None:
    allowed = action in EXPECTED_ADMIN[status]
    assert (action in allowed_admin_actions(status)) is allowed
    if allowed:
        check_admin(status, action)
        event = admin_event(action)
        if event is not None:  # the action must be applicable as a lifecycle event
            transition(status, event)
    else:
        with pytest.raises(ConflictError, match=f"cannot {action.value} invocation"):
            check_admin(status, action)


def test_admin_conflict_messages_say_why() -> None:
    with pytest.raises(ConflictError, match="it is SUCCEEDED; only an invocation that has not"):
        check_admin(S.SUCCEEDED, AdminAction.KILL)
    with pytest.raises(ConflictError, match="only a completed invocation can be purged"):
        check_admin(S.RUNNING, AdminAction.PURGE)
    with pytest.raises(ConflictError, match="only an invocation that is backing off"):
        check_admin(S.PENDING, AdminAction.RETRY_NOW)


def test_admin_events() -> None:
    assert admin_event(AdminAction.CANCEL) is E.CANCEL
    assert admin_event(AdminAction.KILL) is E.KILL
    assert admin_event(AdminAction.RETRY_NOW) is E.WAKE
    assert admin_event(AdminAction.PURGE) is None
    assert AdminAction("retry-now") is AdminAction.RETRY_NOW


def test_a_typical_retry_then_success_walk() -> None:
    status = S.PENDING
    for event in (E.START, E.BACK_OFF, E.WAKE, E.START, E.BACK_OFF, E.WAKE, E.START, E.SUCCEED):
        status = transition(status, event)
    assert status is S.SUCCEEDED


def test_late_outcome_after_kill_is_a_conflict() -> None:
    status = transition(transition(S.PENDING, E.START), E.KILL)
    assert not can_transition(status, E.SUCCEED)
    with pytest.raises(ConflictError):
        transition(status, E.SUCCEED)


@settings(max_examples=200, deadline=None, database=None)
@given(events=st.lists(st.sampled_from(list(InvocationEvent)), max_size=30))
def test_random_event_sequences_follow_the_table(events: list[InvocationEvent]) -> None:
    status = S.PENDING
    for event in events:
        if can_transition(status, event):
            status = transition(status, event)
        else:
            was_terminal = is_terminal(status)
            with pytest.raises(ConflictError):
                transition(status, event)
            assert is_terminal(status) is was_terminal
        assert status in TRANSITIONS
