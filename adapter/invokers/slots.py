"""Connection slots: as many as a client's pool has connections, so that a request holding one
never waits inside the client for a connection.

Why (the send fence, :mod:`adapter.invokers.base`): a wait inside the client comes after the
invoker's last :func:`~adapter.invokers.base.check_fence`, and only the invocation timeout
bounds it. An invoker takes a slot before that last check, checks the fence again if taking
it had to wait, and gives the slot back once the client has released the connection (the
response read, or the request failed). At most ``size`` requests are then in the client at
once, and a pool of ``size`` connections always has one for the next.

:meth:`Slots.take_nowait` is a plain method call -- no coroutine -- for the invoker's hot path,
where a slot is almost always free. Waiters are served in arrival order; a slot given back
while someone waits passes to them directly, so a request arriving later cannot take it first.

What the clients count (checked against their sources): aiohttp's connector queues a request
only when ``limit`` connections are acquired (``TCPConnector.connect``,
``_available_connections``); a connection is released before ``async with session.post()``
exits, and on every error path -- except a cancelled request still writing its body, whose
connection is released a step later, when its cancelled writer task ends. pyreqwest's
``max_connections`` is a semaphore of in-flight requests; its permit is dropped when the body is
read, on its I/O thread (for a body larger than its first read, right after the last chunk
is handed over). Neither of those windows waits for the network. Opening a *new* connection
(name resolution, TCP and TLS handshakes) is not a wait for a free one and is not covered.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """``size`` slots, bound to the event loop they are first waited for in."""

    __slots__ = ("_free", "_size", "_waiters")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._size = size
        self._free = size
        # Futures of the tasks waiting for a slot, oldest first. Only ever non-empty while
        # no slot is free (a slot given back passes to the oldest waiter).
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"Slots(size={self._size}, free={self._free}, waiting={len(self._waiters)})"

    def take_nowait(self) -> bool:
        """Take a slot if one is free; False (nothing taken) if every slot is held."""
        if self._free:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting for one if every slot is held. Cancelled while waiting, it
        takes none (a slot handed over meanwhile passes on to the next waiter)."""
        if self._free:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.cancelled():
                if waiter in self._waiters:  # release() may have dropped it already
                    self._waiters.remove(waiter)
            else:
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the free ones."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
