"""``POST /apply``: make Kafka clusters, deployments and subscriptions match a document.

The document and how it is compared with what exists are :mod:`adapter.api.plan`'s. This
module gathers what exists (the store, the cluster catalog), asks for the plan and runs it::

    {"document": {...}, "dry_run": false, "prune": false, "force": false, "plan": null}

- Problems in the document or the plan's references (an unknown cluster …): 400 with the plan.
- ``dry_run``: answer the plan (refused actions marked), change nothing (200).
- Changes that would lose a consumer group's position, without ``force``: 409 with the plan.
- ``plan``: the fingerprint of a plan shown earlier (``kafka-ingress apply`` shows the plan,
  then applies that one): 409 if what would be done has changed since.

Each action runs as the admin API calls it stands for, through this same application in
process: the same validation, conflicts, log lines and poller wake-ups as when made one by
one. The first failing call stops the run; the answer has its status (4xx as the call's), its
message, and the actions done before it. Secrets travel only inside the in-process calls; the
answer describes actions without them.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from adapter.api.bodies import ApplyRequest, ApplyResponse, ErrorResponse
from adapter.api.endpoint import AdminState, Endpoint, json_response, read_body
from adapter.api.plan import ActualCluster, Plan, parse_document, plan
from adapter.model import Deployment
from adapter.store.function_sinks import is_function_sink_deployment

__all__ = ["ENDPOINTS"]

log = logging.getLogger(__name__)

# Generous: a deployment registration discovers the handler's services over the network.
_CALL_TIMEOUT_S = 120.0


async def _current_plan(state: AdminState, body: ApplyRequest) -> Plan:
    document = parse_document(body.document, source="document")
    await state.catalog.refresh()
    clusters = [ActualCluster(e.name, e.properties, e.static) for e in state.catalog.entries()]
    deployments = [
        Deployment(
            id=str(d["id"]),
            uri=d.get("uri"),
            arn=d.get("arn"),
            additional_headers=dict(d.get("additional_headers") or {}),
        )
        for d in await state.store.list_deployments()
        # A lambda:// sink's implicit deployment belongs to its subscriptions, not the document.
        if not is_function_sink_deployment(d)
    ]
    return plan(
        document,
        clusters=clusters,
        deployments=deployments,
        subscriptions=await state.store.list_subscriptions(),
        prune=body.prune,
        force=body.force,
    )


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500] or response.reason_phrase


async def apply_document(request: Request, state: AdminState) -> Response:
    body = await read_body(request, ApplyRequest)
    the_plan = await _current_plan(state, body)
    shown: dict[str, Any] = {**the_plan.describe(), "dry_run": body.dry_run, "applied": []}
    if the_plan.errors:
        return json_response({"message": "; ".join(the_plan.errors), **shown}, 400)
    if body.plan is not None and body.plan != the_plan.fingerprint:
        message = (
            f"what exists changed since the plan {body.plan} was shown (it is now "
            f"{the_plan.fingerprint}); look at the new plan and apply again"
        )
        return json_response({"message": message, **shown}, 409)
    if body.dry_run or not the_plan.actions:
        return json_response(shown)
    if the_plan.refusals and not body.force:
        names = ", ".join(f"{a.kind} {a.name}" for a in the_plan.refusals)
        message = f"refused without force (a consumer group would lose its position): {names}"
        return json_response({"message": message, **shown}, 409)

    token = state.settings.admin.token
    headers = {"authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=request.app)
    applied: list[dict[str, Any]] = shown["applied"]
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://admin.internal",
        headers=headers,
        timeout=_CALL_TIMEOUT_S,
    ) as client:
        for action in the_plan.actions:
            created = ""
            for call in action.calls:
                path = call.path.replace("{created}", created)
                response = await client.request(
                    call.method, path, json=call.body, params=dict(call.params)
                )
                if response.status_code >= 400:
                    message = f"{action.verb} {action.kind} {action.name}: {_message(response)}"
                    log.warning("apply stopped: %s", message)
                    failed = {"message": message, **shown, "failed": action.describe()}
                    return json_response(failed, response.status_code)
                if call.method == "POST" and path == "/subscriptions":
                    created = str(response.json()["id"])
            applied.append(action.describe())
            log.info("apply: %s %s %s", action.verb, action.kind, action.name)
    return json_response(shown)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/apply",
        apply_document,
        "apply",
        "Make clusters, deployments and subscriptions match a document",
        "apply",
        {
            200: ApplyResponse,
            400: ApplyResponse | ErrorResponse,
            409: ApplyResponse | ErrorResponse,
        },
        body=ApplyRequest,
    ),
]
