"""Running one invocation: route → input → handler → response, with the error mapping.

Transport-free: the ASGI app and the Lambda entry point both call :func:`run_invocation` with
the target, the lower-cased request headers and the body, and turn the :class:`Response` into
their own wire format. So a handler behaves the same over HTTP and as a Lambda function:

    handler returns                    → 200 (JSON body, or the bytes as-is, or empty)
    TerminalError(status_code=4xx)     → that 4xx, {"message": ...}         (not retried)
    input not valid for the handler    → 400, {"message": ...}              (not retried)
    unknown service / handler / route  → 404, {"message": ...}              (not retried)
    RetryableError(retry_after=s)      → 503, Retry-After: ceil(s)          (retried)
    any other exception                → 500, {"message": "Type: text"}     (retried)
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic_core

from adapter.sdk.context import Context, context_from_headers
from adapter.sdk.errors import RetryableError, TerminalError
from adapter.sdk.protocol import PROTOCOL_VERSION
from adapter.sdk.service import HandlerKind, HandlerSpec, InputKind, ServiceDefinition

__all__ = ["Registry", "Response", "run_invocation"]

log = logging.getLogger("kafka_ingress.sdk")

_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status,
            pydantic_core.to_json({"message": message}),
            {"content-type": _JSON, **(headers or {})},
        )


class Registry:
    """The services one deployment serves, by name."""

    def __init__(self, services: Iterable[ServiceDefinition]) -> None:
        self.services: dict[str, ServiceDefinition] = {}
        for service in services:
            if service.name in self.services:
                raise ValueError(f"service {service.name!r} is declared twice")
            if not service.handlers:
                raise ValueError(f"service {service.name!r} has no handlers")
            self.services[service.name] = service

    def manifest(self) -> dict[str, Any]:
        """The discovery manifest (``GET /discover``): what Restate's manifest carries."""
        return {
            "protocol_version": PROTOCOL_VERSION,
            "services": [
                {
                    "name": service.name,
                    "ty": service.kind.value,
                    **({"documentation": service.description} if service.description else {}),
                    "handlers": [
                        {
                            "name": spec.name,
                            "ty": None if spec.kind is HandlerKind.SERVICE else spec.kind.value,
                            "input": spec.manifest_input,
                        }
                        for spec in service.handlers.values()
                    ],
                }
                for service in self.services.values()
            ],
        }

    def lookup(self, service: str, handler: str, key: str | None) -> HandlerSpec | Response:
        """The handler for a route, or the 404 that explains why there is none."""
        definition = self.services.get(service)
        if definition is None:
            known = ", ".join(sorted(self.services)) or "none"
            return Response.error(404, f"unknown service {service!r} (served: {known})")
        spec = definition.handlers.get(handler)
        if spec is None:
            known = ", ".join(sorted(definition.handlers))
            return Response.error(404, f"{service} has no handler {handler!r} (handlers: {known})")
        if definition.keyed and key is None:
            return Response.error(
                404, f"{service} is keyed: invoke /invoke/{service}/KEY/{handler}"
            )
        if not definition.keyed and key is not None:
            return Response.error(
                404, f"{service} is a service: invoke /invoke/{service}/{handler}"
            )
        return spec


def _decode_input(spec: HandlerSpec, body: bytes) -> Any:
    if spec.input_kind is InputKind.RAW:
        return body
    assert spec.input_adapter is not None
    # An empty body (null or empty record value) is JSON null: accepted by Optional inputs.
    return spec.input_adapter.validate_json(body or b"null")


def _encode_output(value: Any) -> Response:
    if value is None:
        return Response(200)
    if isinstance(value, bytes | bytearray | memoryview):
        return Response(200, bytes(value), {"content-type": "application/octet-stream"})
    return Response(200, pydantic_core.to_json(value), {"content-type": _JSON})


def _validation_message(exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "input"
    more = exc.error_count() - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"invalid input: {where}: {first['msg']}{suffix}"


async def _call(spec: HandlerSpec, ctx: Context, args: tuple[Any, ...]) -> Any:
    if spec.is_async:
        return await spec.fn(ctx, *args)
    return await asyncio.to_thread(spec.fn, ctx, *args)


async def run_invocation(
    registry: Registry,
    *,
    service: str,
    handler: str,
    key: str | None,
    headers: Mapping[str, str],
    body: bytes,
) -> Response:
    """Run one invocation; never raises for a handler's failure."""
    spec = registry.lookup(service, handler, key)
    if isinstance(spec, Response):
        return spec
    args: tuple[Any, ...] = ()
    if spec.input_kind is not InputKind.NONE:
        try:
            args = (_decode_input(spec, body),)
        except pydantic.ValidationError as exc:
            return Response.error(400, _validation_message(exc))
    ctx = context_from_headers(headers, service=service, handler=handler, key=key)
    try:
        result = await _call(spec, ctx, args)
    except TerminalError as exc:
        return Response.error(exc.status_code, exc.message)
    except RetryableError as exc:
        extra = {}
        if exc.retry_after is not None:
            extra["retry-after"] = str(math.ceil(exc.retry_after))
        return Response.error(503, exc.message, extra)
    except Exception as exc:
        log.exception("handler %s/%s failed (invocation %s)", service, handler, ctx.invocation_id)
        return Response.error(500, f"{type(exc).__name__}: {exc}")
    try:
        return _encode_output(result)
    except pydantic_core.PydanticSerializationError as exc:
        return Response.error(500, f"{service}/{handler} returned a value that is not JSON: {exc}")
