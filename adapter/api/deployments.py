"""``/deployments`` and ``/services``: the handler registry, in Restate's shapes.

Registering a deployment fetches its discovery manifest (``GET {uri}/discover``, or the Lambda
function's), checks it (:mod:`adapter.api.manifest`) and stores the deployment and the services
it serves. Subscriptions whose handler moved to another deployment, or changed, get their
revision bumped, so every poller restarts them against the new target.

Status codes follow Restate's admin API: 201 created, 200 unchanged (or overwritten with
``force``), 409 when the change needs ``force``; under the ``/v2`` prefix ``force`` defaults to
true and an overwrite answers 201, as in Restate's admin API v2.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from adapter import ids
from adapter.api.bodies import (
    DetailedHttpDeploymentResponse,
    DetailedLambdaDeploymentResponse,
    HandlerResponse,
    ListDeploymentsResponse,
    ListHandlersResponse,
    ListServicesResponse,
    RegisterDeploymentRequest,
    RegisterDeploymentResponse,
    ServiceResponse,
)
from adapter.api.endpoint import (
    AdminState,
    Endpoint,
    QueryParam,
    api_version,
    json_response,
    query_bool,
    read_body,
)
from adapter.api.headers import restore_masked_headers, validate_headers
from adapter.api.manifest import parse_manifest, plan_registration
from adapter.api.refs import check_name
from adapter.api.wire import deployment_response, handler_response, service_response
from adapter.errors import (
    ConditionFailedError,
    ConflictError,
    UnknownResourceError,
    ValidationError,
)
from adapter.masking import mask_secrets
from adapter.model import LAMBDA_FUNCTION_ARN, ServiceInfo, Subscription
from adapter.store.function_sinks import is_function_sink_deployment

__all__ = ["ENDPOINTS", "MAX_URI_LENGTH"]

MAX_URI_LENGTH = 2048

log = logging.getLogger(__name__)


def _check_uri(uri: str) -> str:
    invalid = "the request field 'uri' is invalid"
    if len(uri) > MAX_URI_LENGTH:
        raise ValidationError(f"{invalid}: longer than {MAX_URI_LENGTH} characters")
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        raise ValidationError(
            f"{invalid}: {mask_secrets(uri[:200])!r} is not a URL ({exc})"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{invalid}: {mask_secrets(uri[:200])!r} is not an http(s) URL")
    # However spelled: a bare trailing "?" or "#" leaves urlsplit's query/fragment empty.
    if "?" in uri or "#" in uri:
        raise ValidationError(f"{invalid}: no query or fragment allowed ('?' or '#')")
    if "@" in parts.netloc:
        raise ValidationError(
            f"{invalid}: credentials in the URL (user:password@) are not accepted, because "
            "URLs end up in logs and listings; send them in additional_headers (e.g. "
            "Authorization), whose values are never shown"
        )
    return uri


def _address(dep: dict[str, Any]) -> str:
    # A lambda:// sink's implicit deployment is not the one discovery would register for the
    # same function: registering that one leaves the sink alone.
    if is_function_sink_deployment(dep):
        return f"sink|{dep.get('arn')}"
    if dep.get("arn"):
        return f"arn|{dep['arn']}"
    return f"uri|{str(dep.get('uri', '')).rstrip('/')}"


async def _bump_subscriptions(
    state: AdminState, services: set[str], subs: list[Subscription]
) -> None:
    for sub in subs:
        if sub.service in services:
            try:
                await state.store.update_subscription(
                    replace(sub, revision=sub.revision + 1), expected_revision=sub.revision
                )
            except ConditionFailedError:
                continue  # changed meanwhile: it restarts anyway


async def register_deployment(request: Request, state: AdminState) -> Response:
    body = await read_body(request, RegisterDeploymentRequest)
    if (body.uri is None) == (body.arn is None):
        raise ValidationError("give exactly one of 'uri' (HTTP deployment) or 'arn' (Lambda)")
    v2 = api_version(request) == 2
    overwrite = body.force if body.force is not None else v2
    if body.uri is not None:
        target: dict[str, Any] = {"uri": _check_uri(body.uri), "use_http_11": body.use_http_11}
        where = body.uri
    else:
        assert body.arn is not None
        if not LAMBDA_FUNCTION_ARN.match(body.arn):
            raise ValidationError(
                f"the request field 'arn' is invalid: {body.arn[:200]!r} is not a Lambda "
                "function ARN (arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>])"
            )
        target = {"arn": body.arn, "assume_role_arn": body.assume_role_arn}
        where = body.arn
    if state.discover is None:
        raise ConflictError("deployment discovery is not available in this admin process")
    address = _address(target)
    deployments = await state.store.list_deployments()
    existing = next((d for d in deployments if _address(d) == address), None)
    # Headers written back as listed ("***" for a credential) keep the stored values.
    given = restore_masked_headers(
        body.additional_headers or {},
        existing.get("additional_headers") if existing is not None else None,
    )
    headers = validate_headers(given)
    document = await state.discover(
        uri=body.uri, arn=body.arn, headers=headers, use_http_11=body.use_http_11
    )
    manifest = parse_manifest(document, where)
    digest = manifest.digest(headers, {k: v for k, v in target.items() if v is not None})
    registry = {s.name: s for s in await state.store.list_services()}
    subs = await state.store.list_subscriptions()
    plan = plan_registration(
        new_id=ids.deployment_id(),
        existing=existing,
        existing_digest_matches=existing is not None and existing.get("digest") == digest,
        manifest=manifest,
        registry=registry,
        subscriptions=subs,
        overwrite=overwrite,
        allow_breaking=overwrite or body.breaking,
    )
    if plan.outcome == "unchanged" and v2 and not body.dry_run:
        raise ConflictError(f"deployment {plan.deployment_id} already exists")
    if not body.dry_run and plan.outcome != "unchanged":
        created_at = int(time.time() * 1000)
        await state.store.put_deployment(
            {
                "id": plan.deployment_id,
                **{k: v for k, v in target.items() if v is not None},
                "additional_headers": headers,
                "created_at": created_at,
                "min_protocol_version": manifest.min_protocol_version,
                "max_protocol_version": manifest.max_protocol_version,
                "sdk_version": manifest.sdk_version,
                "metadata": body.metadata or {},
                "digest": digest,
            }
        )
        for svc in plan.services:
            await state.store.put_service(svc)
        for name in plan.remove_services:
            await state.store.delete_service(name)
        await _bump_subscriptions(
            state, {s.name for s in plan.services} | set(plan.remove_services), subs
        )
        state.wake()
        log.info(
            "deployment %s %s at %s: %s",
            plan.deployment_id,
            plan.outcome,
            where,
            ", ".join(s.name for s in plan.services) or "no services",
        )
    status = {"created": 201, "unchanged": 200, "overwritten": 201 if v2 else 200}[plan.outcome]
    response = RegisterDeploymentResponse(
        id=ids.restate_form(plan.deployment_id),
        services=[service_response(s, retention_s=state.retention_s) for s in plan.services],
        min_protocol_version=manifest.min_protocol_version,
        max_protocol_version=manifest.max_protocol_version,
        sdk_version=manifest.sdk_version,
    )
    return json_response(
        response,
        status,
        headers={"Location": f"deployments/{ids.restate_form(plan.deployment_id)}"},
    )


def _by_deployment(services: list[ServiceInfo]) -> dict[str, list[ServiceInfo]]:
    out: dict[str, list[ServiceInfo]] = {}
    for svc in services:
        out.setdefault(svc.deployment_id, []).append(svc)
    return out


async def list_deployments(request: Request, state: AdminState) -> Response:
    grouped = _by_deployment(await state.store.list_services())
    items = [
        deployment_response(
            d, grouped.get(str(d["id"]), []), detailed=False, retention_s=state.retention_s
        )
        for d in await state.store.list_deployments()
    ]
    return json_response(ListDeploymentsResponse(deployments=items))  # type: ignore[arg-type]


async def _deployment(state: AdminState, dep_id: str) -> dict[str, Any]:
    # Either ID form; one registered before Restate's form is stored under its earlier key.
    for key in ids.stored_forms(dep_id, "dp"):
        dep = await state.store.get_deployment(key)
        if dep is not None:
            return dep
    raise UnknownResourceError(f"the requested deployment {dep_id!r} does not exist")


async def get_deployment(request: Request, state: AdminState) -> Response:
    dep = await _deployment(state, request.path_params["deployment"])
    services = _by_deployment(await state.store.list_services()).get(str(dep["id"]), [])
    return json_response(
        deployment_response(dep, services, detailed=True, retention_s=state.retention_s)
    )


async def delete_deployment(request: Request, state: AdminState) -> Response:
    dep = await _deployment(state, request.path_params["deployment"])
    force = query_bool(request, "force") or False
    dep_id = str(dep["id"])
    services = _by_deployment(await state.store.list_services()).get(dep_id, [])
    names = {s.name for s in services}
    users = [s for s in await state.store.list_subscriptions() if s.service in names]
    if users and not force:
        listed = ", ".join(f"{ids.restate_form(s.id)} ({s.sink})" for s in users)
        raise ConflictError(
            f"deployment {dep_id} serves handlers that subscriptions use: {listed}; delete "
            "those subscriptions first, or pass force=true"
        )
    for svc in services:
        await state.store.delete_service(svc.name)
    await state.store.delete_deployment(dep_id)
    state.wake()
    log.info("deployment %s deleted (services: %s)", dep_id, ", ".join(sorted(names)) or "none")
    return Response(status_code=202)


async def _service(state: AdminState, name: str) -> ServiceInfo:
    check_name(name, "service")
    svc = await state.store.get_service(name)
    if svc is None:
        raise UnknownResourceError(f"the requested service {name!r} does not exist")
    return svc


async def list_services(request: Request, state: AdminState) -> Response:
    services = [
        service_response(s, retention_s=state.retention_s)
        for s in await state.store.list_services()
    ]
    return json_response(ListServicesResponse(services=services))


async def get_service(request: Request, state: AdminState) -> Response:
    svc = await _service(state, request.path_params["service"])
    return json_response(service_response(svc, retention_s=state.retention_s))


async def list_handlers(request: Request, state: AdminState) -> Response:
    svc = await _service(state, request.path_params["service"])
    return json_response(ListHandlersResponse(handlers=[handler_response(h) for h in svc.handlers]))


async def get_handler(request: Request, state: AdminState) -> Response:
    svc = await _service(state, request.path_params["service"])
    name = check_name(request.path_params["handler"], "handler")
    handler = svc.handler(name)
    if handler is None:
        raise UnknownResourceError(
            f"the requested handler {name!r} on service {svc.name!r} does not exist"
        )
    return json_response(handler_response(handler))


_DEP = "deployment"
_ERR = {400: None, 404: None}
_DETAILED = DetailedHttpDeploymentResponse | DetailedLambdaDeploymentResponse

ENDPOINTS = [
    Endpoint(
        "POST",
        "/deployments",
        register_deployment,
        "create_deployment",
        "Create deployment",
        _DEP,
        {201: RegisterDeploymentResponse, 200: RegisterDeploymentResponse, 400: None, 409: None},
        body=RegisterDeploymentRequest,
    ),
    Endpoint(
        "GET",
        "/deployments",
        list_deployments,
        "list_deployments",
        "List deployments",
        _DEP,
        {200: ListDeploymentsResponse},
    ),
    Endpoint(
        "GET",
        "/deployments/{deployment}",
        get_deployment,
        "get_deployment",
        "Get deployment",
        _DEP,
        {200: _DETAILED, **_ERR},
    ),
    Endpoint(
        "DELETE",
        "/deployments/{deployment}",
        delete_deployment,
        "delete_deployment",
        "Delete deployment",
        _DEP,
        {202: None, 409: None, **_ERR},
        query=(
            QueryParam(
                "force",
                {"type": "boolean"},
                "Delete even if subscriptions use its handlers (they stop working).",
            ),
        ),
    ),
    Endpoint(
        "GET",
        "/services",
        list_services,
        "list_services",
        "List services",
        "service",
        {200: ListServicesResponse},
    ),
    Endpoint(
        "GET",
        "/services/{service}",
        get_service,
        "get_service",
        "Get service",
        "service",
        {200: ServiceResponse, **_ERR},
    ),
    Endpoint(
        "GET",
        "/services/{service}/handlers",
        list_handlers,
        "list_service_handlers",
        "List service handlers",
        "service_handler",
        {200: ListHandlersResponse, **_ERR},
    ),
    Endpoint(
        "GET",
        "/services/{service}/handlers/{handler}",
        get_handler,
        "get_service_handler",
        "Get service handler",
        "service_handler",
        {200: HandlerResponse, **_ERR},
    ),
]
