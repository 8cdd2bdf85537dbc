"""Subscription changes reach a poller in another process through the change feed.

Real broker, one moto server, one ``kafka-ingress serve`` process (poller B, default
settings: it reads the change feed once a second) and the admin API of this process (A, with no
consumers of its own, as the admin API runs on Lambda). A subscription created through A is
consumed by B within a second; deleted through A, B stops consuming it within a second.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
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
POLL_S = 1.0  # subscription-refresh-ms, by default


@pytest.fixture
async def poller_b(
    kafka_bootstrap: str, store: DynamoStore, moto_server: MotoServer, tmp_path: Path
) -> AsyncIterator[PollerProcess]:
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    poller = PollerProcess(harness.env())
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
        deleted = time.monotonic()
        response = await admin_a.delete(f"/subscriptions/{sub_id}")
        assert response.status_code == 202, response.text
        body = json.dumps({"topic": topic}).encode()
        while time.monotonic() < deleted + 2.5:  # a trickle of records for 2.5 s after it
            await produce(kafka_bootstrap, topic, [(b"k", body)])
        calls = [c.started for c in handler.calls if _topic_of(c) == topic]
        assert len(calls) >= 2  # it was consuming the trickle before it stopped
        stopped_after = max(calls) - deleted

    with capsys.disabled():
        shown = ", ".join(f"{s:.2f}" for s in latencies)
        print(
            f"\nPOST on A -> B starts the consumer: {', '.join(f'{s:.2f}' for s in seen)} s; "
            f"-> first invocation by B: {shown} s "
            f"(median {statistics.median(latencies):.2f}); "
            f"last invocation {stopped_after:.2f} s after DELETE"
        )
    # B sees each change at its next read of the change feed (every second)...
    assert max(seen) <= POLL_S + 0.15, seen
    # ...and consumes within a second, the consumer's start included, as a rule.
    assert statistics.median(latencies) <= LIMIT_S, latencies
    assert max(latencies) <= LIMIT_S + 0.5, latencies
    # A record fetched just before the poll that saw the delete may still start.
    assert stopped_after <= POLL_S + 0.25
