"""Traces end to end: a real broker, a real poller, a real OTLP/HTTP receiver on loopback.

The receiver decodes the exporter's protobuf with ``opentelemetry-proto``; the test checks the
span tree (record's producer span → consumer span → one client span per attempt), the
attributes, and that each attempt's span is the parent the handler received as traceparent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapter.engine import tracing
from adapter.model import HandlerType, InputKind, ServiceType
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Call, Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"


class OtlpReceiver:
    """``POST /v1/traces``: keeps every span, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.content_types: set[str] = set()
        self.app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    async def _traces(self, request: Request) -> Response:
        self.content_types.add(request.headers.get("content-type", ""))
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        for resource_spans in message.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": _attributes(span.attributes),
                            "status": span.status.code,
                            "resource": resource,
                        }
                    )
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )


def _attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        value = item.value
        out[item.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    tracing.shutdown()


@pytest.fixture
async def receiver(handler_server: HandlerServer) -> tuple[OtlpReceiver, str]:
    receiver = OtlpReceiver()
    return receiver, await handler_server(receiver.app)


async def test_spans_reach_the_collector_with_the_record_trace_as_parent(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    receiver: tuple[OtlpReceiver, str],
    otel_env: pytest.MonkeyPatch,
) -> None:
    collector, collector_url = receiver
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)
    provider = tracing.configure()
    assert provider is not None
    tracing.install(provider)

    seen: set[int] = set()

    async def fail_first_attempt(call: Call) -> Response | None:
        if call.offset == 0 and call.offset not in seen:
            seen.add(call.offset)
            return Response(status_code=503, headers={"Retry-After": "0"})
        return None

    handler = RecordingHandler(fail_first_attempt)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = await topic_factory(partitions=1)
    traceparent = f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"
    await produce(
        ingress.bootstrap,
        topic,
        [(None, b"{}", [("traceparent", traceparent.encode())]), (None, b"{}")],
    )
    sub = await ingress.subscribe(topic, "Svc", "h")
    await ingress.start()
    await eventually(lambda: len(handler.acked()) == 2, message=lambda: str(handler.calls))
    await ingress.stop()
    await asyncio.to_thread(provider.force_flush)

    def spans() -> list[dict[str, Any]]:
        return collector.spans

    await eventually(lambda: len(spans()) >= 5, message=lambda: str(spans()))
    assert collector.content_types == {"application/x-protobuf"}
    consumers = {s["attributes"]["messaging.kafka.offset"]: s for s in spans() if s["kind"] == 5}
    clients = [s for s in spans() if s["kind"] == 3]
    assert sorted(consumers) == [0, 1]
    assert len(clients) == 3  # offset 0 twice (503, then ack), offset 1 once

    # Offset 0 continues the producer's trace: its consumer span's parent is the record's span.
    first = consumers[0]
    assert first["trace_id"] == PRODUCER_TRACE
    assert first["parent_span_id"] == PRODUCER_SPAN
    assert first["name"] == f"process {topic}"
    assert first["resource"]["service.name"] == "kafka-ingress"
    attributes = first["attributes"]
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.destination.partition.id"] == "0"
    assert attributes["messaging.consumer.group.name"] == sub.id
    assert attributes["messaging.operation.type"] == "process"

    # Offset 1 had no traceparent: a trace of its own, rooted at its consumer span.
    second = consumers[1]
    assert second["trace_id"] != PRODUCER_TRACE
    assert second["parent_span_id"] == ""

    # Every attempt is a child of its record's consumer span, and the handler received that
    # attempt's span as its parent.
    # (trace ID, parent span ID) of each traceparent; the flags say sampled (and, for a trace
    # started here, W3C level 2's random trace ID flag).
    received = {tuple(c.headers["traceparent"].split("-")[1:3]) for c in handler.calls}
    for client in clients:
        offset = 0 if client["trace_id"] == PRODUCER_TRACE else 1
        assert client["parent_span_id"] == consumers[offset]["span_id"]
        assert client["name"] == "invoke Svc/h"
        assert (client["trace_id"], client["span_id"]) in received
    attempts = sorted(
        (c["attributes"]["kafka_ingress.attempt"], c["attributes"]["kafka_ingress.outcome"])
        for c in clients
        if c["trace_id"] == PRODUCER_TRACE
    )
    assert attempts == [(1, "retry"), (2, "ack")]
    assert len(received) == 3
