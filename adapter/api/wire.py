"""Pure mapping between the store's shapes and the admin API's response bodies.

No I/O. Secrets are masked here, on the way out, so no route can forget it: subscription and
cluster options go through :func:`~adapter.kafka.options.mask_options`, deployment headers
through :func:`~adapter.api.headers.mask_headers`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from adapter.api.bodies import (
    DetailedHttpDeploymentResponse,
    DetailedLambdaDeploymentResponse,
    HandlerResponse,
    HttpDeploymentResponse,
    InvocationResponse,
    LambdaDeploymentResponse,
    ServiceNameRevision,
    ServiceResponse,
    SubscriptionResponse,
)
from adapter.api.headers import mask_headers
from adapter.errors import ValidationError
from adapter.ids import restate_form
from adapter.kafka.options import mask_options
from adapter.masking import mask_secrets
from adapter.model import (
    LAMBDA_FUNCTION_ARN,
    HandlerInfo,
    HandlerType,
    InputKind,
    LedgerEntry,
    ServiceInfo,
    Subscription,
    topic_name,
)

__all__ = [
    "deployment_response",
    "handler_response",
    "humantime",
    "invocation_response",
    "parse_timestamp",
    "rfc3339",
    "service_response",
    "subscription_response",
]

_SERVICE_TY = {"SERVICE": "Service", "VIRTUAL_OBJECT": "VirtualObject", "WORKFLOW": "Workflow"}
_HANDLER_TY = {
    HandlerType.SERVICE: "Shared",  # as Restate reports service handlers
    HandlerType.SHARED: "Shared",
    HandlerType.EXCLUSIVE: "Exclusive",
    HandlerType.WORKFLOW: "Workflow",
}
_INPUT_DESCRIPTION = {
    InputKind.JSON: 'one of ["none", "value of content-type \'application/json\'"]',
    InputKind.RAW: 'one of ["none", "value of any content-type"]',
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int | float | str | None) -> str | None:
    """Epoch milliseconds as RFC 3339 UTC (``2026-01-02T03:04:05Z``, ``…05.123Z``)."""
    if ms is None:
        return None
    if isinstance(ms, str):
        return ms  # already rendered
    # Integer arithmetic: float seconds round some milliseconds the wrong way.
    stamp = _EPOCH + timedelta(milliseconds=int(ms))
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    millis = int(ms) % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


_INT64_MAX = 2**63 - 1
"""Kafka's timestamps are int64: a larger one cannot even be encoded in a request."""


def _too_large(digits: str) -> ValidationError:
    shown = digits if len(digits) <= 24 else f"{digits[:20]}… ({len(digits)} digits)"
    return ValidationError(
        f"timestamp {shown} is too large: epoch milliseconds are at most {_INT64_MAX} "
        "(a 64-bit integer)"
    )


def _epoch_ms(value: int) -> int:
    if value < 0:
        raise ValidationError(f"timestamp {value} is negative")
    if value > _INT64_MAX:
        raise _too_large(str(value))
    return value


def parse_timestamp(value: str | int) -> int:
    """Epoch milliseconds (0 to 2**63 - 1) from an RFC 3339 string or an integer of them."""
    if isinstance(value, int):
        return _epoch_ms(value)
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() too, and int() refuses it
        if len(text.lstrip("0")) > len(str(_INT64_MAX)):
            raise _too_large(text)  # before int(), which refuses over 4300 digits
        return _epoch_ms(int(text))
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{value!r} is not a timestamp: give RFC 3339 (2026-01-02T03:04:05Z) or epoch "
            "milliseconds"
        ) from None
    if stamp.tzinfo is None:
        raise ValidationError(f"timestamp {value!r} has no time zone: add Z or an offset")
    ms = (stamp - _EPOCH) // timedelta(milliseconds=1)
    if ms < 0:
        raise ValidationError(f"timestamp {value!r} is before 1970")
    return ms


def humantime(seconds: float) -> str:
    """A duration the way Restate prints one (``7days``, ``12h``, ``30m``, ``45s``)."""
    total = math.ceil(seconds)
    for unit, size in (("days", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def subscription_response(sub: Subscription) -> SubscriptionResponse:
    return SubscriptionResponse(
        id=restate_form(sub.id),
        source=sub.source,
        sink=sub.sink,
        options=mask_options(sub.options),
        paused=sub.paused,
        revision=sub.revision,
        created_at=rfc3339(sub.created_at_ms) or "",
    )


def handler_response(handler: HandlerInfo) -> HandlerResponse:
    return HandlerResponse(
        name=handler.name,
        ty=_HANDLER_TY[handler.handler_type],  # type: ignore[arg-type]
        input_description=_INPUT_DESCRIPTION[handler.input_kind],
        output_description="any",
        input=handler.input_kind.value,
    )


def service_response(svc: ServiceInfo, *, retention_s: float) -> ServiceResponse:
    return ServiceResponse(
        name=svc.name,
        handlers=[handler_response(h) for h in svc.handlers],
        ty=_SERVICE_TY[svc.service_type.value],  # type: ignore[arg-type]
        deployment_id=restate_form(svc.deployment_id),
        revision=svc.revision,
        idempotency_retention=humantime(retention_s),
    )


def _shown_arn(dep: dict[str, Any]) -> str:
    """The function ARN in Restate's deployment shape, which needs a version or alias (Restate
    registers only qualified functions, and its CLI refuses a whole listing with one that is
    not): an unqualified ARN is invoked as ``$LATEST``, so that is how it is shown."""
    arn = str(dep["arn"])
    match = LAMBDA_FUNCTION_ARN.match(arn)
    return f"{arn}:$LATEST" if match and not match.group("qualifier") else arn


def _shown_uri(dep: dict[str, Any]) -> str:
    # New deployments cannot carry credentials in the URI; older ones are masked.
    return mask_secrets(str(dep.get("uri", "")))


def deployment_response(
    dep: dict[str, Any],
    services: list[ServiceInfo],
    *,
    detailed: bool,
    retention_s: float,
) -> (
    HttpDeploymentResponse
    | LambdaDeploymentResponse
    | DetailedHttpDeploymentResponse
    | DetailedLambdaDeploymentResponse
):
    """A stored deployment in Restate's list (``detailed=False``) or get shape."""
    headers = {str(k): str(v) for k, v in (dep.get("additional_headers") or {}).items()}
    common: dict[str, Any] = {
        "id": restate_form(str(dep["id"])),
        "additional_headers": mask_headers(headers),
        "created_at": rfc3339(dep.get("created_at") or 0) or "",
        "min_protocol_version": int(dep.get("min_protocol_version", 1)),
        "max_protocol_version": int(dep.get("max_protocol_version", 1)),
        "sdk_version": dep.get("sdk_version"),
    }
    ordered = sorted(services, key=lambda s: s.name)
    if detailed:
        full = [service_response(s, retention_s=retention_s) for s in ordered]
        if dep.get("arn"):
            return DetailedLambdaDeploymentResponse(
                **common,
                arn=_shown_arn(dep),
                assume_role_arn=dep.get("assume_role_arn"),
                services=full,
            )
        return DetailedHttpDeploymentResponse(
            **common, uri=_shown_uri(dep), http_version="HTTP/1.1", services=full
        )
    pairs = [ServiceNameRevision(name=s.name, revision=s.revision) for s in ordered]
    if dep.get("arn"):
        return LambdaDeploymentResponse(
            **common,
            arn=_shown_arn(dep),
            assume_role_arn=dep.get("assume_role_arn"),
            services=pairs,
        )
    return HttpDeploymentResponse(
        **common, uri=_shown_uri(dep), http_version="HTTP/1.1", services=pairs
    )


def invocation_response(entry: LedgerEntry) -> InvocationResponse:
    return InvocationResponse(
        id=entry.id,
        status=entry.status,
        subscription_id=restate_form(entry.subscription_id),
        target=entry.target,
        key=entry.key,
        topic=topic_name(entry.topic),
        partition=entry.partition,
        offset=entry.offset,
        attempts=entry.attempts,
        last_error=mask_secrets(entry.last_error) if entry.last_error else None,
        created_at=rfc3339(entry.created_at_ms or None),
        modified_at=rfc3339(entry.updated_at_ms or None),
        completed_at=rfc3339(entry.completed_at_ms),
        next_retry_at=rfc3339(entry.next_retry_at_ms),
        dead_letter_topic=entry.dead_letter_topic,
    )
