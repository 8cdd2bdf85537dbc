"""Subscription changes reach a poller in another process within a second.

Real broker, one moto server, one ``kafka-ingress serve`` process (poller B) and the admin API
of this process (A, with no consumers of its own, as the admin API runs on Lambda). A
subscription created through A is consumed by B within a second; deleted through A, B stops
consuming it within a second. B reads the change feed only every 5 s here, so what brings the
change over in time is the wake-up record A sends on the cluster (adapter.kafka.change_signal);
without it the test fails.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from adapter.api import ClusterCatalog, create_app
from adapter.api.server import admin_state
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.e2e.test_any_poller import admin_url
from tests.harness import Call, Ingress, PollerProcess, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

ROUNDS = 4
LIMIT_S = 1.0
POLL_S = 5.0  # B's subscription-refresh-ms: far slower than the limit


# B hears the signals through a listener of its own, or (shard map on) through its control
# group member, which then also spares the listener's broker connection.
@pytest.fixture(params=[0, 64], ids=["listener", "shard-map"])
async def poller_b(
    kafka_bootstrap: str,
    store: DynamoStore,
    moto_server: MotoServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[PollerProcess]:
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    shards = int(request.param)
    poller = PollerProcess(
        harness.env(),
        PollerProcess.DEFAULT_CONFIG
        + f"[limits]\nsubscription-refresh-ms = {int(POLL_S * 1000)}\n"
        + (f"[poller]\nshards = {shards}\n" if shards else ""),
    )
    await poller.start(tmp_path)
    try:
        await admin_url(poller)
        yield poller
    finally:
        if poller.proc is not None and poller.proc.returncode is None:
            await poller.terminate(timeout=60)


def _logged(poller: PollerProcess, text: str) -> float:
    """When ``poller`` logged a line containing ``text`` (epoch seconds, from its timestamp)."""
    for line in poller.output.decode(errors="replace").splitlines():
        if text in line:
            return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()
    raise AssertionError(f"the poller never logged {text!r}")


def _topic_of(call: Call) -> str:
    return str(json.loads(call.body)["topic"])


@pytest.mark.promise("p-control-propagation")
async def test_a_change_made_through_one_admin_api_takes_effect_on_another_poller_within_1s(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    store: DynamoStore,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    poller_b: PollerProcess,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    await harness.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, InputKind.JSON)}
    )
    settings = harness.build_settings()
    state = admin_state(settings, store, ClusterCatalog(settings, store))
    transport = httpx.ASGITransport(app=create_app(state))
    latencies: list[float] = []
    seen: list[float] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as admin_a:
        # B listens on the cluster once the feed names a subscription there: make one first.
        warm_up = await topic_factory(1)
        response = await admin_a.post(
            "/subscriptions",
            json={"source": f"kafka://local/{warm_up}", "sink": "service://Greeter/greet"},
        )
        assert response.status_code == 201, response.text

        def listening() -> bool:
            return "listening for change signals on cluster local" in poller_b.output.decode()

        await eventually(
            listening, timeout=POLL_S * 3, message=lambda: poller_b.output.decode()[-3000:]
        )
        sub_id = ""
        topic = ""
        for _ in range(ROUNDS):
            topic = await topic_factory(1)
            await produce(kafka_bootstrap, topic, [(b"k", json.dumps({"topic": topic}).encode())])
            posted, posted_wall = time.monotonic(), time.time()
            response = await admin_a.post(
                "/subscriptions",
                json={
                    "source": f"kafka://local/{topic}",
                    "sink": "service://Greeter/greet",
                    "options": {"auto.offset.reset": "earliest"},
                },
            )
            assert response.status_code == 201, response.text
            sub_id = response.json()["id"]

            def consumed(topic: str = topic) -> bool:
                return any(_topic_of(c) == topic for c in handler.calls)

            await eventually(consumed, timeout=30, message=lambda: poller_b.output.decode()[-3000:])
            first = min(c.started for c in handler.calls if _topic_of(c) == topic)
            latencies.append(first - posted)
            seen.append(_logged(poller_b, f"starting subscription {sub_id}") - posted_wall)

        # Delete the last one while records keep arriving: B stops taking them within 1 s.
        body = json.dumps({"topic": topic}).encode()
        await produce(kafka_bootstrap, topic, [(b"k", body)])

        def consuming(topic: str = topic) -> bool:  # it takes new records before the delete
            return sum(_topic_of(c) == topic for c in handler.calls) >= 2

        await eventually(consuming, timeout=10)
        deleted = time.monotonic()
        response = await admin_a.delete(f"/subscriptions/{sub_id}")
        assert response.status_code == 202, response.text
        while time.monotonic() < deleted + 2.5:  # a trickle of records for 2.5 s after it
            await produce(kafka_bootstrap, topic, [(b"k", body)])
        calls = [c.started for c in handler.calls if _topic_of(c) == topic]
        stopped_after = max(calls) - deleted

    assert state.signals is not None
    await state.signals.aclose()
    with capsys.disabled():
        shown = ", ".join(f"{s:.2f}" for s in latencies)
        print(
            f"\nPOST on A -> B starts the consumer: {', '.join(f'{s:.2f}' for s in seen)} s; "
            f"-> first invocation by B: {shown} s "
            f"(median {statistics.median(latencies):.2f}); "
            f"last invocation {stopped_after:.2f} s after DELETE"
        )
    # B starts each consumer and invokes within a second, though it polls the feed every 5 s...
    assert max(seen) <= LIMIT_S, seen
    assert max(latencies) <= LIMIT_S, latencies
    # ...and stops taking records of a deleted subscription within a second.
    assert stopped_after <= LIMIT_S, stopped_after

    # Broker connections of the idle B: two per subscription it runs (the warm-up one and the
    # rounds but the deleted one), and one more for the signals — two with the shard map,
    # whose control group member (fetches and metadata; group coordinator) hears them too.
    shard_map = bool(request.node.callspec.params["poller_b"])
    listeners = re.findall(
        r"listening for change signals on cluster local.*", poller_b.output.decode()
    )
    assert listeners == [
        "listening for change signals on cluster local (shard map)"
        if shard_map
        else "listening for change signals on cluster local"
    ], listeners
    assert poller_b.proc is not None
    port = int(kafka_bootstrap.rpartition(":")[2])
    expected = 2 * ROUNDS + (2 if shard_map else 1)

    def connections() -> int:
        assert poller_b.proc is not None
        sockets = psutil.Process(poller_b.proc.pid).net_connections(kind="tcp")
        return sum(1 for s in sockets if s.raddr and s.raddr.port == port)

    await eventually(
        lambda: connections() == expected,
        timeout=30,
        message=lambda: f"{connections()} broker connections, expected {expected}",
    )
