"""``/invocations``: the ledger, filtered and paged, and invocations by ID.

An invocation's row is written when it first backs off and when it finishes; one that is on
its first attempt is only known to the poller running it, and one that succeeds at its first
attempt is recorded in a success page, without a row, unless ``[ledger] successes = "rows"``;
a subscription's listing merges those in (:mod:`adapter.api.ledger_listing`), the listing
without a subscription too (:mod:`adapter.api.recent_listing`), and so does the lookup by ID.
A filtered read of rows is bounded per request (``FIND_READ_PAGES`` DynamoDB pages): a listing
page may then hold fewer than ``limit`` entries, even none, with a ``next_page_token``.
Actions on invocations are in :mod:`adapter.api.invocation_actions`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapter.api.bodies import InvocationResponse, ListInvocationsResponse
from adapter.api.endpoint import AdminState, Endpoint, QueryParam, json_response, query_int
from adapter.api.ledger_listing import ListingCursor, merge_listing
from adapter.api.recent_listing import decode_recent_token, encode_recent_token, list_recent
from adapter.api.refs import check_invocation_id, parse_sink
from adapter.api.subscriptions import find_subscription
from adapter.api.wire import invocation_response
from adapter.engine.lifecycle import InvocationStatus
from adapter.errors import UnknownResourceError, ValidationError
from adapter.ids import invocation_id, parse_invocation_id
from adapter.model import LedgerEntry
from adapter.store.dynamo import entry_start_key

__all__ = [
    "ENDPOINTS",
    "decode_listing_token",
    "decode_page_token",
    "encode_listing_token",
    "encode_page_token",
    "paged_success",
]

_STATUSES = {s.value: s for s in InvocationStatus}
# Index positions as the store writes them: the topic key (a Kafka topic name, at most 249
# characters and never holding "|", "@" and its 22-character topic ID), partition, offset(s).
_TOPIC_KEY = r"[^|]{1,272}"
_ROW_POSITION = re.compile(_TOPIC_KEY + r"\|[0-9]{6}\|[0-9]{20}")
_PAGE_POSITION = re.compile(_TOPIC_KEY + r"\|[0-9]{6}\|[0-9]{20}\|[0-9]{20}")


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
    # Rows short of ``limit`` with more to come: the read stopped at its budget, there.
    reached = rows_next["position"]["S"] if rows_next and len(rows) < limit else None
    entries, next_cursor = merge_listing(
        rows, rows_next, paged, more, limit, cursor, entry_start_key, reached
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
    entry = await state.store.get_entry(inv_id) or await paged_success(state, inv_id)
    if entry is None:
        raise UnknownResourceError(
            f"invocation {inv_id} is not in the ledger: unknown, expired, or on its first "
            "attempt (recorded when it backs off or finishes)"
        )
    return json_response(invocation_response(entry))


async def paged_success(state: AdminState, inv_id: str) -> LedgerEntry | None:
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


_INV = "invocation"


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
            QueryParam(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                "Page size: at most this many. A page may hold fewer, even none, while "
                "next_page_token is present (a filtered read is bounded per request).",
            ),
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
]
