"""Pure arithmetic over measurements: percentiles, rates, ratios. No I/O, no clocks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "LatencySummary",
    "gauge_sums",
    "mean_max",
    "per_thousand",
    "percentile",
    "rate",
    "ratio",
    "summarise",
]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated.

    The same definition as numpy's default, so figures can be checked with any tool.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "mean_ms": round(self.mean_ms, 2),
        }


def summarise(latencies_ms: Sequence[float]) -> LatencySummary | None:
    """p50/p99/max/mean of end-to-end latencies; None when nothing was measured."""
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    return LatencySummary(
        count=len(ordered),
        p50_ms=percentile(ordered, 50),
        p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1],
        mean_ms=math.fsum(ordered) / len(ordered),
    )


def rate(count: int, first_s: float, last_s: float) -> float | None:
    """Records per second between the first and the last receipt.

    ``count`` receipts span ``count - 1`` intervals; fewer than two receipts have no rate.
    """
    span = last_s - first_s
    if count < 2 or span <= 0:
        return None
    return (count - 1) / span


def ratio(ours: float | None, reference: float | None) -> float | None:
    if ours is None or reference is None or reference == 0:
        return None
    return ours / reference


def per_thousand(amount: float, records: int) -> float | None:
    """``amount`` (seconds, requests …) per 1,000 records."""
    if records <= 0:
        return None
    return amount * 1000 / records


def gauge_sums(exposition: str, names: Sequence[str]) -> dict[str, float]:
    """Sum of every sample of each named metric in a Prometheus text exposition."""
    wanted = set(names)
    sums = dict.fromkeys(names, 0.0)
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            try:
                sums[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return sums


def mean_max(samples: Sequence[float]) -> dict[str, float] | None:
    if not samples:
        return None
    return {"mean": round(math.fsum(samples) / len(samples), 1), "max": max(samples)}
