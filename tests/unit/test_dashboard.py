"""The Grafana dashboard and the documented metrics name only metrics /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from adapter.api.metrics import OldestAge, Snapshot, metrics_registry
from adapter.engine.settings import RunnerStats
from adapter.engine.timings import AttemptTimings
from adapter.invokers.base import OutcomeKind

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "kafka-ingress.json"
OPERATIONS = ROOT / "docs" / "operations.md"
_NAME = re.compile(r"\b((?:kafka_ingress|process|python)_[a-z0-9_]+)\b")


def exposed_names() -> set[str]:
    """Every sample name of a registry with one subscription, partition and observation
    (called in a running loop, which the asyncio task gauge needs)."""
    snapshot = Snapshot(
        status={"s": {"state": "running", "in_flight": 0, "stats": RunnerStats()}},
        partitions={"s": {("t", 0): {"pending": 0, "committed": 1, "last_tracked": 0, "lag": 0}}},
    )
    timings = AttemptTimings("s")
    timings.attempt(OutcomeKind.ACK, 0.01)
    timings.acked(1)
    registry = metrics_registry(lambda: snapshot, OldestAge())
    return {sample.name for metric in registry.collect() for sample in metric.samples}


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


async def test_dashboard_parses_and_queries_only_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "Kafka Ingress"
    assert dashboard["panels"], "no panels"
    exprs = expressions(dashboard)
    assert len(exprs) >= len(dashboard["panels"])
    exposed = exposed_names()
    used = {name for expr in exprs for name in _NAME.findall(expr)}
    assert "kafka_ingress_consumer_lag_records" in used
    assert "kafka_ingress_invocation_duration_seconds_bucket" in used
    assert used <= exposed, sorted(used - exposed)


async def test_operations_doc_lists_every_metric_and_no_other() -> None:
    text = OPERATIONS.read_text()
    documented = set(_NAME.findall(text))
    exposed = exposed_names()
    families = {
        re.sub(r"_(bucket|count|sum|created)$", "", name)
        for name in exposed
        if name.startswith("kafka_ingress_")
    }
    assert families <= documented, sorted(families - documented)
    # Alerts and the table may use histogram series (_bucket, _count...): each must exist.
    unknown = {n for n in documented if n.startswith("kafka_ingress_") and n not in exposed}
    assert unknown <= families, sorted(unknown - families)
