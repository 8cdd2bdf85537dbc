"""The Lambda side of a deployment: one entry point for every event the poller sends.

``handle_event`` accepts (``docs/protocol.md``, section "Lambda"):

* ``{"protocol": "kafka-ingress/v1", "type": "discover"}`` → the manifest;
* ``{"protocol": …, "type": "invoke", "service", "handler", "key", "headers", "body",
  "isBase64Encoded", …}`` → one invocation; answers ``{"statusCode", "headers", "body",
  "isBase64Encoded"}`` with the same status codes as the HTTP routes;
* ``{"protocol": …, "type": "batch", "invocations": [invoke events]}`` → ``{"results": [...]}``
  with one response per invocation;
* an MSK / self-managed Kafka event (``eventSource`` ``aws:kafka`` or ``SelfManagedKafka``),
  from the poller's ``event.format=msk`` or from AWS's own Kafka trigger → a partial batch
  response (``batchItemFailures``, AWS's shape) plus ``kafkaIngress.results`` with the exact
  outcome of every failed record.

Records of one key run one after the other, in offset order, when the handler is exclusive
(or a workflow ``run``); once one fails, the later records of that key are not run and are
reported as failed too, so order is kept on retry. Everything else runs concurrently.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from adapter.sdk.identity import IdentityError, IdentityVerifier
from adapter.sdk.protocol import (
    HEADER_ATTEMPT,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INVOCATION_ID,
    HEADER_KAFKA_HEADERS,
    HEADER_KAFKA_KEY,
    HEADER_KAFKA_OFFSET,
    HEADER_KAFKA_PARTITION,
    HEADER_KAFKA_TIMESTAMP,
    HEADER_KAFKA_TOPIC,
    HEADER_SUBSCRIPTION_ID,
    HEADER_TRACEPARENT,
    LAMBDA_PROTOCOL,
    invoke_path,
)
from adapter.sdk.runtime import Registry, Response, run_invocation
from adapter.sdk.service import HandlerKind

__all__ = ["KAFKA_EVENT_SOURCES", "LambdaEventError", "handle_event", "make_lambda_handler"]

KAFKA_EVENT_SOURCES = frozenset({"aws:kafka", "SelfManagedKafka"})
LambdaHandler = Callable[[Mapping[str, Any], Any], Any]


class LambdaEventError(ValueError):
    """The event is not one this entry point understands (a FunctionError for the caller)."""


def _response_json(response: Response) -> dict[str, Any]:
    try:
        body, b64 = response.body.decode("utf-8"), False
    except UnicodeDecodeError:
        body, b64 = base64.b64encode(response.body).decode("ascii"), True
    return {
        "statusCode": response.status,
        "headers": response.headers,
        "body": body,
        "isBase64Encoded": b64,
    }


def _body_of(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    if not isinstance(body, str):
        raise LambdaEventError("'body' must be a string")
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise LambdaEventError(f"'body' is not valid base64: {exc}") from exc
    return body.encode("utf-8")


async def _invoke_one(
    registry: Registry, verifier: IdentityVerifier | None, event: Mapping[str, Any]
) -> Response:
    service, handler, key = event.get("service"), event.get("handler"), event.get("key")
    if not isinstance(service, str) or not isinstance(handler, str):
        raise LambdaEventError("an invoke event needs string 'service' and 'handler'")
    if key is not None and not isinstance(key, str):
        raise LambdaEventError("'key' must be a string or null")
    raw_headers = event.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise LambdaEventError("'headers' must be an object")
    # Lower-cased like HTTP servers do, so handlers see the same context over both transports.
    headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
    body = _body_of(event)
    if verifier is not None:
        try:
            await verifier.verify(headers, invoke_path(service, handler, key), body)
        except IdentityError as exc:
            return Response.error(exc.status, str(exc))
    return await run_invocation(
        registry, service=service, handler=handler, key=key, headers=headers, body=body
    )


def _is_ordered(registry: Registry, service: str, handler: str) -> bool:
    definition = registry.services.get(service)
    spec = definition.handlers.get(handler) if definition else None
    return spec is not None and spec.kind in (HandlerKind.EXCLUSIVE, HandlerKind.WORKFLOW)


async def _run_ordered(
    calls: Sequence[tuple[str | None, Callable[[], Awaitable[Response]]]], ordered: bool
) -> list[Response]:
    """Run the calls; per key in sequence when ``ordered`` (stopping a key at its first failure)."""
    results: list[Response | None] = [None] * len(calls)
    if not ordered:
        done = await asyncio.gather(*(call() for _, call in calls))
        return list(done)
    chains: dict[str | None, list[int]] = {}
    for index, (key, _) in enumerate(calls):
        chains.setdefault(key, []).append(index)

    async def chain(indexes: list[int]) -> None:
        failed = False
        for index in indexes:
            if failed:
                results[index] = Response.error(
                    503, "not run: an earlier record with the same key failed"
                )
                continue
            results[index] = response = await calls[index][1]()
            failed = not 200 <= response.status < 300

    await asyncio.gather(*(chain(indexes) for indexes in chains.values()))
    return [r if r is not None else Response.error(500, "not run") for r in results]


async def _invoke_batch(
    registry: Registry, verifier: IdentityVerifier | None, event: Mapping[str, Any]
) -> dict[str, Any]:
    invocations = event.get("invocations")
    if not isinstance(invocations, list) or not all(isinstance(i, Mapping) for i in invocations):
        raise LambdaEventError("a batch event needs 'invocations': a list of invoke events")
    ordered = bool(invocations) and _is_ordered(
        registry, str(invocations[0].get("service")), str(invocations[0].get("handler"))
    )

    def call(inv: Mapping[str, Any]) -> Callable[[], Awaitable[Response]]:
        return lambda: _invoke_one(registry, verifier, inv)

    responses = await _run_ordered([(inv.get("key"), call(inv)) for inv in invocations], ordered)
    return {
        "results": [
            {"invocationId": inv.get("invocationId"), **_response_json(response)}
            for inv, response in zip(invocations, responses, strict=True)
        ]
    }


# -- MSK / self-managed Kafka events ---------------------------------------------------------


def _b64(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise LambdaEventError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise LambdaEventError(f"{what} is not valid base64: {exc}") from exc


def _msk_headers(raw: Any) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for entry in raw or []:
        if not isinstance(entry, Mapping):
            raise LambdaEventError("record headers must be objects {name: [byte, ...]}")
        # AWS sends a header whose value is null as {}: nothing to pass on.
        for name, value in entry.items():
            out.append((str(name), bytes(value) if value is not None else b""))
    return out


def _msk_request_headers(
    record: Mapping[str, Any],
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    extra: Mapping[str, Any],
    subscription_id: str | None,
) -> dict[str, str]:
    topic, partition, offset = record["topic"], record["partition"], record["offset"]
    invocation_id = str(extra.get("invocationId") or f"{topic}-{partition}-{offset}")
    out = {
        HEADER_KAFKA_TOPIC: str(topic),
        HEADER_KAFKA_PARTITION: str(partition),
        HEADER_KAFKA_OFFSET: str(offset),
        HEADER_KAFKA_TIMESTAMP: str(record.get("timestamp", -1)),
        HEADER_IDEMPOTENCY_KEY: invocation_id,
        HEADER_INVOCATION_ID: invocation_id,
        HEADER_ATTEMPT: str(extra.get("attempt", 1)),
        HEADER_KAFKA_HEADERS: json.dumps(
            [[name, base64.b64encode(value).decode("ascii")] for name, value in headers],
            separators=(",", ":"),
        ),
    }
    if subscription_id:
        out[HEADER_SUBSCRIPTION_ID] = subscription_id
    if key is not None:
        with contextlib.suppress(UnicodeDecodeError):
            out[HEADER_KAFKA_KEY] = quote(key.decode("utf-8"), safe="")
    if extra.get("traceparent"):
        out[HEADER_TRACEPARENT] = str(extra["traceparent"])
    return out


async def _invoke_msk(
    registry: Registry, event: Mapping[str, Any], default_target: str | None
) -> dict[str, Any]:
    ext = event.get("kafkaIngress") or {}
    if not isinstance(ext, Mapping):
        raise LambdaEventError("'kafkaIngress' must be an object")
    service, handler = ext.get("service"), ext.get("handler")
    if service is None or handler is None:
        if default_target is None:
            raise LambdaEventError(
                "a Kafka event from AWS's own trigger names no handler: create the entry "
                "point with kafka_target='Service/handler'"
            )
        service, _, handler = default_target.partition("/")
    service, handler = str(service), str(handler)
    per_record = {
        (str(i.get("partition")), int(i.get("offset", -1))): i
        for i in ext.get("invocations") or []
        if isinstance(i, Mapping)
    }
    subscription_id = ext.get("subscriptionId") or event.get("eventSourceArn")
    records = event.get("records")
    if not isinstance(records, Mapping):
        raise LambdaEventError("a Kafka event needs 'records': {topic-partition: [records]}")

    items: list[tuple[str, Mapping[str, Any]]] = []
    for tp, batch in records.items():
        for record in batch:
            items.append((str(tp), record))
    items.sort(key=lambda item: (item[0], int(item[1]["offset"])))
    keyed = registry.services.get(service) is not None and registry.services[service].keyed

    def call(tp: str, record: Mapping[str, Any]) -> tuple[str | None, Any]:
        key_bytes = _b64(record.get("key"), "record key")
        value = _b64(record.get("value"), "record value") or b""
        headers = _msk_request_headers(
            record,
            key_bytes,
            _msk_headers(record.get("headers")),
            per_record.get((tp, int(record["offset"]))) or {},
            str(subscription_id) if subscription_id else None,
        )
        key: str | None = None
        if keyed and key_bytes:
            try:
                key = key_bytes.decode("utf-8")
            except UnicodeDecodeError:
                key = None

        async def run() -> Response:
            return await run_invocation(
                registry, service=service, handler=handler, key=key, headers=headers, body=value
            )

        return key, run

    calls = [call(tp, record) for tp, record in items]
    responses = await _run_ordered(calls, _is_ordered(registry, service, handler))
    failures: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for (tp, record), response in zip(items, responses, strict=True):
        if 200 <= response.status < 300:
            continue
        ident = {"partition": tp, "offset": int(record["offset"])}
        results.append({**ident, **_response_json(response)})
        retryable = response.status in (408, 429) or response.status >= 500
        if retryable:
            # Terminal failures are left out: AWS's trigger must not retry them either.
            failures.append({"itemIdentifier": ident})
    return {"batchItemFailures": failures, "kafkaIngress": {"results": results}}


async def handle_event(
    registry: Registry,
    verifier: IdentityVerifier | None,
    event: Mapping[str, Any],
    *,
    kafka_target: str | None = None,
) -> Any:
    """Answer one Lambda event (see the module docstring); LambdaEventError if unknown."""
    if not isinstance(event, Mapping):
        raise LambdaEventError(f"the event must be a JSON object, got {type(event).__name__}")
    if event.get("eventSource") in KAFKA_EVENT_SOURCES:
        return await _invoke_msk(registry, event, kafka_target)
    if event.get("protocol") != LAMBDA_PROTOCOL:
        raise LambdaEventError(
            f"not a Kafka Ingress event (expected protocol {LAMBDA_PROTOCOL!r} or a Kafka "
            "event source)"
        )
    kind = event.get("type")
    if kind == "discover":
        return registry.manifest()
    if kind == "invoke":
        return _response_json(await _invoke_one(registry, verifier, event))
    if kind == "batch":
        return await _invoke_batch(registry, verifier, event)
    raise LambdaEventError(f"unknown event type {kind!r} (discover, invoke or batch)")


def make_lambda_handler(
    registry: Registry, verifier: IdentityVerifier | None, *, kafka_target: str | None = None
) -> LambdaHandler:
    """The ``handler(event, context)`` function AWS Lambda's Python runtime calls."""

    def handler(event: Mapping[str, Any], context: Any) -> Any:
        # A fresh loop per event: nothing bound to a closed loop survives between invocations.
        def run() -> Any:
            return asyncio.run(handle_event(registry, verifier, event, kafka_target=kafka_target))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        # Called from async code (a local harness): run on a thread of its own.
        with ThreadPoolExecutor(1, thread_name_prefix="lambda-handler") as pool:
            return pool.submit(run).result()

    return handler
