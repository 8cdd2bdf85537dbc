"""``GET /invocations`` without a subscription filter: the newest invocations of every
subscription, rows and paged successes together, newest first.

Order: by creation time (the record's admission), newest first; ties by invocation ID,
descending. The cursor is the (creation time, ID) of the last entry listed, so each listing page
continues exactly after the previous one whatever was written meanwhile (newer invocations
appear on a fresh listing, not in the middle of a paged one).

Cost, per listing page (no scan of the ledger): one Scan of the subscriptions table (a few
items), then per subscription, concurrently, one Query of the ``by_time`` index for its rows and
one for its pages -- with a status filter, one Query of the sparse ``by_status`` index per
status instead of the rows' one (SUCCEEDED rows, which that index leaves out, are read from
``by_time`` with a filter), and no pages unless SUCCEEDED is asked for. Each Query reads at most
about ``limit`` items (a page item stands for many successes); then one BatchGetItem reads the
full rows of the entries listed. See ``adapter/store/ledger_index.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.errors import ValidationError
from adapter.model import LedgerEntry, Subscription
from adapter.store.dynamo import DynamoStore
from adapter.store.ledger_index import BY_STATUS, BY_TIME, page_entries
from adapter.store.pages import page_index_key

__all__ = ["RecentCursor", "decode_recent_token", "encode_recent_token", "list_recent"]

_SUCCEEDED = "SUCCEEDED"
_CONCURRENT_QUERIES = 16


@dataclass(frozen=True, slots=True)
class RecentCursor:
    """The last entry listed: everything older (or as old, with a lower ID) comes next."""

    created_ms: int
    id: str

    def admits(self, created_ms: int, inv_id: str) -> bool:
        return (created_ms, inv_id) < (self.created_ms, self.id)


def encode_recent_token(cursor: RecentCursor) -> str:
    doc = {"t": cursor.created_ms, "i": cursor.id, "s": ""}  # "s": no subscription filter
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_recent_token(token: str) -> RecentCursor:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        same = doc["s"] == ""
        created, inv_id = doc["t"], doc["i"]
        valid = type(created) is int and created >= 0 and isinstance(inv_id, str) and inv_id != ""
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        valid, same = False, True
    if not same:
        raise ValidationError("'page_token' belongs to a listing with another subscription filter")
    if not valid:
        raise ValidationError("query parameter 'page_token' is not a token this API returned")
    return RecentCursor(created, inv_id)


@dataclass(frozen=True, slots=True)
class _Stream:
    """One index key to read newest first: a subscription's rows (of one status) or pages."""

    subscription: Subscription
    index: str
    key: str
    pages: bool = False
    status: str | None = None


def _streams(subscriptions: Sequence[Subscription], statuses: Sequence[str]) -> list[_Stream]:
    out: list[_Stream] = []
    for sub in subscriptions:
        if not statuses or _SUCCEEDED in statuses:
            out.append(_Stream(sub, BY_TIME, page_index_key(sub.id), pages=True))
        if not statuses:
            out.append(_Stream(sub, BY_TIME, sub.id))
        for status in statuses:
            if status == _SUCCEEDED:
                out.append(_Stream(sub, BY_TIME, sub.id, status=_SUCCEEDED))
            else:
                out.append(_Stream(sub, BY_STATUS, f"{sub.id}|{status}"))
    return out


# A candidate for the listing: (created, ID, the paged entry or None for a row to read).
_Candidate = tuple[int, str, LedgerEntry | None]


def _weigher(stream: _Stream, cursor: RecentCursor | None) -> Callable[[dict[str, Any]], int]:
    def admitted(created: int, inv_id: str) -> bool:
        return cursor is None or cursor.admits(created, inv_id)

    if stream.pages:

        def weigh_page(item: dict[str, Any]) -> int:
            entries = page_entries(item, stream.subscription.id, stream.subscription.sink)
            return sum(1 for e in entries if admitted(e.created_at_ms, e.id))

        return weigh_page

    def weigh_row(item: dict[str, Any]) -> int:
        return 1 if admitted(int(item["created_at"]["N"]), item["id"]["S"]) else 0

    return weigh_row


async def _read(
    store: DynamoStore,
    stream: _Stream,
    cursor: RecentCursor | None,
    limit: int,
    gate: asyncio.Semaphore,
) -> tuple[list[_Candidate], bool]:
    async with gate:
        items, exhausted = await store.newest_items(
            index=stream.index,
            key=stream.key,
            before_ms=cursor.created_ms if cursor else None,
            weigh=_weigher(stream, cursor),
            limit=limit,
            status=stream.status,
        )
    found: list[_Candidate] = []
    for item in items:
        if stream.pages:
            sub = stream.subscription
            found += [
                (e.created_at_ms, e.id, e)
                for e in page_entries(item, sub.id, sub.sink)
                if cursor is None or cursor.admits(e.created_at_ms, e.id)
            ]
        else:
            found.append((int(item["created_at"]["N"]), item["id"]["S"], None))
    return found, exhausted


async def list_recent(
    store: DynamoStore,
    subscriptions: Sequence[Subscription],
    statuses: Sequence[str],
    limit: int,
    cursor: RecentCursor | None,
) -> tuple[list[LedgerEntry], RecentCursor | None]:
    """Up to ``limit`` entries after ``cursor``, newest first, and the next page's cursor."""
    gate = asyncio.Semaphore(_CONCURRENT_QUERIES)
    results = await asyncio.gather(
        *(_read(store, s, cursor, limit, gate) for s in _streams(subscriptions, statuses))
    )
    # A record with a row and a page (a revoked poller's late row): its row is listed.
    by_id: dict[str, _Candidate] = {}
    for found, _ in results:
        for candidate in found:
            if candidate[1] not in by_id or candidate[2] is None:
                by_id[candidate[1]] = candidate
    ordered = sorted(by_id.values(), key=lambda c: (c[0], c[1]), reverse=True)
    chosen = ordered[:limit]
    rows = await store.get_entries(c[1] for c in chosen if c[2] is None)
    entries: list[LedgerEntry] = []
    for _, inv_id, paged in chosen:
        entry = paged if paged is not None else rows.get(inv_id)
        if entry is not None:  # a row purged since the index was read is skipped
            entries.append(entry)
    more = len(ordered) > limit or not all(exhausted for _, exhausted in results)
    if not more or not chosen:
        return entries, None
    return entries, RecentCursor(chosen[-1][0], chosen[-1][1])
