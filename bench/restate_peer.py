"""``make bench-peers``: the same workload through Restate's own Kafka ingress, in the same run.

Not in CI and not in ``make test``. The Makefile installs, by the project's own pinned files
(bench/peers/), Restate's server from npm and its Python SDK (with hypercorn) from PyPI into
``.cache/peers/``. One run then starts the bench's stack (broker, moto, handler servers), a
Restate server whose Kafka cluster is that broker, and the SDK service of
``bench/peers/restate_service.py``; and for each scenario produces the same records into a
fresh topic for each side and runs:

* **ours**: our poller over its topic, as ``make bench`` runs it (aiohttp, success pages);
* **reference**: the bench's bare reference loop (``bench/reference.py``, per key for the
  exclusive scenarios) at the same in-flight limit: what the same HTTP client, event loop and
  broker allow with no engine at all, so its ratio is the ceiling of any poller built on them;
* **restate**: a Kafka subscription of the Restate server to its topic, sinking into the SDK
  service; completions counted exactly from Restate's ``sys_invocation`` table over the admin
  API's ``/query`` endpoint (status ``completed``), records/s from the first to the last
  ``completed_at``.

Scenarios: ``a`` Service, ``b`` Virtual Object exclusive (per-key order), ``c`` one partition,
1,000 keys, handler taking 20 ms, 2,000 records. CPU per record is reported for each side's
ingress process (our poller; Restate's server) and, separately, for its handler process.
Figures go to ``bench/peers-results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from adapter.config import LimitSettings
from bench.cli import parse_args
from bench.procs import Child, Meter
from bench.suite import Suite
from bench.trials import Sink
from bench.workload import make_records

__all__ = ["main"]

SHIPPED_IN_FLIGHT: int = LimitSettings.model_fields["max_in_flight"].default
_ROOT = Path(__file__).resolve().parents[1]
_SERVER_BINARY = "npm/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
_SERVICE_SCRIPT = _ROOT / "bench" / "peers" / "restate_service.py"


@dataclass(frozen=True)
class PeerScenario:
    id: str
    name: str
    partitions: int
    records: int
    delay_ms: float
    sink: Sink
    restate_service: str
    restate_handler: str
    target: float  # ours / Restate, records/s


def _scenarios(records: int, slow_records: int) -> list[PeerScenario]:
    exclusive = Sink.EXCLUSIVE
    return [
        PeerScenario("a", "Service", 4, records, 0, Sink.SERVICE, "BenchService", "run", 8.0),
        PeerScenario(
            "b", "Virtual Object exclusive", 4, records, 0, exclusive, "BenchObject", "run", 5.0
        ),
        PeerScenario(
            "c", "1 partition, 20 ms", 1, slow_records, 20, exclusive, "BenchObject", "slow", 4.0
        ),
    ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RestateServer:
    """One Restate server process (single node, fresh base dir) and its admin API."""

    peers_dir: Path
    work_dir: Path
    bootstrap: str
    child: Child | None = None
    admin_url: str = ""
    _http: aiohttp.ClientSession | None = None

    def _config(self) -> str:
        node, admin, ingress = _free_port(), _free_port(), _free_port()
        self.admin_url = f"http://127.0.0.1:{admin}"
        return (
            'cluster-name = "bench"\n'
            'node-name = "bench"\n'
            f'base-dir = "{self.work_dir / "restate-data"}"\n'
            # No usage reporting from a benchmark run.
            "disable-telemetry = true\n"
            f'bind-address = "127.0.0.1:{node}"\n'
            f'advertised-address = "http://127.0.0.1:{node}/"\n'
            'log-filter = "warn,restate=info"\n\n'
            f'[admin]\nbind-address = "127.0.0.1:{admin}"\n\n'
            f'[ingress]\nbind-address = "127.0.0.1:{ingress}"\n\n'
            "[[ingress.kafka-clusters]]\n"
            'name = "bench"\n'
            f'brokers = ["PLAINTEXT://{self.bootstrap}"]\n'
        )

    async def start(self, timeout_s: float = 90) -> None:
        binary = self.peers_dir / _SERVER_BINARY
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run make bench-peers (it installs it)")
        config = self.work_dir / "restate.toml"
        config.write_text(self._config())
        self.child = Child(
            "restate-server",
            [str(binary), "--config-file", str(config), "--no-logo"],
            self.work_dir / "restate-server.log",
            env={"DO_NOT_TRACK": "1"},
        )
        await self.child.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                async with self._http.get(f"{self.admin_url}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if not self.child.running or time.monotonic() > deadline:
                raise RuntimeError(f"Restate did not start:\n{self.child.log_tail()}")
            await asyncio.sleep(0.2)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._http is not None
        # /query answers Arrow IPC unless asked for JSON.
        headers = {"accept": "application/json"}
        async with self._http.request(
            method, f"{self.admin_url}{path}", json=body, headers=headers
        ) as resp:
            text = (await resp.read()).decode("utf-8", errors="replace")
            if resp.status >= 300:
                raise RuntimeError(f"Restate {method} {path}: HTTP {resp.status}: {text[:500]}")
            return orjson.loads(text) if text else None

    async def register(self, uri: str, timeout_s: float = 60) -> None:
        """Register the SDK deployment, retrying while the SDK process comes up."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self._call("POST", "/deployments", {"uri": uri, "force": True})
                return
            except (RuntimeError, aiohttp.ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def subscribe(self, topic: str, service: str, handler: str) -> str:
        answer = await self._call(
            "POST",
            "/subscriptions",
            {
                "source": f"kafka://bench/{topic}",
                "sink": f"service://{service}/{handler}",
                "options": {"auto.offset.reset": "earliest"},
            },
        )
        return str(answer["id"])

    async def unsubscribe(self, subscription_id: str) -> None:
        await self._call("DELETE", f"/subscriptions/{subscription_id}")

    async def completions(self, service: str, handler: str) -> tuple[int, float, float]:
        """Completed invocations of ``service/handler``: count, first and last completion
        (epoch seconds), from the ``sys_invocation`` table (completed invocations stay there
        for the server's default journal retention, one day)."""
        query = (
            "SELECT count(*) AS n, "
            "date_part('epoch', min(completed_at)) AS t_first, "
            "date_part('epoch', max(completed_at)) AS t_last "
            "FROM sys_invocation "
            f"WHERE target_service_name = '{service}' AND target_handler_name = '{handler}' "
            "AND status = 'completed'"
        )
        answer = await self._call("POST", "/query", {"query": query})
        row = answer["rows"][0]  # NULLs (nothing completed yet) are left out of a row
        return int(row["n"]), float(row.get("t_first") or 0), float(row.get("t_last") or 0)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self.child is not None:
            await self.child.stop(timeout=60)


@dataclass
class PeerRun:
    """What one side did in one scenario."""

    side: str
    records: int
    completed: int = 0
    records_per_s: float | None = None
    ingress_cpu_ms_per_record: float | None = None
    handler_cpu_ms_per_record: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "records": self.records,
            "completed": self.completed,
            "records_per_s": _round(self.records_per_s, 1),
            "ingress_cpu_ms_per_record": _round(self.ingress_cpu_ms_per_record, 3),
            "handler_cpu_ms_per_record": _round(self.handler_cpu_ms_per_record, 3),
            "error": self.error,
            **self.extra,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


async def _restate_side(
    suite: Suite,
    server: RestateServer,
    sdk: Child,
    scenario: PeerScenario,
    timeout_s: float,
) -> PeerRun:
    stack = suite.stack
    workload = suite._workload(records=scenario.records, partitions=scenario.partitions)
    topic = await stack.new_topic(workload.partitions, f"peer-{scenario.id}-restate")
    await stack.produce_backlog(topic, workload.partitions, make_records(workload))
    assert server.child is not None
    server_meter, sdk_meter = Meter(server.child.pid), Meter(sdk.pid)
    server_cpu, sdk_cpu = server_meter.cpu_s(), sdk_meter.cpu_s()
    run = PeerRun("restate", scenario.records)
    subscription = await server.subscribe(topic, scenario.restate_service, scenario.restate_handler)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            count, first, last = await server.completions(
                scenario.restate_service, scenario.restate_handler
            )
            if count >= scenario.records:
                break
            if time.monotonic() > deadline:
                run.error = f"timed out with {count} of {scenario.records} completed"
                break
            if not server.child.running:
                run.error = "the Restate server exited"
                break
            await asyncio.sleep(0.25)
        server_used, sdk_used = server_meter.cpu_s() - server_cpu, sdk_meter.cpu_s() - sdk_cpu
    finally:
        await server.unsubscribe(subscription)
        await stack.delete_topic(topic)
    run.completed = count
    if count > 1 and last > first:
        run.records_per_s = (count - 1) / (last - first)
    if count:
        run.ingress_cpu_ms_per_record = server_used * 1000 / count
        run.handler_cpu_ms_per_record = sdk_used * 1000 / count
    return run


async def _side(suite: Suite, scenario: PeerScenario, runner: str = "ours") -> PeerRun:
    """Our poller (``ours``) or the bare reference loop (``reference``: what the same client
    and broker allow with nothing but the Kafka-to-HTTP work, per key for exclusive handlers)."""
    workload = suite._workload(records=scenario.records, partitions=scenario.partitions)
    handler = await suite.stack.handler(scenario.delay_ms)
    handler_meter = Meter(handler.child.pid)
    handler_cpu = handler_meter.cpu_s()
    metrics, _ = await suite._throughput(
        f"peer-{scenario.id}",
        runner,
        workload,
        handler,
        scenario.sink,
        per_key=scenario.sink is Sink.EXCLUSIVE,
        # The shipped default ([limits] max-in-flight), not the bench's --in-flight: Restate
        # has no such limit, and the comparison is of the products as installed.
        in_flight=SHIPPED_IN_FLIGHT,
    )
    handler_used = handler_meter.cpu_s() - handler_cpu
    run = PeerRun(runner, scenario.records, completed=metrics.received, error=metrics.error)
    run.records_per_s = metrics.rate_rps
    run.ingress_cpu_ms_per_record = metrics.cpu_s_per_1k
    if metrics.received:
        run.handler_cpu_ms_per_record = handler_used * 1000 / metrics.received
    run.extra = {"duplicates": metrics.duplicates, "order_violations": metrics.order_violations}
    return run


def _ratio(side: PeerRun, restate: PeerRun) -> float | None:
    if side.records_per_s and restate.records_per_s:
        return side.records_per_s / restate.records_per_s
    return None


async def run_peers(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    bench_args = ["--records", str(args.records), "--timeout", str(args.timeout)]
    options = parse_args(bench_args)
    suite = Suite(options, console)
    scenarios = [
        s for s in _scenarios(args.records, args.slow_records) if s.id in args.scenarios.split(",")
    ]
    results: list[dict[str, Any]] = []
    server: RestateServer | None = None
    sdk: Child | None = None
    started = time.monotonic()
    try:
        suite.say("starting Kafka broker, DynamoDB (moto) and handler servers …")
        await suite.stack.start()
        assert suite.stack.broker is not None
        server = RestateServer(args.peers_dir, suite.stack.work_dir, suite.stack.bootstrap)
        suite.say("starting the Restate server and the SDK service …")
        await server.start()
        python = args.peers_dir / "venv" / "bin" / "python"
        sdk = Child(
            "restate-sdk-service",
            [str(python), str(_SERVICE_SCRIPT), "--port", str(_free_port())],
            suite.stack.work_dir / "restate-sdk-service.log",
        )
        sdk_url = await sdk.start(wait_ready=True, timeout=60)
        await server.register(sdk_url)
        await suite._warm_up()
        for scenario in scenarios:
            ours = await _side(suite, scenario)
            suite.say(f"  ({scenario.id}) ours: {ours.records_per_s or 0:,.0f} rec/s")
            reference = await _side(suite, scenario, "reference")
            suite.say(f"  ({scenario.id}) reference: {reference.records_per_s or 0:,.0f} rec/s")
            restate = await _restate_side(suite, server, sdk, scenario, args.timeout)
            suite.say(f"  ({scenario.id}) restate: {restate.records_per_s or 0:,.0f} rec/s")
            ratio = _ratio(ours, restate)
            reference_ratio = _ratio(reference, restate)
            results.append(
                {
                    "id": scenario.id,
                    "name": scenario.name,
                    "workload": {
                        "records": scenario.records,
                        "partitions": scenario.partitions,
                        "keys": options.keys,
                        "value_bytes": options.value_bytes,
                        "handler_delay_ms": scenario.delay_ms,
                        "in_flight": SHIPPED_IN_FLIGHT,
                    },
                    "ours": ours.as_dict(),
                    "reference": reference.as_dict(),
                    "restate": restate.as_dict(),
                    "ratio": _round(ratio, 2),
                    # The bare loop's own ratio: what any poller with the same client could
                    # reach against this Restate on this machine.
                    "reference_ratio": _round(reference_ratio, 2),
                    "target": scenario.target,
                    "met": None if ratio is None else ratio >= scenario.target,
                }
            )
    finally:
        if sdk is not None:
            await sdk.stop()
        if server is not None:
            await server.stop()
        await suite.stack.stop()
    return {
        "started_at": suite.meta.get("started_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(time.monotonic() - started, 1),
        "restate_server": "1.7.12",
        "restate_sdk": "1.2.0",
        "scenarios": results,
    }


def _table(document: dict[str, Any]) -> Table:
    table = Table(title="Kafka Ingress and Restate, same broker, same records")
    for name in ("scenario", "side", "records/s", "ingress CPU ms/rec", "handler CPU ms/rec"):
        table.add_column(name)
    table.add_column("/ Restate")
    for s in document["scenarios"]:
        for side in ("ours", "reference", "restate"):
            run = s.get(side)
            if run is None:
                continue
            rate = run["records_per_s"]
            table.add_row(
                f"({s['id']}) {s['name']}" if side == "ours" else "",
                side + (f" ({run['error']})" if run["error"] else ""),
                f"{rate:,.0f}" if rate else "-",
                f"{run['ingress_cpu_ms_per_record'] or 0:.3f}",
                f"{run['handler_cpu_ms_per_record'] or 0:.3f}",
                _ratio_cell(s, side),
            )
    return table


def _ratio_cell(scenario: dict[str, Any], side: str) -> str:
    if side == "ours":
        ratio = scenario["ratio"]
        return f"{ratio:.2f} (target {scenario['target']:g})" if ratio else "-"
    if side == "reference":
        ratio = scenario.get("reference_ratio")
        return f"{ratio:.2f} (bare loop)" if ratio else "-"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restate_peer")
    parser.add_argument("--peers-dir", type=Path, default=_ROOT / ".cache" / "peers")
    parser.add_argument("--scenarios", default="a,b,c")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--slow-records", type=int, default=2_000)
    parser.add_argument("--timeout", type=float, default=900.0, help="per run, seconds")
    parser.add_argument("--out", type=Path, default=_ROOT / "bench" / "peers-results.json")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 150)
    document = asyncio.run(run_peers(args, console))
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    console.print(_table(document))
    console.print(f"Figures: {args.out}")
    failed = [
        s["id"]
        for s in document["scenarios"]
        if any(s[side]["error"] for side in ("ours", "reference", "restate"))
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
