"""The admin API application: routes from every module's endpoint table, one error shape.

Layers, outside in: version prefixes and the bearer token (:mod:`adapter.api.middleware`),
request limits (:mod:`adapter.api.limits`; the size of the headers is bounded earlier, by the
server's protocol), gzip (only when the client asks for it), the router. Every handler runs
inside one wrapper that turns :class:`~adapter.errors.IngressError` into its status and
anything unexpected into a 500 with a generic message (details go to the log, never to the
caller).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.api import (
    apply,
    clusters,
    deployments,
    group_lag,
    invocation_actions,
    invocations,
    record_preview,
    subscriptions,
    system,
)
from adapter.api.endpoint import AdminState, Endpoint
from adapter.api.errors import error_response, status_for
from adapter.api.limits import RequestLimitMiddleware, RequestLimits
from adapter.api.middleware import AdminMiddleware
from adapter.api.openapi import build_openapi
from adapter.api.ui import load_assets, ui_routes
from adapter.errors import IngressError

__all__ = ["all_endpoints", "create_app"]

log = logging.getLogger(__name__)


def all_endpoints() -> list[Endpoint]:
    return [
        *system.ENDPOINTS,
        *subscriptions.ENDPOINTS,
        *group_lag.ENDPOINTS,
        *deployments.ENDPOINTS,
        *invocations.ENDPOINTS,
        *invocation_actions.ENDPOINTS,
        *record_preview.ENDPOINTS,
        *clusters.ENDPOINTS,
        *apply.ENDPOINTS,
    ]


def _wrap(endpoint: Endpoint, state: AdminState):  # type: ignore[no-untyped-def]
    async def run(request: Request) -> Response:
        try:
            return await endpoint.handler(request, state)
        except IngressError as exc:
            status = status_for(exc)
            if status >= 500:
                log.warning("%s %s failed: %s", request.method, request.url.path, exc)
            headers = getattr(exc, "headers", None)
            return error_response(status, str(exc), headers=headers)
        except Exception:
            log.exception("%s %s: internal error", request.method, request.url.path)
            return error_response(500, "internal error; the poller's log has the details")

    return run


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no route {request.url.path!r}", 405: "method not allowed on this route"}
    message = messages.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, message, headers=dict(exc.headers or {}))


def create_app(state: AdminState, *, extra_public: Iterable[str] = ()) -> Starlette:
    endpoints = all_endpoints()
    spec = build_openapi(endpoints, version=state.version)
    spec["paths"]["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document (also at /openapi)",
            "tags": ["openapi"],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    routes = [Route(e.path, _wrap(e, state), methods=[e.method]) for e in endpoints]
    routes += [Route(p, openapi, methods=["GET"]) for p in ("/openapi.json", "/openapi")]
    # The dashboard's static files are public; the data it shows comes from the routes above.
    assets = load_assets()
    routes += ui_routes(assets)
    public = frozenset(
        {e.path for e in endpoints if e.public} | set(extra_public) | set(assets.public_paths())
    )
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        middleware=[
            Middleware(AdminMiddleware, token=state.settings.admin.token, public_paths=public),
            # Before any route reads it (and after the token: no body is read for strangers).
            Middleware(
                RequestLimitMiddleware, limits=RequestLimits.from_settings(state.settings.admin)
            ),
            Middleware(GZipMiddleware, minimum_size=1024),
        ],
    )
