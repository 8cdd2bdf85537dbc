"""Tracing switches and the span tree, with the SDK's in-memory exporter and the runner fakes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from adapter.engine import tracing
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.local.stack import traces_hint
from adapter.testing import SendWait, record
from tests.unit.test_runner import P0, SESSION_S, SUB, TOPIC, running, subscribed, until

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def test_traces_are_off_without_an_otlp_endpoint() -> None:
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_SERVICE_NAME": "x"})
    assert tracing.enabled(ENDPOINT)
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.enabled({**ENDPOINT, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"})


def test_the_service_name_defaults_to_kafka_ingress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.configure() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    provider = tracing.configure()
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "kafka-ingress"
    finally:
        provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-ingress")
    provider = tracing.configure()
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "orders-ingress"
    finally:
        provider.shutdown()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.shutdown()


async def test_no_tracer_means_no_spans_and_the_mapped_traceparent() -> None:
    assert tracing.current() is None
    async with running() as h:
        await subscribed(h, P0)
        h.consumer.deliver([record(TOPIC, 0, 0)])
        await until(lambda: h.committed(P0) == 1, what="commit")
    # Without traces the handler still gets a traceparent (made from the invocation ID).
    assert h.invoker.calls[0].headers["traceparent"].startswith("00-")


async def test_each_attempt_is_a_child_span_whose_context_the_handler_receives(
    exporter: InMemorySpanExporter,
) -> None:
    producer = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    answers = iter([Outcome.retry("busy", retry_after=0), Outcome.ack()])

    def respond(request: InvocationRequest) -> Outcome:
        return next(answers)

    async with running(respond=respond) as h:
        await subscribed(h, P0)
        traced = replace(record(TOPIC, 0, 7), headers=(("traceparent", producer.encode()),))
        h.consumer.deliver([traced])
        await until(lambda: h.committed(P0) == 8, what="commit after the retry")
    spans = exporter.get_finished_spans()
    (consumer,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
    clients = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT),
        key=lambda s: s.attributes["kafka_ingress.attempt"] if s.attributes else 0,
    )
    assert consumer.parent is not None
    assert f"{consumer.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert f"{consumer.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.kafka.offset"] == 7
    assert consumer.attributes["messaging.consumer.group.name"] == SUB.id
    assert len(clients) == 2
    sent = [call.headers["traceparent"] for call in h.invoker.calls]
    for client, traceparent in zip(clients, sent, strict=True):
        assert client.parent is not None
        assert client.parent.span_id == consumer.context.span_id
        ctx = client.context
        assert traceparent == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"
    assert clients[0].status.status_code is StatusCode.ERROR
    assert clients[1].status.status_code is StatusCode.UNSET


async def test_an_attempt_that_was_not_sent_is_no_error_in_its_trace(
    exporter: InMemorySpanExporter,
) -> None:
    wait = SendWait()
    async with running() as h:
        h.invoker.before_send = wait
        await subscribed(h, P0)
        h.consumer.deliver([record(TOPIC, 0, 0)])
        await until(lambda: wait.waiting == 1, what="the invoker's wait")
        h.clock.advance(SESSION_S * 2)  # paused while the invoker waited: not sent
        wait.release.set()
        await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
        h.consumer.heartbeat()
        await until(lambda: h.committed(P0) == 1, what="the attempt after a heartbeat")
    clients = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    outcomes = [(s.attributes or {}).get("kafka_ingress.outcome") for s in clients]
    assert outcomes == ["not_sent", "ack"]
    assert [s.status.status_code for s in clients] == [StatusCode.UNSET, StatusCode.UNSET]
    assert [len(s.events) for s in clients] == [0, 0], "an exception recorded for no error"
    (consumer,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.status.status_code is StatusCode.UNSET


def test_the_dev_banner_says_how_to_reach_a_collector() -> None:
    off = traces_hint({})
    assert off.startswith("traces ")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make dev" in off
    assert "\n" not in off
    on = traces_hint({**ENDPOINT, "OTEL_SERVICE_NAME": "dev-ingress"})
    assert on.endswith("OTLP/HTTP to http://127.0.0.1:4318 as service dev-ingress")
    assert "kafka-ingress" in traces_hint(ENDPOINT)


async def test_a_record_without_a_trace_of_its_own_starts_a_trace_not_a_child_span(
    exporter: InMemorySpanExporter,
) -> None:
    """Records of one key start from the task of the record before them, whose span is then
    current: a record without a valid traceparent must still be a root span, not a child of
    the previous record's span (one trace per key instead of one per record)."""
    async with running(ordered=True) as h:
        await subscribed(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o, key=b"k") for o in range(3)])
        await until(lambda: h.committed(P0) == 3)
    consumers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(consumers) == 3
    assert [s.parent for s in consumers] == [None, None, None]
    assert len({s.context.trace_id for s in consumers}) == 3
