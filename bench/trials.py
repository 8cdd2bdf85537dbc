"""Running one consumer over one topic and measuring it: the benchmark's I/O shell.

A *trial* starts one consumer process — our poller (``kafka-ingress serve`` with a subscription
written to its DynamoDB tables, as the admin API would) or the reference loop — and watches it
from outside: the handler's receipts give throughput and end-to-end latency, psutil gives CPU
seconds and peak RSS, the counting DynamoDB gives requests, and the consumer group's committed
offsets give the commit lag. The arithmetic lives in :mod:`bench.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapter import ids
from adapter.model import HandlerInfo, HandlerType, InputKind, ServiceInfo, ServiceType
from adapter.model import Subscription as SubscriptionModel
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.tables import TableNames
from bench import profile
from bench.procs import Child, Meter
from bench.report import RunMetrics
from bench.stack import HandlerClient, Stack
from bench.stats import gauge_sums, mean_max, per_thousand, rate, summarise

__all__ = ["Consumer", "Run", "Sink", "TrialSettings", "start_ours", "start_reference"]

_POLL_S = 0.1
_GAUGES = (
    "kafka_ingress_in_flight",
    "kafka_ingress_unfinished_records",
    "kafka_ingress_ledger_pending_rows",
)
_COMMIT_SAMPLE_EVERY = 5  # polls


class Sink(enum.Enum):
    SERVICE = "service"
    EXCLUSIVE = "exclusive"

    @property
    def types(self) -> tuple[ServiceType, HandlerType]:
        if self is Sink.SERVICE:
            return ServiceType.SERVICE, HandlerType.SERVICE
        return ServiceType.VIRTUAL_OBJECT, HandlerType.EXCLUSIVE


@dataclass(frozen=True, slots=True)
class TrialSettings:
    work_dir: Path
    loop: str = "uvloop"
    experiments: tuple[str, ...] = ()
    profile: bool = False
    profile_rate: int = 100
    timeout_s: float = 600.0
    commit_timeout_s: float = 60.0


@dataclass
class Consumer:
    """A consumer process under test, before it is started."""

    runner: str
    child: Child
    group: str
    ordered: bool
    cleanup: Callable[[], Awaitable[None]] | None = None
    metrics_url: str | None = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _poller_config(
    stack: Stack,
    prefix: str,
    in_flight: int,
    lambda_url: str | None,
    admin_port: int,
    ledger_successes: str = "pages",
    http_client: str = "aiohttp",
) -> str:
    lambda_section = f'[lambda]\nendpoint-url = "{lambda_url}"\n' if lambda_url else ""
    # BENCH_POLLER_LOG_LEVEL=DEBUG: to follow one run's pollers step by step (bench/README.md).
    log_level = os.environ.get("BENCH_POLLER_LOG_LEVEL", "INFO")
    return (
        f'log-level = "{log_level}"\n\n'
        # The admin API serves /metrics, read during the run for the engine's own view.
        "[admin]\n"
        f'bind-address = "127.0.0.1:{admin_port}"\n'
        "allow-open = true\n\n"
        "[[ingress.kafka-clusters]]\n"
        'name = "bench"\n'
        f'brokers = ["PLAINTEXT://{stack.bootstrap}"]\n\n'
        "[dynamodb]\n"
        f'endpoint-url = "{stack.dynamo_url}"\n'
        'region = "us-east-1"\n'
        f'table-prefix = "{prefix}"\n\n'
        "[limits]\n"
        f"max-in-flight = {in_flight}\n\n"
        "[ledger]\n"
        f'successes = "{ledger_successes}"\n\n'
        "[http]\n"
        f'client = "{http_client}"\n\n'
    ) + lambda_section


async def start_ours(
    stack: Stack,
    settings: TrialSettings,
    *,
    label: str,
    topic: str,
    handler: HandlerClient,
    sink: Sink,
    in_flight: int,
    options: dict[str, str] | None = None,
    lambda_arn: str | None = None,
    ledger_successes: str = "pages",
    http_client: str = "aiohttp",
) -> Consumer:
    """Tables, deployment, service and subscription in DynamoDB, and the poller's command.

    With ``lambda_arn`` the deployment is that function, invoked through the Lambda endpoint
    at ``handler.url``; otherwise it is the HTTP handler at ``handler.url``.
    ``ledger_successes`` is the poller's ``[ledger] successes`` setting, ``http_client`` its
    ``[http] client`` (aiohttp: what the default install uses).
    """
    prefix = f"bench{uuid.uuid4().hex[:8]}-"
    client = make_client(stack.dynamo_url, "us-east-1")
    store = DynamoStore(client, TableNames(prefix))
    await asyncio.to_thread(store.create_tables)
    service_type, handler_type = sink.types
    deployment_id = ids.deployment_id()
    where = {"arn": lambda_arn} if lambda_arn else {"uri": handler.url}
    await store.put_deployment({"id": deployment_id, **where, "created_at": 0})
    await store.put_service(
        ServiceInfo(
            name="Bench",
            service_type=service_type,
            deployment_id=deployment_id,
            handlers=(HandlerInfo("run", handler_type, InputKind.JSON),),
        )
    )
    subscription = SubscriptionModel(
        id=ids.subscription_id(),
        cluster="bench",
        topic=topic,
        service="Bench",
        handler="run",
        options={
            "auto.offset.reset": "earliest",
            "max.in.flight": str(in_flight),
            **(options or {}),
        },
    )
    await store.put_subscription(subscription)
    config = settings.work_dir / f"poller-{label}.toml"
    admin_port = _free_port()
    lambda_url = handler.url if lambda_arn else None
    config.write_text(
        _poller_config(
            stack, prefix, in_flight, lambda_url, admin_port, ledger_successes, http_client
        )
    )
    argv = [sys.executable, "-m", "bench.poller", "--loop", settings.loop]
    for experiment in settings.experiments:
        argv += ["--experiment", experiment]
    argv.append("--")
    argv += ["--config-file", str(config), "serve"]

    async def drop_tables() -> None:
        def drop() -> None:
            for table in TableNames(prefix).all().values():
                client.delete_table(TableName=table)

        await asyncio.to_thread(drop)

    child = Child(f"poller-{label}", argv, settings.work_dir / f"poller-{label}.log")
    return Consumer(
        "ours",
        child,
        subscription.id,
        sink is Sink.EXCLUSIVE,
        drop_tables,
        metrics_url=f"http://127.0.0.1:{admin_port}/metrics",
    )


def start_reference(
    stack: Stack,
    settings: TrialSettings,
    *,
    label: str,
    topic: str,
    handler: HandlerClient,
    in_flight: int,
    per_key: bool,
    runner: str = "reference",
) -> Consumer:
    group = f"reference-{uuid.uuid4().hex[:10]}"
    argv = [
        sys.executable,
        "-m",
        "bench.reference",
        "--bootstrap",
        stack.bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--url",
        handler.url,
        "--in-flight",
        str(in_flight),
        "--loop",
        settings.loop,
    ]
    if per_key:
        argv.append("--per-key")
    child = Child(f"{runner}-{label}", argv, settings.work_dir / f"{runner}-{label}.log")
    return Consumer(runner, child, group, per_key)


@dataclass
class Run:
    """One started consumer, watched from outside until it has done its work."""

    stack: Stack
    consumer: Consumer
    handler: HandlerClient
    topic: str
    expected: int
    settings: TrialSettings
    label: str
    metrics: RunMetrics = field(init=False)
    received_before: int = 0
    _meter: Meter | None = None
    _others: dict[str, Meter] = field(default_factory=dict)
    _others_cpu: dict[str, float] = field(default_factory=dict)
    _dynamo_before: dict[str, int] = field(default_factory=dict)
    _started_s: float = 0.0
    _cpu_first: float | None = None
    _count_first: int = 0
    _first_seen_s: float | None = None
    _committed_base: int = 0
    _profiler: Child | None = None
    _profile_path: Path | None = None
    _gauges: dict[str, list[float]] = field(default_factory=dict)
    profile: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.metrics = RunMetrics(
            runner=self.consumer.runner, records=self.expected, ordered=self.consumer.ordered
        )

    async def start(self) -> None:
        self._dynamo_before = await self.stack.dynamo_counts()
        self._others = self.stack.meters()
        self._others_cpu = {name: m.cpu_s() for name, m in self._others.items()}
        self._started_s = time.time()
        await self.consumer.child.start()
        self._meter = Meter(self.consumer.child.pid)
        if self.settings.profile:
            self._profile_path = self.settings.work_dir / f"profile-{self.label}.txt"
            self._profiler = Child(
                f"py-spy-{self.label}",
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(self.consumer.child.pid),
                    "--rate",
                    str(self.settings.profile_rate),
                    "--nonblocking",
                    # Only the thread holding the GIL: threads waiting for it (boto3 workers
                    # behind the event loop) would otherwise show up as busy.
                    "--gil",
                    "--format",
                    "raw",
                    "--output",
                    str(self._profile_path),
                ],
                self.settings.work_dir / f"py-spy-{self.label}.log",
            )
            await self._profiler.start()

    async def rebase(self, received_so_far: int) -> None:
        """Start the measured window now (after a warm-up): CPU, DynamoDB, committed base."""
        assert self._meter is not None
        await self.handler.reset()
        self.received_before = received_so_far
        self._cpu_first = self._meter.cpu_s()
        self._count_first = 0
        self._first_seen_s = None
        self._dynamo_before = await self.stack.dynamo_counts()
        self._others_cpu = {name: m.cpu_s() for name, m in self._others.items()}

    async def wait_received(self, expected: int, timeout_s: float, *, window: bool = False) -> int:
        """Poll the handler until ``expected`` distinct records arrived (since the last reset).

        With ``window`` a timeout just ends the measurement (the backlog scenario runs for a
        fixed time); otherwise it is recorded as the run's error.
        """
        assert self._meter is not None
        deadline = time.monotonic() + timeout_s
        polls = 0
        count = 0
        while True:
            self._meter.sample()
            state = await self.handler.count()
            count = int(state["count"])
            if count and self._cpu_first is None:
                self._cpu_first = self._meter.cpu_s()
                self._count_first = count
            if count and self._first_seen_s is None:
                self._first_seen_s = time.time()
            if polls % _COMMIT_SAMPLE_EVERY == 0:
                await self._sample_uncommitted(count)
                if count:
                    await self._sample_engine()
            polls += 1
            if count >= expected:
                return count
            if not self.consumer.child.running:
                self.metrics.error = f"{self.consumer.child.name} exited early"
                return count
            if time.monotonic() > deadline:
                if not window:
                    self.metrics.error = f"timed out after {timeout_s:.0f}s with {count} records"
                return count
            await asyncio.sleep(_POLL_S)

    async def _sample_uncommitted(self, count: int) -> None:
        committed = await self.stack.committed(self.consumer.group, self.topic)
        lag = self.received_before + count - sum(committed.values())
        if self.metrics.max_uncommitted is None or lag > self.metrics.max_uncommitted:
            self.metrics.max_uncommitted = max(0, lag)

    async def _sample_engine(self) -> None:
        """The poller's own gauges (in flight, unfinished, ledger rows pending) from /metrics."""
        url = self.consumer.metrics_url
        if url is None:
            return
        with contextlib.suppress(Exception):  # a diagnostic: a missed sample changes nothing
            text = await self.stack.get_text(url)
            for name, value in gauge_sums(text, _GAUGES).items():
                self._gauges.setdefault(name, []).append(value)

    async def wait_committed(self, ends: dict[int, int]) -> float | None:
        """Wall time (epoch s) at which the group's committed offsets reached ``ends``."""
        deadline = time.monotonic() + self.settings.commit_timeout_s
        wanted = {p: o for p, o in ends.items() if o > 0}
        while time.monotonic() < deadline:
            committed = await self.stack.committed(self.consumer.group, self.topic)
            if all(committed.get(p, -1) >= o for p, o in wanted.items()):
                return time.time()
            await asyncio.sleep(0.05)
        return None

    async def finish(self, committed_at_s: float | None = None) -> RunMetrics:
        """Read the figures, stop the consumer (gracefully) and fill :attr:`metrics`."""
        assert self._meter is not None
        metrics = self.metrics
        cpu_end = self._meter.cpu_s()
        metrics.peak_rss_mb = self._meter.peak_rss_bytes() / (1024 * 1024)
        others = {
            name: m.cpu_s() - self._others_cpu.get(name, 0.0) for name, m in self._others.items()
        }
        if self._profiler is not None:
            await self._profiler.stop(sig=signal.SIGINT)
        await self.consumer.child.stop(timeout=60)
        if self._profile_path is not None and self._profile_path.exists():
            stacks = profile.parse_collapsed(self._profile_path.read_text(errors="replace"))
            self.profile = {"file": str(self._profile_path), **profile.summary(stacks)}
        stats = await self.handler.stats()
        dynamo_after = await self.stack.dynamo_counts()
        if self.consumer.cleanup is not None:
            try:
                await self.consumer.cleanup()
            except Exception as exc:  # clean-up is best effort; the figures are already in
                metrics.error = metrics.error or f"clean-up failed: {exc}"

        received = int(stats["count"])
        metrics.received = received
        metrics.duplicates = int(stats["duplicates"])
        metrics.overlaps = int(stats["overlaps"])
        metrics.order_violations = int(stats["order_violations"])
        metrics.max_active = int(stats["max_active"])
        first_s, last_s = stats["first_s"], stats["last_s"]
        if first_s is not None and last_s is not None:
            metrics.rate_rps = rate(received, float(first_s), float(last_s))
            metrics.wall_s = float(last_s) - self._started_s
            metrics.startup_s = float(first_s) - self._started_s
            if committed_at_s is not None:
                metrics.commit_lag_ms = max(0.0, (committed_at_s - float(last_s)) * 1000)
        metrics.latency = summarise(stats["latencies_ms"])
        if self._cpu_first is not None:
            metrics.cpu_s_per_1k = per_thousand(
                cpu_end - self._cpu_first, received - self._count_first
            )
        own_name = f"{self.consumer.runner} (measured)"
        metrics.cpu_s_by_process = {own_name: cpu_end - (self._cpu_first or 0.0), **others}
        for name, samples in self._gauges.items():
            figures = mean_max(samples)
            if figures is not None:
                metrics.engine_gauges[name.removeprefix("kafka_ingress_")] = figures
        if self.consumer.metrics_url is not None:
            delta = {
                op: n - self._dynamo_before.get(op, 0)
                for op, n in dynamo_after.items()
                if n - self._dynamo_before.get(op, 0) > 0
            }
            metrics.dynamo_requests = delta
            metrics.dynamo_per_1k = per_thousand(sum(delta.values()), received)
        return metrics
