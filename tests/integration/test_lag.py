"""Consumer lag on a real broker: log end minus the committed position, while a handler is
held and after it lets go — in the runner's status, /metrics and the CloudWatch EMF line."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.api.emf import EmfEmitter
from adapter.model import HandlerType, InputKind, ServiceType
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Call, Ingress, RecordingHandler, committed_offsets, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    """Every sample of a /metrics answer by (name, labels), parsed by prometheus_client."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def at(samples: Samples, name: str, labels: dict[str, str] | None = None) -> float:
    return samples[(name, frozenset((labels or {}).items()))]


@pytest.mark.promise("p-deploy-lag-metric")
async def test_lag_is_log_end_minus_committed_and_falls_to_zero(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    held = asyncio.Event()

    async def hold(call: Call) -> None:
        await held.wait()

    handler = RecordingHandler(hold)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = await topic_factory(partitions=1)
    await produce(ingress.bootstrap, topic, [(None, b"{}") for _ in range(30)])
    sub = await ingress.subscribe(topic, "Svc", "h")
    poller = await ingress.start()
    out = io.StringIO()
    supervisor = poller.supervisor
    emitter = EmfEmitter(
        "test",
        status=supervisor.status,
        partitions=lambda: {s: r.partition_status() for s, r in supervisor.runners().items()},
        out=out,
    )

    def status() -> dict[str, int | None]:
        runner = supervisor.runners().get(sub.id)
        parts = runner.partition_status() if runner is not None else {}
        return parts.get((topic, 0), {})

    await eventually(lambda: len(handler.calls) == 30, message="not all 30 in flight")
    await eventually(lambda: status().get("log_end") == 30, message=lambda: str(status()))
    committed = (await committed_offsets(ingress.bootstrap, sub.id, topic, 1))[0]
    assert committed in (None, 0)  # its start, committed before any record was invoked
    assert status()["lag"] == 30 - 0  # end minus where the group stands (nothing finished)
    assert json.loads(emitter.emit())["ConsumerLag"] == 30
    labels = {"partition": "0", "subscription": sub.id, "topic": topic}
    async with httpx.AsyncClient(base_url=f"http://{poller.admin_address}") as api:
        first = await api.get("/metrics")
        assert first.headers["content-type"].startswith("text/plain; version=")
        assert at(scrape(first.text), "kafka_ingress_consumer_lag_records", labels) == 30
        # The oldest uncommitted record is first seen at one scrape and has aged at the next.
        second = scrape((await api.get("/metrics")).text)
        assert at(second, "kafka_ingress_consumer_lag_seconds", labels) > 0
        assert at(second, "process_resident_memory_bytes") > 0
        assert any(name == "python_info" for name, _ in second)

    held.set()

    async def all_committed() -> bool:
        return (await committed_offsets(ingress.bootstrap, sub.id, topic, 1))[0] == 30

    await eventually(all_committed, timeout=30)
    await eventually(lambda: status().get("lag") == 0, message=lambda: str(status()))
    assert json.loads(emitter.emit())["ConsumerLag"] == 0
    async with httpx.AsyncClient(base_url=f"http://{poller.admin_address}") as api:
        after = scrape((await api.get("/metrics")).text)
    ack = {"subscription": sub.id, "outcome": "ack"}
    assert at(after, "kafka_ingress_invocation_duration_seconds_count", ack) == 30
    assert at(after, "kafka_ingress_invocation_duration_seconds_sum", ack) > 0
    by_sub = {"subscription": sub.id}
    assert at(after, "kafka_ingress_record_age_at_ack_seconds_count", by_sub) == 30
    assert at(after, "kafka_ingress_consumer_lag_seconds", labels) == 0
