"""OpenTelemetry traces: a consumer span per record, a client span per invocation attempt.

Configured from the standard environment only, and only when an OTLP endpoint is given::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318     (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    OTEL_SERVICE_NAME=kafka-ingress                        (the default here)
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1
    OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_* ...

The export is OTLP over HTTP (protobuf) through a batch processor, off the event loop. Without an
endpoint, or with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``, :func:`configure`
returns ``None``, the SDK is never imported and the dispatcher does nothing per record.

Span shape (Kafka messaging semantic conventions)::

    <the producer's span, from the record's traceparent header, when it has a valid one>
      └── process <topic>            CONSUMER  messaging.system=kafka, messaging.destination.name,
            │                                  messaging.destination.partition.id,
            │                                  messaging.kafka.offset, messaging.consumer.group.name
            ├── invoke <service>/<handler>  CLIENT  attempt 1 — its context is the traceparent
            └── invoke <service>/<handler>  CLIENT  attempt 2    the handler receives

A record without a usable traceparent starts a new trace at its consumer span.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from adapter.engine.mapping import HEADER_TRACEPARENT, derive_trace_id
from adapter.invokers.base import InvocationRequest, NotSent, Outcome, OutcomeKind
from adapter.masking import mask_secrets

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["RecordTracer", "configure", "current", "enabled", "install", "shutdown"]

DEFAULT_SERVICE_NAME = "kafka-ingress"
_HEADER_TRACESTATE = "tracestate"


def enabled(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (see the module docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure() -> TracerProvider | None:
    """A tracer provider exporting OTLP/HTTP as ``os.environ`` says (the SDK reads its
    ``OTEL_*`` variables from there), or None when off."""
    if not enabled(os.environ):
        return None
    # Imported here: a poller without traces never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG); the exporter reads its endpoint,
    # headers, timeout and compression from OTEL_EXPORTER_OTLP_* itself.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


_tracer: RecordTracer | None = None
_provider: TracerProvider | None = None


def install(provider: TracerProvider | None) -> None:
    """Make ``provider`` the one dispatchers created from now on trace with (None: off)."""
    global _tracer, _provider
    _provider = provider
    _tracer = RecordTracer(provider.get_tracer("kafka_ingress")) if provider else None


def current() -> RecordTracer | None:
    return _tracer


def shutdown() -> None:
    """Export what is buffered and stop the exporter (the poller's last step)."""
    provider = _provider
    install(None)
    if provider is not None:
        provider.shutdown()


class RecordTracer:
    """The two spans of the module docstring, for the dispatcher."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def record(self, request: InvocationRequest, subscription_id: str) -> Iterator[Span]:
        """The consumer span of the request's record, for as long as the record is worked on."""
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanKind

        record = request.record
        topic = record.topic if record is not None else ""
        carrier: dict[str, str] = {}
        traceparent = request.headers.get(HEADER_TRACEPARENT, "")
        # A traceparent made up here (no valid one on the record) has no span behind it.
        if traceparent and traceparent[3:35] != derive_trace_id(request.invocation_id):
            carrier[HEADER_TRACEPARENT] = traceparent
            if _HEADER_TRACESTATE in request.headers:
                carrier[_HEADER_TRACESTATE] = request.headers[_HEADER_TRACESTATE]
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": subscription_id,  # the subscription's group
            "kafka_ingress.invocation.id": request.invocation_id,
        }
        if record is not None:
            attributes["messaging.destination.partition.id"] = str(record.partition)
            attributes["messaging.kafka.offset"] = record.offset
        with self._tracer.start_as_current_span(
            f"process {topic}",
            # Without a trace of its own, a new trace: not the current context, which is the
            # span of the record whose task started this one (the previous of its key).
            context=self._propagator.extract(carrier) if carrier else Context(),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    @contextlib.contextmanager
    def attempt(self, request: InvocationRequest) -> Iterator[tuple[InvocationRequest, Span]]:
        """A client span for one attempt (a child of the current consumer span), and the
        request carrying that span's context as its ``traceparent``.

        An attempt the invoker did not send (:class:`NotSent`: the proof of ownership lapsed
        while it waited) is no error: its span says ``kafka_ingress.outcome = not_sent`` and
        the attempt is made again, in a span of its own, once it may start."""
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        target = request.target
        with self._tracer.start_as_current_span(
            f"invoke {target.service}/{target.handler}",
            kind=SpanKind.CLIENT,
            # The invocation, record and target are on the parent span and in the name.
            attributes={"kafka_ingress.attempt": request.attempt},
            # Recorded below, where NotSent can be told apart from a failure.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, context=set_span_in_context(span))
            headers = dict(request.headers)
            headers.pop(_HEADER_TRACESTATE, None)
            headers.update(carrier)
            try:
                yield replace(request, headers=headers), span
            except NotSent:
                span.set_attribute("kafka_ingress.outcome", "not_sent")
                raise
            except Exception as exc:
                message = mask_secrets(str(exc))[:500]
                span.record_exception(exc, attributes={"exception.message": message})
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
                raise

    @staticmethod
    def outcome(span: Span, outcome: Outcome) -> None:
        """Record the attempt's outcome; a retry or terminal answer marks the span an error."""
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("kafka_ingress.outcome", outcome.kind.value)
        if outcome.kind is not OutcomeKind.ACK:
            span.set_status(Status(StatusCode.ERROR, mask_secrets(outcome.error or "")[:500]))
