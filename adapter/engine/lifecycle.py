"""The invocation state machine, and which admin operations each state allows.

One Kafka record becomes one invocation. Its status only moves along these edges::

                        ┌───────────────────── ABANDON ──────────────────────┐
                        │   (partition revoked / owner crashed: redeliver)   │
                        ▼                                                    │
    record ──▶ ┌─────────────┐  START   ┌─────────────┐  SUCCEED  ┌──────────┴──┐
               │   PENDING   │ ───────▶ │   RUNNING   │ ────────▶ │  SUCCEEDED  │
               └─────────────┘          └─────────────┘           └─────────────┘
                  ▲    │                   │       │  FAIL        ┌─────────────┐
                  │    │ FAIL              │       ├────────────▶ │   FAILED    │
                  │    │ DEAD_LETTER       │       │ DEAD_LETTER  ┌─────────────┐
                  │    │ DUPLICATE         │       ├────────────▶ │DEAD_LETTERED│
                  │    └──── (bad key,     │       │ DUPLICATE    ┌─────────────┐
                  │          bad payload,  │       └────────────▶ │  DUPLICATE  │
                  │          workflow key  │ BACK_OFF             └─────────────┘
                  │          already ran)  ▼
                  │  WAKE           ┌─────────────┐
                  └──────────────── │ BACKING_OFF │
                  (timer fired, or  └─────────────┘
                   admin retry-now)

    PENDING, RUNNING, BACKING_OFF ──CANCEL──▶ CANCELLED
    PENDING, RUNNING, BACKING_OFF ──KILL────▶ KILLED
    RUNNING, BACKING_OFF ──ABANDON──▶ PENDING   (also PENDING ──ABANDON──▶ PENDING)

The right-hand column is terminal: the record must never be delivered to the handler again,
so its offset may be committed. FAILED is a terminal error recorded in the ledger (handler's
terminal error, undecodable key or payload, or retries exhausted with no dead-letter topic);
DEAD_LETTERED means the record was also written to the subscription's dead-letter topic.
DUPLICATE is a workflow ``run`` whose workflow ID already ran (Restate runs a workflow once
per ID). CANCEL and KILL mirror Restate's admin operations; with stateless handlers both end
the invocation at once, and the two statuses record which one the operator asked for.

Admin rules follow Restate's: cancel and kill only while not completed, purge only once
completed, retry-now only while backing off; anything else is a conflict (HTTP 409).

Pure: callers persist the status (with a conditional write on the old one) and do the I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from adapter.errors import ConflictError

__all__ = [
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "AdminAction",
    "InvocationEvent",
    "InvocationStatus",
    "admin_event",
    "allowed_admin_actions",
    "can_transition",
    "check_admin",
    "is_terminal",
    "transition",
]


class InvocationStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    BACKING_OFF = "BACKING_OFF"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    DUPLICATE = "DUPLICATE"
    CANCELLED = "CANCELLED"
    KILLED = "KILLED"


class InvocationEvent(enum.StrEnum):
    START = "START"
    """An attempt is sent to the handler."""
    SUCCEED = "SUCCEED"
    """The handler acknowledged."""
    BACK_OFF = "BACK_OFF"
    """The attempt failed retryably and the retry policy allows another."""
    WAKE = "WAKE"
    """The backoff elapsed (or an operator asked to retry now)."""
    FAIL = "FAIL"
    """Terminal failure, recorded without a dead-letter topic."""
    DEAD_LETTER = "DEAD_LETTER"
    """Terminal failure, record written to the dead-letter topic."""
    DUPLICATE = "DUPLICATE"
    """Workflow ``run`` for a workflow ID that already ran."""
    CANCEL = "CANCEL"
    KILL = "KILL"
    ABANDON = "ABANDON"
    """This poller stopped owning the record (revocation, crash); Kafka redelivers it."""


class AdminAction(enum.StrEnum):
    CANCEL = "cancel"
    KILL = "kill"
    PURGE = "purge"
    RETRY_NOW = "retry-now"


_S = InvocationStatus
_E = InvocationEvent

TERMINAL_STATUSES: frozenset[InvocationStatus] = frozenset(
    {_S.SUCCEEDED, _S.FAILED, _S.DEAD_LETTERED, _S.DUPLICATE, _S.CANCELLED, _S.KILLED}
)
"""Finished: the record is never delivered again, so its offset may be committed."""

_STOP = {_E.CANCEL: _S.CANCELLED, _E.KILL: _S.KILLED, _E.ABANDON: _S.PENDING}
# Terminal decisions that can be made before the handler is ever called (bad key, bad payload,
# workflow ID already used) or after an attempt.
_SETTLE = {_E.FAIL: _S.FAILED, _E.DEAD_LETTER: _S.DEAD_LETTERED, _E.DUPLICATE: _S.DUPLICATE}

TRANSITIONS: Mapping[InvocationStatus, Mapping[InvocationEvent, InvocationStatus]] = (
    MappingProxyType(
        {
            _S.PENDING: MappingProxyType({_E.START: _S.RUNNING, **_SETTLE, **_STOP}),
            _S.RUNNING: MappingProxyType(
                {_E.SUCCEED: _S.SUCCEEDED, _E.BACK_OFF: _S.BACKING_OFF, **_SETTLE, **_STOP}
            ),
            _S.BACKING_OFF: MappingProxyType({_E.WAKE: _S.PENDING, **_STOP}),
            **{s: MappingProxyType({}) for s in TERMINAL_STATUSES},
        }
    )
)
"""``TRANSITIONS[status][event]`` is the next status; a missing entry is illegal."""

_ADMIN: Mapping[InvocationStatus, frozenset[AdminAction]] = MappingProxyType(
    {
        _S.PENDING: frozenset({AdminAction.CANCEL, AdminAction.KILL}),
        _S.RUNNING: frozenset({AdminAction.CANCEL, AdminAction.KILL}),
        _S.BACKING_OFF: frozenset({AdminAction.CANCEL, AdminAction.KILL, AdminAction.RETRY_NOW}),
        **{s: frozenset({AdminAction.PURGE}) for s in TERMINAL_STATUSES},
    }
)

_ADMIN_EVENT: Mapping[AdminAction, InvocationEvent | None] = MappingProxyType(
    {
        AdminAction.CANCEL: _E.CANCEL,
        AdminAction.KILL: _E.KILL,
        AdminAction.RETRY_NOW: _E.WAKE,
        AdminAction.PURGE: None,
    }
)

_ADMIN_REASON: Mapping[AdminAction, str] = MappingProxyType(
    {
        AdminAction.CANCEL: "only an invocation that has not completed can be cancelled",
        AdminAction.KILL: "only an invocation that has not completed can be killed",
        AdminAction.PURGE: "only a completed invocation can be purged",
        AdminAction.RETRY_NOW: "only an invocation that is backing off can be retried now",
    }
)


def is_terminal(status: InvocationStatus) -> bool:
    """Finished: the record's offset may be committed."""
    return status in TERMINAL_STATUSES


def can_transition(status: InvocationStatus, event: InvocationEvent) -> bool:
    return event in TRANSITIONS[status]


def transition(status: InvocationStatus, event: InvocationEvent) -> InvocationStatus:
    """The status after ``event``; raises :class:`ConflictError` if ``status`` forbids it.

    A late outcome for an invocation an operator already cancelled or killed lands here as a
    conflict; callers that race with the admin API check :func:`can_transition` first.
    """
    try:
        return TRANSITIONS[status][event]
    except KeyError:
        raise ConflictError(f"invocation is {status.value}: {event.value} is not allowed") from None


def allowed_admin_actions(status: InvocationStatus) -> frozenset[AdminAction]:
    return _ADMIN[status]


def check_admin(status: InvocationStatus, action: AdminAction) -> None:
    """Raise :class:`ConflictError` (HTTP 409) unless ``action`` is allowed in ``status``."""
    if action not in _ADMIN[status]:
        raise ConflictError(
            f"cannot {action.value} invocation: it is {status.value}; {_ADMIN_REASON[action]}"
        )


def admin_event(action: AdminAction) -> InvocationEvent | None:
    """The lifecycle event an admin action applies (``None`` for purge, which deletes)."""
    return _ADMIN_EVENT[action]
