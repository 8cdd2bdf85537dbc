"""Success pages: the first-attempt successes of one partition, many to a ledger item. Pure.

With ``[ledger] successes = "pages"`` the poller does not write one ledger row per successful
invocation. Each batch of results writes the plain successes -- status SUCCEEDED at the first
attempt, no error -- of each partition as a few *page* items that list their offsets; every
other result (failures, dead letters, retries, duplicates, progress) still gets its own row.
A DynamoDB write then carries tens to hundreds of results instead of one, which is what a
ledger at thousands of records per second costs in write units.

What a page keeps is what the engine's guarantee needs: which offsets of a partition finished.
A redelivered record whose offset is in a page is never invoked again, exactly as with a row.
What it gives up is the per-invocation view: a paged success has no row to find under
``GET /invocations/{id}`` and no key; a subscription's listing merges pages in
(:mod:`adapter.api.ledger_listing`).

A plain success has no row to replace: progress rows are only written after a failed attempt,
and then the final attempt number is above 1. When a previous owner of the partition left a row
(it backed off, then the partition moved), the success replaces that row instead
(``LedgerEntry.replaces_row``).

Pages are found through the ``by_subscription`` index, which DynamoDB updates asynchronously
(typically well within a second), while rows are read with strongly consistent reads. The
ledger fence that decides which redelivered records are checked at all reads the same index in
both modes -- unless the previous owner let the partition go gracefully and left its fence in
its last offset commit (``adapter.kafka.commit_marks``), which needs no read. The same commit
says which records above it that owner finished, so the pages it wrote just before are never
looked for; records above what it handed over as decided are looked up in pages only once the
index lag has passed since the assignment (``PartitionState.pages_visible_at``). So a poller that
takes over a partition within that lag after a crash -- the previous owner recorded successes
but its offset commit did not happen -- may invoke those records once more: delivery stays
at-least-once; the never-again guarantee has that lag as its window after a crash.

Pages live in the invocations table next to the rows, under their own partition of the
``by_subscription`` index (``<subscription id>/pages``), so listing a subscription's rows never
reads them, and finding the pages that cover an offset range reads nothing else. A page's
``position`` is ``topic|partition|last|first``: it sorts by its last offset, and a page never
spans more than :data:`MAX_SPAN` offsets, so the pages covering offsets ``lo..hi`` are exactly
those whose last offset lies in ``lo..hi + MAX_SPAN`` and whose first offset is at most ``hi``.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from adapter.model import LedgerEntry

__all__ = [
    "MAX_OFFSETS",
    "MAX_SPAN",
    "PAGE_ID_PREFIX",
    "Page",
    "build_pages",
    "is_pageable",
    "page_id",
    "page_index_key",
    "page_position",
    "parse_page_position",
    "range_bounds",
]

PAGE_ID_PREFIX = "pg_"
MAX_SPAN = 100_000
MAX_OFFSETS = 2_000  # ~25 KB of offsets: far below DynamoDB's 400 KB item limit
_PAGES_SUFFIX = "/pages"
_SUCCEEDED = "SUCCEEDED"


@dataclass(frozen=True, slots=True)
class Page:
    """Offsets of one partition that finished with a first-attempt success."""

    subscription_id: str
    topic: str
    partition: int
    offsets: tuple[int, ...]  # ascending, distinct
    created_at_ms: int  # earliest admission among them
    completed_at_ms: int  # latest completion among them

    @property
    def first(self) -> int:
        return self.offsets[0]

    @property
    def last(self) -> int:
        return self.offsets[-1]


def is_pageable(entry: LedgerEntry) -> bool:
    return (
        entry.status == _SUCCEEDED
        and entry.attempts == 1
        and entry.last_error is None
        and not entry.replaces_row
    )


def build_pages(entries: Iterable[LedgerEntry]) -> list[Page]:
    """Pages for ``entries`` (all pageable): per partition, split where a page would span more
    than :data:`MAX_SPAN` offsets or hold more than :data:`MAX_OFFSETS`."""
    groups: dict[tuple[str, str, int], dict[int, LedgerEntry]] = defaultdict(dict)
    for entry in entries:
        groups[(entry.subscription_id, entry.topic, entry.partition)][entry.offset] = entry
    pages: list[Page] = []
    for (sub, topic, partition), by_offset in groups.items():
        run: list[LedgerEntry] = []
        for offset in sorted(by_offset):
            if run and (offset - run[0].offset > MAX_SPAN or len(run) == MAX_OFFSETS):
                pages.append(_page(sub, topic, partition, run))
                run = []
            run.append(by_offset[offset])
        pages.append(_page(sub, topic, partition, run))
    return pages


def _page(sub: str, topic: str, partition: int, run: list[LedgerEntry]) -> Page:
    return Page(
        subscription_id=sub,
        topic=topic,
        partition=partition,
        offsets=tuple(e.offset for e in run),
        created_at_ms=min(e.created_at_ms for e in run),
        completed_at_ms=max(e.completed_at_ms or e.updated_at_ms for e in run),
    )


def page_id(page: Page) -> str:
    """Derived from the page's partition and exact offsets: a write retried after a timeout
    puts the same item again instead of a second copy, and two pollers that finished
    overlapping offsets (a rebalance) never overwrite each other's page unless it is the same."""
    digest = hashlib.blake2b(digest_size=13)
    digest.update(f"{page.subscription_id}\x00{page.topic}\x00{page.partition}\x00".encode())
    digest.update(array("q", page.offsets).tobytes())
    return PAGE_ID_PREFIX + digest.hexdigest()


def page_index_key(subscription_id: str) -> str:
    """The ``subscription_id`` under which a subscription's pages are indexed."""
    return subscription_id + _PAGES_SUFFIX


def page_position(page: Page) -> str:
    return f"{page.topic}|{page.partition:06d}|{page.last:020d}|{page.first:020d}"


def parse_page_position(value: str) -> tuple[int, int]:
    """``(first, last)`` of a page's position."""
    _, _, last, first = value.rsplit("|", 3)
    return int(first), int(last)


def range_bounds(topic: str, partition: int, lo: int, hi: int) -> tuple[str, str]:
    """``position BETWEEN`` bounds that select every page which may hold an offset in
    ``lo..hi`` (and some that do not: check their first offset and offsets)."""
    prefix = f"{topic}|{partition:06d}|"
    # "~" sorts after every digit and "|": the upper bound includes any first offset.
    return f"{prefix}{lo:020d}", f"{prefix}{hi + MAX_SPAN:020d}|~"
