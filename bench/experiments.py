"""Proposed engine changes, tried out in the benchmark's poller process without editing them in.

``python -m bench --experiment NAME`` starts our poller through :mod:`bench.poller`, which
applies these patches before the poller starts; results.json records which were on. They are
prototypes of the changes the profile points to, to measure what each would give — not
alternative code paths of the product:

``fast-ledger``   ledger rows go out as hand-serialised (orjson) BatchWriteItem requests,
                  SigV4-signed and sent on the event loop with aiohttp, instead of boto3 in
                  worker threads (botocore's validation, serialisation and GIL hand-offs)
``boto-lean``     boto3 clients without botocore's client-side parameter validation
``no-ledger-io``  ledger writes become no-ops: the upper bound of any ledger optimisation.
                  Breaks the product's guarantee; a measurement only, never a proposal.
``tracing``       traces on at 100% sampling: both spans per record, batched and encoded as
                  OTLP protobuf as for a collector, the HTTP request left out (no collector
                  in the bench stack) — the poller's cost of OTEL_EXPORTER_OTLP_ENDPOINT
``no-histograms`` the two per-attempt histograms (adapter.engine.timings) observe nothing:
                  what the metrics cost on the hot path
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EXPERIMENTS", "apply"]


def _boto_lean() -> None:
    import boto3
    from botocore.config import Config

    original = boto3.client

    def client(*args: Any, **kwargs: Any) -> Any:
        lean = Config(parameter_validation=False)
        config = kwargs.get("config")
        kwargs["config"] = config.merge(lean) if config is not None else lean
        return original(*args, **kwargs)

    boto3.client = client


def _no_ledger_io() -> None:
    from adapter.store.dynamo import DynamoStore

    async def write_entries(self: DynamoStore, entries: Sequence[Any], **_: Any) -> None:
        return None

    DynamoStore.write_entries = write_entries  # type: ignore[method-assign]


def _fast_ledger() -> None:
    import time

    import aiohttp
    import orjson
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from adapter.errors import StoreError
    from adapter.store import dynamo
    from adapter.store.dynamo import DynamoStore

    sessions: dict[int, aiohttp.ClientSession] = {}

    async def post(store: DynamoStore, operation: str, body: bytes) -> dict[str, Any]:
        client = store._client
        session = sessions.get(id(store))
        if session is None:
            session = sessions[id(store)] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16),
                timeout=aiohttp.ClientTimeout(total=10),
            )
        url = str(client.meta.endpoint_url)
        request = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"DynamoDB_20120810.{operation}",
            },
        )
        credentials = client._request_signer._credentials.get_frozen_credentials()
        SigV4Auth(credentials, "dynamodb", client.meta.region_name).add_auth(request)
        store.requests += 1
        try:
            async with session.post(url, data=body, headers=dict(request.headers.items())) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise StoreError(
                        f"write invocation ledger: HTTP {resp.status}: {payload[:200]!r}"
                    )
        except aiohttp.ClientError as exc:
            raise StoreError(f"write invocation ledger: {exc}") from exc
        data: dict[str, Any] = orjson.loads(payload)
        return data

    async def write_chunk(
        store: DynamoStore, table: str, chunk: list[Any], deadline: float
    ) -> None:
        delay = 0.05
        while chunk:
            body = orjson.dumps({"RequestItems": {table: chunk}})
            reply = await post(store, "BatchWriteItem", body)
            chunk = reply.get("UnprocessedItems", {}).get(table, [])
            if chunk:
                if time.monotonic() > deadline:
                    raise StoreError(f"write invocation ledger: {len(chunk)} rows unprocessed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def write_entries(
        self: DynamoStore, entries: Sequence[Any], *, deadline_s: float = 30
    ) -> None:
        if not entries:
            return
        expires = int(self._clock() + self._retention_s)
        latest = {e.id: e for e in entries}
        requests = [
            {"PutRequest": {"Item": dynamo._ledger_item(e, expires)}} for e in latest.values()
        ]
        table = self.names.invocations
        deadline = time.monotonic() + deadline_s
        await asyncio.gather(
            *(
                write_chunk(self, table, requests[i : i + 25], deadline)
                for i in range(0, len(requests), 25)
            )
        )

    DynamoStore.write_entries = write_entries  # type: ignore[method-assign]


def _tracing() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from adapter.engine import tracing

    class EncodeOnly(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    def configure() -> TracerProvider:
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(EncodeOnly()))
        return provider

    tracing.configure = configure


def _no_histograms() -> None:
    from adapter.engine.timings import AttemptTimings

    def attempt(self: AttemptTimings, kind: Any, seconds: float) -> None:
        return None

    def acked(self: AttemptTimings, timestamp_ms: int) -> None:
        return None

    AttemptTimings.attempt = attempt  # type: ignore[method-assign]
    AttemptTimings.acked = acked  # type: ignore[method-assign]


def _without_serve_tuning() -> None:
    """``serve`` applies adapter.gc_tuning after any experiment: leave the collector as the
    experiment set it."""
    from adapter import gc_tuning

    gc_tuning.tune_for_throughput = lambda: None


def _gc_default() -> None:
    """CPython's default collector settings (what ``serve`` ran with before adapter.gc_tuning)."""
    _without_serve_tuning()


def _gc_freeze() -> None:
    """serve's setting plus ``gc.freeze()`` of what start-up allocated (measured: no gain)."""
    import gc

    from adapter.gc_tuning import tune_for_throughput

    tune_for_throughput()
    _without_serve_tuning()
    gc.collect()
    gc.freeze()


def _gc_off() -> None:
    """No cyclic collection at all: what the collector still costs (an upper bound, never a
    configuration: reference cycles would never be freed)."""
    import gc

    _without_serve_tuning()
    gc.disable()


def _ledger_linger_200() -> None:
    """The ledger writer lingers 200 ms instead of 50 for success pages: fewer, fuller pages,
    fewer DynamoDB requests (moto's CPU on the bench's shared cores), commits ~150 ms later."""
    from adapter import poller
    from adapter.engine.ledger import LedgerWriter

    class Lingering(LedgerWriter):
        def __init__(self, store: Any, *, linger_s: float = 0.01, **kwargs: Any) -> None:
            super().__init__(store, linger_s=0.2 if linger_s == 0.05 else linger_s, **kwargs)

    poller.LedgerWriter = Lingering  # type: ignore[attr-defined]


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "fast-ledger": _fast_ledger,
    "boto-lean": _boto_lean,
    "no-ledger-io": _no_ledger_io,
    "tracing": _tracing,
    "no-histograms": _no_histograms,
    "gc-default": _gc_default,
    "gc-freeze": _gc_freeze,
    "gc-off": _gc_off,
    "ledger-linger-200": _ledger_linger_200,
}


def apply(names: Sequence[str]) -> None:
    for name in names:
        try:
            patch = EXPERIMENTS[name]
        except KeyError:
            raise SystemExit(
                f"unknown experiment {name!r} (known: {', '.join(EXPERIMENTS)})"
            ) from None
        patch()
