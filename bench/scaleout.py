"""Scale-out: one poller, then a second and a third joining the same consumer group.

One backlog over 12 partitions, a handler taking 20 ms, our poller at the bench's in-flight
limit (per poller). The first poller starts alone; when the handler has seen ``JOIN_AT[0]`` of
the records a second poller process starts with the same subscription (same group), at
``JOIN_AT[1]`` a third. From the handler's arrival times:

* **records/s with 1 poller**: from half a second after the first arrival until the second
  poller was started;
* **records/s with 3 pollers**: from a second after the third poller's pause ended until 95 %
  of the records had arrived (the tail, where a few partitions finish last, is left out);
* **rebalance pause**: after each start, the longest time with no invocation started.

``runner="reference"`` runs the same sequence with the bench's bare reference loop
(``bench/reference.py``, same group, same in-flight limit per process) instead of our poller:
on a machine whose cores the pollers share with the broker, moto and the handler, its ratio is
what the machine allows any consumer, the ceiling to read ours against.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.procs import Child, Meter
from bench.stack import HandlerClient, Stack
from bench.trials import Consumer, Sink, TrialSettings, _free_port, start_ours, start_reference
from bench.workload import Workload, make_records

__all__ = ["JOIN_AT", "longest_gap", "scale_out", "window_rate"]

JOIN_AT = (0.15, 0.35)
_SETTLE_S = 1.0
_POLL_S = 0.05


def longest_gap(arrivals: Sequence[float], start: float, end: float) -> tuple[float, float]:
    """The longest interval within [start, end] with no arrival: (its length, when it ended).
    ``arrivals`` sorted; the interval may begin at ``start`` (nothing arrived since)."""
    i = bisect.bisect_left(arrivals, start)
    previous = arrivals[i - 1] if i > 0 else start
    best, best_end = 0.0, start
    for t in arrivals[i:]:
        if t > end:
            break
        if t - previous > best:
            best, best_end = t - previous, t
        previous = t
    return best, best_end


def window_rate(arrivals: Sequence[float], start: float, end: float) -> float | None:
    """Arrivals per second within [start, end]; None for an empty or inverted window."""
    if end <= start:
        return None
    count = bisect.bisect_right(arrivals, end) - bisect.bisect_left(arrivals, start)
    return count / (end - start)


async def _wait_count(handler: HandlerClient, wanted: int, timeout_s: float, alive: Child) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        count = int((await handler.count())["count"])
        if count >= wanted:
            return count
        if not alive.running:
            raise RuntimeError(f"{alive.name} exited early:\n{alive.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out with {count} of {wanted} records")
        await asyncio.sleep(_POLL_S)


async def scale_out(
    stack: Stack,
    settings: TrialSettings,
    handler: HandlerClient,
    workload: Workload,
    in_flight: int,
    say: Callable[[str], None],
    runner: str = "ours",
) -> dict[str, Any]:
    """Run the three-consumer join once; the figures as a dict (see the module docstring)."""
    topic = await stack.new_topic(workload.partitions, f"scale-{runner}")
    await stack.produce_backlog(topic, workload.partitions, make_records(workload))
    await handler.reset()
    first: Consumer
    if runner == "reference":
        first = start_reference(
            stack,
            settings,
            label="scale-1",
            topic=topic,
            handler=handler,
            in_flight=in_flight,
            per_key=False,
        )
    else:
        first = await start_ours(
            stack,
            settings,
            label="scale-1",
            topic=topic,
            handler=handler,
            sink=Sink.SERVICE,
            in_flight=in_flight,
        )
    config = settings.work_dir / "poller-scale-1.toml"
    children = [first.child]
    meters: list[Meter] = []
    started: list[float] = []
    try:
        started.append(time.time())
        await first.child.start()
        meters.append(Meter(first.child.pid))
        for n, fraction in enumerate(JOIN_AT, start=2):
            await _wait_count(
                handler, int(workload.records * fraction), settings.timeout_s, first.child
            )
            argv = first.child.argv  # the reference: the same group, nothing else to change
            if runner != "reference":
                own = settings.work_dir / f"poller-scale-{n}.toml"
                # The same subscription and tables; only the admin port differs.
                own.write_text(
                    re.sub(
                        r'bind-address = "127\.0\.0\.1:\d+"',
                        f'bind-address = "127.0.0.1:{_free_port()}"',
                        config.read_text(),
                    )
                )
                argv = [str(own) if a == str(config) else a for a in argv]
            name = f"{'reference' if runner == 'reference' else 'poller'}-scale-{n}"
            child = Child(name, argv, settings.work_dir / f"{name}.log")
            children.append(child)
            started.append(time.time())
            await child.start()
            meters.append(Meter(child.pid))
            say(f"  scale: {runner} {n} started")
        await _wait_count(handler, workload.records, settings.timeout_s, first.child)
        cpu_s = sum(m.cpu_s() for m in meters)
        stats = await handler.stats()
    finally:
        for child in reversed(children):
            await child.stop(timeout=60)
        if first.cleanup is not None:
            await first.cleanup()
        await stack.delete_topic(topic)
    arrivals = sorted(float(t) for t in stats["arrivals_s"])
    figures = _figures(arrivals, started, workload, cpu_s, int(stats["duplicates"]))
    return {"in_flight_per_poller": in_flight, "handler_delay_ms": handler.delay_ms, **figures}


def _figures(
    arrivals: list[float],
    started: list[float],
    workload: Workload,
    cpu_s: float,
    duplicates: int,
) -> dict[str, Any]:
    tail = arrivals[int(len(arrivals) * 0.95) - 1]
    pauses = []
    for n in (1, 2):
        # The join's pause, not the tail's: where a few partitions finish last, the gaps
        # between arrivals grow, and one of them taken for the pause left the 3-poller
        # window empty (0 records/s).
        until = started[n + 1] if n + 1 < len(started) else tail
        gap, gap_end = longest_gap(arrivals, started[n], until)
        pauses.append((gap, gap_end))
    one = window_rate(arrivals, arrivals[0] + 0.5, started[1])
    three = window_rate(arrivals, pauses[1][1] + _SETTLE_S, tail)
    return {
        "records": workload.records,
        "partitions": workload.partitions,
        "records_per_s_1_poller": one,
        "records_per_s_3_pollers": three,
        "ratio": (three / one) if one and three else None,
        "pause_s_2nd_joins": pauses[0][0],
        "pause_s_3rd_joins": pauses[1][0],
        "started_after_s": [round(t - started[0], 2) for t in started],
        "pollers_cpu_s": round(cpu_s, 2),
        "duplicates": duplicates,
    }
