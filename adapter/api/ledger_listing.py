"""A subscription's invocation listing from its two sources: ledger rows and success pages. Pure.

Rows come from the ledger index in (topic, partition, offset) order; first-attempt successes
recorded in pages come page by page (``DynamoStore.paged_successes``). One listing page merges
what both returned by (topic, partition, offset) and remembers where each source stopped, so
paging through the listing returns every entry once; a row and a page for the same record are
listed as one. The order is by partition and offset, except that successes of two pages whose
offset ranges overlap (concurrent batches of one partition) come page by page.

A filtered read of the rows may stop before it found a page's worth (its read budget,
``FIND_READ_PAGES``): successes that sort after where it stopped then wait for a later listing
page, behind the rows still to be read, and a listing page may hold fewer entries, even none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.engine.lifecycle import TERMINAL_STATUSES
from adapter.model import LedgerEntry
from adapter.store.dynamo import position

__all__ = ["ListingCursor", "merge_listing"]

_FINAL = frozenset(status.value for status in TERMINAL_STATUSES)


@dataclass(frozen=True, slots=True)
class ListingCursor:
    """Where each source of the listing continues."""

    rows: dict[str, Any] | None = None
    """The rows query's start key (None: from the beginning)."""
    rows_done: bool = False
    page: tuple[str, int] | None = None
    """(page position, offset) of the last paged success listed (None: from the beginning)."""
    pages_done: bool = False


def _order(entry: LedgerEntry) -> str:
    # The index's own order: positions compare as strings, so a topic keyed by name sorts
    # after the same topic keyed by name@ID ('@' before '|'), unlike a tuple of the parts.
    return position(entry.topic, entry.partition, entry.offset)


def merge_listing(
    rows: Sequence[LedgerEntry],
    rows_next: dict[str, Any] | None,
    paged: Sequence[tuple[LedgerEntry, str]],
    pages_more: bool,
    limit: int,
    cursor: ListingCursor,
    row_key: Callable[[LedgerEntry], dict[str, Any]],
    rows_reached: str | None = None,
) -> tuple[list[LedgerEntry], ListingCursor | None]:
    """Up to ``limit`` entries from what both sources returned after ``cursor``, and the cursor
    of the next listing page (None when both sources are exhausted).

    Each source must have returned ``limit`` entries unless it has no more, or, for the rows,
    unless they were read only up to ``rows_reached`` (an index position): then no
    entry is listed before one that sorts earlier and is still to come. The listing page may
    then hold fewer than ``limit`` entries, even none, with a cursor that moved on.
    """
    out: list[LedgerEntry] = []
    i = j = 0
    while len(out) < limit and (i < len(rows) or j < len(paged)):
        if i == len(rows) and rows_reached is not None and _order(paged[j][0]) > rows_reached:
            break  # rows after ``rows_reached`` are unread: some may sort before this one
        if i < len(rows) and j < len(paged) and _order(rows[i]) == _order(paged[j][0]):
            # A row beside a page for one record: a revoked poller's late progress row next to
            # its new owner's success. The final state is listed, once (as the engine reads it).
            row = rows[i]
            out.append(row if row.status in _FINAL else paged[j][0])
            i += 1
            j += 1
        elif j >= len(paged) or (i < len(rows) and _order(rows[i]) < _order(paged[j][0])):
            out.append(rows[i])
            i += 1
        else:
            out.append(paged[j][0])
            j += 1
    if i == len(rows):
        rows_cursor, rows_done = rows_next, rows_next is None
    else:
        rows_cursor, rows_done = (row_key(rows[i - 1]) if i else cursor.rows), False
    if j == len(paged):
        last = (paged[-1][1], paged[-1][0].offset) if paged else cursor.page
        page_cursor, pages_done = last, not pages_more
    else:
        page_cursor = (paged[j - 1][1], paged[j - 1][0].offset) if j else cursor.page
        pages_done = False
    if rows_done and pages_done:
        return out, None
    return out, ListingCursor(rows_cursor, rows_done, page_cursor, pages_done)
