"""Writes checked against other resources, made only if those are still what was checked.

A cluster update is checked against its subscriptions (their own secrets must not follow the
cluster elsewhere), and a subscription against its cluster. Each reads the other, then writes
itself: without more, a subscription created between a cluster update's check and its write
would never be checked against the new cluster. Every admin write goes through the change
feed (:mod:`adapter.store.changes`), whose version moves with each one: read the version
first, then what the write is checked against, and make the write conditional on the version
(``since``). A write refused with :class:`ChangedMeanwhile` is checked again from the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from adapter.api.endpoint import AdminState
from adapter.errors import ConflictError
from adapter.store.changes import ChangedMeanwhile

__all__ = ["WRITE_TRIES", "ChangedMeanwhile", "versions"]

WRITE_TRIES = 5


async def versions(state: AdminState, what: str) -> AsyncIterator[int]:
    """The change feed's version, once per try; 409 naming ``what`` once the tries run
    out (other admin writes kept coming between the check and the write)."""
    for _ in range(WRITE_TRIES):
        yield await state.store.change_version()
    raise ConflictError(f"{what} kept changing under other requests; try again")
