"""The scenarios of issue 8 and the run that goes through them.

Each scenario produces its workload into a fresh topic per consumer (same seed, so identical
records), runs the reference loop and then our poller over it, and checks the issue's target.
A scenario that fails is reported as failed and the run goes on with the next one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from bench.cli import Options
from bench.procs import Child, Meter
from bench.report import RunMetrics, ScenarioResult, TargetCheck
from bench.scale import ScaleScenario
from bench.scaleout import scale_out
from bench.stack import HandlerClient, Stack
from bench.trials import Consumer, Run, Sink, TrialSettings, start_ours, start_reference
from bench.workload import Workload, make_records

__all__ = ["Suite", "batch_support", "machine_info"]

_ROOT = Path(__file__).resolve().parents[1]
DYNAMO_TARGET_PER_1K = 60.0
# The poller's CPU per record in (a) and (b) as shipped (CPU s per 1,000 records = ms per record).
CPU_MS_PER_RECORD_TARGET = 0.10
RSS_TARGET_MB = 150.0
BATCH_MODULES = ("adapter.invokers.batching", "adapter.local.lambda_server")


def batch_support() -> str | None:
    """None when Lambda batch mode can be benchmarked, else why not."""
    missing = [name for name in BATCH_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return f"not available: {', '.join(missing)} not in this checkout"
    return None


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        memory_gb = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _git_state(root: Path) -> dict[str, Any]:
    """The commit measured, and whether the work tree had changes on top of it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(status)}


@dataclass
class Suite:
    options: Options
    console: Console
    stack: Stack = field(init=False)
    settings: TrialSettings = field(init=False)
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    http_clients: list[dict[str, Any]] = field(default_factory=list)
    ledger_paths: list[dict[str, Any]] = field(default_factory=list)
    scale_out: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        run_dir = self.options.work_dir / time.strftime("run-%Y%m%d-%H%M%S")
        self.stack = Stack(run_dir)
        self.settings = TrialSettings(
            work_dir=run_dir,
            loop=self.options.loop,
            experiments=self.options.experiments,
            profile=self.options.profile,
            profile_rate=self.options.profile_rate,
            timeout_s=self.options.timeout_s,
        )

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> list[ScenarioResult]:
        o = self.options
        self.meta = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git": _git_state(_ROOT),
            "machine": machine_info(),
            "options": _options_dict(o),
        }
        started = time.monotonic()
        self.say("starting Kafka broker, DynamoDB (moto) and handler servers …")
        try:
            await self.stack.start()
            assert self.stack.broker is not None
            self.meta["kafka_version"] = self.stack.broker.kafka_version
            self.meta["work_dir"] = str(self.stack.work_dir)
            await self._warm_up()
            runners: dict[str, Callable[[], Awaitable[ScenarioResult]]] = {
                "a": self.scenario_a,
                "b": self.scenario_b,
                "c": self.scenario_c,
                "d": self.scenario_d,
                "e": self.scenario_e,
                "f": self.scenario_f,
                "g": self.scenario_g,
                "scale": self.scenario_scale,
                "http": self.scenario_http,
                "ledger": self.scenario_ledger,
            }
            for sid in o.scenarios:
                t0 = time.monotonic()
                try:
                    result = await runners[sid]()
                except Exception as exc:
                    result = ScenarioResult(sid, _NAMES[sid], "", status="failed", reason=repr(exc))
                self.results[sid] = result
                self.say(f"({sid}) {result.name}: {result.status} in {time.monotonic() - t0:.0f}s")
        finally:
            self.say("stopping the stack …")
            await self.stack.stop()
        self.meta["duration_s"] = round(time.monotonic() - started, 1)
        self.meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        return list(self.results.values())

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {text}", highlight=False)

    def _workload(self, **changes: Any) -> Workload:
        o = self.options
        base = Workload(
            records=o.records,
            partitions=o.partitions,
            keys=o.keys,
            value_bytes=o.value_bytes,
            seed=o.seed,
        )
        return replace(base, **changes)

    async def _warm_up(self) -> None:
        """A short unreported reference run: the broker's JIT and page cache warm up first."""
        handler = await self.stack.handler(0.0)
        workload = self._workload(records=min(self.options.records, 5_000))
        self.say("warm-up run (not reported) …")
        await self._throughput(
            "warmup", "reference", workload, handler, Sink.SERVICE, per_key=False
        )

    # -- trials -----------------------------------------------------------------------------

    async def _consumer(
        self,
        runner: str,
        label: str,
        topic: str,
        handler: HandlerClient,
        sink: Sink,
        *,
        per_key: bool,
        in_flight: int,
        options: dict[str, str] | None = None,
        lambda_arn: str | None = None,
    ) -> Consumer:
        if runner.startswith("ours") or lambda_arn is not None:
            consumer = await start_ours(
                self.stack,
                self.settings,
                label=label,
                topic=topic,
                handler=handler,
                sink=sink,
                in_flight=in_flight,
                options=options,
                lambda_arn=lambda_arn,
                ledger_successes=_LEDGER_SUCCESSES.get(runner, "pages"),
                http_client=_POLLER_HTTP_CLIENTS.get(runner, "aiohttp"),
            )
            consumer.runner = runner
            return consumer
        return start_reference(
            self.stack,
            self.settings,
            label=label,
            topic=topic,
            handler=handler,
            in_flight=in_flight,
            per_key=per_key,
            runner=runner,
        )

    async def _throughput(
        self,
        sid: str,
        runner: str,
        workload: Workload,
        handler: HandlerClient,
        sink: Sink,
        *,
        per_key: bool,
        in_flight: int | None = None,
        window_s: float | None = None,
        options: dict[str, str] | None = None,
        lambda_arn: str | None = None,
    ) -> tuple[RunMetrics, dict[str, Any] | None]:
        label = f"{sid}-{runner}"
        topic = await self.stack.new_topic(workload.partitions, label)
        t0 = time.monotonic()
        await self.stack.produce_backlog(topic, workload.partitions, make_records(workload))
        produced_s = time.monotonic() - t0
        ends = await self.stack.end_offsets(topic, workload.partitions)
        await handler.reset()
        consumer = await self._consumer(
            runner,
            label,
            topic,
            handler,
            sink,
            per_key=per_key,
            in_flight=in_flight or self.options.in_flight,
            options=options,
            lambda_arn=lambda_arn,
        )
        run = Run(self.stack, consumer, handler, topic, workload.records, self.settings, label)
        try:
            await run.start()
            timeout = window_s + 30 if window_s is not None else self.settings.timeout_s
            await run.wait_received(workload.records, timeout, window=window_s is not None)
            committed_at = None
            if run.metrics.error is None and window_s is None:
                committed_at = await run.wait_committed(ends)
                if committed_at is None:
                    run.metrics.error = "committed offsets never reached the end offsets"
            metrics = await run.finish(committed_at)
        finally:
            await consumer.child.stop()
            await self.stack.delete_topic(topic)
        self.say(
            f"  {label}: {_rate(metrics)} rec/s, {metrics.received}/{metrics.records} records"
            f" (produced in {produced_s:.1f}s){' - ' + metrics.error if metrics.error else ''}"
        )
        return metrics, run.profile

    async def _steady(
        self, sid: str, runner: str, workload: Workload, handler: HandlerClient
    ) -> RunMetrics:
        label = f"{sid}-{runner}"
        topic = await self.stack.new_topic(workload.partitions, label)
        await handler.reset()
        consumer = await self._consumer(
            runner,
            label,
            topic,
            handler,
            Sink.SERVICE,
            per_key=False,
            in_flight=self.options.in_flight,
        )
        run = Run(self.stack, consumer, handler, topic, workload.records, self.settings, label)
        warm = 50
        try:
            await run.start()
            warm_records = make_records(replace(workload, records=warm, seed=workload.seed + 1))
            await self.stack.produce_steady(topic, warm_records, rate=200)
            await run.wait_received(warm, 120)
            if run.metrics.error is None:
                await run.rebase(warm)
                producer = asyncio.create_task(
                    self.stack.produce_steady(
                        topic, make_records(workload), rate=self.options.steady_rate
                    )
                )
                await run.wait_received(
                    workload.records, workload.records / self.options.steady_rate + 60
                )
                await producer
            committed_at = None
            if run.metrics.error is None:
                ends = await self.stack.end_offsets(topic, workload.partitions)
                committed_at = await run.wait_committed(ends)
            metrics = await run.finish(committed_at)
            metrics.startup_s = None
        finally:
            await consumer.child.stop()
            await self.stack.delete_topic(topic)
        p99 = f"{metrics.latency.p99_ms:.0f}" if metrics.latency else "-"
        self.say(f"  {label}: {_rate(metrics)} rec/s, p99 {p99} ms")
        return metrics

    async def _rows_variant(
        self, sid: str, workload: Workload, handler: HandlerClient, sink: Sink, *, per_key: bool
    ) -> RunMetrics | None:
        """Our poller once more with ``[ledger] successes = "rows"`` (unless --ledger pages)."""
        if "rows" not in self.options.ledger:
            return None
        metrics, _ = await self._throughput(
            sid, "ours-rows", workload, handler, sink, per_key=per_key
        )
        return metrics

    @staticmethod
    def _rows_targets(
        result: ScenarioResult, rows: RunMetrics | None, description: str
    ) -> list[TargetCheck]:
        if rows is None:
            return []
        result.variants.append(rows)
        return [TargetCheck(f"{description}, ledger rows", result.ratio_of(rows), 0.8)]

    # -- scenarios --------------------------------------------------------------------------

    async def scenario_a(self) -> ScenarioResult:
        return await self._against_reference(
            "a",
            "Service handler (parallel, no ordering); reference: bare loop, same in-flight limit",
            Sink.SERVICE,
            per_key=False,
            target="records/s, ours / reference loop",
        )

    async def scenario_b(self) -> ScenarioResult:
        return await self._against_reference(
            "b",
            "Virtual Object exclusive handler, one at a time per key in partition order; "
            "reference: bare loop with one in flight per key",
            Sink.EXCLUSIVE,
            per_key=True,
            target="records/s, ours / per-key reference loop",
        )

    async def _against_reference(
        self, sid: str, description: str, sink: Sink, *, per_key: bool, target: str
    ) -> ScenarioResult:
        """(a) and (b): the reference loop, ours, ours with a row per success, on one workload."""
        workload = self._workload()
        handler = await self.stack.handler(0.0)
        result = ScenarioResult(
            sid,
            _NAMES[sid],
            description,
            workload={**workload.as_dict(), "in_flight": self.options.in_flight},
        )
        result.reference, _ = await self._throughput(
            sid, "reference", workload, handler, sink, per_key=per_key
        )
        result.ours, result.profile = await self._throughput(
            sid, "ours", workload, handler, sink, per_key=per_key
        )
        rows = await self._rows_variant(sid, workload, handler, sink, per_key=per_key)
        fast: list[TargetCheck] = []
        if sid == "a":
            # The same scenario with the optional kafka-ingress[fast-http] client.
            fast_run, _ = await self._throughput(
                sid, "ours-pyreqwest", workload, handler, sink, per_key=per_key
            )
            result.variants.append(fast_run)
            fast.append(TargetCheck(f"{target}, pyreqwest", result.ratio_of(fast_run), 0.8))
        result.targets = [
            TargetCheck(target, result.ratio, 0.8),
            *self._rows_targets(result, rows, target),
            *fast,
            TargetCheck(
                "poller CPU ms per record",
                result.ours.cpu_s_per_1k,
                CPU_MS_PER_RECORD_TARGET,
                higher_is_better=False,
            ),
            TargetCheck(
                "DynamoDB requests per 1,000 records",
                result.ours.dynamo_per_1k,
                DYNAMO_TARGET_PER_1K,
                higher_is_better=False,
            ),
        ]
        return result

    async def scenario_c(self) -> ScenarioResult:
        o = self.options
        workload = self._workload(records=o.slow_records, partitions=1)
        handler = await self.stack.handler(o.slow_delay_ms)
        result = ScenarioResult(
            "c",
            _NAMES["c"],
            f"Virtual Object exclusive, one partition, {o.keys} keys, handler takes "
            f"{o.slow_delay_ms:g} ms: key-level concurrency beyond partitions; baseline: the "
            "same records one at a time per partition",
            workload={
                **workload.as_dict(),
                "in_flight": o.in_flight,
                "handler_delay_ms": o.slow_delay_ms,
                "baseline_records": min(o.baseline_records, workload.records),
            },
        )
        result.reference, _ = await self._throughput(
            "c", "reference", workload, handler, Sink.EXCLUSIVE, per_key=True
        )
        result.ours, result.profile = await self._throughput(
            "c", "ours", workload, handler, Sink.EXCLUSIVE, per_key=True
        )
        baseline_workload = replace(workload, records=min(o.baseline_records, workload.records))
        result.baseline, _ = await self._throughput(
            "c", "baseline", baseline_workload, handler, Sink.EXCLUSIVE, per_key=True, in_flight=1
        )
        speedup = None
        if result.ours.rate_rps and result.baseline.rate_rps:
            speedup = result.ours.rate_rps / result.baseline.rate_rps
        result.targets = [
            TargetCheck("records/s, ours / one-at-a-time per partition", speedup, 10.0)
        ]
        return result

    async def scenario_d(self) -> ScenarioResult:
        o = self.options
        workload = self._workload()
        batch_size = 100
        # Partition batches (batch.mode=partition, the default of Lambda batch mode): one
        # batch of up to batch.size records in flight per partition, in offset order, as AWS's
        # event source mapping; max.in.flight does not bound them.
        in_flight = batch_size * workload.partitions
        result = ScenarioResult(
            "d",
            _NAMES["d"],
            f"Service handler as a Lambda function (local Lambda endpoint, real boto3 client), "
            f"batch.size={batch_size} in partition batches (one batch in flight per partition, "
            "default batching window); target: 3 x our (a); "
            "baseline: the same Lambda path, one record per call",
            workload={**workload.as_dict(), "batch_size": batch_size, "batch_mode": "partition"},
        )
        reason = batch_support()
        if reason is not None:
            result.status = "not available"
            result.reason = reason
            return result
        from bench.lambda_handler import FUNCTION_ARN

        handler = await self.stack.lambda_handler()
        result.ours, result.profile = await self._throughput(
            "d",
            "ours",
            workload,
            handler,
            Sink.SERVICE,
            per_key=False,
            in_flight=in_flight,
            options={"batch.size": str(batch_size)},
            lambda_arn=FUNCTION_ARN,
        )
        single = replace(workload, records=min(workload.records, 500 if o.quick else 5_000))
        result.baseline, _ = await self._throughput(
            "d",
            "baseline",
            single,
            handler,
            Sink.SERVICE,
            per_key=False,
            lambda_arn=FUNCTION_ARN,
        )
        service = self.results.get("a")
        base_rate = service.ours.rate_rps if service and service.ours else None
        result.targets = [
            TargetCheck("records/s, batch mode / our (a)", _gain(result.ours, base_rate), 3.0),
            TargetCheck(
                "DynamoDB requests per 1,000 records",
                result.ours.dynamo_per_1k,
                DYNAMO_TARGET_PER_1K,
                higher_is_better=False,
            ),
        ]
        if "rows" in o.ledger:
            rows, _ = await self._throughput(
                "d",
                "ours-rows",
                workload,
                handler,
                Sink.SERVICE,
                per_key=False,
                in_flight=in_flight,
                options={"batch.size": str(batch_size)},
                lambda_arn=FUNCTION_ARN,
            )
            result.variants.append(rows)
            variants = service.variants if service else []
            a_rows = next((v for v in variants if v.runner == "ours-rows"), None)
            base = a_rows.rate_rps if a_rows else None
            result.targets.append(
                TargetCheck("records/s, batch mode / our (a), ledger rows", _gain(rows, base), 3.0)
            )
        if base_rate is None:
            result.notes.append("run (a) in the same run to check the 3 x (a) target")
        return result

    async def scenario_e(self) -> ScenarioResult:
        o = self.options
        records = max(1, int(o.steady_rate * o.steady_seconds))
        workload = self._workload(records=records)
        handler = await self.stack.handler(0.0)
        result = ScenarioResult(
            "e",
            _NAMES["e"],
            f"steady {o.steady_rate:,.0f} records/s for {o.steady_seconds:g} s, Service handler: "
            "end-to-end latency (produce timestamp -> handler receipt)",
            workload={**workload.as_dict(), "rate": o.steady_rate, "in_flight": o.in_flight},
        )
        result.reference = await self._steady("e", "reference", workload, handler)
        result.ours = await self._steady("e", "ours", workload, handler)
        runs = [("", result.ours)]
        if "rows" in o.ledger:
            rows = await self._steady("e", "ours-rows", workload, handler)
            result.variants.append(rows)
            runs.append((", ledger rows", rows))
        for suffix, run in runs:
            added = None
            if run.latency and result.reference.latency:
                added = run.latency.p99_ms - result.reference.latency.p99_ms
            result.targets.append(
                TargetCheck(
                    f"p99 latency added over the reference loop, ms{suffix}",
                    added,
                    50.0,
                    higher_is_better=False,
                )
            )
        if result.ours.latency:
            result.notes.append(
                f"our p99 end-to-end latency {result.ours.latency.p99_ms:.1f} ms "
                f"(p50 {result.ours.latency.p50_ms:.1f} ms)"
            )
        return result

    async def scenario_f(self) -> ScenarioResult:
        o = self.options
        workload = self._workload(records=o.backlog_records)
        handler = await self.stack.handler(0.0)
        result = ScenarioResult(
            "f",
            _NAMES["f"],
            f"{o.backlog_records:,} records waiting; our poller consumes for "
            f"{o.backlog_seconds:g} s: peak RSS must stay bounded",
            workload={**workload.as_dict(), "window_s": o.backlog_seconds},
        )
        self.say(f"  producing a backlog of {o.backlog_records:,} records …")
        result.ours, result.profile = await self._throughput(
            "f",
            "ours",
            workload,
            handler,
            Sink.SERVICE,
            per_key=False,
            window_s=o.backlog_seconds,
        )
        if result.ours.error is None and not result.ours.complete:
            result.notes.append(
                f"window ended after {result.ours.received:,} of {o.backlog_records:,} records "
                "(by design: the backlog only has to exist)"
            )
        result.targets = [
            TargetCheck(
                f"poller peak RSS with a {o.backlog_records:,}-record backlog, MB",
                result.ours.peak_rss_mb,
                RSS_TARGET_MB,
                higher_is_better=False,
            ),
            TargetCheck(
                "DynamoDB requests per 1,000 records",
                result.ours.dynamo_per_1k,
                DYNAMO_TARGET_PER_1K,
                higher_is_better=False,
            ),
        ]
        return result

    async def scenario_g(self) -> ScenarioResult:
        o = self.options
        scenario = ScaleScenario(
            self.stack,
            self.stack.work_dir,
            self.say,
            subscriptions=o.scale_subscriptions,
            idle_s=o.scale_idle_seconds,
        )
        return await scenario.run()

    async def scenario_scale(self) -> ScenarioResult:
        o = self.options
        workload = self._workload(records=o.scale_records, partitions=12)
        handler = await self.stack.handler(o.slow_delay_ms)
        result = ScenarioResult(
            "scale",
            _NAMES["scale"],
            f"Service handler taking {o.slow_delay_ms:g} ms, 12 partitions, {o.in_flight} in "
            "flight per poller: one poller, then a second and a third join the same group",
            workload={**workload.as_dict(), "in_flight": o.in_flight},
        )
        # The bare reference loop through the same joins first: what this machine allows. Its
        # failure is reported beside ours, not instead of it.
        ceiling: dict[str, Any]
        try:
            ceiling = await scale_out(
                self.stack, self.settings, handler, workload, o.in_flight, self.say, "reference"
            )
        except Exception as exc:
            ceiling = {"error": str(exc), "ratio": None}
        figures = await scale_out(
            self.stack, self.settings, handler, workload, o.in_flight, self.say
        )
        self.scale_out = {**figures, "reference": ceiling}
        one, three = figures["records_per_s_1_poller"], figures["records_per_s_3_pollers"]
        result.targets = [TargetCheck("records/s, 3 pollers / 1 poller", figures["ratio"], 2.5)]
        result.notes.append(
            f"1 poller {one or 0:,.0f} rec/s, 3 pollers {three or 0:,.0f} rec/s; no invocation "
            f"started for {figures['pause_s_2nd_joins']:.2f} s when the 2nd joined, "
            f"{figures['pause_s_3rd_joins']:.2f} s when the 3rd joined"
        )
        self.say(f"  {result.notes[-1]}")
        if "error" in ceiling:
            result.notes.append(f"bare reference loops: failed ({ceiling['error']})")
        else:
            result.notes.append(
                f"bare reference loops on the same machine: "
                f"1 {ceiling['records_per_s_1_poller'] or 0:,.0f} rec/s, "
                f"3 {ceiling['records_per_s_3_pollers'] or 0:,.0f} rec/s, "
                f"{ceiling['ratio'] or 0:.2f} x, {ceiling['duplicates']} duplicates"
            )
        self.say(f"  {result.notes[-1]}")
        return result

    async def _tool(self, module: str, label: str, argv: list[str]) -> dict[str, Any]:
        """Run one of the bench's measuring tools in a child process; its ``RESULT`` line."""
        child = Child(
            label, [sys.executable, "-m", module, *argv], self.stack.work_dir / f"{label}.log"
        )
        await child.start()
        assert child.proc is not None
        try:
            code: int | None = await asyncio.wait_for(child.proc.wait(), self.settings.timeout_s)
        finally:
            await child.stop()
        line = next(
            (ln for ln in child.log_path.read_text().splitlines() if ln.startswith("RESULT ")),
            None,
        )
        if code != 0 or line is None:
            return {"error": child.log_tail(5)}
        figures: dict[str, Any] = orjson.loads(line[len("RESULT ") :])
        return figures

    async def scenario_ledger(self) -> ScenarioResult:
        o = self.options
        result = ScenarioResult(
            "ledger",
            _NAMES["ledger"],
            f"{o.ledger_rows:,} first-attempt successes through the engine's LedgerWriter and "
            'DynamoStore into moto, with [ledger] successes = "rows" and = "pages"',
        )
        assert self.stack.dynamo is not None
        moto = Meter(self.stack.dynamo.pid)
        for name, flags in _LEDGER_VARIANTS:
            argv = ["--endpoint", self.stack.dynamo_url, "--rows", str(o.ledger_rows), *flags]
            moto_before = moto.cpu_s()
            figures = await self._tool("bench.ledgerbench", f"ledger-{name}", argv)
            figures.setdefault("variant", name)
            rows = int(figures.get("rows") or 0)
            if rows:
                figures["dynamodb_server_cpu_ms_per_1k"] = round(
                    (moto.cpu_s() - moto_before) * 1_000_000 / rows, 1
                )
            self.ledger_paths.append(figures)
            if "error" not in figures:
                self.say(
                    f"  ledger {name}: {figures['rows_per_s']:,.0f} rows/s, client "
                    f"{figures['cpu_ms_per_1k']:.0f} ms CPU per 1,000 rows, DynamoDB server "
                    f"{figures.get('dynamodb_server_cpu_ms_per_1k', 0):.0f} ms"
                )
        return result

    async def scenario_http(self) -> ScenarioResult:
        o = self.options
        handler = await self.stack.handler(0.0)
        result = ScenarioResult(
            "http",
            _NAMES["http"],
            f"{o.http_requests:,} POSTs, {o.in_flight} in flight, one pooled keep-alive client, "
            "each client in its own process",
        )
        for client, loop in itertools.product(_HTTP_CLIENTS, ("asyncio", "uvloop")):
            argv = ["--client", client, "--loop", loop, "--url", handler.url]
            argv += ["--requests", str(o.http_requests), "--concurrency", str(o.in_flight)]
            argv += ["--max-seconds", "3" if o.quick else "20"]
            figures = await self._tool("bench.httpclients", f"http-{client}-{loop}", argv)
            figures.setdefault("client", client)
            figures.setdefault("loop", loop)
            self.http_clients.append(figures)
            if "error" not in figures:
                self.say(
                    f"  {client} on {loop}: {figures['requests_per_s']:,.0f} req/s, "
                    f"{figures['cpu_ms_per_1k']:.0f} ms CPU per 1,000"
                )
        if importlib.util.find_spec("sniffio") is None:
            result.notes.append(
                "sniffio is not installed: anyio then retries a failing `import sniffio` several "
                "times per httpx request, which inflates httpx's CPU figure"
            )
        result.notes += [
            f"{r['client']}/{r['loop']}: {r.get('requests_per_s', 0):,.0f} req/s, "
            f"{r.get('cpu_ms_per_1k', 0):.0f} ms CPU per 1,000 requests"
            for r in self.http_clients
            if "error" not in r
        ]
        return result


_HTTP_CLIENTS = ("aiohttp", "httpx", "pyreqwest")

# The ledger as shipped, with either setting of [ledger] successes.
_LEDGER_VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rows", ()),
    ("pages", ("--success-pages",)),
)

_NAMES = {
    "a": "service",
    "b": "exclusive",
    "c": "1 partition, 20 ms",
    "d": "batch",
    "e": "steady 1k/s",
    "f": "backlog RSS",
    "g": "scale",
    "scale": "scale-out 1 -> 3",
    "http": "HTTP clients",
    "ledger": "ledger path",
}


_LEDGER_SUCCESSES = {"ours-rows": "rows"}  # "ours" runs with the default, pages
# "ours" runs with aiohttp, the default install's client; (a) once more with the fast-http one.
_POLLER_HTTP_CLIENTS = {"ours-pyreqwest": "pyreqwest"}


def _gain(run: RunMetrics | None, base_rate: float | None) -> float | None:
    if run is None or not run.rate_rps or not base_rate:
        return None
    return run.rate_rps / base_rate


def _options_dict(o: Options) -> dict[str, Any]:
    return {
        name: (str(getattr(o, name)) if isinstance(getattr(o, name), Path) else getattr(o, name))
        for name in o.__slots__
    }


def _rate(metrics: RunMetrics) -> str:
    return f"{metrics.rate_rps:,.0f}" if metrics.rate_rps else "-"
