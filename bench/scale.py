"""Scenario (g): many idle subscriptions, on one poller and shared by three.

S one-partition topics, one subscription each (``--scale-subscriptions``, 200). Measured:

* idle cost per poller — CPU seconds per minute, TCP connections to the broker (sockets of
  the poller's PID to the broker's port, psutil), DynamoDB requests per minute by operation
  (counted by the bench's DynamoDB, ``bench.dynamo``) — with 1 poller and with 3;
* delivery gaps while a 2nd and a 3rd poller start and while one stops, with a trickle of
  one record per topic every ``TRICKLE_S`` on every topic: per topic, the longest time
  between two deliveries and the longest produce-to-invocation latency;
* ``POST /subscriptions`` to one poller → first invocation, for subscriptions that another
  poller runs (read from the pollers' logs).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from adapter import ids
from adapter.model import HandlerInfo, HandlerType, InputKind, ServiceInfo, ServiceType
from adapter.model import Subscription as SubscriptionModel
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.tables import TableNames
from bench.procs import Child, Meter
from bench.profile import parse_collapsed, summary
from bench.report import ScenarioResult, TargetCheck
from bench.scale_measures import (
    GAP_TARGET_S,
    TRICKLE_S,
    Gaps,
    Trickle,
    broker_connections,
    delivery_gaps,
)
from bench.stack import Stack
from bench.trials import _free_port, _poller_config

__all__ = ["ScaleScenario"]

JOIN_WINDOW_S = 30.0
DRAIN_S = 180.0
NEW_SUBSCRIPTIONS = 6
NEW_SUBSCRIPTIONS_ELSEWHERE = 2
"""New subscriptions are created until this many run only on other pollers than the one that
took the POST, up to :data:`MAX_NEW_SUBSCRIPTIONS`: each runs on 2 of the 3 pollers, so 6
alone all included the first poller in about one run of eleven, and measured nothing."""
MAX_NEW_SUBSCRIPTIONS = 14
CPU_TARGET = 2.0  # CPU-s/min per poller, idle, S = 200 over 3 pollers
NEW_SUBSCRIPTION_TARGET_S = 1.0
DYNAMO_TARGET_PER_S = 1.0


@dataclass
class _Poller:
    child: Child
    admin_url: str
    meter: Meter | None = None

    def running_subscriptions(self) -> set[str]:
        """What this poller runs now, from its log (started and not stopped since)."""
        running: set[str] = set()
        text = (
            self.child.log_path.read_text(errors="replace") if self.child.log_path.exists() else ""
        )
        for verb, sub_id in re.findall(r"(starting|stopped) subscription (sub_\w+)", text):
            if verb == "starting":
                running.add(sub_id)
            else:
                running.discard(sub_id)
        return running


@dataclass
class ScaleScenario:
    stack: Stack
    work_dir: Path
    say: Callable[[str], None]
    subscriptions: int = 200
    idle_s: float = 60.0
    figures: dict[str, Any] = field(default_factory=dict)
    _pollers: list[_Poller] = field(default_factory=list)
    _topics: list[str] = field(default_factory=list)
    _handler: Child | None = None
    _handler_url: str = ""
    _prefix: str = ""

    async def run(self) -> ScenarioResult:
        s = self.subscriptions
        result = ScenarioResult(
            "g",
            "scale",
            f"{s} idle subscriptions (one 1-partition topic each) on 1 and on 3 pollers: idle "
            "CPU, broker connections and DynamoDB requests per poller; delivery gaps while "
            "pollers join and leave under a trickle on every topic; POST → first invocation",
            workload={"subscriptions": s, "idle_s": self.idle_s, "trickle_s": TRICKLE_S},
        )
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            await self._set_up()
            await self._scenario(http, result)
        finally:
            for poller in self._pollers:
                await poller.child.stop(timeout=60)
            if self._handler is not None:
                await self._handler.stop()
            await http.close()
        result.profile = {"scale": self.figures}
        return result

    # -- the steps ----------------------------------------------------------------------------

    async def _scenario(self, http: aiohttp.ClientSession, result: ScenarioResult) -> None:
        started = time.monotonic()
        await self._start_poller()
        await self._produce_once(self._topics)
        await self._wait_delivered(http, self._topics, timeout_s=600)
        self.figures["one_poller_all_running_s"] = round(time.monotonic() - started, 1)
        self.say(f"  (g) {self.subscriptions} subscriptions running on 1 poller")
        self.figures["idle_1"] = await self._idle()

        # Pollers join under a trickle on every topic.
        trickle = Trickle(self.stack.bootstrap, self._topics)
        await trickle.start()
        await asyncio.sleep(5)  # the trickle's steady state, before anything changes
        join_start = int(time.time() * 1000)
        window = await self._window_start()
        for _ in range(2):
            await self._start_poller()
            await asyncio.sleep(JOIN_WINDOW_S)
        await trickle.stop()
        join_end = int(time.time() * 1000)
        self.say(
            f"  (g) trickle: slowest round of sends {trickle.slowest_round_s:.2f} s, ending "
            f"{(trickle.slowest_round_at_ms - join_start) / 1000:.1f} s into the window; the "
            f"bench's own loop stalled at most {trickle.loop_lag_s:.2f} s, ending "
            f"{(trickle.loop_lag_at_ms - join_start) / 1000:.1f} s into it"
        )
        self.figures["join_window"] = await self._window_end(window)
        self.figures["join_drained_s"] = await self._drain(http, trickle)
        arrivals = await self._arrivals(http)
        join = delivery_gaps(arrivals, self._topics, join_start, join_end)
        self.figures["join_gaps"] = asdict(join)
        self.say(
            f"  (g) 2nd and 3rd poller joined (at 0 and {JOIN_WINDOW_S:g} s): worst gap "
            f"{join.worst_gap_s:.1f} s from {join.worst_gap_from_s:.1f} s; "
            f"{join.topics_over_target} over {GAP_TARGET_S:g} s, from {_spread(join)}"
        )

        self.figures["idle_3"] = await self._idle()
        self.figures["idle_profile_poller_0"] = await self._profile(self._pollers[0])
        self.figures["new_subscription"] = await self._new_subscriptions(http)

        # One poller leaves (SIGTERM) under the trickle.
        trickle = Trickle(self.stack.bootstrap, self._topics)
        await trickle.start()
        await asyncio.sleep(5)
        leave_start = int(time.time() * 1000)
        window = await self._window_start()
        leaving = self._pollers[-1]
        await leaving.child.stop(timeout=60)
        await asyncio.sleep(JOIN_WINDOW_S)
        await trickle.stop()
        leave_end = int(time.time() * 1000)
        self.figures["leave_window"] = await self._window_end(window)
        self.figures["leave_drained_s"] = await self._drain(http, trickle)
        leave = delivery_gaps(await self._arrivals(http), self._topics, leave_start, leave_end)
        self.figures["leave_gaps"] = asdict(leave)
        self.say(
            f"  (g) one poller left: worst gap {leave.worst_gap_s:.1f} s from "
            f"{leave.worst_gap_from_s:.1f} s; {leave.topics_over_target} over "
            f"{GAP_TARGET_S:g} s, from {_spread(leave)}"
        )

        idle3 = self.figures["idle_3"]["pollers"]
        new = self.figures["new_subscription"]
        result.targets = [
            TargetCheck(
                f"idle CPU-s/min of the busiest of 3 pollers, S = {self.subscriptions}",
                max(p["cpu_s_per_min"] for p in idle3),
                CPU_TARGET,
                higher_is_better=False,
            ),
            TargetCheck(
                "broker connections per poller over 2 x its subscriptions + brokers (max)",
                max(p["connections"] - (2 * p["subscriptions"] + 1) for p in idle3),
                0,
                higher_is_better=False,
            ),
            TargetCheck(
                "DynamoDB requests per poller per second, idle (3 pollers)",
                self.figures["idle_3"]["dynamodb_per_poller_per_s"],
                DYNAMO_TARGET_PER_S,
                higher_is_better=False,
            ),
            TargetCheck(
                "DynamoDB Scans per minute, idle (3 pollers)",
                self.figures["idle_3"]["dynamodb_per_min"].get("Scan", 0),
                0,
                higher_is_better=False,
            ),
            TargetCheck(
                "POST → first invocation on another poller, worst, s",
                new["worst_elsewhere_s"],
                NEW_SUBSCRIPTION_TARGET_S,
                higher_is_better=False,
            ),
            TargetCheck(
                "worst delivery gap of any topic while pollers join, s",
                join.worst_gap_s,
                GAP_TARGET_S,
                higher_is_better=False,
            ),
            TargetCheck(
                "worst delivery gap of any topic while a poller leaves, s",
                leave.worst_gap_s,
                GAP_TARGET_S,
                higher_is_better=False,
            ),
        ]
        idle1 = self.figures["idle_1"]["pollers"][0]
        result.notes.append(
            f"1 poller: {idle1['cpu_s_per_min']:.2f} CPU-s/min idle, "
            f"{idle1['connections']} broker connections; 3 pollers: "
            + ", ".join(
                f"{p['cpu_s_per_min']:.2f} CPU-s/min / {p['connections']} connections / "
                f"{p['subscriptions']} subscriptions"
                for p in idle3
            )
        )

    async def _set_up(self) -> None:
        self._prefix = f"benchg{uuid.uuid4().hex[:6]}-"
        self._handler = Child(
            "scale-handler",
            [sys.executable, "-m", "bench.scale_handler"],
            self.work_dir / "scale-handler.log",
        )
        self._handler_url = await self._handler.start(wait_ready=True, timeout=60)
        store = DynamoStore(
            make_client(self.stack.dynamo_url, "us-east-1"), TableNames(self._prefix)
        )
        await asyncio.to_thread(store.create_tables)
        deployment_id = ids.deployment_id()
        await store.put_deployment({"id": deployment_id, "uri": self._handler_url, "created_at": 0})
        await store.put_service(
            ServiceInfo(
                name="Bench",
                service_type=ServiceType.SERVICE,
                deployment_id=deployment_id,
                handlers=(HandlerInfo("run", HandlerType.SHARED, InputKind.JSON),),
            )
        )
        self._topics = await self._new_topics(self.subscriptions)
        for topic in self._topics:
            await store.put_subscription(
                SubscriptionModel(
                    id=ids.subscription_id(),
                    cluster="bench",
                    topic=topic,
                    service="Bench",
                    handler="run",
                    options={"auto.offset.reset": "earliest"},
                )
            )
        await store.aclose()

    async def _new_topics(self, count: int) -> list[str]:
        admin = self.stack._admin
        assert admin is not None
        tag = uuid.uuid4().hex[:6]
        names = [f"bench-g-{tag}-{i:04d}" for i in range(count)]
        for chunk in range(0, count, 100):
            await admin.create_topics(
                [
                    NewTopic(n, num_partitions=1, replication_factor=1)
                    for n in names[chunk : chunk + 100]
                ],
                timeout_ms=60_000,
            )
        deadline = time.monotonic() + 120
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for found in await admin.describe_topics(sorted(pending)):
                parts = found.get("partitions") or []
                if found.get("error_code") == 0 and parts and parts[0].get("leader", -1) >= 0:
                    pending.discard(found["topic"])
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            raise RuntimeError(f"{len(pending)} topics have no leader after 120 s")
        return names

    async def _start_poller(self) -> None:
        index = len(self._pollers)
        port = _free_port()
        config = self.work_dir / f"poller-g{index}.toml"
        # The shard map is opt-in: (g) measures it on.
        text = _poller_config(self.stack, self._prefix, 64, None, port)
        config.write_text(text + "\n[poller]\nshards = 64\n")
        argv = [sys.executable, "-m", "bench.poller", "--", "--config-file", str(config), "serve"]
        child = Child(f"poller-g{index}", argv, self.work_dir / f"poller-g{index}.log")
        await child.start()
        poller = _Poller(child, f"http://127.0.0.1:{port}")
        poller.meter = Meter(child.pid)
        self._pollers.append(poller)

    async def _produce_once(self, topics: Sequence[str]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap, linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(t, value=b'{"warm":true}') for t in topics]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    async def _arrivals(
        self, http: aiohttp.ClientSession, topic: str | None = None
    ) -> dict[str, list[list[int]]]:
        query = f"?topic={topic}" if topic is not None else ""
        async with http.get(f"{self._handler_url}/__arrivals{query}") as response:
            body: dict[str, list[list[int]]] = await response.json()
            return body

    async def _drain(self, http: aiohttp.ClientSession, trickle: Trickle) -> float:
        """Wait (up to DRAIN_S) until every trickle record is delivered: a record still queued
        when the window ends would otherwise shorten its topic's gap. Seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < DRAIN_S:
            missing = trickle.undelivered(await self._arrivals(http))
            if not missing:
                break
            await asyncio.sleep(0.5)
        else:
            self.say(f"  (g) {missing} trickle records still undelivered after {DRAIN_S:g} s")
        return round(time.monotonic() - began, 1)

    async def _wait_delivered(
        self, http: aiohttp.ClientSession, topics: Sequence[str], timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if set(topics) <= set(await self._arrivals(http)):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"not every topic delivered within {timeout_s:g} s")

    async def _idle(self) -> dict[str, Any]:
        live = [p for p in self._pollers if p.child.running]
        port = int(self.stack.bootstrap.rpartition(":")[2])
        await asyncio.sleep(10)  # settle: rebalances and start-up are not idle cost
        before_cpu = [p.meter.cpu_s() if p.meter else 0.0 for p in live]
        before_dynamo = await self.stack.dynamo_counts()
        t0 = time.monotonic()
        await asyncio.sleep(self.idle_s)
        minutes = (time.monotonic() - t0) / 60
        after_dynamo = await self.stack.dynamo_counts()
        pollers = [
            {
                "cpu_s_per_min": round(((p.meter.cpu_s() if p.meter else 0.0) - cpu) / minutes, 3),
                "connections": broker_connections(p.child.pid, port),
                "subscriptions": len(p.running_subscriptions()),
            }
            for p, cpu in zip(live, before_cpu, strict=True)
        ]
        per_min = {
            op: round((after_dynamo.get(op, 0) - before_dynamo.get(op, 0)) / minutes, 1)
            for op in sorted(set(after_dynamo) | set(before_dynamo))
            if after_dynamo.get(op, 0) - before_dynamo.get(op, 0)
        }
        total_per_s = sum(per_min.values()) / 60
        for index, figures in enumerate(pollers):
            self.say(f"  (g) idle, poller {index} of {len(live)}: {figures}")
        self.say(f"  (g) idle, DynamoDB requests/min: {per_min}")
        return {
            "pollers": pollers,
            "dynamodb_per_min": per_min,
            "dynamodb_per_poller_per_s": round(total_per_s / max(1, len(live)), 3),
        }

    async def _window_start(self) -> tuple[float, float, dict[str, int]]:
        meter = self.stack.meters().get("dynamodb (moto)")
        cpu = meter.cpu_s() if meter else 0.0
        return time.monotonic(), cpu, await self.stack.dynamo_counts()

    async def _window_end(self, start: tuple[float, float, dict[str, int]]) -> dict[str, Any]:
        """What DynamoDB (moto) did during a join or leave window: its CPU and requests. A
        takeover reads each partition's ledger fence through an index, which moto answers by
        scanning the whole table."""
        began, cpu, counts = start
        meter = self.stack.meters().get("dynamodb (moto)")
        now = await self.stack.dynamo_counts()
        seconds = time.monotonic() - began
        figures = {
            "seconds": round(seconds, 1),
            "dynamodb_server_cpu_share": round(
                ((meter.cpu_s() if meter else 0.0) - cpu) / seconds, 3
            ),
            "dynamodb_requests": {
                op: now.get(op, 0) - counts.get(op, 0)
                for op in sorted(now)
                if now.get(op, 0) - counts.get(op, 0)
            },
        }
        self.say(f"  (g) window: {figures}")
        return figures

    async def _profile(self, poller: _Poller, seconds: int = 20) -> dict[str, object]:
        """Where an idle poller's CPU goes (py-spy, only the thread holding the GIL)."""
        out = self.work_dir / f"profile-g-idle-{poller.child.pid}.txt"
        spy = Child(
            "py-spy-g",
            [
                str(Path(sys.executable).with_name("py-spy")),
                *("record", "--pid", str(poller.child.pid), "--rate", "50", "--nonblocking"),
                *("--gil", "--duration", str(seconds), "--format", "raw", "--output", str(out)),
            ],
            self.work_dir / "py-spy-g.log",
        )
        await spy.start()
        assert spy.proc is not None
        await asyncio.wait_for(spy.proc.wait(), seconds + 30)
        await spy.stop()
        if not out.exists():
            return {"error": spy.log_tail(5)}
        found = summary(parse_collapsed(out.read_text()), limit=8)
        self.say(f"  (g) idle profile of poller 0: {found['by_own_function']}")
        return found

    async def _new_subscriptions(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """POST to the first poller; time to first invocation, and who ran it."""
        topics = await self._new_topics(MAX_NEW_SUBSCRIPTIONS)
        await self._produce_once(topics)
        entry = self._pollers[0]
        samples: list[dict[str, Any]] = []
        for topic in topics:
            elsewhere_so_far = sum(bool(s["pollers"]) and 0 not in s["pollers"] for s in samples)
            if (
                len(samples) >= NEW_SUBSCRIPTIONS
                and elsewhere_so_far >= NEW_SUBSCRIPTIONS_ELSEWHERE
            ):
                break
            t0 = time.monotonic()
            posted_ms = time.time() * 1000
            body = {
                "source": f"kafka://bench/{topic}",
                "sink": "service://Bench/run",
                "options": {"auto.offset.reset": "earliest"},
            }
            async with http.post(f"{entry.admin_url}/subscriptions", json=body) as response:
                created = await response.json()
                if response.status not in (200, 201):
                    raise RuntimeError(f"POST /subscriptions answered {response.status}: {created}")
            answered_s = time.monotonic() - t0
            # One topic's arrivals: asking for all of them (tens of thousands by now) every
            # few ms cost the handler and the pollers' shared CPU more than it measured.
            arrived: list[list[int]] = []
            while not arrived and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.02)
                arrived = (await self._arrivals(http, topic)).get(topic, [])
            # The handler's own arrival time, not when this loop looked.
            elapsed = (min(a for _, a in arrived) - posted_ms) / 1000 if arrived else 60.0
            runners = [
                i
                for i, p in enumerate(self._pollers)
                if created.get("id") in p.running_subscriptions()
            ]
            samples.append(
                {"seconds": round(elapsed, 3), "post_s": round(answered_s, 3), "pollers": runners}
            )
        elsewhere = [s["seconds"] for s in samples if s["pollers"] and 0 not in s["pollers"]]
        self.say(f"  (g) POST -> first invocation: {samples}")
        return {
            "samples": samples,
            "worst_s": max(s["seconds"] for s in samples),
            "worst_elsewhere_s": max(elsewhere) if elsewhere else None,
        }


def _spread(gaps: Gaps) -> str:
    """When the gaps over the target began (seconds into the window): min, median, max."""
    starts = gaps.gaps_over_target_from_s
    if not starts:
        return "-"
    return f"{starts[0]:.1f} / {starts[len(starts) // 2]:.1f} / {starts[-1]:.1f} s"
