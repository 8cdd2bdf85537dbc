"""Health, readiness, version and metrics.

``/health`` is liveness: 200 while the process serves requests. ``/health/ready`` is 200 only
when DynamoDB and the brokers of every known Kafka cluster answer (OAUTHBEARER clusters: with a
token the broker accepts), 503 otherwise. Both are served without the bearer token (probes
carry none); without it the readiness answer is the status alone, since the checks name
clusters, brokers and configuration problems; with it, one line per check. Probes share one
check at a time and its result for a second (:mod:`adapter.api.probe_cache`), so a burst of
them reaches DynamoDB and the brokers once. ``/version`` has
Restate's shape, so Restate's CLI accepts the server.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from adapter.api.bodies import HealthResponse, ReadinessResponse, VersionResponse
from adapter.api.endpoint import AdminState, Endpoint, json_response
from adapter.api.middleware import ADMIN_AUTHENTICATED
from adapter.errors import StoreError

__all__ = ["ENDPOINTS", "MAX_ADMIN_API_VERSION", "MIN_ADMIN_API_VERSION"]

MIN_ADMIN_API_VERSION = 2
MAX_ADMIN_API_VERSION = 4


async def health(request: Request, state: AdminState) -> Response:
    return json_response(HealthResponse())


async def ready(request: Request, state: AdminState) -> Response:
    checks = await state.readiness.get(lambda: _checks(state))
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if not request.scope.get("state", {}).get(ADMIN_AUTHENTICATED, False):
        status: Literal["ready", "not ready"] = "not ready" if failing else "ready"
        return json_response({"status": status}, 503 if failing else 200)
    if failing:
        body = ReadinessResponse(
            status="not ready", message=f"not ready: {', '.join(failing)}", checks=checks
        )
        return json_response(body, 503)
    return json_response(ReadinessResponse(status="ready", checks=checks))


async def _checks(state: AdminState) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await state.store.ping()
        checks["dynamodb"] = "ok"
    except StoreError as exc:
        checks["dynamodb"] = f"unreachable: {exc}"
    if state.supervisor is None:
        # A poller's catalog follows the change feed; an admin API alone reads the clusters.
        with contextlib.suppress(StoreError):  # already reported as the DynamoDB check
            await state.catalog.refresh()
    if state.check_kafka is not None:
        for name, result in (await state.check_kafka(state.catalog)).items():
            checks[f"kafka:{name}"] = result
    return checks


async def version(request: Request, state: AdminState) -> Response:
    return json_response(
        VersionResponse(
            version=state.version,
            min_admin_api_version=MIN_ADMIN_API_VERSION,
            max_admin_api_version=MAX_ADMIN_API_VERSION,
        )
    )


async def metrics(request: Request, state: AdminState) -> Response:
    # Prometheus text, or OpenMetrics when the scraper asks for it.
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(state.registry), headers={"content-type": content_type})


ENDPOINTS = [
    Endpoint(
        "GET", "/health", health, "health", "Liveness", "health", {200: HealthResponse}, public=True
    ),
    Endpoint(
        "GET",
        "/health/ready",
        ready,
        "readiness",
        "Readiness: DynamoDB and every Kafka cluster reachable",
        "health",
        {200: ReadinessResponse, 503: ReadinessResponse},
        public=True,
    ),
    Endpoint("GET", "/version", version, "version", "Version", "version", {200: VersionResponse}),
    Endpoint("GET", "/metrics", metrics, "metrics", "Prometheus metrics", "metrics", {200: str}),
]
