"""Consumer lag per partition and its CloudWatch embedded-metric-format line (pure parts)."""

from __future__ import annotations

import io
import json

import pytest

from adapter.api.emf import NAMESPACE, EmfEmitter, emf_line, totals
from adapter.engine.partition import PartitionState
from adapter.engine.settings import RunnerStats


def state() -> PartitionState:
    return PartitionState(("t", 0), "t@id", pause_at=100)


class TestLag:
    def test_unknown_log_end_is_unknown_lag(self) -> None:
        assert state().lag(None) is None

    def test_nothing_fetched_yet_is_no_lag(self) -> None:
        assert state().lag(40) == 0

    def test_before_the_first_commit_the_oldest_unfinished_record_counts(self) -> None:
        s = state()
        s.fetched([10, 11, 12])
        s.finished(10)
        assert s.lag(20) == 20 - 11

    def test_after_a_commit_the_committed_position_counts(self) -> None:
        s = state()
        s.fetched([10, 11, 12])
        for offset in (10, 11, 12):
            s.finished(offset)
        s.tracker.mark_committed(13)
        assert s.lag(13) == 0
        assert s.lag(20) == 7


class TestEmf:
    @pytest.mark.promise("p-deploy-lag-metric")
    def test_the_line_is_embedded_metric_format(self) -> None:
        record = json.loads(emf_line("svc", lag=1234, errors=3, timestamp_ms=1767225600000))
        (directive,) = record["_aws"]["CloudWatchMetrics"]
        assert record["_aws"]["Timestamp"] == 1767225600000
        assert directive["Namespace"] == NAMESPACE == "KafkaIngress"
        assert directive["Dimensions"] == [["Service"]]
        names = {m["Name"] for m in directive["Metrics"]}
        assert names == {"ConsumerLag", "InvocationErrors"}
        # Every metric and dimension the directive names is a member of the record.
        assert record["Service"] == "svc"
        assert (record["ConsumerLag"], record["InvocationErrors"]) == (1234, 3)

    def test_totals_sum_the_lag_of_every_partition_and_terminal_failures(self) -> None:
        status = {
            "a": {"stats": RunnerStats(failed=2, dead_lettered=1)},
            "b": {"stats": None},
        }
        partitions = {"a": {("t", 0): {"lag": 5}, ("t", 1): {"lag": None}}, "b": {("u", 0): {}}}
        assert totals(status, partitions) == (5, 3)

    def test_errors_are_counted_per_line_not_as_a_running_total(self) -> None:
        stats = RunnerStats(failed=4)
        out = io.StringIO()
        emitter = EmfEmitter(
            "svc",
            status=lambda: {"a": {"stats": stats}},
            partitions=lambda: {"a": {("t", 0): {"lag": 7}}},
            out=out,
            clock=lambda: 1.5,
        )
        first = json.loads(emitter.emit())
        stats.failed = 6
        second = json.loads(emitter.emit())
        assert (first["InvocationErrors"], second["InvocationErrors"]) == (0, 2)
        assert first["ConsumerLag"] == 7
        assert first["_aws"]["Timestamp"] == 1500
        assert out.getvalue().count("\n") == 2
