"""Command-line options of ``python -m bench`` (``make bench BENCH_ARGS=...``). Pure."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ALL_SCENARIOS", "DEFAULT_SCENARIOS", "EXPERIMENT_NAMES", "Options", "parse_args"]

ALL_SCENARIOS = ("a", "b", "c", "d", "e", "f", "g", "scale", "http", "ledger")
# Kept here, not imported from bench.experiments, so that parsing options imports nothing heavy.
EXPERIMENT_NAMES = (
    "fast-ledger",
    "boto-lean",
    "no-ledger-io",
    "tracing",
    "no-histograms",
    "gc-default",
    "gc-freeze",
    "gc-off",
    "ledger-linger-200",
)
DEFAULT_SCENARIOS = ALL_SCENARIOS
# (g) takes minutes whatever the size: run it on its own (--scenarios g).
QUICK_SCENARIOS = ("a", "b", "c", "d", "e", "scale", "http", "ledger")
_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Options:
    records: int
    partitions: int
    keys: int
    value_bytes: int
    seed: int
    in_flight: int
    scenarios: tuple[str, ...]
    quick: bool
    slow_records: int
    slow_delay_ms: float
    baseline_records: int
    steady_rate: float
    steady_seconds: float
    backlog_records: int
    backlog_seconds: float
    scale_records: int
    http_requests: int
    ledger_rows: int
    scale_subscriptions: int
    scale_idle_seconds: float
    loop: str
    ledger: tuple[str, ...]
    experiments: tuple[str, ...]
    profile: bool
    profile_rate: int
    out: Path
    work_dir: Path
    timeout_s: float


def _scenarios(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip().lower().strip("()") for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in ALL_SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL_SCENARIOS)}"
        )
    return tuple(dict.fromkeys(chosen))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmark the Kafka Ingress poller against a minimal aiokafka -> HTTP loop. "
            "Scenarios: (a) service sink, (b) virtual-object exclusive, (c) one partition with "
            "a 20 ms handler, (d) Lambda batch mode, (e) steady 1,000 records/s for latency, "
            "(f) a large backlog for peak RSS, (g) many idle subscriptions on 1 and 3 pollers, "
            "http: aiohttp vs httpx vs pyreqwest on the "
            "invoker's path, ledger: the ledger write path alone."
        ),
    )
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute in all")
    p.add_argument("--records", type=int, help="records per throughput run (50,000; quick 3,000)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-bytes", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--in-flight", type=int, default=64, help="for our poller and the reference")
    p.add_argument(
        "--scenarios",
        type=_scenarios,
        help=f"comma-separated, from {','.join(ALL_SCENARIOS)} (default: all; quick: no f)",
    )
    p.add_argument("--slow-records", type=int, help="records in (c) (default: --records)")
    p.add_argument("--slow-delay-ms", type=float, default=20.0)
    p.add_argument("--baseline-records", type=int, help="records of (c)'s one-at-a-time run")
    p.add_argument("--steady-rate", type=float, default=1000.0, help="records/s in (e)")
    p.add_argument("--steady-seconds", type=float, help="length of (e) (30; quick 3)")
    p.add_argument("--backlog-records", type=int, help="backlog of (f) (1,000,000)")
    p.add_argument("--backlog-seconds", type=float, help="how long (f) consumes (30)")
    p.add_argument(
        "--scale-records", type=int, help="backlog of scale, 12 partitions (120,000; quick 40,000)"
    )
    p.add_argument("--http-requests", type=int, help="requests per client in http")
    p.add_argument("--ledger-rows", type=int, help="rows per variant in ledger (20,000)")
    p.add_argument("--scale-subscriptions", type=int, help="subscriptions in (g) (200; quick 20)")
    p.add_argument("--scale-idle-seconds", type=float, help="idle windows of (g) (60; quick 15)")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop of our poller and of the reference loop (uvloop: as the poller ships)",
    )
    p.add_argument(
        "--ledger",
        choices=("pages", "both"),
        default="both",
        help='(a), (b), (d), (e): run our poller with [ledger] successes = "pages" (its default) '
        'and then again with "rows" (both, the default), or with "pages" only',
    )
    p.add_argument(
        "--experiment",
        action="append",
        choices=EXPERIMENT_NAMES,
        default=[],
        help="run our poller with a prototype of a proposed change (bench/experiments.py)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample our poller with py-spy (costs CPU: use for analysis, not for the table)",
    )
    p.add_argument(
        "--profile-rate",
        type=int,
        default=100,
        help="py-spy samples per second with --profile (1000 for a per-function breakdown)",
    )
    p.add_argument("--out", type=Path, default=_ROOT / "bench" / "results.json")
    p.add_argument("--work-dir", type=Path, default=_ROOT / ".cache" / "bench")
    p.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    return p


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = _parser()
    a = parser.parse_args(argv)
    quick = bool(a.quick)
    records = a.records or (3_000 if quick else 50_000)
    for name in ("records", "partitions", "keys", "in_flight"):
        value = records if name == "records" else getattr(a, name)
        if value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return Options(
        records=records,
        partitions=a.partitions,
        keys=a.keys,
        value_bytes=a.value_bytes,
        seed=a.seed,
        in_flight=a.in_flight,
        scenarios=a.scenarios or (QUICK_SCENARIOS if quick else DEFAULT_SCENARIOS),
        quick=quick,
        slow_records=a.slow_records or (1_000 if quick else records),
        slow_delay_ms=a.slow_delay_ms,
        baseline_records=a.baseline_records or (100 if quick else 500),
        steady_rate=a.steady_rate,
        steady_seconds=a.steady_seconds or (3.0 if quick else 30.0),
        backlog_records=a.backlog_records or (100_000 if quick else 1_000_000),
        backlog_seconds=a.backlog_seconds or (10.0 if quick else 30.0),
        scale_records=a.scale_records or (40_000 if quick else 120_000),
        http_requests=a.http_requests or (2_000 if quick else 30_000),
        ledger_rows=a.ledger_rows or (2_000 if quick else 20_000),
        scale_subscriptions=a.scale_subscriptions or (20 if quick else 200),
        scale_idle_seconds=a.scale_idle_seconds or (15.0 if quick else 60.0),
        loop=a.loop,
        ledger=("pages", "rows") if a.ledger == "both" else ("pages",),
        experiments=tuple(dict.fromkeys(a.experiment)),
        profile=bool(a.profile),
        profile_rate=a.profile_rate,
        out=a.out,
        work_dir=a.work_dir,
        timeout_s=a.timeout,
    )
