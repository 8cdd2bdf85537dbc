"""Writes checked against other resources, made only if those are still what was checked.

A cluster update is checked against its subscriptions (their own secrets must not follow the
cluster elsewhere), and a subscription against its cluster. Each reads the other, then writes
itself: without more, a subscription created between a cluster update's check and its write
would never be checked against the new cluster. Every admin write goes through the change
feed (:mod:`adapter.store.changes`), whose version moves with each one: read the version
first, then what the write is checked against (consistently), and make the write conditional
on the version (``since``). A write refused with :class:`ChangedMeanwhile` is checked again.

The version moves with every admin write, related or not (an invocation command, another
cluster's update), so only the writes the check is about are guarded: a subscription that
holds secrets of its own, a cluster change of an address or of the protection credentials
travel under. The rest write as before, unconditionally.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from adapter.api.endpoint import AdminState
from adapter.errors import ConflictError
from adapter.store.changes import ChangedMeanwhile

__all__ = ["WRITE_TRIES", "ChangedMeanwhile", "versions"]

WRITE_TRIES = 8


async def versions(state: AdminState, what: str, *, guarded: bool) -> AsyncIterator[int | None]:
    """The change feed's version, once per try (None, once: ``guarded`` is False and the write
    is unconditional); 409 once the tries run out."""
    if not guarded:
        yield None
        return
    for attempt in range(WRITE_TRIES):
        if attempt:
            # Spread the tries of requests that keep overtaking each other.
            await asyncio.sleep(random.uniform(0, 0.01 * attempt))
        yield await state.store.change_version()
    raise ConflictError(
        f"{what} could not be written: other admin requests kept changing what it is "
        "checked against; try again"
    )
