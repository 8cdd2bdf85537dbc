"""``GET /metrics``: Prometheus text exposition (format 0.0.4), written by hand.

The numbers come from the poller that answers: each runner's :class:`RunnerStats`, its
in-flight count and its partitions' commit bookkeeping, plus the ledger writer and the store.
Scrape every poller; sum across them. Counters restart from zero when a subscription's
consumer restarts (Prometheus' ``rate()`` handles resets).

The age of the oldest unfinished record is measured from the first time this poller saw that
offset as its partition's oldest unfinished one (:class:`OldestAge`), so its resolution is the
scrape interval; a stuck record shows an age that keeps growing, which is what to alert on.

Pure apart from reading those objects: :func:`render` turns families into text.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Family", "OldestAge", "collect", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Family:
    name: str
    kind: Literal["counter", "gauge"]
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            name = f"{family.name}{{{label_text}}}" if label_text else family.name
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


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


_OUTCOMES = (
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("dead_lettered", "dead_lettered"),
    ("duplicate", "duplicates"),
)


def collect(
    status: Mapping[str, Mapping[str, Any]],
    partitions: Mapping[str, Mapping[Any, Mapping[str, int | None]]],
    oldest: OldestAge,
    *,
    ledger_pending: int = 0,
    ledger_written: int = 0,
    ledger_failures: int = 0,
    store_requests: int = 0,
) -> list[Family]:
    """Families from the supervisor's ``status()`` and each runner's ``partition_status()``."""
    up = Family("kafka_ingress_subscription_up", "gauge", "1 per subscription run here, by state.")
    consumed = Family(
        "kafka_ingress_records_consumed_total", "counter", "Records fetched from Kafka."
    )
    skipped = Family(
        "kafka_ingress_records_skipped_total",
        "counter",
        "Redelivered records skipped because the ledger shows them completed.",
    )
    outcomes = Family(
        "kafka_ingress_invocations_total", "counter", "Finished invocations, by outcome."
    )
    retries = Family("kafka_ingress_retries_total", "counter", "Retryable failures retried.")
    dead = Family(
        "kafka_ingress_dead_letters_total", "counter", "Records written to the dead-letter topic."
    )
    commits = Family("kafka_ingress_commits_total", "counter", "Offset commits.")
    lost = Family(
        "kafka_ingress_records_lost_to_retention_total",
        "counter",
        "Records deleted by retention before the subscription processed them.",
    )
    rebalances = Family("kafka_ingress_rebalances_total", "counter", "Partition assignments.")
    in_flight = Family("kafka_ingress_in_flight", "gauge", "Invocations running now.")
    lag = Family(
        "kafka_ingress_commit_lag_records",
        "gauge",
        "Records fetched but not yet committed, per partition.",
    )
    pending = Family(
        "kafka_ingress_unfinished_records", "gauge", "Records accepted and not finished."
    )
    consumer_lag = Family(
        "kafka_ingress_consumer_lag_records",
        "gauge",
        "Log end offset minus the committed position, per partition held by this poller.",
    )
    age = Family(
        "kafka_ingress_oldest_unfinished_age_seconds",
        "gauge",
        "How long the oldest unfinished record of the partition has been holding the commit "
        "position back.",
    )
    live: set[tuple[str, str, int]] = set()
    for sub_id, info in sorted(status.items()):
        up.add(1, subscription=sub_id, state=str(info.get("state", "unknown")))
        in_flight.add(float(info.get("in_flight") or 0), subscription=sub_id)
        stats = info.get("stats")
        if stats is not None:
            consumed.add(stats.consumed, subscription=sub_id)
            skipped.add(stats.skipped_completed, subscription=sub_id)
            for outcome, attribute in _OUTCOMES:
                outcomes.add(getattr(stats, attribute), subscription=sub_id, outcome=outcome)
            retries.add(stats.retries, subscription=sub_id)
            dead.add(stats.dead_lettered, subscription=sub_id)
            commits.add(stats.commits, subscription=sub_id)
            rebalances.add(stats.rebalances, subscription=sub_id)
        lost.add(int(info.get("records_lost_to_retention") or 0), subscription=sub_id)
        for tp, part in sorted(partitions.get(sub_id, {}).items()):
            topic, number = str(tp[0]), int(tp[1])
            labels = {"subscription": sub_id, "topic": topic, "partition": str(number)}
            live.add((sub_id, topic, number))
            last, committed = part.get("last_tracked"), part.get("committed")
            unfinished = int(part.get("pending") or 0)
            if last is None:
                behind = 0
            elif committed is None:
                behind = unfinished
            else:
                behind = max(0, last + 1 - committed)
            lag.add(behind, **labels)
            pending.add(unfinished, **labels)
            if part.get("lag") is not None:
                consumer_lag.add(int(part.get("lag") or 0), **labels)
            age.add(oldest.age(sub_id, topic, number, part.get("oldest_unfinished")), **labels)
    oldest.forget_except(live)
    ledger = [
        Family(
            "kafka_ingress_ledger_pending_rows", "gauge", "Results not durable in the ledger yet."
        ),
        Family(
            "kafka_ingress_ledger_written_rows_total",
            "counter",
            "Results written to the ledger (rows, and successes in pages).",
        ),
        Family("kafka_ingress_ledger_write_failures_total", "counter", "Failed ledger writes."),
        Family("kafka_ingress_dynamodb_requests_total", "counter", "DynamoDB API calls."),
    ]
    for family, value in zip(
        ledger, (ledger_pending, ledger_written, ledger_failures, store_requests), strict=True
    ):
        family.add(value)
    return [
        up,
        consumed,
        skipped,
        outcomes,
        retries,
        dead,
        commits,
        lost,
        rebalances,
        in_flight,
        lag,
        consumer_lag,
        pending,
        age,
        *ledger,
        *_process_families(),
    ]


def _process_families() -> list[Family]:
    """Resident memory, open descriptors and asyncio tasks: what a soak run watches for leaks."""
    rss = Family("process_resident_memory_bytes", "gauge", "Resident memory of the poller.")
    fds = Family("process_open_fds", "gauge", "Open file descriptors of the poller.")
    tasks = Family("kafka_ingress_asyncio_tasks", "gauge", "asyncio tasks alive in the poller.")
    try:
        with open("/proc/self/statm") as statm:
            rss.add(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        fds.add(len(os.listdir("/proc/self/fd")))
    except OSError:
        pass  # not Linux: leave the two families empty rather than guess
    # No running loop when called from a thread (tests): leave the family empty.
    with contextlib.suppress(RuntimeError):
        tasks.add(len(asyncio.all_tasks()))
    return [rss, fds, tasks]
