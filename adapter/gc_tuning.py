"""The garbage collector's settings for the long-running ``serve`` process.

CPython frees almost every object by reference counting; its cyclic collector only looks for
reference cycles, and by default it runs a young-generation pass every 700 net allocations of
container objects, older generations every 10 of those. The poller allocates on the order of a
hundred such objects per record (the record, its request and headers, the HTTP client's own),
so at thousands of records per second the collector ran hundreds of times a second and kept
re-examining every long-lived object it had not frozen: 20-25 % of the poller's CPU in bench
scenario (a) (`docs/benchmarks.md`, "Garbage collection").

So ``serve``, once started, moves everything alive then (modules, clients, configuration) out of
the collector's reach (:func:`gc.freeze`) and runs the young pass every
:data:`YOUNG_GENERATION_THRESHOLD` allocations. Cyclic garbage now waits longer to be freed:
at most that many allocations, a few megabytes.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_GENERATION_THRESHOLD", "tune_for_throughput"]

YOUNG_GENERATION_THRESHOLD = 50_000


def tune_for_throughput() -> None:
    """Freeze what start-up allocated and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
