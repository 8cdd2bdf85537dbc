"""One readiness check for many probes: ``/health/ready`` is served without a token, and each
check reaches DynamoDB (``DescribeTable``) and every cluster's brokers. Without sharing, a burst
of probes (or anyone who can reach the port) would turn into as many control-plane calls and
broker connections. :class:`SharedCheck` runs one check at a time -- callers that arrive while
it runs await the same one -- and hands its result to callers for ``ttl_s`` after it ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["SharedCheck"]

Checks = dict[str, str]


class SharedCheck:
    """The latest result of a check, shared by everyone who asks within ``ttl_s`` of it."""

    def __init__(self, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._result: tuple[float, Checks] | None = None
        self._running: asyncio.Future[Checks] | None = None

    async def get(self, check: Callable[[], Awaitable[Checks]]) -> Checks:
        result = self._result
        if result is not None and self._clock() - result[0] < self._ttl_s:
            return result[1]
        running = self._running
        if running is None:
            running = self._running = asyncio.ensure_future(self._run(check))
        # Shielded: a caller that goes away (a probe's timeout) does not cancel the others'.
        return await asyncio.shield(running)

    async def _run(self, check: Callable[[], Awaitable[Checks]]) -> Checks:
        try:
            checks = await check()
            self._result = (self._clock(), checks)
            return checks
        finally:
            self._running = None
