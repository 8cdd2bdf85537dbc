"""Carries out the admin commands queued for invocations this poller holds.

Commands are items in the invocations table (:mod:`adapter.store.commands`).

The store announces each queued command on the change feed; the supervisor's feed calls
:meth:`CommandPoller.notify`, and only then does the poller look (one Query), then once a
second while a command it may hold is left pending. An idle poller makes no request here. A
command is offered to the runner of its subscription; the runner that holds the
invocation (the Kafka group gave it the partition) carries it out, and the command is marked
done with a conditional update. A runner that does not hold it leaves it to the poller that
does; a retry of an invocation that is mid-attempt is tried again on the next poll, until it
backs off or the command leaves the window (then it stays ``pending`` until it expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from adapter.engine.lifecycle import AdminAction, InvocationStatus
from adapter.errors import IngressError, StoreError
from adapter.store.commands import Command

__all__ = ["CommandPoller", "CommandStore", "Holder"]

log = logging.getLogger(__name__)

_KILLS = {AdminAction.CANCEL: InvocationStatus.CANCELLED, AdminAction.KILL: InvocationStatus.KILLED}


class CommandStore(Protocol):
    async def pending_commands(self, since_ms: int) -> list[Command]: ...

    async def finish_command(self, command: Command, outcome: str, done_at_ms: int) -> bool: ...


class Holder(Protocol):
    """What a runner offers: acting on an invocation it holds (False if it does not)."""

    def retry_now(self, inv_id: str) -> bool: ...

    async def kill(self, inv_id: str, status: InvocationStatus) -> bool: ...


async def carry_out(holder: Holder, inv_id: str, action: AdminAction) -> InvocationStatus | None:
    """Act on an invocation ``holder`` holds: the invocation's status after it, or None."""
    if action in _KILLS:
        return _KILLS[action] if await holder.kill(inv_id, _KILLS[action]) else None
    if action is AdminAction.RETRY_NOW:
        return InvocationStatus.PENDING if holder.retry_now(inv_id) else None
    return None


class CommandPoller:
    def __init__(
        self,
        store: CommandStore,
        holders: Callable[[], Mapping[str, Holder]],
        *,
        interval_s: float = 1.0,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._holders = holders
        self._interval_s = interval_s
        self._window_ms = int(window_s * 1000)
        self._clock = clock
        self._news = asyncio.Event()
        self._news.set()  # commands queued before this poller started
        self._left = 0  # commands for subscriptions held here, not carried out by the last poll

    def notify(self) -> None:
        """A command was queued somewhere: look at the next chance."""
        self._news.set()

    async def run(self) -> None:
        while True:
            if self._left:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), self._interval_s)
            else:
                await self._news.wait()
            self._news.clear()
            await self.poll()

    async def poll(self) -> int:
        """Carry out the pending commands this poller's runners can; returns how many."""
        holders = self._holders()
        if not holders:
            # Look once runners exist (checking costs no request until then).
            self._left = 1
            return 0
        now_ms = int(self._clock() * 1000)
        try:
            commands = await self._store.pending_commands(now_ms - self._window_ms)
        except StoreError as exc:
            log.warning("cannot read admin commands (next try in %gs): %s", self._interval_s, exc)
            self._left = max(self._left, 1)
            return 0
        done = 0
        self._left = 0
        for command in commands:
            holder = holders.get(command.subscription_id)
            if holder is None:
                continue
            try:
                action = AdminAction(command.action)
            except ValueError:
                continue  # written by a newer version: left to a poller that knows it
            self._left += 1
            try:
                status = await carry_out(holder, command.invocation_id, action)
            except IngressError as exc:
                log.warning("command for %s failed: %s", command.invocation_id, exc)
                continue
            if status is None:
                continue
            log.info("invocation %s: %s by an operator", command.invocation_id, action.value)
            try:
                finished = await self._store.finish_command(
                    command, status.value, int(self._clock() * 1000)
                )
            except StoreError as exc:
                log.warning("cannot mark the command for %s done: %s", command.invocation_id, exc)
                continue
            done += finished
            self._left -= 1
        return done
