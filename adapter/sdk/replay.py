"""Replay protection for signed requests: each token ID (``jti``) is accepted once.

A token is valid until its ``exp`` (plus the verifier's clock-skew leeway), so its ID has to
be remembered exactly that long and no longer. :class:`ReplayStore` is the one-method edge;
:class:`MemoryReplayStore` is the bounded in-process default. Several handler instances behind
one load balancer each have their own memory, so a token replayed to *another* instance is not
caught; give them a shared store (Redis ``SET jti 1 NX EXAT exp``, a DynamoDB conditional put
with a TTL attribute) implementing :meth:`ReplayStore.first_use`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["MemoryReplayStore", "ReplayCacheFullError", "ReplayStore"]


class ReplayCacheFullError(Exception):
    """The token is older than the oldest one the store still remembers; refused to be safe."""


class ReplayStore(Protocol):
    async def first_use(self, jti: str, forget_after: float) -> bool:
        """Record ``jti`` until ``forget_after`` (epoch s); ``False`` if it was already there."""
        ...


class MemoryReplayStore:
    """Remembers token IDs until they expire, at most ``max_entries`` of them.

    When full of unexpired IDs, the one expiring soonest is dropped and its expiry becomes a
    floor: a token expiring at or before the floor can no longer be checked and is refused
    (:class:`ReplayCacheFullError`) rather than risk accepting a replay. Signed tokens live
    ``ttl-seconds`` (60 s by default), so the default 100,000 entries hold ~1,600 requests per
    second per instance before that can happen.
    """

    def __init__(
        self, max_entries: int = 100_000, *, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []
        self._floor = float("-inf")

    def __repr__(self) -> str:
        return f"MemoryReplayStore({len(self._seen)}/{self.max_entries} token IDs)"

    def __len__(self) -> int:
        return len(self._seen)

    async def first_use(self, jti: str, forget_after: float) -> bool:
        return self.first_use_now(jti, forget_after)

    def first_use_now(self, jti: str, forget_after: float) -> bool:
        """:meth:`first_use` without the coroutine (no I/O happens here)."""
        self._forget_expired(self._clock())
        if jti in self._seen:
            return False
        if forget_after <= self._floor:
            raise ReplayCacheFullError(
                "request signature is too old to be checked for replay (the replay cache is "
                f"full: {self.max_entries} token IDs); raise its size"
            )
        self._seen[jti] = forget_after
        heapq.heappush(self._by_expiry, (forget_after, jti))
        while len(self._seen) > self.max_entries:
            expiry, dropped = heapq.heappop(self._by_expiry)
            del self._seen[dropped]
            self._floor = max(self._floor, expiry)
        return True

    def _forget_expired(self, now: float) -> None:
        heap = self._by_expiry
        while heap and heap[0][0] < now:
            _, jti = heapq.heappop(heap)
            del self._seen[jti]
