"""The poller's change listeners, one per cluster: stopping them never holds anything up.

A listener's consumer over TLS takes up to its fetch wait to close (the broker reads the close
only after answering the fetch in flight). These listeners stand in for such a consumer: their
clean-up after the cancel waits until the test lets it end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

from adapter.engine.change_listeners import ChangeListeners
from adapter.kafka.change_signal import ChangeListener
from adapter.secrets import SecretResolver


class _SlowToClose:
    def __init__(self, name: str, closing: dict[str, asyncio.Event], release: asyncio.Event):
        self.name = name
        self._closing = closing
        self._release = release

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self._closing[self.name].set()
            await self._release.wait()


Listeners = tuple[ChangeListeners, dict[str, asyncio.Event], asyncio.Event]


@pytest.fixture
async def slow() -> AsyncIterator[Listeners]:
    """Listeners of clusters "a" and "b", their "closing" events and the event that lets
    their clean-up end (set at teardown in any case, so a failed test does not hang)."""
    closing = {name: asyncio.Event() for name in ("a", "b")}
    release = asyncio.Event()
    listeners = ChangeListeners(dict, cast(SecretResolver, None), lambda: None)

    async def make(name: str) -> ChangeListener:
        return cast(ChangeListener, _SlowToClose(name, closing, release))

    listeners._listener = make  # type: ignore[method-assign]
    try:
        yield listeners, closing, release
    finally:
        release.set()
        async with asyncio.timeout(5):
            await listeners.aclose()


async def test_following_without_a_cluster_does_not_wait_for_its_listener_to_close(
    slow: Listeners,
) -> None:
    listeners, closing, _ = slow
    await listeners.follow({"a", "b"})
    await asyncio.sleep(0)  # the listeners start running
    async with asyncio.timeout(5):
        await listeners.follow({"b"})  # returned before "a" may end: nothing waited for it
        await closing["a"].wait()
    assert set(listeners.listeners) == {"b"}


async def test_closing_stops_every_listener_at_once(slow: Listeners) -> None:
    listeners, closing, release = slow
    await listeners.follow({"a", "b"})
    await asyncio.sleep(0)
    close = asyncio.create_task(listeners.aclose())
    async with asyncio.timeout(5):
        # Both are closing while neither has ended: one at a time, "b" would wait for "a".
        await closing["a"].wait()
        await closing["b"].wait()
    assert not close.done(), "aclose returned before its listeners ended"
    release.set()
    async with asyncio.timeout(5):
        await close
    assert listeners.listeners == {}
