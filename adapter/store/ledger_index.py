"""How the invocations table is read other than by invocation ID. Pure.

Besides its ledger rows and success pages (:mod:`adapter.store.pages`), the table holds one
small *topic reference* item per subscription and topic (``topicref#<16 hex digits>``): the
reverse of :func:`adapter.ids.topic_ref`, so that an invocation ID -- which carries the
reference, the partition and the offset -- names a record even when its success is only in a
page. Topic references have no ``subscription_id``, so no index holds them.

Indexes (``adapter/store/tables.json``):

* ``by_subscription`` (subscription, position): a subscription's rows in record order; its
  pages under ``<subscription>/pages``.
* ``by_time`` (subscription, ``created_at``): the same items newest first. It projects what a
  listing needs to merge before reading rows (status, position) and all of a page (offsets,
  completion time), so pages never need a second read.
* ``by_status`` (``sub_status`` = ``<subscription>|<status>``, ``created_at``): *sparse*, only
  rows whose status is not SUCCEEDED carry ``sub_status``, so the bulk of a ledger (its
  successes) costs this index nothing; a status filter reads only rows of that status.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapter.ids import invocation_id
from adapter.model import LedgerEntry

__all__ = [
    "BY_STATUS",
    "BY_TIME",
    "TOPIC_REF_PREFIX",
    "is_ledger_row",
    "page_entries",
    "paged_entry",
    "status_index_key",
    "topic_ref_item_id",
]

BY_TIME = "by_time"
BY_STATUS = "by_status"
TOPIC_REF_PREFIX = "topicref#"
_SUCCEEDED = "SUCCEEDED"


def topic_ref_item_id(ref: int) -> str:
    return f"{TOPIC_REF_PREFIX}{ref:016x}"


def status_index_key(subscription_id: str, status: str) -> str | None:
    """A row's ``sub_status``, or None for a success (left out of the sparse index)."""
    return None if status == _SUCCEEDED else f"{subscription_id}|{status}"


def is_ledger_row(item: dict[str, Any]) -> bool:
    """A row of one invocation (not a page, a topic reference or a command)."""
    return "target" in item and "position" in item


def page_entries(item: dict[str, Any], subscription_id: str, target: str) -> list[LedgerEntry]:
    """The successes a page item lists, as entries (a page keeps no key or handler: they
    carry the subscription's sink as ``target`` and no key)."""
    topic, partition, _, _ = item["position"]["S"].rsplit("|", 3)
    created = int(item["created_at"]["N"])
    completed = int(item["completed_at"]["N"])
    offsets: list[int] = orjson.loads(item["offsets"]["S"])
    return [
        paged_entry(subscription_id, topic, int(partition), offset, target, created, completed)
        for offset in offsets
    ]


def paged_entry(
    subscription_id: str,
    topic: str,
    partition: int,
    offset: int,
    target: str,
    created_ms: int,
    completed_ms: int,
) -> LedgerEntry:
    return LedgerEntry(
        id=invocation_id(subscription_id, topic, partition, offset),
        subscription_id=subscription_id,
        topic=topic,
        partition=partition,
        offset=offset,
        key=None,
        target=target,
        status=_SUCCEEDED,
        attempts=1,
        created_at_ms=created_ms,
        updated_at_ms=completed_ms,
        completed_at_ms=completed_ms,
    )
