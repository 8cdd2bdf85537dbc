"""``/invocations``: the ledger, filtered and paged, and Restate's invocation actions.

An invocation's row is written when it first backs off and when it finishes; one that is on
its first attempt is only known to the poller running it, and one that succeeds at its first
attempt is recorded in a success page, without a row, unless ``[ledger] successes = "rows"``;
a subscription's listing merges those in (:mod:`adapter.api.ledger_listing`).
Actions follow :mod:`adapter.engine.lifecycle` (Restate's rules): cancel and kill while not
completed, purge once completed, retry (``resume`` in Restate) while backing off; anything else
is 409.

Cancel, kill and retry act on the consumer that holds the invocation: the poller whose admin
API receives the request acts at once if one of its runners holds it, and otherwise queues a
command for the poller that does (202; :mod:`adapter.store.commands`,
:mod:`adapter.engine.commands`). A killed or cancelled invocation is recorded through the
engine's normal path, so its offset is committed and the next record of its key starts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapter.api.bodies import (
    ActionResponse,
    CommandResponse,
    InvocationResponse,
    ListInvocationsResponse,
)
from adapter.api.endpoint import AdminState, Endpoint, QueryParam, json_response, query_int
from adapter.api.ledger_listing import ListingCursor, merge_listing
from adapter.api.recent_listing import decode_recent_token, encode_recent_token, list_recent
from adapter.api.refs import check_invocation_id, parse_sink
from adapter.api.subscriptions import find_subscription
from adapter.api.wire import invocation_response, rfc3339
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
from adapter.ids import invocation_id, parse_invocation_id
from adapter.model import LedgerEntry
from adapter.store.commands import Command
from adapter.store.dynamo import entry_start_key

__all__ = [
    "ENDPOINTS",
    "decode_listing_token",
    "decode_page_token",
    "encode_listing_token",
    "encode_page_token",
]

log = logging.getLogger(__name__)

_STATUSES = {s.value: s for s in InvocationStatus}
# Index positions as the store writes them (Kafka topic names never hold "|").
_ROW_POSITION = re.compile(r"[^|]{1,249}\|[0-9]{6}\|[0-9]{20}")
_PAGE_POSITION = re.compile(r"[^|]{1,249}\|[0-9]{6}\|[0-9]{20}\|[0-9]{20}")


def encode_page_token(key: dict[str, Any], subscription: str | None) -> str:
    raw = json.dumps({"k": key, "s": subscription or ""}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, subscription: str | None) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        key = doc["k"]
        same = doc["s"] == (subscription or "")
        valid = _is_key(key, subscription)
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        valid, same, key = False, True, None
    if not same:
        raise ValidationError("'page_token' belongs to a listing with another subscription filter")
    if not valid:
        raise ValidationError("query parameter 'page_token' is not a token this API returned")
    return key  # type: ignore[no-any-return]


def encode_listing_token(cursor: ListingCursor, subscription: str) -> str:
    doc = {
        "k": cursor.rows,
        "rd": cursor.rows_done,
        "g": list(cursor.page) if cursor.page else None,
        "gd": cursor.pages_done,
        "s": subscription,
    }
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_listing_token(token: str, subscription: str) -> ListingCursor:
    same = True
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        same = doc["s"] == subscription
        rows, page = doc["k"], doc.get("g")
        valid = (
            (rows is None or _is_key(rows, subscription))
            and (
                page is None
                or (
                    isinstance(page, list)
                    and len(page) == 2
                    and isinstance(page[0], str)
                    and _PAGE_POSITION.fullmatch(page[0]) is not None
                    and type(page[1]) is int
                    and page[1] >= 0
                )
            )
            and isinstance(doc.get("rd"), bool)
            and isinstance(doc.get("gd"), bool)
        )
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        valid = False  # and ``same`` as far as it was read
    if not same:
        raise ValidationError("'page_token' belongs to a listing with another subscription filter")
    if not valid:
        raise ValidationError("query parameter 'page_token' is not a token this API returned")
    return ListingCursor(rows, doc["rd"], (page[0], page[1]) if page else None, doc["gd"])


def _is_key(value: Any, subscription: str | None) -> bool:
    """A start key this API hands out: a row's ID, plus its index key when listing by
    subscription (anything else would reach DynamoDB and fail there, as a 503)."""
    names = {"id", "subscription_id", "position"} if subscription else {"id"}
    return (
        isinstance(value, dict)
        and set(value) == names
        and all(
            isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) and v["S"]
            for v in value.values()
        )
        and (not subscription or value["subscription_id"]["S"] == subscription)
        and (not subscription or _ROW_POSITION.fullmatch(value["position"]["S"]) is not None)
    )


def _statuses(raw: str | None) -> list[str]:
    if not raw:
        return []
    out = []
    for part in raw.split(","):
        name = part.strip().upper().replace("-", "_")
        if name not in _STATUSES:
            raise ValidationError(
                f"unknown status {part.strip()[:40]!r}; one of {', '.join(_STATUSES)}"
            )
        out.append(name)
    return out


def _handler_target(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = raw if raw.startswith("service://") else f"service://{raw}"
    sink = parse_sink(text)
    return f"service://{sink.service}/{sink.handler}"


async def list_invocations(request: Request, state: AdminState) -> Response:
    params = request.query_params
    subscription = params.get("subscription")
    if subscription is not None:
        # Ledger rows carry the subscription's stored key, which may be the earlier ID form.
        found = await find_subscription(state, subscription)
        subscription = found.id if found is not None else subscription
    statuses = _statuses(params.get("status"))
    key = params.get("key")
    target = _handler_target(params.get("handler"))
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    token = params.get("page_token")
    if subscription is not None and key is None and target is None and _lists_successes(statuses):
        return await _list_with_pages(state, subscription, statuses, limit, token)
    if subscription is None and key is None:
        return await _list_newest(state, statuses, target, limit, token)
    start = decode_page_token(token, subscription) if token else None
    entries, last = await state.store.find_entries(
        subscription_id=subscription,
        statuses=statuses,
        key=key,
        target=target,
        limit=limit,
        start_key=start,
    )
    return json_response(
        ListInvocationsResponse(
            invocations=[invocation_response(e) for e in entries],
            next_page_token=encode_page_token(last, subscription) if last else None,
        )
    )


async def _list_newest(
    state: AdminState, statuses: list[str], target: str | None, limit: int, token: str | None
) -> Response:
    """Every subscription's invocations, newest first (:mod:`adapter.api.recent_listing`)."""
    cursor = decode_recent_token(token) if token else None
    subscriptions = [
        s for s in await state.store.list_subscriptions() if target is None or s.sink == target
    ]
    entries, next_cursor = await list_recent(state.store, subscriptions, statuses, limit, cursor)
    return json_response(
        ListInvocationsResponse(
            invocations=[invocation_response(e) for e in entries],
            next_page_token=encode_recent_token(next_cursor) if next_cursor else None,
        )
    )


def _lists_successes(statuses: list[str]) -> bool:
    return not statuses or InvocationStatus.SUCCEEDED.value in statuses


async def _list_with_pages(
    state: AdminState, subscription: str, statuses: list[str], limit: int, token: str | None
) -> Response:
    """A subscription's listing with its paged successes (``[ledger] successes = "pages"``)
    merged in. Pages keep no key or handler, so listings filtered by those show rows only."""
    cursor = decode_listing_token(token, subscription) if token else ListingCursor()
    rows: list[LedgerEntry] = []
    rows_next = None
    if not cursor.rows_done:
        rows, rows_next = await state.store.find_entries(
            subscription_id=subscription, statuses=statuses, limit=limit, start_key=cursor.rows
        )
    paged: list[tuple[LedgerEntry, str]] = []
    more = False
    if not cursor.pages_done:
        sub = await state.store.get_subscription(subscription)
        paged, more = await state.store.paged_successes(
            subscription, target=sub.sink if sub else "", after=cursor.page, limit=limit
        )
    entries, next_cursor = merge_listing(
        rows, rows_next, paged, more, limit, cursor, entry_start_key
    )
    return json_response(
        ListInvocationsResponse(
            invocations=[invocation_response(e) for e in entries],
            next_page_token=(
                encode_listing_token(next_cursor, subscription) if next_cursor else None
            ),
        )
    )


async def get_invocation(request: Request, state: AdminState) -> Response:
    inv_id = check_invocation_id(request.path_params["invocation_id"])
    entry = await state.store.get_entry(inv_id) or await _paged_success(state, inv_id)
    if entry is None:
        raise UnknownResourceError(
            f"invocation {inv_id} is not in the ledger: unknown, expired, or on its first "
            "attempt (recorded when it backs off or finishes)"
        )
    return json_response(invocation_response(entry))


async def _paged_success(state: AdminState, inv_id: str) -> LedgerEntry | None:
    """The success page entry an ID names: the ID carries its topic reference, partition and
    offset; the reference resolves to the subscription and topic (recorded when a poller is
    first assigned a partition of it). IDs of the earlier form name rows only."""
    try:
        coords = parse_invocation_id(inv_id)
    except ValidationError:
        return None
    resolved = await state.store.resolve_topic_ref(coords.topic_ref)
    if resolved is None:
        return None
    sub_id, topic = resolved
    if invocation_id(sub_id, topic, coords.partition, coords.offset) != inv_id:
        return None  # a digest collision: the ID is not this subscription's
    sub = await state.store.get_subscription(sub_id)
    return await state.store.paged_success(
        sub_id, topic, coords.partition, coords.offset, target=sub.sink if sub else ""
    )


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
    if await _paged_success(state, inv_id) is not None:
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
        "/invocations",
        list_invocations,
        "list_invocations",
        "List invocations (filtered, paged)",
        _INV,
        {200: ListInvocationsResponse, 400: None},
        query=(
            QueryParam("subscription", {"type": "string"}, "Only this subscription's."),
            QueryParam(
                "status",
                {"type": "string"},
                f"Comma-separated statuses: {', '.join(_STATUSES)}.",
            ),
            QueryParam("key", {"type": "string"}, "Only records with this key."),
            QueryParam("handler", {"type": "string"}, "Only this handler, as Service/handler."),
            QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size."),
            QueryParam("page_token", {"type": "string"}, "next_page_token of the last page."),
        ),
    ),
    Endpoint(
        "GET",
        "/invocations/{invocation_id}",
        get_invocation,
        "get_invocation",
        "Get invocation",
        _INV,
        {200: InvocationResponse, 400: None, 404: None},
    ),
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
