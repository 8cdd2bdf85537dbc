"""The poller's change listeners, one per cluster: stopping them never holds anything up.

A listener's consumer over TLS takes up to its fetch wait to close (the broker reads the close
only after answering the fetch in flight). These listeners stand in for such a consumer: their
clean-up after the cancel waits until the test lets it end."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import pytest

from adapter.engine.change_listeners import ChangeListeners
from adapter.kafka.change_signal import (
    FETCH_WAIT_MS,
    TLS_FETCH_WAIT_MS,
    ChangeListener,
    listener_fetch_wait_ms,
)
from adapter.secrets import SecretResolver


@dataclass
class Listeners:
    listeners: ChangeListeners
    running: dict[str, asyncio.Event]
    closing: dict[str, asyncio.Event]
    release: asyncio.Event
    """Lets the listeners' clean-up end."""

    async def follow(self, names: set[str]) -> None:
        """Follow ``names`` and wait until each new listener runs (a task cancelled before
        it ran would skip its clean-up)."""
        await self.listeners.follow(names)
        async with asyncio.timeout(5):
            for name in names:
                await self.running[name].wait()


class _SlowToClose:
    def __init__(self, name: str, parts: Listeners) -> None:
        self.name = name
        self._parts = parts

    async def run(self) -> None:
        self._parts.running[self.name].set()
        try:
            await asyncio.Event().wait()
        finally:
            self._parts.closing[self.name].set()
            await self._parts.release.wait()


@pytest.fixture
async def slow() -> AsyncIterator[Listeners]:
    """Listeners of clusters "a" and "b" (their release is set at teardown in any case, so a
    failed test does not hang)."""
    listeners = ChangeListeners(dict, cast(SecretResolver, None), lambda: None)
    parts = Listeners(
        listeners,
        running={name: asyncio.Event() for name in ("a", "b")},
        closing={name: asyncio.Event() for name in ("a", "b")},
        release=asyncio.Event(),
    )

    async def make(name: str) -> ChangeListener:
        return cast(ChangeListener, _SlowToClose(name, parts))

    listeners._listener = make  # type: ignore[method-assign]
    try:
        yield parts
    finally:
        parts.release.set()
        async with asyncio.timeout(5):
            await listeners.aclose()


async def test_following_without_a_cluster_does_not_wait_for_its_listener_to_close(
    slow: Listeners,
) -> None:
    await slow.follow({"a", "b"})
    async with asyncio.timeout(5):
        await slow.listeners.follow({"b"})  # returned before "a" may end: nothing waited
        await slow.closing["a"].wait()
    assert set(slow.listeners.listeners) == {"b"}


async def test_closing_stops_every_listener_at_once(slow: Listeners) -> None:
    await slow.follow({"a", "b"})
    close = asyncio.create_task(slow.listeners.aclose())
    async with asyncio.timeout(5):
        # Both are closing while neither has ended: one at a time, "b" would wait for "a".
        await slow.closing["a"].wait()
        await slow.closing["b"].wait()
    assert not close.done(), "aclose returned before its listeners ended"
    slow.release.set()
    async with asyncio.timeout(5):
        await close
    assert slow.listeners.listeners == {}


def test_listeners_hold_fetches_briefly_over_tls_only() -> None:
    # Over TLS a held fetch also holds up closing the connection (see TLS_FETCH_WAIT_MS).
    tls = ssl.create_default_context()
    assert listener_fetch_wait_ms({"bootstrap_servers": "b:9092"}) == FETCH_WAIT_MS
    assert listener_fetch_wait_ms({"ssl_context": None}) == FETCH_WAIT_MS
    assert listener_fetch_wait_ms({"ssl_context": tls}) == TLS_FETCH_WAIT_MS < FETCH_WAIT_MS
