"""Restate's invocation actions: cancel, kill, purge and retry (``resume``), from any poller.

Actions follow :mod:`adapter.engine.lifecycle` (Restate's rules): cancel and kill while not
completed, purge once completed, retry while backing off; anything else is 409.

Cancel, kill and retry act on the consumer that holds the invocation: the poller whose admin
API receives the request acts at once if one of its runners holds it, and otherwise queues a
command for the poller that does (202; :mod:`adapter.store.commands`,
:mod:`adapter.engine.commands`). A killed or cancelled invocation is recorded through the
engine's normal path, so its offset is committed and the next record of its key starts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapter.api.bodies import ActionResponse, CommandResponse
from adapter.api.endpoint import AdminState, Endpoint, QueryParam, json_response
from adapter.api.invocations import paged_success
from adapter.api.refs import check_invocation_id
from adapter.api.wire import rfc3339
from adapter.engine.commands import carry_out
from adapter.engine.lifecycle import (
    TERMINAL_STATUSES,
    AdminAction,
    InvocationStatus,
    check_admin,
)
from adapter.errors import (
    ConditionFailedError,
    ConflictError,
    UnknownResourceError,
    ValidationError,
)
from adapter.ids import parse_invocation_id
from adapter.store.commands import Command

__all__ = ["ENDPOINTS"]

log = logging.getLogger(__name__)

_STATUSES = {s.value: s for s in InvocationStatus}


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: InvocationStatus | None  # after the action (None once purged, or while queued)
    queued: Command | None = None  # for the poller that holds the invocation


async def _act(state: AdminState, inv_id: str, action: AdminAction) -> _Outcome:
    entry = await state.store.get_entry(inv_id)
    runners = state.supervisor.runners() if state.supervisor is not None else {}
    if entry is None:
        # Not recorded yet: an invocation on its first attempt, if one of our runners has it.
        for runner in runners.values():
            status = await carry_out(runner, inv_id, action)
            if status is not None:
                return _Outcome(status)
        return await _act_unrecorded(state, inv_id, action)
    status = _STATUSES.get(entry.status)
    if status is None:
        raise ConflictError(f"invocation {inv_id} has an unknown status {entry.status!r}")
    check_admin(status, action)
    if action is AdminAction.PURGE:
        try:
            if not await state.store.delete_entry_if(inv_id, [s.value for s in TERMINAL_STATUSES]):
                raise UnknownResourceError(f"the invocation {inv_id} does not exist")
        except ConditionFailedError:
            raise ConflictError(f"invocation {inv_id} changed meanwhile; try again") from None
        return _Outcome(None)
    owner = runners.get(entry.subscription_id)
    done = await carry_out(owner, inv_id, action) if owner is not None else None
    if done is not None:
        return _Outcome(done)
    return await _queue(state, inv_id, entry.subscription_id, action)


async def _act_unrecorded(state: AdminState, inv_id: str, action: AdminAction) -> _Outcome:
    """An ID without a row: a paged success (final), or an invocation on its first attempt
    on another poller -- which the ID's topic reference names the subscription of."""
    resolved = None
    with contextlib.suppress(ValidationError):
        resolved = await state.store.resolve_topic_ref(parse_invocation_id(inv_id).topic_ref)
    if resolved is None or action is AdminAction.PURGE:
        raise UnknownResourceError(
            f"the invocation {inv_id} has no ledger row here (a first-attempt success recorded "
            "in a success page has none to act on; an unknown ID has none either)"
        )
    if await paged_success(state, inv_id) is not None:
        check_admin(InvocationStatus.SUCCEEDED, action)  # 409: completed
    return await _queue(state, inv_id, resolved[0], action)


async def _queue(
    state: AdminState, inv_id: str, subscription_id: str, action: AdminAction
) -> _Outcome:
    requested = Command(inv_id, subscription_id, action.value, int(time.time() * 1000))
    pending = await state.store.put_command(requested)
    if pending.action != requested.action:
        raise ConflictError(
            f"invocation {inv_id} has a {pending.action} command pending since "
            f"{rfc3339(pending.requested_at_ms)}; wait for GET /invocations/{inv_id}/command"
        )
    return _Outcome(None, pending)


def _command_response(command: Command) -> CommandResponse:
    return CommandResponse(
        action=_ACTION_NAMES[command.action],  # type: ignore[arg-type]
        state=command.state,  # type: ignore[arg-type]
        outcome=command.outcome,
        requested_at=rfc3339(command.requested_at_ms) or "",
        done_at=rfc3339(command.done_at_ms),
    )


def _action_route(action: AdminAction, name: str) -> Any:
    async def route(request: Request, state: AdminState) -> Response:
        inv_id = check_invocation_id(request.path_params["invocation_id"])
        outcome = await _act(state, inv_id, action)
        if outcome.queued is None:
            log.info("invocation %s: %s by an operator", inv_id, action.value)
        body = ActionResponse(
            id=inv_id,
            action=name,  # type: ignore[arg-type]
            status=outcome.status.value if outcome.status is not None else None,
            command=_command_response(outcome.queued) if outcome.queued else None,
        )
        return json_response(body, status=202 if outcome.queued else 200)

    return route


async def get_command(request: Request, state: AdminState) -> Response:
    inv_id = check_invocation_id(request.path_params["invocation_id"])
    command = await state.store.get_command(inv_id)
    if command is None:
        raise UnknownResourceError(f"no command was queued for invocation {inv_id} (or expired)")
    return json_response(_command_response(command))


async def terminate_invocation(request: Request, state: AdminState) -> Response:
    """Restate's older ``DELETE /invocations/{id}?mode=cancel|kill|purge``."""
    inv_id = check_invocation_id(request.path_params["invocation_id"])
    mode = (request.query_params.get("mode") or "cancel").lower()
    actions = {"cancel": AdminAction.CANCEL, "kill": AdminAction.KILL, "purge": AdminAction.PURGE}
    if mode not in actions:
        raise ValidationError("query parameter 'mode' must be cancel, kill or purge")
    await _act(state, inv_id, actions[mode])
    return Response(status_code=202)


_INV = "invocation"
_ERRS = {400: None, 404: None, 409: None}
_ACTION_NAMES = {"cancel": "cancel", "kill": "kill", "retry-now": "retry"}


def _action_endpoint(path: str, action: AdminAction, name: str, summary: str) -> Endpoint:
    return Endpoint(
        "PATCH",
        f"/invocations/{{invocation_id}}/{path}",
        _action_route(action, name),
        f"{path.replace('-', '_')}_invocation",
        summary,
        _INV,
        {200: ActionResponse, 202: ActionResponse, **_ERRS},
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/invocations/{invocation_id}/command",
        get_command,
        "get_invocation_command",
        "The last admin command queued for an invocation (after a 202)",
        _INV,
        {200: CommandResponse, 400: None, 404: None},
    ),
    Endpoint(
        "DELETE",
        "/invocations/{invocation_id}",
        terminate_invocation,
        "terminate_invocation",
        "Terminate an invocation (Restate's older form of cancel/kill/purge)",
        _INV,
        {202: None, **_ERRS},
        query=(
            QueryParam(
                "mode",
                {"type": "string", "enum": ["cancel", "kill", "purge"]},
                "cancel (default), kill or purge.",
            ),
        ),
    ),
    _action_endpoint("cancel", AdminAction.CANCEL, "cancel", "Cancel an invocation"),
    _action_endpoint("kill", AdminAction.KILL, "kill", "Kill an invocation"),
    _action_endpoint("purge", AdminAction.PURGE, "purge", "Purge a completed invocation"),
    _action_endpoint("retry", AdminAction.RETRY_NOW, "retry", "Retry a backing-off invocation now"),
    _action_endpoint(
        "resume",
        AdminAction.RETRY_NOW,
        "retry",
        "Resume a backing-off invocation now (Restate's name for retry)",
    ),
]
