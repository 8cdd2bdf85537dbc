"""Several Kafka clusters in one poller: each subscription lives and fails with its own cluster.

The session's broker is cluster ``local`` (PLAINTEXT); a second broker, started here, is
cluster ``second`` and is reached over SASL/SCRAM, configured like every cluster through
``KAFKA_INGRESS_KAFKA_CLUSTERS`` in TOML inline syntax.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapter.local.kafka import KafkaBroker, ListenerSpec
from adapter.model import HandlerType, InputKind, ServiceType, Subscription
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests._security_fixtures import create_topic
from tests.harness import Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

USER, PASSWORD = "clusteruser", "cluster-pass-Jw82d"
SCRAM = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": USER,
    "sasl.password": PASSWORD,
}


def _broker(work_dir: Path, ports: dict[str, int] | None = None) -> KafkaBroker:
    """A SCRAM broker keeping its data in ``work_dir``; ``ports`` pins the previous ports."""
    ports = ports or {}
    sasl = ListenerSpec(
        "SASL",
        "SASL_PLAINTEXT",
        {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
        port=ports.get("SASL"),
    )
    return KafkaBroker(
        work_dir=work_dir,
        port=ports.get("PLAINTEXT"),
        extra_listeners=[sasl],
        scram_users=[("SCRAM-SHA-512", USER, PASSWORD)],
    )


def _ports(broker: KafkaBroker) -> dict[str, int]:
    return {name: int(address.rpartition(":")[2]) for name, address in broker.listeners.items()}


def _values(handler: RecordingHandler, service: str) -> set[int]:
    return {int(orjson.loads(c.body)["n"]) for c in handler.acked() if c.service == service}


def _status(ingress: Ingress, sub: Subscription) -> dict[str, Any]:
    assert ingress.poller is not None
    return ingress.poller.supervisor.status().get(sub.id, {})


async def _send(bootstrap: str, topic: str, numbers: range) -> None:
    await produce(bootstrap, topic, [(None, orjson.dumps({"n": n})) for n in numbers])


async def _register(ingress: Ingress, url: str, *services: str) -> None:
    for service in services:
        await ingress.register(
            url, service, ServiceType.SERVICE, {"take": (HandlerType.SERVICE, InputKind.JSON)}
        )


async def test_a_stopped_cluster_stalls_only_its_own_subscription_and_resumes_when_back(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    tmp_path: Path,
) -> None:
    second_dir = tmp_path / "second-cluster"
    second = _broker(second_dir)
    await asyncio.to_thread(second.start)
    try:
        plaintext = second.bootstrap_servers
        ingress.extra_clusters = {"second": (second.listeners["SASL"], SCRAM)}
        handler = RecordingHandler()
        await _register(ingress, await handler_server(handler.app), "Alpha", "Beta")
        local_topic = await topic_factory()
        second_topic = await create_topic(plaintext)
        await ingress.start()
        assert ingress.settings is not None
        assert ingress.settings.clusters["second"].options["sasl.mechanisms"] == "SCRAM-SHA-512"
        alpha = await ingress.subscribe(local_topic, "Alpha", "take")
        beta = await ingress.subscribe(second_topic, "Beta", "take", cluster="second")

        await _send(ingress.bootstrap, local_topic, range(3))
        await _send(plaintext, second_topic, range(3))
        await eventually(lambda: _values(handler, "Alpha") == {0, 1, 2})
        await eventually(lambda: _values(handler, "Beta") == {0, 1, 2})

        ports = _ports(second)
        await asyncio.to_thread(second.stop)  # the data stays in second_dir

        # The local cluster keeps flowing while the second one is down...
        await _send(ingress.bootstrap, local_topic, range(3, 8))
        await eventually(lambda: _values(handler, "Alpha") == set(range(8)))
        # ... and the second one's subscription says why it does not.
        await eventually(
            lambda: "connection refused" in str(_status(ingress, beta).get("last_error")),
            timeout=30,
            message=lambda: f"status: {_status(ingress, beta)}",
        )
        assert _status(ingress, beta)["state"] == "backing-off"
        assert "kafka://second/" in _status(ingress, beta)["last_error"]
        assert _status(ingress, alpha)["state"] == "running"
        assert _status(ingress, alpha)["last_error"] is None
        assert PASSWORD not in str(ingress.poller.supervisor.status() if ingress.poller else "")

        second = _broker(second_dir, ports)
        await asyncio.to_thread(second.start)
        await _send(plaintext, second_topic, range(3, 6))
        await eventually(lambda: _values(handler, "Beta") == set(range(6)), timeout=60)
        await eventually(lambda: _status(ingress, beta).get("last_error") is None, timeout=30)
        assert _status(ingress, beta)["state"] == "running"
    finally:
        # The poller first: stopping with the broker gone waits for a commit's timeout.
        await ingress.stop()
        await asyncio.to_thread(second.stop)


async def test_a_cluster_unreachable_from_the_start_is_reported_while_others_flow(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    refused_port: int,
) -> None:
    ingress.extra_clusters = {"nowhere": (f"127.0.0.1:{refused_port}", SCRAM)}
    handler = RecordingHandler()
    await _register(ingress, await handler_server(handler.app), "Alpha", "Beta")
    topic = await topic_factory()
    await ingress.start()
    await ingress.subscribe(topic, "Alpha", "take")
    lost = await ingress.subscribe("anything", "Beta", "take", cluster="nowhere")

    await _send(ingress.bootstrap, topic, range(5))
    await eventually(lambda: _values(handler, "Alpha") == set(range(5)))
    await eventually(lambda: "connection refused" in str(_status(ingress, lost).get("last_error")))
    error = str(_status(ingress, lost)["last_error"])
    assert f"127.0.0.1:{refused_port}" in error or "Connect call failed" in error
    assert _status(ingress, lost)["state"] == "backing-off"
    assert PASSWORD not in error
