"""The garbage collector's setting for the long-running ``serve`` process.

CPython frees almost every object by reference counting; its cyclic collector only looks for
reference cycles. By default it collects its young generation every 700 net allocations of
container objects, and the older generations in proportion to that. The poller allocates on
the order of a hundred such objects per record (the record, its request and headers, the HTTP
client's own), so at thousands of records per second the collector ran many times a second:
20-25 % of the poller's CPU in bench scenario (a) (`docs/benchmarks.md`).

So ``serve`` collects the young generation every :data:`YOUNG_GENERATION_THRESHOLD`
allocations instead; the older generations keep CPython's ratios to it. What this costs: an
object in a reference cycle is freed at the next young pass (about 500 records later at that
rate), or, if it was still alive at one, at a later pass of an older generation.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["YOUNG_GENERATION_THRESHOLD", "tune_for_throughput"]

YOUNG_GENERATION_THRESHOLD = 50_000

log = logging.getLogger(__name__)


def tune_for_throughput() -> None:
    """Collect the young generation every :data:`YOUNG_GENERATION_THRESHOLD` allocations."""
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
    log.info(
        "garbage collector: young generation every %d allocations (was %d)",
        YOUNG_GENERATION_THRESHOLD,
        young,
    )
