"""The change feed: how pollers learn about admin writes without scanning tables.

One item in the subscriptions table, ``~changes``, holds a version number and a ring of the
last :data:`RING` changes, each ``"<version>|<kind>:<key>"`` in slot ``c<version % RING>``.
Every admin write that a poller must see (a subscription, a Kafka cluster, a deployment or
service of the registry) goes through :class:`ChangeWriter`, which writes it and bumps the
version in one ``TransactWriteItems`` (conditional on the version it read), so a change is
never visible without its entry nor the other way round. An admin command for an invocation is
announced the same way right after it is stored (the invocations table stays out of
transactions).

A poller reads the item (one ``GetItem``) each poll interval; when the version moved, the
ring says which keys changed and the poller reads only those. One that fell behind by more
than the ring (or just started) reads everything once.

The same table holds one *claim* item per consumer (``~consumer#<hash>``, naming the
subscription that consumes a topic into a handler in a group), written in the same
transaction as the subscription: creating a subscription checks for a duplicate by key, not
by scanning. Items whose ID starts with ``~`` are not subscriptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson
from botocore.exceptions import ClientError

from adapter.errors import ConditionFailedError, ConflictError, StoreError
from adapter.model import Subscription

__all__ = [
    "CHANGES_ID",
    "CONTROL_PREFIX",
    "RING",
    "Change",
    "ChangeKind",
    "ChangeLog",
    "ChangeWriter",
    "ChangedMeanwhile",
    "ConditionsFailed",
    "claim_id",
    "claim_item",
    "new_table_item",
    "parse_change_log",
]

T = TypeVar("T")

CONTROL_PREFIX = "~"
CHANGES_ID = "~changes"
_CLAIM_PREFIX = "~consumer#"
# Changes a poller may fall behind by and still catch up key by key (at one read a second,
# 64 admin writes within a second); the item stays under 8 KB.
RING = 64
# Concurrent admin writes serialise on the change item; each loser reads it again and retries.
_MAX_TRIES = 40


class ChangeKind:
    SUBSCRIPTION = "sub"
    CLUSTER = "cluster"
    SERVICE = "service"
    DEPLOYMENT = "deployment"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    kind: str
    key: str


@dataclass(frozen=True, slots=True)
class ChangeLog:
    version: int
    ring: dict[int, Change]
    claims_ready: bool = False

    def since(self, known: int) -> list[Change] | None:
        """The changes after ``known``, oldest first; None if the ring no longer has them
        all (the reader must read everything)."""
        if known > self.version:
            return None  # the item was recreated: start again
        out = []
        for version in range(known + 1, self.version + 1):
            change = self.ring.get(version % RING)
            if change is None or change.version != version:
                return None
            out.append(change)
        return out


def new_table_item() -> dict[str, Any]:
    """The change item of a subscriptions table just created: version 0, and claims marked
    ready -- it holds no subscription stored before claims, so none needs a back-fill."""
    return {"id": {"S": CHANGES_ID}, "version": {"N": "0"}, "claims": {"N": "1"}}


class ChangedMeanwhile(ConflictError):
    """A write conditioned on the change feed's version found it moved: another admin write
    came after what the caller checked its write against. Check again and retry."""


class ConditionsFailed(ConditionFailedError):
    """A transactional write refused by the conditions of the items at ``failed``."""

    def __init__(self, message: str, failed: Sequence[int]) -> None:
        super().__init__(message)
        self.failed = tuple(failed)


def claim_id(sub: Subscription) -> str:
    """The claim key of a subscription's consumer: its source, sink and consumer group, the
    group left out when it is the subscription's own ID (any such subscription is the same
    consumer as a new one created without a group)."""
    group = sub.options.get("group.id") or sub.id
    identity = [sub.cluster, sub.topic, sub.service, sub.handler, "" if group == sub.id else group]
    return _CLAIM_PREFIX + hashlib.sha256(orjson.dumps(identity)).hexdigest()[:40]


def claim_item(sub: Subscription) -> dict[str, Any]:
    return {"id": {"S": claim_id(sub)}, "subscription_id": {"S": sub.id}}


def parse_change_log(item: dict[str, Any] | None) -> ChangeLog:
    if not item:
        return ChangeLog(0, {})
    ring: dict[int, Change] = {}
    for name, value in item.items():
        if not name.startswith("c") or not name[1:].isdigit():
            continue
        version, _, ref = value["S"].partition("|")
        kind, _, key = ref.partition(":")
        ring[int(name[1:])] = Change(int(version), kind, key)
    return ChangeLog(int(item["version"]["N"]), ring, claims_ready="claims" in item)


def _bump(table: str, version: int, refs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    names: dict[str, str] = {}
    values: dict[str, Any] = {":n": {"N": str(version + len(refs))}}
    sets = ["version = :n"]
    for i, (kind, key) in enumerate(refs):
        at = version + 1 + i
        names[f"#c{i}"] = f"c{at % RING}"
        values[f":c{i}"] = {"S": f"{at}|{kind}:{key}"}
        sets.append(f"#c{i} = :c{i}")
    values[":v"] = {"N": str(version)}
    condition = "version = :v" if version else "attribute_not_exists(version) OR version = :v"
    update: dict[str, Any] = {
        "TableName": table,
        "Key": {"id": {"S": CHANGES_ID}},
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
    if names:
        update["ExpressionAttributeNames"] = names
    return {"Update": update}


def _transact(client: Any, items: list[dict[str, Any]]) -> list[str]:
    """Run a transaction: [] when it committed, else each item's cancellation reason code."""
    try:
        client.transact_write_items(TransactItems=items)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
            raise
        reasons = exc.response.get("CancellationReasons") or []
        codes = [str(r.get("Code") or "None") for r in reasons]
        return codes or ["Unknown"] * len(items)
    return []


class ChangeWriter:
    """Writes admin changes together with their change-feed entry."""

    def __init__(
        self,
        client: Any,
        table: str,
        call: Callable[[Callable[[], Any], str], Awaitable[Any]],
    ) -> None:
        self._client = client
        self._table = table
        self._call = call
        # The version this process last wrote or read: usually right, so a write costs one
        # request; a stale one fails the condition and is read again.
        self._version: int | None = None

    async def read(self) -> ChangeLog:
        """The change item: one consistent GetItem."""
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self._table, Key={"id": {"S": CHANGES_ID}}, ConsistentRead=True
            ),
            "read the change feed",
        )
        log = parse_change_log(resp.get("Item"))
        self._version = log.version
        return log

    async def version(self) -> int:
        """The feed's version now (one consistent GetItem): read it before what a write is
        checked against, and pass it to :meth:`write` as ``since``."""
        return (await self.read()).version

    async def write(
        self,
        items: list[dict[str, Any]],
        refs: Sequence[tuple[str, str]],
        what: str,
        *,
        since: int | None = None,
    ) -> None:
        """Apply ``items`` (TransactWriteItems entries) and record ``refs`` as changed.

        ConditionsFailed names the items whose own condition refused the write. With
        ``since`` (a :meth:`version`), the write happens only if no other admin write came
        after it, else ChangedMeanwhile: what the caller checked is still what is stored."""
        for attempt in range(_MAX_TRIES):
            if since is not None:
                version = since
            elif self._version is not None:
                version = self._version
            else:
                version = (await self.read()).version
            batch = [*items, _bump(self._table, version, refs)]
            codes: list[str] = await self._call(partial(_transact, self._client, batch), what)
            if not codes:
                self._version = version + len(refs)
                return
            own = codes[: len(items)]
            refused = [i for i, c in enumerate(own) if c == "ConditionalCheckFailed"]
            if refused:
                raise ConditionsFailed(f"{what}: condition failed", refused)
            if codes[-1] == "ConditionalCheckFailed":
                self._version = None  # another process wrote first: read the version again
                if since is not None:
                    raise ChangedMeanwhile(
                        f"{what}: changed by another request meanwhile; read it again and retry"
                    )
            elif "TransactionConflict" not in codes:
                raise StoreError(f"{what}: transaction cancelled ({', '.join(codes)})")
            # Spread the retries of writers that collided.
            await asyncio.sleep(random.uniform(0, 0.005 * min(attempt + 1, 10)))
        raise StoreError(f"{what}: too many concurrent admin writes; try again")

    async def mark_claims_ready(self) -> None:
        """Record that every subscription has its claim (set once, after a back-fill)."""
        await self._call(
            lambda: self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": CHANGES_ID}},
                UpdateExpression="SET claims = :one, version = if_not_exists(version, :zero)",
                ExpressionAttributeValues={":one": {"N": "1"}, ":zero": {"N": "0"}},
            ),
            "record subscription claims",
        )
