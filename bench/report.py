"""Results: what one run of a consumer measured, per scenario, as JSON and as a table. Pure.

``results.json`` holds one object per scenario, with our poller's figures beside the
reference loop's (and, for scenario (c), the one-record-at-a-time baseline's), the target the
issue sets and whether this run met it. The same objects render as the rich table printed at
the end of ``make bench``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from bench.stats import LatencySummary

__all__ = [
    "RESULTS_VERSION",
    "RunMetrics",
    "ScenarioResult",
    "TargetCheck",
    "http_clients_table",
    "ledger_table",
    "results_document",
    "scenario_table",
    "targets_table",
]

RESULTS_VERSION = 1


@dataclass(slots=True)
class RunMetrics:
    """One consumer (our poller, the reference loop or the baseline) over one workload."""

    runner: str
    records: int
    # Per-key guarantees apply (exclusive sinks, the per-key reference): overlaps and
    # out-of-order records are then violations, not just what a parallel sink does.
    ordered: bool = False
    received: int = 0
    rate_rps: float | None = None
    wall_s: float | None = None
    startup_s: float | None = None
    latency: LatencySummary | None = None
    cpu_s_per_1k: float | None = None
    peak_rss_mb: float | None = None
    dynamo_requests: dict[str, int] = field(default_factory=dict)
    dynamo_per_1k: float | None = None
    commit_lag_ms: float | None = None
    max_uncommitted: int | None = None
    duplicates: int = 0
    overlaps: int = 0
    order_violations: int = 0
    max_active: int = 0
    cpu_s_by_process: dict[str, float] = field(default_factory=dict)
    # The poller's own gauges during the run (mean and max of /metrics samples).
    engine_gauges: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.received >= self.records

    def as_dict(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "complete": self.complete,
            "ordered": self.ordered,
            "records": self.records,
            "received": self.received,
            "records_per_s": _round(self.rate_rps, 1),
            "wall_s": _round(self.wall_s, 2),
            "startup_s": _round(self.startup_s, 2),
            "latency": self.latency.as_dict() if self.latency else None,
            "cpu_s_per_1k_records": _round(self.cpu_s_per_1k, 4),
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
            "dynamodb_requests_per_1k_records": _round(self.dynamo_per_1k, 2),
            "dynamodb_requests": dict(sorted(self.dynamo_requests.items())),
            "commit_lag_ms": _round(self.commit_lag_ms, 0),
            "max_uncommitted_records": self.max_uncommitted,
            "duplicates": self.duplicates,
            "key_overlaps": self.overlaps,
            "order_violations": self.order_violations,
            "max_concurrent_at_handler": self.max_active,
            "cpu_s_by_process": {k: round(v, 2) for k, v in sorted(self.cpu_s_by_process.items())},
            "engine_gauges": self.engine_gauges,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One of the issue's targets: ``measured`` against ``threshold`` (``>=`` or ``<=``)."""

    description: str
    measured: float | None
    threshold: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        if self.higher_is_better:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "measured": _round(self.measured, 3),
            "threshold": self.threshold,
            "comparison": ">=" if self.higher_is_better else "<=",
            "met": self.met,
        }


@dataclass(slots=True)
class ScenarioResult:
    id: str
    name: str
    description: str
    status: str = "ok"  # ok | not available | failed | skipped
    reason: str | None = None
    workload: dict[str, Any] = field(default_factory=dict)
    ours: RunMetrics | None = None
    reference: RunMetrics | None = None
    baseline: RunMetrics | None = None
    # Our poller again with another setting (e.g. success pages), each against the reference.
    variants: list[RunMetrics] = field(default_factory=list)
    targets: list[TargetCheck] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """Our records/s over the reference loop's."""
        return self.ratio_of(self.ours)

    def ratio_of(self, run: RunMetrics | None) -> float | None:
        if run is None or self.reference is None:
            return None
        if run.rate_rps is None or not self.reference.rate_rps:
            return None
        return run.rate_rps / self.reference.rate_rps

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "reason": self.reason,
            "workload": self.workload,
            "ours": self.ours.as_dict() if self.ours else None,
            "reference": self.reference.as_dict() if self.reference else None,
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "variants": [
                {**v.as_dict(), "ratio_to_reference": _round(self.ratio_of(v), 3)}
                for v in self.variants
            ],
            "ratio_ours_to_reference": _round(self.ratio, 3),
            "targets": [t.as_dict() for t in self.targets],
            "profile": self.profile,
            "notes": list(self.notes),
        }


def results_document(
    meta: dict[str, Any],
    scenarios: Sequence[ScenarioResult],
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole of ``bench/results.json``."""
    return {
        "version": RESULTS_VERSION,
        "meta": meta,
        "scenarios": [s.as_dict() for s in scenarios],
        **(extras or {}),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _run_row(scenario: str, label: str, run: RunMetrics, ratio: str) -> list[str]:
    latency = run.latency
    received = "" if run.complete else f" ({run.received}/{run.records})"
    guarantees = []
    if run.duplicates:
        guarantees.append(f"{run.duplicates} dup")
    if run.ordered and run.overlaps:
        guarantees.append(f"{run.overlaps} overlap")
    if run.ordered and run.order_violations:
        guarantees.append(f"{run.order_violations} disorder")
    if run.error:
        guarantees.append(run.error[:40])
    return [
        scenario,
        label,
        _fmt(run.rate_rps, ",.0f") + received,
        ratio,
        _fmt(latency.p50_ms if latency else None, ",.0f"),
        _fmt(latency.p99_ms if latency else None, ",.0f"),
        _fmt(run.cpu_s_per_1k, ".3f"),
        _fmt(run.peak_rss_mb, ".0f"),
        _fmt(run.dynamo_per_1k, ".1f"),
        _fmt(run.commit_lag_ms, ",.0f"),
        ", ".join(guarantees) or "ok",
    ]


def scenario_table(
    scenarios: Sequence[ScenarioResult], title: str = "Kafka Ingress bench"
) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("scenario", "left"),
        ("runner", "left"),
        ("records/s", "right"),
        ("ours/ref", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("CPU s/1k", "right"),
        ("RSS MB", "right"),
        ("DDB req/1k", "right"),
        ("commit lag ms", "right"),
        ("guarantees", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for scenario in scenarios:
        label = f"({scenario.id}) {scenario.name}"
        if scenario.status == "ok" and not (scenario.ours or scenario.reference):
            continue  # figures of their own (the HTTP client comparison)
        if scenario.status != "ok":
            table.add_row(label, scenario.status, *[""] * 8, scenario.reason or "")
            continue
        ratio = _fmt(scenario.ratio, ".2f")
        runs = [("ours", scenario.ours, ratio)]
        runs += [(v.runner, v, _fmt(scenario.ratio_of(v), ".2f")) for v in scenario.variants]
        runs.append(("reference", scenario.reference, ""))
        runs.append(("baseline", scenario.baseline, ""))
        first = True
        for name, run, shown_ratio in runs:
            if run is None:
                continue
            table.add_row(*_run_row(label if first else "", name, run, shown_ratio))
            first = False
    return table


def targets_table(scenarios: Sequence[ScenarioResult]) -> Table:
    table = Table(title="Targets", title_justify="left")
    table.add_column("scenario")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for scenario in scenarios:
        for check in scenario.targets:
            met = {True: "yes", False: "NO", None: "n/a"}[check.met]
            op = ">=" if check.higher_is_better else "<="
            table.add_row(
                f"({scenario.id})",
                f"{check.description} ({op} {check.threshold:g})",
                # Three decimals for a target below 1 (0.10 ms of CPU): 0.104 is not 0.10.
                _fmt(check.measured, ".3f" if check.threshold < 1 else ".2f"),
                met,
            )
    return table


def http_clients_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="HTTP client on the invoker's hot path", title_justify="left")
    table.add_column("client")
    table.add_column("event loop")
    table.add_column("requests/s", justify="right")
    table.add_column("client CPU ms / 1k requests", justify="right")
    for row in rows:
        if "error" in row:
            table.add_row(row["client"], row["loop"], "failed", str(row["error"])[:60])
            continue
        table.add_row(
            row["client"],
            row["loop"],
            f"{row['requests_per_s']:,.0f}",
            f"{row['cpu_ms_per_1k']:.0f}",
        )
    return table


def ledger_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Ledger path (LedgerWriter -> DynamoStore -> moto)", title_justify="left")
    table.add_column("variant")
    table.add_column("rows/s", justify="right")
    table.add_column("writer CPU ms / 1k rows", justify="right")
    table.add_column("DynamoDB server CPU ms / 1k rows", justify="right")
    table.add_column("requests / 1k rows", justify="right")
    for row in rows:
        if "error" in row:
            table.add_row(str(row.get("variant")), "failed", str(row["error"])[:60], "", "")
            continue
        rows_done = max(int(row["rows"]), 1)
        table.add_row(
            str(row["variant"]),
            f"{row['rows_per_s']:,.0f}",
            f"{row['cpu_ms_per_1k']:.0f}",
            _fmt(row.get("dynamodb_server_cpu_ms_per_1k"), ".0f"),
            f"{int(row['requests']) * 1000 / rows_done:.1f}",
        )
    return table
