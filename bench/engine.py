"""``python -m bench engine``: the engine's own CPU per record, on the in-package fakes.

The subscription runner, dispatcher, lanes and ledger writer run as shipped, on uvloop with
``serve``'s collector setting, against :mod:`adapter.testing`'s consumer and store; the invoker
acknowledges every request after one trip through the event loop, as a request answered over
the network resumes its task once. No broker, no HTTP client, no DynamoDB: what is left is the
per-record work of the engine (records in, a task and an attempt each, ledger entries and
commits out), which ``make bench``'s scenario (a) adds to the HTTP client's. Measure before and
after a change of the hot path, in one sitting: the machine's noise moves both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from adapter.engine.batch_dispatch import BatchSettings
from adapter.engine.batches import BatchPolicy
from adapter.engine.ledger import LedgerWriter
from adapter.engine.retry import RetryPolicy
from adapter.engine.runner import SubscriptionRunner
from adapter.engine.settings import RunnerSettings
from adapter.gc_tuning import tune_for_throughput
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.invokers.batch_response import BatchAnswer
from adapter.kafka.topics import TopicInfo
from adapter.model import (
    Deployment,
    HandlerType,
    InputKind,
    KafkaRecord,
    ServiceType,
    Subscription,
    Target,
)
from adapter.testing import FakeConsumer, FakeStore, ManualClock, record

__all__ = ["EngineRun", "main", "run_engine"]

_TOPIC = "orders"
_PARTITIONS = 4
_KEYS = 1_000
_FETCH = 250  # records per partition in one fetch
_VALUE = b'{"order": "' + b"x" * 180 + b'"}'  # the bench's 200-byte JSON records


class _OneLoopTrip:
    """Acknowledges every request after one trip through the event loop."""

    async def invoke(self, request: InvocationRequest) -> Outcome:
        await asyncio.sleep(0)
        return Outcome.ack()

    async def aclose(self) -> None:
        return None


class _OneLoopTripBatches(_OneLoopTrip):
    """Batch mode's caller: acknowledges every batch after one trip through the loop."""

    def event_bytes(self, request: InvocationRequest) -> int:
        return len(request.body) + 512

    async def invoke_records(
        self, requests: Sequence[InvocationRequest], *, report_batch_item_failures: bool
    ) -> BatchAnswer:
        await asyncio.sleep(0)
        return BatchAnswer((False,) * len(requests))


@dataclass(frozen=True, slots=True)
class EngineRun:
    records: int
    cpu_us_per_record: float
    records_per_s: float


def _key(n: int) -> bytes:
    return b"key-%06d" % (n % _KEYS)


async def _until(done: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if done():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:g}s for {what}")
        await asyncio.sleep(0.002)


def _target(exclusive: bool) -> Target:
    service_type, handler_type = (
        (ServiceType.VIRTUAL_OBJECT, HandlerType.EXCLUSIVE)
        if exclusive
        else (ServiceType.SERVICE, HandlerType.SERVICE)
    )
    return Target(
        service="S",
        handler="h",
        service_type=service_type,
        handler_type=handler_type,
        input_kind=InputKind.JSON,
        deployment=Deployment(id="dp_bench", uri="http://127.0.0.1:9"),
    )


async def run_engine(
    records: int, *, exclusive: bool, in_flight: int, batches: bool = False
) -> EngineRun:
    """Deliver ``records`` over four partitions; CPU from the first delivery to the last
    commit."""
    per_partition = records // _PARTITIONS
    clock = ManualClock()  # never advanced: the poller's membership stays proven
    consumer = FakeConsumer(clock, (TopicInfo(_TOPIC, "A" * 22, _PARTITIONS),))
    store = FakeStore()
    ledger = LedgerWriter(store, linger_s=0.05)
    settings = RunnerSettings(
        session_timeout_s=30,
        commit_interval_s=0.2,
        max_in_flight=in_flight,
        retry=RetryPolicy(initial_interval=0.01, max_interval=0.05, jitter=0.0),
        batches=BatchSettings(policy=BatchPolicy(size=100)) if batches else None,
    )
    runner = SubscriptionRunner(
        Subscription(id="sub_bench", cluster="c", topic=_TOPIC, service="S", handler="h"),
        _target(exclusive),
        consumer_factory=lambda watch: consumer,
        store=store,
        ledger=ledger,
        invoker=_OneLoopTripBatches() if batches else _OneLoopTrip(),
        dead_letters=None,
        settings=settings,
        clock=clock,
    )
    writer = asyncio.create_task(ledger.run())
    running = asyncio.create_task(runner.run())
    try:
        await _until(lambda: consumer.listener is not None, "the runner to subscribe", 10)
        partitions = [(_TOPIC, p) for p in range(_PARTITIONS)]
        for tp in partitions:
            consumer.positions[tp] = 0
        await consumer.assign(*partitions)
        made = [
            [
                record(_TOPIC, p, o, key=_key(o * _PARTITIONS + p), value=_VALUE)
                for o in range(per_partition)
            ]
            for p in range(_PARTITIONS)
        ]
        fetches: list[list[KafkaRecord]] = [
            [r for p in range(_PARTITIONS) for r in made[p][i : i + _FETCH]]
            for i in range(0, per_partition, _FETCH)
        ]

        def committed() -> bool:
            return all(
                (c := consumer.group_commits.get(tp)) is not None and c.offset == per_partition
                for tp in partitions
            )

        cpu, wall = time.process_time(), time.perf_counter()
        for fetch in fetches:
            consumer.deliver(fetch)
        await _until(committed, "every record committed", 600)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        runner.stop()
        await asyncio.wait_for(running, 10)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    done = per_partition * _PARTITIONS
    return EngineRun(done, cpu * 1e6 / done, done / wall)


def _run(records: int, *, exclusive: bool, in_flight: int, batches: bool) -> EngineRun:
    run = run_engine(records, exclusive=exclusive, in_flight=in_flight, batches=batches)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run)
    return uvloop.run(run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench engine", description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    tune_for_throughput()
    figures: dict[str, list[float]] = {}
    variants = (("service", False, False), ("exclusive", True, False), ("batches", False, True))
    for name, exclusive, batches in variants:
        runs = [
            _run(args.records, exclusive=exclusive, in_flight=args.in_flight, batches=batches)
            for _ in range(args.rounds)
        ]
        figures[name] = [round(r.cpu_us_per_record, 2) for r in runs]
    if args.json:
        sys.stdout.write(orjson.dumps(figures).decode() + "\n")
        return 0
    for name, values in figures.items():
        print(
            f"{name:>9}: median {statistics.median(values):.1f} CPU µs per record "
            f"(rounds: {', '.join(f'{v:.1f}' for v in values)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
