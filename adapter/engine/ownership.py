"""Whether this poller may start work: evidence that it still belongs to its consumer group.

A poller that is paused (a long GC, a stopped VM, a starved CPU) or cut off from the group
coordinator stops heartbeating. After ``session.timeout.ms`` the broker removes it from the
group and hands its partitions to another member, which may then finish the very records
this poller still holds — and commit past them. When the paused poller wakes, its retry
timers fire and its lanes hand over to the next record *before* aiokafka has heard that the
member is gone. Starting any of those would run finished work again, or run a key on two
pollers at once.

So no attempt starts (first attempt, retry after a backoff, next record of a lane) unless the
group coordinator accepted a heartbeat (or the SyncGroup of an assignment) that this member
sent recently enough that the broker cannot have expired the member yet::

    heartbeat sent at t_ok,       broker expires the member at the earliest at
    answered OK                   t_ok + (time to reach the broker) + session timeout
        │
        ▼
    ────┼──────────── may start ───────────┼──── held ──── (heartbeat OK again → may start;
        t_ok                  t_ok + limit                  member expired → partitions revoked,
                                                            held work abandoned, redelivered)

``t_ok`` is read *before* the request goes out, never when its answer is read: a poller paused
while the answer waited in its socket reads it only when it wakes, perhaps after the broker
expired it, and that answer proves nothing about the wake. ``limit`` is a fraction of the
session timeout, leaving room for clock-rate differences between poller and broker. A
heartbeat is sent every ``heartbeat.interval.ms`` (validated to be below the session
timeout), so a healthy poller never comes near the limit.

What is left: an attempt that was already sent when the pause began is in flight and may be
duplicated by the next owner; nothing else is.

:class:`Ownership` is pure: the caller reports accepted heartbeats with the clock reading taken
when they were sent and asks :meth:`Ownership.may_start` with the current reading.
:class:`OwnershipGate` is its thin asyncio shell: it holds attempts that may not start yet,
and logs a *pause* — from the first attempt held to the heartbeat that proves the member
again — once: a warning when it begins, a line when it ends (not a warning per held attempt,
which was a burst of up to ``max_in_flight`` lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from adapter.clocks import suspend_aware

__all__ = ["Ownership", "OwnershipGate"]

log = logging.getLogger(__name__)

_SAFETY = 0.8
"""Fraction of the session timeout after the sending of the last accepted heartbeat during
which the member is certainly still in the group."""


class Ownership:
    """Liveness evidence of one consumer-group member (one runner's consumer)."""

    __slots__ = ("_confirmed_at", "_limit_s", "_lost_at")

    def __init__(self, session_timeout_s: float) -> None:
        if session_timeout_s <= 0:
            raise ValueError(f"session_timeout_s must be > 0, got {session_timeout_s}")
        self._limit_s = session_timeout_s * _SAFETY
        self._confirmed_at: float | None = None
        self._lost_at: float | None = None

    def __repr__(self) -> str:
        return f"Ownership(confirmed_at={self._confirmed_at}, limit_s={self._limit_s})"

    @property
    def limit_s(self) -> float:
        return self._limit_s

    def confirmed(self, at: float) -> None:
        """The coordinator accepted a heartbeat or SyncGroup of this member sent at ``at``.

        Not if the member was lost by a request sent after it (a LeaveGroup, a refusal): the
        coordinator reads one connection's requests in order, so it accepted this one before
        it let the member go, however late the answer is read."""
        if self._lost_at is not None and at < self._lost_at:
            return
        if self._confirmed_at is None or at > self._confirmed_at:
            self._confirmed_at = at

    def lost(self, at: float) -> None:
        """The coordinator refused a heartbeat or SyncGroup of this member sent at ``at``, or
        the member left with a request sent at ``at``: it no longer knows the member (or its
        generation). Evidence from a later request stands (a refusal of a request sent before
        the member rejoined says nothing about after)."""
        if self._lost_at is None or at > self._lost_at:
            self._lost_at = at
        if self._confirmed_at is not None and at >= self._confirmed_at:
            self._confirmed_at = None

    def may_start(self, now: float) -> bool:
        """Can the broker not have expired this member by ``now``?"""
        at = self._confirmed_at
        return at is not None and now - at < self._limit_s

    def age(self, now: float) -> float | None:
        """Seconds since the last evidence, if any."""
        return None if self._confirmed_at is None else now - self._confirmed_at


class OwnershipGate:
    """The I/O side of :class:`Ownership` for one runner: heartbeats in, attempts held until
    the group confirms the member or their partition is gone.

    The caller asks :meth:`fresh` first (no allocation, no task switch) and only when that
    fails awaits :meth:`wait`.

    A pause is logged per gate, that is per subscription (one runner, one consumer-group
    member, whose evidence covers all its partitions at once): one warning when its first
    attempt is held, naming that attempt and the evidence's age, and one line when a heartbeat
    proves the member again, with how many attempts were held, for how long, and how many
    were given up because their partition was revoked meanwhile.
    """

    def __init__(
        self,
        session_timeout_s: float,
        *,
        clock: Callable[[], float] = suspend_aware,
        describe: Callable[[], str] = lambda: "this poller",
    ) -> None:
        self._ownership = Ownership(session_timeout_s)
        self._clock = clock
        self._describe = describe
        self._changed = asyncio.Event()
        self._pause: _Pause | None = None

    def confirmed(self, at: float) -> None:
        """The coordinator accepted a heartbeat or SyncGroup this member sent at ``at``."""
        before = self._ownership.age(at)
        self._ownership.confirmed(at)
        self._changed.set()
        pause = self._pause
        if pause is not None and self._ownership.may_start(self._clock()):
            self._pause = None
            log.info(
                "%s: the group confirmed this poller again, %s, %.1fs after the first attempt "
                "was held; %d held now may start, %d were given up (partition revoked)",
                self._describe(),
                "with no earlier heartbeat standing"
                if before is None
                else f"after {before:.1f}s without an answered heartbeat",
                self._clock() - pause.began,
                pause.waiting,
                pause.given_up,
            )

    def lost(self, at: float) -> None:
        """The coordinator refused a heartbeat or SyncGroup this member sent at ``at``."""
        self._ownership.lost(at)

    def wake(self) -> None:
        """Something waiters depend on changed (a revocation): let them look again."""
        self._changed.set()

    def fresh(self) -> bool:
        """May an attempt start now? (The hot path: one clock reading, one comparison.)"""
        return self._ownership.may_start(self._clock())

    async def wait(self, still_current: Callable[[], bool], what: str) -> bool:
        """Hold an attempt until the evidence is fresh again (True) or ``still_current()``
        turns false (False: its partition is gone)."""
        pause = self._pause
        if pause is None:
            now = self._clock()
            pause = self._pause = _Pause(began=now)
            age = self._ownership.age(now)
            log.warning(
                "%s: no heartbeat answered for %s; holding %s and every attempt after it "
                "until the group confirms this poller still owns its partitions",
                self._describe(),
                "ever" if age is None else f"{age:.1f}s",
                what,
            )
        pause.waiting += 1
        try:
            while still_current():
                if self._ownership.may_start(self._clock()):
                    return True
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)
            pause.given_up += 1
            return False
        finally:
            pause.waiting -= 1


@dataclass(slots=True)
class _Pause:
    """A want of evidence since ``began`` (clock reading): the attempts waiting in it now, and
    those given up because their partition was revoked meanwhile."""

    began: float
    waiting: int = 0
    given_up: int = 0
