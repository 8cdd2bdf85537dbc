"""``GET /metrics``: Prometheus exposition through ``prometheus_client``.

One private :class:`~prometheus_client.CollectorRegistry` per admin API holds

- :class:`StatusCollector`, read at scrape time from the poller that answers: each runner's
  :class:`RunnerStats`, its in-flight count and its partitions' commit bookkeeping and consumer
  lag, plus the ledger writer and the store — nothing is counted on the hot path for these;
- the dispatcher's two histograms (:mod:`adapter.engine.timings`);
- the standard ``process_*``, ``python_gc_*`` and ``python_info`` collectors.

Scrape every poller; sum across them. Counters restart from zero when a subscription's
consumer restarts (Prometheus' ``rate()`` handles resets). Labels are bounded: subscription,
topic, partition, state and outcome — never keys or offsets. docs/operations.md lists every
metric.

The age of the oldest unfinished record is measured from the first time this poller saw that
offset as its partition's oldest unfinished one (:class:`OldestAge`), so its resolution is the
scrape interval; a stuck record shows an age that keeps growing, which is what to alert on.
``kafka_ingress_consumer_lag_seconds`` is that age: the oldest record not committed yet.

:func:`families` is pure: status in, metric families out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapter.engine.timings import TIMINGS

__all__ = ["OldestAge", "Snapshot", "StatusCollector", "families", "metrics_registry"]

Status = Mapping[str, Mapping[str, Any]]
Partitions = Mapping[str, Mapping[Any, Mapping[str, int | None]]]


class OldestAge:
    """Seconds each partition's oldest unfinished offset has been the oldest one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str, int], tuple[int, float]] = {}

    def age(self, subscription: str, topic: str, partition: int, oldest: int | None) -> float:
        key = (subscription, topic, partition)
        if oldest is None:
            self._seen.pop(key, None)
            return 0.0
        now = self._clock()
        previous = self._seen.get(key)
        if previous is None or previous[0] != oldest:
            self._seen[key] = (oldest, now)
            return 0.0
        return now - previous[1]

    def forget_except(self, live: set[tuple[str, str, int]]) -> None:
        for key in [k for k in self._seen if k not in live]:
            del self._seen[key]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reads: the supervisor's status and the ledger/store counters."""

    status: Status = field(default_factory=dict)
    partitions: Partitions = field(default_factory=dict)
    ledger_pending: int = 0
    ledger_written: int = 0
    ledger_failures: int = 0
    store_requests: int = 0


_OUTCOMES = (
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("dead_lettered", "dead_lettered"),
    ("duplicate", "duplicates"),
)
_SUB = ["subscription"]
_PARTITION = ["subscription", "topic", "partition"]


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels if labels is not None else _SUB)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels if labels is not None else _SUB)


def families(snapshot: Snapshot, oldest: OldestAge) -> list[Metric]:
    """Metric families from the supervisor's ``status()`` and each runner's
    ``partition_status()``."""
    up = _gauge(
        "kafka_ingress_subscription_up",
        "1 per subscription run here, by state.",
        ["subscription", "state"],
    )
    consumed = _counter("kafka_ingress_records_consumed_total", "Records fetched from Kafka.")
    skipped = _counter(
        "kafka_ingress_records_skipped_total",
        "Redelivered records skipped because the ledger shows them completed.",
    )
    filtered = _counter(
        "kafka_ingress_records_filtered_total",
        "Records filter.criteria excluded: committed, never invoked.",
    )
    outcomes = _counter(
        "kafka_ingress_invocations_total",
        "Finished invocations, by outcome.",
        ["subscription", "outcome"],
    )
    retries = _counter(
        "kafka_ingress_retries_total",
        "Retryable failures, each counted once as its retry is scheduled (partition "
        "batches: per batch call).",
    )
    dead = _counter("kafka_ingress_dead_letters_total", "Records written to the dead-letter topic.")
    commits = _counter("kafka_ingress_commits_total", "Offset commits.")
    lost = _counter(
        "kafka_ingress_records_lost_to_retention_total",
        "Records deleted by retention before the subscription processed them.",
    )
    rebalances = _counter("kafka_ingress_rebalances_total", "Partition assignments.")
    in_flight = _gauge("kafka_ingress_in_flight", "Invocations running now.")
    commit_lag = _gauge(
        "kafka_ingress_commit_lag_records",
        "Records fetched but not yet committed, per partition.",
        _PARTITION,
    )
    pending = _gauge(
        "kafka_ingress_unfinished_records", "Records accepted and not finished.", _PARTITION
    )
    consumer_lag = _gauge(
        "kafka_ingress_consumer_lag_records",
        "Log end offset minus the committed position, per partition held by this poller.",
        _PARTITION,
    )
    lag_seconds = _gauge(
        "kafka_ingress_consumer_lag_seconds",
        "Age of the oldest record not committed yet, per partition held by this poller "
        "(measured from when this poller first found it oldest; 0 when none is waiting).",
        _PARTITION,
    )
    age = _gauge(
        "kafka_ingress_oldest_unfinished_age_seconds",
        "How long the oldest unfinished record of the partition has been holding the commit "
        "position back.",
        _PARTITION,
    )
    live: set[tuple[str, str, int]] = set()
    for sub_id, info in sorted(snapshot.status.items()):
        up.add_metric([sub_id, str(info.get("state", "unknown"))], 1)
        in_flight.add_metric([sub_id], float(info.get("in_flight") or 0))
        stats = info.get("stats")
        if stats is not None:
            consumed.add_metric([sub_id], stats.consumed)
            skipped.add_metric([sub_id], stats.skipped_completed)
            filtered.add_metric([sub_id], stats.filtered)
            for outcome, attribute in _OUTCOMES:
                outcomes.add_metric([sub_id, outcome], getattr(stats, attribute))
            retries.add_metric([sub_id], stats.retries)
            dead.add_metric([sub_id], stats.dead_lettered)
            commits.add_metric([sub_id], stats.commits)
            rebalances.add_metric([sub_id], stats.rebalances)
        lost.add_metric([sub_id], int(info.get("records_lost_to_retention") or 0))
        for tp, part in sorted(snapshot.partitions.get(sub_id, {}).items()):
            topic, number = str(tp[0]), int(tp[1])
            labels = [sub_id, topic, str(number)]
            live.add((sub_id, topic, number))
            last, committed = part.get("last_tracked"), part.get("committed")
            unfinished = int(part.get("pending") or 0)
            if last is None:
                behind = 0
            elif committed is None:
                behind = unfinished
            else:
                behind = max(0, last + 1 - committed)
            commit_lag.add_metric(labels, behind)
            pending.add_metric(labels, unfinished)
            if part.get("lag") is not None:
                consumer_lag.add_metric(labels, int(part.get("lag") or 0))
            seconds = oldest.age(sub_id, topic, number, part.get("oldest_unfinished"))
            age.add_metric(labels, seconds)
            lag_seconds.add_metric(labels, seconds)
    oldest.forget_except(live)
    ledger: list[Metric] = [
        GaugeMetricFamily(
            "kafka_ingress_ledger_pending_rows",
            "Results not durable in the ledger yet.",
            value=snapshot.ledger_pending,
        ),
        CounterMetricFamily(
            "kafka_ingress_ledger_written_rows_total",
            "Results written to the ledger (rows, and successes in pages).",
            value=snapshot.ledger_written,
        ),
        CounterMetricFamily(
            "kafka_ingress_ledger_write_failures_total",
            "Failed ledger writes.",
            value=snapshot.ledger_failures,
        ),
        CounterMetricFamily(
            "kafka_ingress_dynamodb_requests_total",
            "DynamoDB API calls.",
            value=snapshot.store_requests,
        ),
    ]
    tasks = GaugeMetricFamily("kafka_ingress_asyncio_tasks", "asyncio tasks alive in the poller.")
    # No running loop when collected from a thread: leave the family empty.
    with contextlib.suppress(RuntimeError):
        tasks.add_metric([], len(asyncio.all_tasks()))
    return [
        up,
        consumed,
        skipped,
        filtered,
        outcomes,
        retries,
        dead,
        commits,
        lost,
        rebalances,
        in_flight,
        commit_lag,
        consumer_lag,
        lag_seconds,
        pending,
        age,
        *ledger,
        tasks,
    ]


class StatusCollector(Collector):
    """Reads a :class:`Snapshot` at every scrape."""

    def __init__(self, read: Callable[[], Snapshot], oldest: OldestAge) -> None:
        self._read = read
        self._oldest = oldest

    def collect(self) -> Iterable[Metric]:
        return families(self._read(), self._oldest)


def metrics_registry(read: Callable[[], Snapshot], oldest: OldestAge) -> CollectorRegistry:
    """The registry ``/metrics`` serves: status, histograms, process and Python runtime."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(read, oldest))
    for collector in (
        TIMINGS,
        PROCESS_COLLECTOR,
        PLATFORM_COLLECTOR,
        GC_COLLECTOR,
    ):
        registry.register(collector)
    return registry
