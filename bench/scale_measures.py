"""Scenario (g)'s measures: delivery gaps per topic (pure), broker sockets of a process, and
the trickle of records the gaps are measured on."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil
from aiokafka import AIOKafkaProducer

__all__ = ["GAP_TARGET_S", "TRICKLE_S", "Gaps", "Trickle", "broker_connections", "delivery_gaps"]

TRICKLE_S = 1.0
GAP_TARGET_S = 5.0


@dataclass(frozen=True, slots=True)
class Gaps:
    """Per topic, over a window: longest time between deliveries, longest latency."""

    worst_gap_s: float
    worst_gap_topic: str | None
    worst_latency_s: float
    topics_over_target: int
    topics: int
    worst_gap_from_s: float = 0.0
    """When the worst gap began, seconds into the window."""
    gaps_over_target_from_s: tuple[float, ...] = ()
    """When each gap over the target began, seconds into the window (sorted): which event
    in the window they follow."""


def delivery_gaps(
    arrivals: Mapping[str, Sequence[Sequence[int]]],
    topics: Sequence[str],
    start_ms: int,
    end_ms: int,
    target_s: float = GAP_TARGET_S,
) -> Gaps:
    """Gaps of each topic's deliveries of records produced in ``[start_ms, end_ms]``.

    A topic's gap counts from the window's start to its first delivery, between deliveries,
    and from its last delivery to the window's end: a topic that stops being delivered shows
    as one long gap. Pure."""
    worst_gap, worst_topic, worst_latency, over, worst_from = 0.0, None, 0.0, 0, 0.0
    starts: list[float] = []
    for topic in topics:
        seen = sorted(
            (arrived, produced)
            for produced, arrived in arrivals.get(topic, ())
            if start_ms <= produced <= end_ms
        )
        times = [start_ms, *(a for a, _ in seen), end_ms]
        gap_ms, began = max(((b - a, a) for a, b in itertools.pairwise(times)), default=(0, 0))
        gap = gap_ms / 1000
        latency = max(((a - p) for a, p in seen), default=0) / 1000
        if gap > worst_gap:
            worst_gap, worst_topic, worst_from = gap, topic, (began - start_ms) / 1000
        worst_latency = max(worst_latency, latency)
        if gap > target_s:
            over += 1
            starts.append(round((began - start_ms) / 1000, 1))
    return Gaps(
        round(worst_gap, 3),
        worst_topic,
        round(worst_latency, 3),
        over,
        len(topics),
        round(worst_from, 3),
        tuple(sorted(starts)),
    )


def broker_connections(pid: int, broker_port: int) -> int:
    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for s in sockets if s.raddr and s.raddr.port == broker_port)


class Trickle:
    """One record to every topic every :data:`TRICKLE_S`, until stopped."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topics)
        self.sent: Counter[str] = Counter()
        self.started_ms = 0
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self.slowest_round_s = 0.0
        """The longest time one round of sends took to be acknowledged (a slow producer or
        broker shows here, not as a poller's delivery gap)."""
        self.slowest_round_at_ms = 0
        self.loop_lag_s = 0.0
        """The bench's own event loop's longest stall (the producer runs in it)."""
        self.loop_lag_at_ms = 0
        self._lag_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5)
        await self._producer.start()
        self.started_ms = int(time.time() * 1000)
        self._task = asyncio.create_task(self._run())
        self._lag_task = asyncio.create_task(self._watch_lag())

    async def _watch_lag(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.05)
            lag = time.monotonic() - t0 - 0.05
            if lag > self.loop_lag_s:
                self.loop_lag_s, self.loop_lag_at_ms = lag, int(time.time() * 1000)

    def undelivered(self, arrivals: Mapping[str, Sequence[Sequence[int]]]) -> int:
        """Records sent and acknowledged by the broker whose delivery has not arrived yet
        (redeliveries counted once: by produce time)."""
        missing = 0
        for topic, count in self.sent.items():
            produced = {p for p, _ in arrivals.get(topic, ()) if p >= self.started_ms}
            missing += max(0, count - len(produced))
        return missing

    async def _run(self) -> None:
        assert self._producer is not None
        while True:
            t0 = time.monotonic()
            sent = [await self._producer.send(t, value=b'{"trickle":true}') for t in self._topics]
            await asyncio.gather(*sent)
            self.sent.update(self._topics)
            took = time.monotonic() - t0
            if took > self.slowest_round_s:
                self.slowest_round_s = took
                self.slowest_round_at_ms = int(time.time() * 1000)
            await asyncio.sleep(max(0.0, TRICKLE_S - (time.monotonic() - t0)))

    async def stop(self) -> None:
        for task in (self._task, self._lag_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
