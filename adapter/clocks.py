"""The clock that dates evidence of group membership.

The ownership gate (:mod:`adapter.engine.ownership`) lets a poller start work only while the
last heartbeat the group coordinator accepted is younger than a fraction of the session
timeout. ``time.monotonic()`` is the wrong clock for that age on Linux: it stops while the
machine is suspended (a laptop's sleep, a VM paused or snapshotted, a hibernated instance),
while the broker's session timeout keeps running on another machine. After such a suspend the
evidence would look as young as before it, and the poller would start records of partitions the
group has already given to another member -- the duplicates the gate exists to prevent.

:data:`suspend_aware` keeps counting through a suspend: ``CLOCK_BOOTTIME`` on Linux,
``CLOCK_MONOTONIC`` on macOS (where it includes sleep; ``time.monotonic()`` does not), and
``time.monotonic()`` elsewhere. Like ``time.monotonic()`` it never goes back, and only
differences between its readings mean anything.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

__all__ = ["suspend_aware"]


def _suspend_aware_clock() -> Callable[[], float]:
    boottime: int | None = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return functools.partial(time.clock_gettime, boottime)
    if sys.platform == "darwin":
        return functools.partial(time.clock_gettime, time.CLOCK_MONOTONIC)
    return time.monotonic


suspend_aware: Callable[[], float] = _suspend_aware_clock()
"""Seconds on a clock that keeps counting while the machine is suspended (see above)."""
