"""The benchmark harness's pure parts: statistics, workload, receipts, reports, options.

Functional checks only; no performance is asserted here (that is what ``make bench`` is for).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import orjson
import pytest
from rich.console import Console

from adapter.config import load_settings
from adapter.gc_tuning import YOUNG_GENERATION_THRESHOLD
from bench.cli import ALL_SCENARIOS, EXPERIMENT_NAMES, parse_args
from bench.dynamo import COUNTS_PATH, CountingMiddleware
from bench.engine import run_engine
from bench.experiments import EXPERIMENTS
from bench.handler import Receipts, make_app
from bench.lambda_handler import BenchFunction
from bench.profile import by_own_function, by_package, by_thread, parse_collapsed, summary
from bench.reference import ContiguousOffsets
from bench.report import (
    RunMetrics,
    ScenarioResult,
    TargetCheck,
    http_clients_table,
    results_document,
    scenario_table,
    targets_table,
)
from bench.restate_peer import PeerRun
from bench.restate_peer import _scenarios as peer_scenarios
from bench.restate_peer import _table as peer_table
from bench.scaleout import _figures, longest_gap, window_rate
from bench.stats import gauge_sums, mean_max, per_thousand, percentile, rate, ratio, summarise
from bench.trials import Sink, _poller_config
from bench.workload import Workload, make_records

# -- stats ---------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_rejects_out_of_range_q(q: float) -> None:
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summarise_sorts_and_reports_p50_p99_max_mean() -> None:
    summary_ = summarise([float(v) for v in range(100, 0, -1)])
    assert summary_ is not None
    assert summary_.count == 100
    assert summary_.p50_ms == pytest.approx(50.5)
    assert summary_.p99_ms == pytest.approx(99.01)
    assert summary_.max_ms == 100
    assert summary_.mean_ms == pytest.approx(50.5)
    assert summarise([]) is None


@pytest.mark.promise("p-bench-rates")
def test_rate_counts_intervals_between_first_and_last_receipt() -> None:
    assert rate(101, 10.0, 11.0) == pytest.approx(100.0)
    assert rate(1, 10.0, 11.0) is None
    assert rate(5, 10.0, 10.0) is None


def test_ratio_and_per_thousand_handle_missing_figures() -> None:
    assert ratio(800.0, 1000.0) == pytest.approx(0.8)
    assert ratio(None, 1000.0) is None
    assert ratio(1.0, 0.0) is None
    assert per_thousand(3.0, 6000) == pytest.approx(0.5)
    assert per_thousand(3.0, 0) is None


def test_gauge_sums_add_up_every_sample_of_each_metric() -> None:
    text = "\n".join(
        [
            "# HELP kafka_ingress_in_flight Invocations running now.",
            "# TYPE kafka_ingress_in_flight gauge",
            'kafka_ingress_in_flight{subscription="a"} 3',
            'kafka_ingress_in_flight{subscription="b"} 4.5',
            "kafka_ingress_ledger_pending_rows 7",
            "kafka_ingress_in_flight_other 100",
            "garbage",
        ]
    )
    sums = gauge_sums(text, ["kafka_ingress_in_flight", "kafka_ingress_ledger_pending_rows", "x"])
    assert sums == {
        "kafka_ingress_in_flight": 7.5,
        "kafka_ingress_ledger_pending_rows": 7.0,
        "x": 0.0,
    }
    assert mean_max([1.0, 2.0, 6.0]) == {"mean": 3.0, "max": 6.0}
    assert mean_max([]) is None


# -- experiments ----------------------------------------------------------------------------


def test_every_experiment_is_offered_on_the_command_line() -> None:
    assert tuple(EXPERIMENTS) == EXPERIMENT_NAMES
    assert parse_args(["--experiment", "boto-lean", "--experiment", "boto-lean"]).experiments == (
        "boto-lean",
    )


# -- workload -------------------------------------------------------------------------------


def test_workload_is_deterministic_sized_and_keyed() -> None:
    workload = Workload(records=500, partitions=4, keys=10, value_bytes=200, seed=3)
    first = list(make_records(workload))
    assert first == list(make_records(workload))
    assert len(first) == 500
    assert {len(value) for _, value in first} == {200}
    assert {key for key, _ in first} <= {workload.key(i) for i in range(10)}
    assert len({key for key, _ in first}) == 10
    for seq, (_, value) in enumerate(first):
        assert orjson.loads(value)["seq"] == seq
    assert list(make_records(workload, start=490)) == first[490:]


def test_workload_seed_changes_the_records() -> None:
    a = list(make_records(Workload(records=50, partitions=1, keys=100, seed=1)))
    b = list(make_records(Workload(records=50, partitions=1, keys=100, seed=2)))
    assert a != b


def test_workload_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Workload(records=0, partitions=1, keys=1)
    with pytest.raises(ValueError, match="value_bytes"):
        Workload(records=1, partitions=1, keys=1, value_bytes=10)


# -- handler receipts -----------------------------------------------------------------------


def test_receipts_count_latency_duplicates_and_key_guarantees() -> None:
    r = Receipts()
    r.begin("k1", 0, 5, timestamp_ms=1_000, now_s=1.010)
    r.begin("k1", 0, 6, timestamp_ms=1_000, now_s=1.020)  # overlaps the first of k1
    r.end("k1")
    r.end("k1")
    r.begin("k1", 0, 4, timestamp_ms=1_000, now_s=1.030)  # fresh but behind: disorder
    r.end("k1")
    r.begin("k1", 0, 5, timestamp_ms=1_000, now_s=1.040)  # redelivery: a duplicate only
    r.end("k1")
    r.begin(None, 1, 0, timestamp_ms=1_000, now_s=1.050)
    r.end(None)
    snap = r.snapshot()
    assert snap["count"] == 4
    assert snap["total"] == 5
    assert snap["duplicates"] == 1
    assert snap["overlaps"] == 1
    assert snap["order_violations"] == 1
    assert snap["max_active"] == 2
    assert snap["first_s"] == 1.010
    assert snap["last_s"] == 1.050
    assert snap["latencies_ms"] == pytest.approx([10.0, 20.0, 30.0, 50.0])
    assert "latencies_ms" not in r.snapshot(with_latencies=False)
    r.reset()
    assert r.snapshot()["count"] == 0


async def _call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b'{"a":1}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


async def test_handler_app_acknowledges_records_and_serves_its_counts() -> None:
    receipts = Receipts()
    app = make_app(receipts, clock=lambda: 2.0)
    headers = [
        (b"kafka.partition", b"3"),
        (b"kafka.offset", b"17"),
        (b"kafka.timestamp", b"1500"),
        (b"kafka.key", b"key-000001"),
        (b"content-type", b"application/json"),
    ]
    assert await _call(app, "POST", "/invoke/Bench/key-000001/run", headers) == (
        200,
        b'{"ok":true}',
    )
    status, body = await _call(app, "GET", "/__count", [])
    assert status == 200
    assert orjson.loads(body)["count"] == 1
    status, body = await _call(app, "GET", "/__stats", [])
    assert orjson.loads(body)["latencies_ms"] == [500.0]
    assert (await _call(app, "POST", "/__reset", []))[0] == 200
    assert receipts.count == 0
    assert (await _call(app, "GET", "/elsewhere", []))[0] == 404


def test_lambda_function_acknowledges_each_invocation_of_a_batch() -> None:
    receipts = Receipts()
    function = BenchFunction(receipts, clock=lambda: 2.0)

    def invocation(offset: int) -> dict[str, Any]:
        headers = {"kafka.partition": "0", "kafka.offset": str(offset), "kafka.timestamp": "1000"}
        return {"invocationId": f"inv_{offset}", "headers": headers}

    reply = function({"type": "batch", "invocations": [invocation(0), invocation(1)]}, None)
    assert reply == {
        "results": [
            {"invocationId": "inv_0", "statusCode": 200},
            {"invocationId": "inv_1", "statusCode": 200},
        ]
    }
    assert function({"type": "invoke", **invocation(2)}, None) == {"statusCode": 200}
    assert receipts.count == 3
    assert receipts.latencies_ms == [1000.0, 1000.0, 1000.0]


# -- DynamoDB request counting --------------------------------------------------------------


def test_counting_middleware_tallies_operations_and_serves_the_counts() -> None:
    calls: list[str] = []

    def moto(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"{}"]

    app = CountingMiddleware(moto)
    started: list[str] = []
    for target in ("DynamoDB_20120810.BatchWriteItem", "DynamoDB_20120810.BatchWriteItem"):
        app({"PATH_INFO": "/", "HTTP_X_AMZ_TARGET": target}, lambda s, h: started.append(s))
    app({"PATH_INFO": "/", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.Scan"}, lambda s, h: None)
    body = app({"PATH_INFO": COUNTS_PATH}, lambda s, h: started.append(s))
    assert orjson.loads(b"".join(body)) == {"BatchWriteItem": 2, "Scan": 1}
    assert calls == ["/", "/", "/"]  # the counts route never reaches moto


# -- reference loop offsets -----------------------------------------------------------------


def test_contiguous_offsets_commit_only_past_acknowledged_prefix() -> None:
    offsets = ContiguousOffsets()
    for offset in (10, 11, 12, 13):
        offsets.track(offset)
    positions = [offsets.position]
    for offset in (12, 10, 11):
        offsets.ack(offset)
        positions.append(offsets.position)
    assert positions == [None, None, 11, 13]
    assert offsets.pending == 1
    offsets.ack(13)
    assert (offsets.position, offsets.pending) == (14, 0)


# -- profiles -------------------------------------------------------------------------------

_LOOP = "_run_once (asyncio/base_events.py:1);main (adapter/cli.py:3)"
_WORKER = "_bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:83)"
_COLLAPSED = "\n".join(
    [
        f"{_LOOP};invoke (adapter/invokers/http.py:9);_request (aiohttp/client.py:5) 6",
        f"{_LOOP};select (selectors.py:4) 3",
        f"{_WORKER};_call_sync (/x/src/adapter/store/dynamo.py:237);_call (botocore/client.py:1) 1",
        "not a stack line",
    ]
)


def test_profile_views_attribute_samples_to_packages_threads_and_our_functions() -> None:
    stacks = parse_collapsed(_COLLAPSED)
    assert len(stacks) == 3
    packages = {label: n for label, n, _ in by_package(stacks)}
    assert packages == {"aiohttp": 6, "selectors": 3, "botocore": 1}
    own = {label: n for label, n, _ in by_own_function(stacks)}
    assert own["invoke (adapter/invokers/http.py)"] == 6
    assert own["_call_sync (adapter/store/dynamo.py)"] == 1
    # adapter/cli.py only starts the loop: time under it is the loop's, not one of ours.
    assert own["(outside our functions: event loop I/O callbacks, library tasks)"] == 3
    threads = {label: n for label, n, _ in by_thread(stacks)}
    assert threads == {"event loop thread": 9, "worker threads (asyncio.to_thread: boto3)": 1}
    document = summary(stacks, limit=2)
    assert document["samples"] == 10
    assert len(document["top_self"]) == 2  # type: ignore[arg-type]
    orjson.dumps(document)


# -- reports --------------------------------------------------------------------------------


def _scenario() -> ScenarioResult:
    ours = RunMetrics("ours", records=1000, received=1000, rate_rps=900.0, peak_rss_mb=100.0)
    ours.latency = summarise([10.0, 20.0, 30.0])
    ours.dynamo_per_1k = 45.0
    ours.dynamo_requests = {"BatchWriteItem": 40, "Scan": 5}
    reference = RunMetrics("reference", records=1000, received=1000, rate_rps=1000.0)
    result = ScenarioResult("a", "service", "Service handler", workload={"records": 1000})
    result.ours, result.reference = ours, reference
    result.targets = [
        TargetCheck("ours / reference", result.ratio, 0.8),
        TargetCheck("DynamoDB per 1k", 45.0, 60.0, higher_is_better=False),
    ]
    return result


@pytest.mark.promise("p-bench-results")
def test_results_document_puts_reference_beside_ours_per_scenario() -> None:
    unavailable = ScenarioResult("d", "batch", "", status="not available", reason="no module")
    document = results_document({"machine": {"cpus": 2}}, [_scenario(), unavailable])
    parsed = orjson.loads(orjson.dumps(document))
    assert parsed["version"] == 1
    assert parsed["meta"] == {"machine": {"cpus": 2}}
    a, d = parsed["scenarios"]
    assert a["id"] == "a"
    assert a["ours"]["records_per_s"] == 900.0
    assert a["reference"]["records_per_s"] == 1000.0
    assert a["ratio_ours_to_reference"] == 0.9
    assert a["ours"]["latency"]["p50_ms"] == 20.0
    assert a["ours"]["dynamodb_requests"] == {"BatchWriteItem": 40, "Scan": 5}
    assert a["ours"]["complete"] is True
    assert [t["met"] for t in a["targets"]] == [True, True]
    assert a["targets"][1]["comparison"] == "<="
    assert d["status"] == "not available"
    assert d["ours"] is None
    assert d["reason"] == "no module"


def test_a_variant_of_ours_gets_its_own_ratio_in_the_document_and_the_table() -> None:
    result = _scenario()
    result.variants.append(RunMetrics("ours-rows", records=1000, received=1000, rate_rps=850.0))

    (a,) = orjson.loads(orjson.dumps(results_document({}, [result])))["scenarios"]
    assert a["variants"][0]["runner"] == "ours-rows"
    assert a["variants"][0]["ratio_to_reference"] == 0.85
    assert a["ratio_ours_to_reference"] == 0.9
    text = _render(scenario_table([result]))
    assert "ours-rows" in text
    assert "0.85" in text


def test_both_ledger_settings_run_unless_the_default_only_is_asked_for() -> None:
    assert parse_args([]).ledger == ("pages", "rows")
    assert parse_args(["--ledger", "pages"]).ledger == ("pages",)


def test_incomplete_runs_and_missing_figures_are_not_met() -> None:
    run = RunMetrics("ours", records=10, received=3)
    assert not run.complete
    assert TargetCheck("x", None, 1.0).met is None
    assert TargetCheck("x", 0.5, 0.8).met is False


def test_a_target_below_one_is_shown_to_three_decimals() -> None:
    """0.104 ms of CPU against <= 0.10 must not read "0.10 NO"."""
    result = ScenarioResult("a", "service", "")
    result.targets = [TargetCheck("poller CPU ms per record", 0.104, 0.10, higher_is_better=False)]
    text = _render(targets_table([result]))
    assert "poller CPU ms per record (<= 0.1)" in text
    assert "0.104" in text
    assert "NO" in text


def test_the_profile_rate_reaches_the_command_line() -> None:
    assert parse_args(["--profile", "--profile-rate", "1000"]).profile_rate == 1000
    assert parse_args([]).profile_rate == 100


def _render(table: Any) -> str:
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(table)
    return console.export_text()


def test_tables_render_figures_targets_and_unavailable_scenarios() -> None:
    unavailable = ScenarioResult("d", "batch", "", status="not available", reason="no module")
    text = _render(scenario_table([_scenario(), unavailable]))
    assert "(a) service" in text
    assert "900" in text
    assert "0.90" in text
    assert "45.0" in text
    assert "not available" in text
    targets = _render(targets_table([_scenario()]))
    assert "ours / reference (>= 0.8)" in targets
    assert "yes" in targets
    clients = _render(
        http_clients_table(
            [
                {
                    "client": "aiohttp",
                    "loop": "asyncio",
                    "requests_per_s": 5000.0,
                    "cpu_ms_per_1k": 150.0,
                },
                {"client": "httpx", "loop": "asyncio", "error": "boom"},
            ]
        )
    )
    assert "5,000" in clients
    assert "failed" in clients


# -- options --------------------------------------------------------------------------------


def test_quick_options_are_small_and_full_options_match_the_issue() -> None:
    quick = parse_args(["--quick"])
    assert quick.records == 3_000
    assert "f" not in quick.scenarios
    full = parse_args([])
    assert full.records == 50_000
    assert full.partitions == 4
    assert full.keys == 1000
    assert full.in_flight == 64
    assert full.backlog_records == 1_000_000
    assert full.scenarios == ALL_SCENARIOS
    chosen = parse_args(["--scenarios", "(a), b,a", "--records", "123", "--seed", "9"])
    assert chosen.scenarios == ("a", "b")
    assert chosen.records == 123
    assert chosen.seed == 9


def test_unknown_scenarios_and_sizes_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "a,z"])
    assert "unknown scenario(s) z" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--records", "-5"])


@pytest.mark.parametrize("client", ["aiohttp", "pyreqwest"])
def test_our_poller_runs_with_the_http_client_asked_for(
    tmp_path: Path, client: Literal["aiohttp", "pyreqwest"]
) -> None:
    stack = SimpleNamespace(bootstrap="127.0.0.1:9092", dynamo_url="http://127.0.0.1:1")
    text = _poller_config(stack, "bench-", 64, None, 9999, "pages", client)  # type: ignore[arg-type]
    config = tmp_path / "poller.toml"
    config.write_text(text)
    settings = load_settings(config, env={})
    assert settings.http.client == client
    assert settings.ledger.successes == "pages"
    assert settings.limits.max_in_flight == 64


def test_scale_out_pause_is_the_longest_silence_after_a_poller_starts() -> None:
    arrivals = [0.0, 0.1, 0.2, 1.0, 1.05, 2.5, 2.6]
    # A poller started at 0.5: silence from 0.5 (nothing since 0.2 either) ... the longest
    # one within [0.5, 3] is 1.05 -> 2.5.
    assert longest_gap(arrivals, 0.5, 3.0) == pytest.approx((1.45, 2.5))
    # Counted from the last arrival before the start: 0.2 -> 1.0.
    assert longest_gap(arrivals, 0.5, 1.2) == pytest.approx((0.8, 1.0))
    assert longest_gap([], 0.0, 1.0) == (0.0, 0.0)


def test_scale_out_rates_count_arrivals_within_the_window() -> None:
    arrivals = [i / 100 for i in range(1000)]  # 100 per second for 10 s
    assert window_rate(arrivals, 2.0, 4.0) == pytest.approx(100.5)
    assert window_rate(arrivals, 4.0, 4.0) is None
    assert "scale" in ALL_SCENARIOS
    assert parse_args(["--quick"]).scale_records == 40_000
    assert parse_args([]).scale_records == 120_000


def test_scale_out_three_poller_window_is_not_emptied_by_the_tail() -> None:
    """100/s alone until 10 s, a 0.3 s pause at each join (10 s, 20 s), 300/s after it; the
    last partition then trickles out with a 2 s silence. That silence is the tail's, not the
    third poller's pause: the window still holds the 300/s."""
    arrivals = [i / 100 for i in range(1000)]
    arrivals += [10.3 + i / 200 for i in range(1940)]
    arrivals += [20.3 + i / 300 for i in range(3000)]
    arrivals += [30.3 + i / 300 for i in range(10)] + [32.4 + i / 10 for i in range(300)]
    figures = _figures(arrivals, [0.0, 10.0, 20.0], Workload(len(arrivals), 12, 1000), 1.0, 0)
    assert figures["pause_s_3rd_joins"] == pytest.approx(0.3, abs=0.01)
    assert figures["records_per_s_3_pollers"] == pytest.approx(300, rel=0.02)
    assert figures["ratio"] == pytest.approx(3.0, rel=0.03)


def test_the_peer_runs_the_issues_three_scenarios_with_their_targets() -> None:
    by_id = {s.id: s for s in peer_scenarios(50_000, 2_000)}
    assert set(by_id) == {"a", "b", "c"}
    assert (by_id["a"].restate_service, by_id["a"].sink, by_id["a"].target) == (
        "BenchService",
        Sink.SERVICE,
        8.0,
    )
    assert (by_id["b"].restate_service, by_id["b"].sink, by_id["b"].target) == (
        "BenchObject",
        Sink.EXCLUSIVE,
        5.0,
    )
    slow = by_id["c"]
    assert (slow.partitions, slow.records, slow.delay_ms, slow.target) == (1, 2_000, 20, 4.0)
    assert slow.restate_handler == "slow"


def test_the_peer_table_shows_the_bare_loops_ratio_beside_ours() -> None:
    def side(name: str, rate: float) -> dict[str, Any]:
        run = PeerRun(name, 100, completed=100, error=None)
        run.records_per_s = rate
        return run.as_dict()

    document = {
        "scenarios": [
            {
                "id": "a",
                "name": "Service",
                "ours": side("ours", 4_000),
                "reference": side("reference", 6_000),
                "restate": side("restate", 1_000),
                "ratio": 4.0,
                "reference_ratio": 6.0,
                "target": 8.0,
            }
        ]
    }
    text = _render(peer_table(document))
    assert "4.00 (target 8)" in text
    assert "6.00 (bare loop)" in text
    assert "6,000" in text


def _in_a_fresh_interpreter(code: str) -> str:
    """Run ``code`` in a new Python process (both settings below are process-wide)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return done.stdout.strip()


def test_loop_asyncio_runs_the_poller_on_asyncio_and_the_default_on_uvloop() -> None:
    probe = (
        "import asyncio, sys\n"
        "from bench.poller import choose_loop\n"
        "choose_loop({loop!r})\n"
        "from adapter.cli import _run_loop\n"
        "async def kind():\n"
        "    print(type(asyncio.get_running_loop()).__module__)\n"
        "_run_loop(kind())\n"
    )
    assert _in_a_fresh_interpreter(probe.format(loop="asyncio")).startswith("asyncio")
    assert _in_a_fresh_interpreter(probe.format(loop="shipped")) == "uvloop"


def test_the_reference_takes_serves_collector_setting_unless_told_not_to() -> None:
    probe = (
        "import gc\n"
        "from bench.reference import use_collector\n"
        "use_collector({choice!r})\n"
        "print(gc.get_threshold()[0])\n"
    )
    assert _in_a_fresh_interpreter(probe.format(choice="serve")) == str(YOUNG_GENERATION_THRESHOLD)
    assert _in_a_fresh_interpreter(probe.format(choice="default")) == "700"


@pytest.mark.parametrize(("exclusive", "batches"), [(False, False), (True, False), (False, True)])
async def test_the_engine_benchmark_runs_every_record_through_to_its_commit(
    exclusive: bool, batches: bool
) -> None:
    run = await run_engine(2_000, exclusive=exclusive, in_flight=64, batches=batches)
    assert run.records == 2_000  # run_engine returns only once all four partitions committed
    assert run.cpu_us_per_record > 0
    assert run.records_per_s > 0
