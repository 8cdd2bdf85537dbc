"""DynamoDB-backed state: subscriptions, the handler registry, the invocation ledger.

A thin shell around boto3's low-level client. boto3 is blocking, so every call runs in a worker
thread (``asyncio.to_thread``) and the event loop never waits on the network. botocore errors
are translated here into :class:`~adapter.errors.StoreError` (and
:class:`~adapter.errors.ConditionFailedError` for lost conditional writes); nothing from botocore
escapes this module.

Secret values of subscriptions, clusters and deployments are sealed on the way in and opened
on the way out by :class:`~adapter.store.sealing.SecretSealing` (KMS envelope encryption), so
none is stored in clear.

The ledger is written in batches (BatchWriteItem, 25 items a request) and read in batches
(BatchGetItem, 100 keys a request) so that the request count per record stays far below one.
The one hot call, the ledger's BatchWriteItem, does not go through boto3: it is sent on the event
loop by :class:`~adapter.store.ledger_client.LedgerClient` (aiohttp, SigV4-signed with the same
region, endpoint and credential chain), which halves its CPU and keeps worker threads off the
GIL. A store that wrote ledger rows owns an aiohttp session: ``await store.aclose()`` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import boto3
import orjson
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from adapter.errors import ConditionFailedError, ItemTooLargeError, StoreError
from adapter.ids import creation_order, invocation_id, topic_ref
from adapter.model import (
    HandlerInfo,
    HandlerType,
    InputKind,
    LedgerEntry,
    ServiceInfo,
    ServiceType,
    Subscription,
)
from adapter.store.changes import (
    CONTROL_PREFIX,
    ChangeKind,
    ChangeLog,
    ChangeWriter,
    ConditionsFailed,
    claim_id,
    claim_item,
)
from adapter.store.commands import (
    COMMAND_TTL_S,
    COMMANDS_KEY,
    DONE,
    PENDING,
    Command,
    command_from_item,
    command_id,
    command_item,
    command_position,
)
from adapter.store.ledger_client import LedgerClient, Throttled
from adapter.store.ledger_index import (
    BY_STATUS,
    is_ledger_row,
    paged_entry,
    status_index_key,
    topic_ref_item_id,
)
from adapter.store.pages import (
    Page,
    build_pages,
    is_pageable,
    page_id,
    page_index_key,
    page_position,
    parse_page_position,
    range_bounds,
)
from adapter.store.row_limits import key_sha256, stored_error, stored_key
from adapter.store.sealing import (
    CLUSTER_SECRETS,
    DEPLOYMENT_SECRETS,
    SUBSCRIPTION_SECRETS,
    SecretSealing,
)
from adapter.store.tables import TableNames, create_tables

__all__ = ["DynamoStore", "make_client"]

T = TypeVar("T")
_BATCH_WRITE_MAX = 25
_BATCH_GET_MAX = 100
# DynamoDB pages (Query or Scan calls, each at most 1 MB and at most 1,000 items) that one
# ``find_entries`` call reads. DynamoDB filters after reading, so a filter that matches
# little would otherwise read the whole ledger for one API request; this bounds a request to
# about 5 MB read (640 read units) and five round trips (well under a second), and still
# reads 500 rows or more of the ledger for a page. A call that spends it returns what
# matched so far, possibly nothing, with the key to continue from (LastEvaluatedKey).
FIND_READ_PAGES = 5
_ser = TypeSerializer()
_de = TypeDeserializer()


def make_client(endpoint_url: str | None, region: str, *, pool: int = 32) -> Any:
    """A DynamoDB client with bounded retries; our own loop handles longer outages."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            # Our requests are built by code and DynamoDB validates them anyway; client-side
            # validation was a quarter of the ledger path's CPU (bench/).
            parameter_validation=False,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=pool,
            connect_timeout=3,
            read_timeout=10,
        ),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_plain(v) for v in value]
    return value


def _to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in data.items() if v is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _ledger_item(entry: LedgerEntry, expires_at: int) -> dict[str, Any]:
    """The ledger row of ``entry``, without the attributes a reader can derive.

    Topic, partition and offset are in ``position``; a finished row's ``updated_at`` is
    usually its ``completed_at``, and most invocations succeed at the first attempt. Every
    attribute is parsed, sized and stored (twice, with the index's ALL projection) on each
    write, so the common row goes out with 9 attributes instead of 14: about a third less
    work per row for the DynamoDB service -- and for moto, whose CPU per row set the
    benchmark's pace (docs/benchmarks.md). :func:`_entry_from_item` reads both forms.
    """
    item: dict[str, Any] = {
        "id": {"S": entry.id},
        "subscription_id": {"S": entry.subscription_id},
        "position": {"S": position(entry.topic, entry.partition, entry.offset)},
        "target": {"S": entry.target},
        "status": {"S": entry.status},
        "created_at": {"N": str(entry.created_at_ms)},
        "expires_at": {"N": str(expires_at)},
    }
    by_status = status_index_key(entry.subscription_id, entry.status)
    if by_status is not None:
        item["sub_status"] = {"S": by_status}
    if entry.attempts != 1:
        item["attempts"] = {"N": str(entry.attempts)}
    if entry.completed_at_ms is None:
        item["updated_at"] = {"N": str(entry.updated_at_ms)}
    else:
        item["completed_at"] = {"N": str(entry.completed_at_ms)}
        if entry.updated_at_ms != entry.completed_at_ms:
            item["updated_at"] = {"N": str(entry.updated_at_ms)}
    if entry.key is not None:
        # Bounded, so no record makes a row DynamoDB refuses (adapter.store.row_limits).
        key = stored_key(entry.key)
        item["key"] = {"S": key.text}
        digest = entry.key_sha256 or key.sha256  # the first: cut shorter still (reduced)
        if digest is not None:
            item["key_sha256"] = {"S": digest}
    if entry.last_error is not None:
        item["last_error"] = {"S": stored_error(entry.last_error)}
    if entry.next_retry_at_ms is not None:
        item["next_retry_at"] = {"N": str(entry.next_retry_at_ms)}
    if entry.dead_letter_topic is not None:
        item["dead_letter_topic"] = {"S": entry.dead_letter_topic}
    return item


def _entry_from_item(item: dict[str, Any]) -> LedgerEntry:
    d = _from_item(item)
    topic, partition, offset = _split_position(d["position"])
    completed = d.get("completed_at")
    return LedgerEntry(
        id=d["id"],
        subscription_id=d["subscription_id"],
        topic=topic,
        partition=partition,
        offset=offset,
        key=d.get("key"),
        target=d["target"],
        status=d["status"],
        attempts=d.get("attempts", 1),
        last_error=d.get("last_error"),
        created_at_ms=d.get("created_at", 0),
        updated_at_ms=d.get("updated_at", completed or 0),
        completed_at_ms=completed,
        next_retry_at_ms=d.get("next_retry_at"),
        dead_letter_topic=d.get("dead_letter_topic"),
        key_sha256=d.get("key_sha256"),  # a cut key's: written again, the row stays findable
    )


def _page_item(page: Page, expires_at: int, item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": {"S": item_id or page_id(page)},
        "subscription_id": {"S": page_index_key(page.subscription_id)},
        "position": {"S": page_position(page)},
        "offsets": {"S": orjson.dumps(page.offsets).decode()},
        "created_at": {"N": str(page.created_at_ms)},
        "completed_at": {"N": str(page.completed_at_ms)},
        "expires_at": {"N": str(expires_at)},
    }


def _page_offsets(item: dict[str, Any]) -> list[int]:
    offsets: list[int] = orjson.loads(item["offsets"]["S"])
    return offsets


def position(topic: str, partition: int, offset: int) -> str:
    """Sort key of the ledger's per-subscription index: orders by partition, then offset."""
    return f"{topic}|{partition:06d}|{offset:020d}"


def _split_position(value: str) -> tuple[str, int, int]:
    # Kafka topic names cannot contain "|", so the last two fields are always ours.
    topic, partition, offset = value.rsplit("|", 2)
    return topic, int(partition), int(offset)


def entry_start_key(entry: LedgerEntry) -> dict[str, Any]:
    """The ExclusiveStartKey that continues a subscription's ledger listing after ``entry``."""
    return {
        "id": {"S": entry.id},
        "subscription_id": {"S": entry.subscription_id},
        "position": {"S": position(entry.topic, entry.partition, entry.offset)},
    }


def _ledger_page_key(item: dict[str, Any], by_subscription: bool) -> dict[str, Any]:
    """The ExclusiveStartKey that continues a ledger page right after ``item`` (a row, or
    the LastEvaluatedKey of a read)."""
    key = {"id": item["id"]}
    if by_subscription:
        key["subscription_id"] = item["subscription_id"]
        key["position"] = item["position"]
    return key


def _subscription_row(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "cluster": sub.cluster,
        "topic": sub.topic,
        "service": sub.service,
        "handler": sub.handler,
        "options": dict(sub.options),
        "created_at": sub.created_at_ms,
        "paused": sub.paused,
        "revision": sub.revision,
    }


def _subscription_from_row(d: dict[str, Any]) -> Subscription:
    return Subscription(
        id=d["id"],
        cluster=d["cluster"],
        topic=d["topic"],
        service=d["service"],
        handler=d["handler"],
        options={k: str(v) for k, v in d.get("options", {}).items()},
        created_at_ms=d.get("created_at", 0),
        paused=bool(d.get("paused", False)),
        revision=d.get("revision", 1),
    )


def _service_item(svc: ServiceInfo) -> dict[str, Any]:
    return _to_item(
        {
            "name": svc.name,
            "service_type": svc.service_type.value,
            "deployment_id": svc.deployment_id,
            "revision": svc.revision,
            "handlers": [
                {"name": h.name, "type": h.handler_type.value, "input": h.input_kind.value}
                for h in svc.handlers
            ],
        }
    )


def _service_from_item(item: dict[str, Any]) -> ServiceInfo:
    d = _from_item(item)
    return ServiceInfo(
        name=d["name"],
        service_type=ServiceType(d["service_type"]),
        deployment_id=d["deployment_id"],
        revision=d.get("revision", 1),
        handlers=tuple(
            HandlerInfo(h["name"], HandlerType(h["type"]), InputKind(h["input"]))
            for h in d.get("handlers", [])
        ),
    )


class DynamoStore:
    """All of Kafka Ingress's DynamoDB access. Async methods; boto3 runs in worker threads."""

    def __init__(
        self,
        client: Any,
        names: TableNames,
        *,
        retention_s: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
        credentials: Credentials | None = None,
        success_pages: bool = False,
        secrets: SecretSealing | None = None,
    ) -> None:
        """``credentials`` sign the ledger writes; by default boto3's credential chain
        (environment, profile, role), resolved on the first write. ``success_pages`` records
        first-attempt successes in pages instead of rows (:mod:`adapter.store.pages`).
        ``secrets`` seals secret values; by default (no KMS key) they are refused."""
        self._client = client
        self.secrets = secrets if secrets is not None else SecretSealing()
        self.names = names
        self._retention_s = retention_s
        self._success_pages = success_pages
        self._clock = clock
        self._credentials = credentials
        self._ledger: LedgerClient | None = None
        self._lock = threading.Lock()
        self.requests = 0  # DynamoDB API calls made, for metrics and the benchmark
        # Admin writes pollers must see go through the change feed (adapter.store.changes).
        self.changes = ChangeWriter(client, names.subscriptions, self._call)
        self._claims_ready = False

    @property
    def success_pages(self) -> bool:
        """First-attempt successes go to success pages (``[ledger] successes = "pages"``)."""
        return self._success_pages

    async def aclose(self) -> None:
        """Release the ledger writer's HTTP connections. The store stays usable: a later
        ledger write opens new ones."""
        if self._ledger is not None:
            await self._ledger.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1

    async def _ledger_client(self) -> LedgerClient:
        if self._ledger is None:
            credentials = self._credentials
            if credentials is None:
                # The chain may do network I/O (instance metadata, STS): not on the loop.
                credentials = await asyncio.to_thread(
                    boto3.Session(region_name=self._client.meta.region_name).get_credentials
                )
            if credentials is None:
                raise StoreError(
                    "write invocation ledger: no AWS credentials found (set AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the process a role)"
                )
            if self._ledger is None:  # another write may have got here first
                self._credentials = credentials
                self._ledger = LedgerClient(
                    endpoint_url=str(self._client.meta.endpoint_url),
                    region=str(self._client.meta.region_name),
                    credentials=credentials,
                    on_request=self._count_request,
                )
        return self._ledger

    async def _call(self, fn: Callable[[], T], what: str) -> T:
        return await asyncio.to_thread(self._call_sync, fn, what)

    def _call_sync(self, fn: Callable[[], T], what: str) -> T:
        self._count_request()
        try:
            return fn()
        except ClientError as exc:
            if _error_code(exc) == "ConditionalCheckFailedException":
                raise ConditionFailedError(f"{what}: condition failed") from exc
            if _error_code(exc) == "ValidationException" and "item size" in str(exc).lower():
                raise ItemTooLargeError(
                    f"{what}: larger than DynamoDB's item limit (400 KB); use fewer or "
                    "shorter options, headers or metadata"
                ) from exc
            raise StoreError(f"{what}: {_error_code(exc) or exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"{what}: {exc}") from exc

    def create_tables(self) -> list[str]:
        return create_tables(self._client, self.names)

    async def ping(self) -> None:
        """Cheap reachability check for readiness."""
        await self._call(
            lambda: self._client.describe_table(TableName=self.names.subscriptions),
            "DynamoDB readiness check",
        )

    async def _scan_all(self, table: str, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        # Consistent: a check made against the listing (a cluster update against its
        # subscriptions) must see a write that has just been acknowledged.
        kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
        while True:
            page = await self._call(partial(self._client.scan, **kwargs), what)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- rows that may hold secrets ---------------------------------------------------------

    async def _subscription_item(self, sub: Subscription) -> dict[str, Any]:
        return _to_item(await self.secrets.seal_row(_subscription_row(sub), SUBSCRIPTION_SECRETS))

    async def _subscription_from_item(self, item: dict[str, Any]) -> Subscription:
        row = await self.secrets.open_row(_from_item(item), SUBSCRIPTION_SECRETS)
        return _subscription_from_row(row)

    # -- subscriptions ----------------------------------------------------------------------

    def _put(self, table: str, item: dict[str, Any], **condition: Any) -> dict[str, Any]:
        return {"Put": {"TableName": table, "Item": item, **condition}}

    def _delete(self, table: str, key: dict[str, Any], **condition: Any) -> dict[str, Any]:
        return {"Delete": {"TableName": table, "Key": key, **condition}}

    async def read_changes(self) -> ChangeLog:
        """The change feed's item (one GetItem): what pollers poll."""
        return await self.changes.read()

    async def put_subscription(self, sub: Subscription) -> None:
        """Save a subscription as it is (with its consumer claim), whether or not it exists."""
        item = await self._subscription_item(sub)
        table = self.names.subscriptions
        await self.changes.write(
            [self._put(table, item), self._put(table, claim_item(sub))],
            [(ChangeKind.SUBSCRIPTION, sub.id)],
            f"save subscription {sub.id}",
        )

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        if sub_id.startswith(CONTROL_PREFIX):
            return None
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.subscriptions, Key={"id": {"S": sub_id}}, ConsistentRead=True
            ),
            f"read subscription {sub_id}",
        )
        item = resp.get("Item")
        return await self._subscription_from_item(item) if item else None

    async def list_subscriptions(self) -> list[Subscription]:
        items = await self._scan_all(self.names.subscriptions, "list subscriptions")
        subs = [
            await self._subscription_from_item(i)
            for i in items
            if not i["id"]["S"].startswith(CONTROL_PREFIX)
        ]
        return sorted(subs, key=lambda s: creation_order(s.id))

    async def delete_subscription(self, sub_id: str) -> bool:
        """Delete a subscription and its consumer claim; False if it did not exist."""
        sub = await self.get_subscription(sub_id)
        if sub is None:
            return False
        table = self.names.subscriptions
        items = [
            self._delete(table, {"id": {"S": sub_id}}, ConditionExpression="attribute_exists(id)"),
            self._delete(
                table,
                {"id": {"S": claim_id(sub)}},
                ConditionExpression="attribute_not_exists(id) OR subscription_id = :me",
                ExpressionAttributeValues={":me": {"S": sub_id}},
            ),
        ]
        try:
            await self.changes.write(
                items, [(ChangeKind.SUBSCRIPTION, sub_id)], f"delete subscription {sub_id}"
            )
        except ConditionsFailed as exc:
            if 0 in exc.failed:
                return False
            # The claim names another subscription (two stored before claims): leave it.
            try:
                await self.changes.write(
                    items[:1], [(ChangeKind.SUBSCRIPTION, sub_id)], f"delete subscription {sub_id}"
                )
            except ConditionsFailed:
                return False
        return True

    async def change_version(self) -> int:
        """The change feed's version: pass it as ``since`` to a write checked against what
        was read after it (:meth:`ChangeWriter.write`)."""
        return await self.changes.version()

    async def create_subscription(
        self, sub: Subscription, *, since: int | None = None
    ) -> Subscription | None:
        """Insert a new subscription unless one already consumes its topic into its handler
        in its group: None once created, else that subscription (found by its claim, not by
        scanning). ConditionFailedError if the ID is taken; ChangedMeanwhile (``since``) if
        another admin write came after that version."""
        await self._ensure_claims()
        item = await self._subscription_item(sub)
        table = self.names.subscriptions
        claim = claim_id(sub)
        for _ in range(3):
            try:
                await self.changes.write(
                    [
                        self._put(
                            table, claim_item(sub), ConditionExpression="attribute_not_exists(id)"
                        ),
                        self._put(table, item, ConditionExpression="attribute_not_exists(id)"),
                    ],
                    [(ChangeKind.SUBSCRIPTION, sub.id)],
                    f"create subscription {sub.id}",
                    since=since,
                )
                return None
            except ConditionsFailed as exc:
                if 0 not in exc.failed:
                    raise
            holder = await self._claim_holder(claim)
            existing = await self.get_subscription(holder) if holder else None
            if existing is not None and claim_id(existing) == claim:
                return existing
            # The claim outlived its subscription (or was moved): free it and try again.
            stale = {":h": {"S": holder or ""}}
            with contextlib.suppress(ConditionFailedError):
                await self._call(
                    partial(
                        self._client.delete_item,
                        TableName=table,
                        Key={"id": {"S": claim}},
                        ConditionExpression="subscription_id = :h",
                        ExpressionAttributeValues=stale,
                    ),
                    f"free the stale consumer claim of {holder}",
                )
        raise StoreError(f"create subscription {sub.id}: its consumer claim keeps changing")

    async def _claim_holder(self, claim: str) -> str | None:
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.subscriptions, Key={"id": {"S": claim}}, ConsistentRead=True
            ),
            "read a consumer claim",
        )
        item = resp.get("Item")
        return str(item["subscription_id"]["S"]) if item else None

    async def _ensure_claims(self) -> None:
        """Give subscriptions stored before claims existed theirs: once per table (one scan),
        remembered in the change item; the oldest of two equal consumers keeps the claim."""
        if self._claims_ready:
            return
        if not (await self.changes.read()).claims_ready:
            for sub in await self.list_subscriptions():
                claim = claim_item(sub)
                with contextlib.suppress(ConditionFailedError):
                    await self._call(
                        partial(
                            self._client.put_item,
                            TableName=self.names.subscriptions,
                            Item=claim,
                            ConditionExpression="attribute_not_exists(id)",
                        ),
                        f"claim the consumer of subscription {sub.id}",
                    )
            await self.changes.mark_claims_ready()
        self._claims_ready = True

    async def update_subscription(
        self,
        sub: Subscription,
        *,
        expected_revision: int,
        previous: Subscription | None = None,
        since: int | None = None,
    ) -> None:
        """Replace a subscription only if it still exists at ``expected_revision`` (and, with
        ``since``, no other admin write came after that change-feed version).

        ConditionFailedError when it was changed or deleted meanwhile (optimistic locking),
        ConditionsFailed naming item 2 when a new consumer group (given ``previous``) is
        another subscription's already.
        """
        item = await self._subscription_item(sub)
        table = self.names.subscriptions
        items = [
            self._put(
                table,
                item,
                ConditionExpression="attribute_exists(id) AND revision = :r",
                ExpressionAttributeValues={":r": {"N": str(expected_revision)}},
            )
        ]
        if previous is not None and claim_id(previous) != claim_id(sub):
            mine = {":me": {"S": sub.id}}
            items.append(
                self._delete(
                    table,
                    {"id": {"S": claim_id(previous)}},
                    ConditionExpression="attribute_not_exists(id) OR subscription_id = :me",
                    ExpressionAttributeValues=mine,
                )
            )
            items.append(
                self._put(
                    table,
                    claim_item(sub),
                    ConditionExpression="attribute_not_exists(id) OR subscription_id = :me",
                    ExpressionAttributeValues=mine,
                )
            )
        await self.changes.write(
            items, [(ChangeKind.SUBSCRIPTION, sub.id)], f"update subscription {sub.id}", since=since
        )

    # -- registry ---------------------------------------------------------------------------

    async def put_service(self, svc: ServiceInfo) -> None:
        await self.changes.write(
            [self._put(self.names.services, _service_item(svc))],
            [(ChangeKind.SERVICE, svc.name)],
            f"save service {svc.name}",
        )

    async def get_service(self, name: str) -> ServiceInfo | None:
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.services, Key={"name": {"S": name}}, ConsistentRead=True
            ),
            f"read service {name}",
        )
        item = resp.get("Item")
        return _service_from_item(item) if item else None

    async def list_services(self) -> list[ServiceInfo]:
        items = await self._scan_all(self.names.services, "list services")
        return sorted((_service_from_item(i) for i in items), key=lambda s: s.name)

    async def delete_service(self, name: str) -> None:
        await self.changes.write(
            [self._delete(self.names.services, {"name": {"S": name}})],
            [(ChangeKind.SERVICE, name)],
            f"delete service {name}",
        )

    async def put_deployment(self, data: dict[str, Any]) -> None:
        item = _to_item(await self.secrets.seal_row(data, DEPLOYMENT_SECRETS))
        await self.changes.write(
            [self._put(self.names.deployments, item)],
            [(ChangeKind.DEPLOYMENT, str(data.get("id")))],
            f"save deployment {data.get('id')}",
        )

    async def get_deployment(self, dep_id: str) -> dict[str, Any] | None:
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.deployments, Key={"id": {"S": dep_id}}, ConsistentRead=True
            ),
            f"read deployment {dep_id}",
        )
        item = resp.get("Item")
        if not item:
            return None
        return await self.secrets.open_row(_from_item(item), DEPLOYMENT_SECRETS)

    async def list_deployments(self) -> list[dict[str, Any]]:
        items = await self._scan_all(self.names.deployments, "list deployments")
        rows = [await self.secrets.open_row(_from_item(i), DEPLOYMENT_SECRETS) for i in items]
        return sorted(rows, key=lambda d: creation_order(str(d["id"])))

    async def delete_deployment(self, dep_id: str) -> bool:
        try:
            await self.changes.write(
                [
                    self._delete(
                        self.names.deployments,
                        {"id": {"S": dep_id}},
                        ConditionExpression="attribute_exists(id)",
                    )
                ],
                [(ChangeKind.DEPLOYMENT, dep_id)],
                f"delete deployment {dep_id}",
            )
        except ConditionsFailed:
            return False
        return True

    # -- ledger -----------------------------------------------------------------------------

    async def write_entries(
        self, entries: Sequence[LedgerEntry], *, deadline_s: float = 30
    ) -> None:
        """Write ledger rows in BatchWriteItem chunks sent concurrently, re-sending unprocessed
        and throttled items with capped backoff.

        Raises StoreError if the rows are not all written within ``deadline_s``, or at once on
        any other failure (unreachable, rejected); the caller must then not commit past them.
        Raises ItemTooLargeError (a ValidationError: re-sending cannot help) if DynamoDB refuses
        a row as larger than its item limit, which the bounds of :mod:`adapter.store.row_limits`
        leave to rows built elsewhere.
        """
        if not entries:
            return
        expires = int(self._clock() + self._retention_s)
        # One row per invocation per batch: the last state wins (BatchWriteItem rejects
        # duplicate keys in one request).
        latest = {e.id: e for e in entries}
        rows = list(latest.values())
        pages: list[Page] = []
        if self._success_pages:
            pages = build_pages(e for e in rows if is_pageable(e))
            rows = [e for e in rows if not is_pageable(e)]
        requests = [{"PutRequest": {"Item": _ledger_item(e, expires)}} for e in rows]
        requests += [{"PutRequest": {"Item": _page_item(p, expires)}} for p in pages]
        client = await self._ledger_client()
        deadline = time.monotonic() + deadline_s
        chunks = [
            self._write_chunk(client, requests[i : i + _BATCH_WRITE_MAX], deadline, deadline_s)
            for i in range(0, len(requests), _BATCH_WRITE_MAX)
        ]
        if len(chunks) == 1:
            await chunks[0]
            return
        tasks = [asyncio.create_task(chunk) for chunk in chunks]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One chunk failed (or we were cancelled): stop the others before reporting it.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _write_chunk(
        self, client: LedgerClient, chunk: list[Any], deadline: float, deadline_s: float
    ) -> None:
        table = self.names.invocations
        delay = 0.05
        while True:
            outcome = await client.batch_write(table, chunk)
            if isinstance(outcome, Throttled):
                reason = outcome.reason
            else:
                chunk = outcome
                reason = "unprocessed items"
            if not chunk:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreError(
                    f"write invocation ledger: {len(chunk)} rows still unprocessed after "
                    f"{deadline_s:g}s (last: {reason})"
                )
            await asyncio.sleep(min(delay * (0.5 + random.random()), left))
            delay = min(delay * 2, 2.0)

    def _batch_write_sync(self, requests: list[dict[str, Any]], deadline_s: float) -> None:
        table = self.names.invocations
        deadline = time.monotonic() + deadline_s
        pending = requests
        delay = 0.05
        while pending:
            chunk, pending = pending[:_BATCH_WRITE_MAX], pending[_BATCH_WRITE_MAX:]
            while chunk:
                try:
                    resp = self._call_sync(
                        partial(self._client.batch_write_item, RequestItems={table: chunk}),
                        "write invocation ledger",
                    )
                    chunk = resp.get("UnprocessedItems", {}).get(table, [])
                except StoreError:
                    if time.monotonic() >= deadline:
                        raise
                if chunk:
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"write invocation ledger: {len(chunk)} rows still unprocessed "
                            f"after {deadline_s:.0f}s (throttled?)"
                        )
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 2.0)

    async def write_progress(self, entry: LedgerEntry) -> bool:
        """Write a non-final row (e.g. BACKING_OFF) unless the invocation already finished.

        Progress rows may arrive late (a retried batch, a revoked poller's last write); the
        condition keeps them from ever overwriting a final status. False if one was there.
        """
        item = _ledger_item(entry, int(self._clock() + self._retention_s))
        try:
            await self._call(
                lambda: self._client.put_item(
                    TableName=self.names.invocations,
                    Item=item,
                    ConditionExpression="attribute_not_exists(id) OR #s IN (:p, :r, :b)",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={
                        ":p": {"S": "PENDING"},
                        ":r": {"S": "RUNNING"},
                        ":b": {"S": "BACKING_OFF"},
                    },
                ),
                f"record progress of {entry.id}",
            )
        except ConditionFailedError:
            return False
        return True

    async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]:
        """Ledger status of each known invocation ID (unknown IDs are absent)."""
        keys = list(dict.fromkeys(ids))
        if not keys:
            return {}
        items = await asyncio.to_thread(self._batch_get_sync, keys, True)
        return {item["id"]["S"]: item["status"]["S"] for item in items}

    async def get_entries(self, ids: Iterable[str]) -> dict[str, LedgerEntry]:
        """The ledger rows of these invocation IDs (unknown IDs are absent)."""
        keys = list(dict.fromkeys(ids))
        if not keys:
            return {}
        items = await asyncio.to_thread(self._batch_get_sync, keys, False)
        return {item["id"]["S"]: _entry_from_item(item) for item in items if is_ledger_row(item)}

    def _batch_get_sync(self, ids: list[str], status_only: bool) -> list[dict[str, Any]]:
        table = self.names.invocations
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), _BATCH_GET_MAX):
            keys: dict[str, Any] = {
                "Keys": [{"id": {"S": i}} for i in ids[start : start + _BATCH_GET_MAX]],
                "ConsistentRead": True,
            }
            if status_only:
                keys["ProjectionExpression"] = "id, #s"
                keys["ExpressionAttributeNames"] = {"#s": "status"}
            request: dict[str, Any] = {table: keys}
            delay = 0.05
            while request:
                resp = self._call_sync(
                    partial(self._client.batch_get_item, RequestItems=request),
                    "read invocation ledger",
                )
                out.extend(resp.get("Responses", {}).get(table, []))
                request = resp.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return out

    async def get_entry(self, inv_id: str) -> LedgerEntry | None:
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.invocations, Key={"id": {"S": inv_id}}, ConsistentRead=True
            ),
            f"read invocation {inv_id}",
        )
        item = resp.get("Item")
        return _entry_from_item(item) if item else None

    async def delete_entry(self, inv_id: str) -> None:
        await self._call(
            lambda: self._client.delete_item(
                TableName=self.names.invocations, Key={"id": {"S": inv_id}}
            ),
            f"delete invocation {inv_id}",
        )

    async def highest_recorded_offset(
        self, subscription_id: str, topic: str, partition: int
    ) -> int | None:
        """Highest offset of this partition with a ledger row or in a success page, or None.

        Records above it were never finished by any poller, so they need no per-record ledger
        check on redelivery.
        """
        prefix = f"{topic}|{partition:06d}|"
        highest: int | None = None
        # Pages are read whatever this poller's setting: another poller may write them.
        for index_key in (subscription_id, page_index_key(subscription_id)):
            resp = await self._call(
                partial(
                    self._client.query,
                    TableName=self.names.invocations,
                    IndexName="by_subscription",
                    KeyConditionExpression="subscription_id = :s AND begins_with(#p, :p)",
                    ExpressionAttributeNames={"#p": "position"},
                    ExpressionAttributeValues={":s": {"S": index_key}, ":p": {"S": prefix}},
                    ScanIndexForward=False,
                    Limit=1,
                    ProjectionExpression="#p",
                ),
                f"read ledger fence of {topic}/{partition}",
            )
            for item in resp.get("Items", []):
                # A row's position ends in its offset, a page's in "|last|first".
                offset = int(item["position"]["S"].split("|")[2])
                highest = offset if highest is None else max(highest, offset)
        return highest

    async def paged_offsets(
        self, subscription_id: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[int]:
        """Offsets in ``lo..hi`` of this partition recorded as successes in pages."""
        low, high = range_bounds(topic, partition, lo, hi)
        pages = await self._query_positions(
            page_index_key(subscription_id), low, high, f"read success pages of {topic}/{partition}"
        )
        found: set[int] = set()
        for item in pages:
            first, _ = parse_page_position(item["position"]["S"])
            if first <= hi:
                found.update(o for o in _page_offsets(item) if lo <= o <= hi)
        return found

    async def paged_successes(
        self,
        subscription_id: str,
        *,
        target: str,
        after: tuple[str, int] | None = None,
        limit: int = 100,
    ) -> tuple[list[tuple[LedgerEntry, str]], bool]:
        """Up to ``limit`` successes recorded in this subscription's pages, each with the
        position of its page, and whether more remain.

        They come page by page in index order (partition, then each page's last offset),
        offsets ascending within a page. ``after`` = (page position, offset) of the last one
        returned before continues right after it. A page keeps no key or handler, so entries
        carry ``target`` (the subscription's sink) and no key.
        """
        kwargs: dict[str, Any] = {
            "TableName": self.names.invocations,
            "IndexName": "by_subscription",
            "KeyConditionExpression": "subscription_id = :s",
            "ExpressionAttributeValues": {":s": {"S": page_index_key(subscription_id)}},
            # A page holds up to MAX_OFFSETS successes, typically 50-250.
            "Limit": max(2, min(100, limit // 50 + 2)),
        }
        if after is not None:
            kwargs["KeyConditionExpression"] += " AND #p >= :g"
            kwargs["ExpressionAttributeNames"] = {"#p": "position"}
            kwargs["ExpressionAttributeValues"][":g"] = {"S": after[0]}
        found: list[tuple[LedgerEntry, str]] = []
        async with contextlib.aclosing(self._page_groups(kwargs)) as groups:
            async for page_pos, offsets, created, completed in groups:
                if after is not None and page_pos == after[0]:
                    offsets = [o for o in offsets if o > after[1]]
                topic, partition = _split_position(page_pos.rsplit("|", 1)[0])[:2]
                for offset in offsets:
                    if len(found) == limit:
                        return found, True  # this offset, at least, is still to come
                    entry = LedgerEntry(
                        id=invocation_id(subscription_id, topic, partition, offset),
                        subscription_id=subscription_id,
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=None,
                        target=target,
                        status="SUCCEEDED",
                        attempts=1,
                        created_at_ms=created,
                        updated_at_ms=completed,
                        completed_at_ms=completed,
                    )
                    found.append((entry, page_pos))
        return found, False

    async def _page_groups(
        self, kwargs: dict[str, Any]
    ) -> AsyncGenerator[tuple[str, list[int], int, int], None]:
        """The pages of a query, those at one position merged: (position, offsets ascending,
        created, completed). Two pages share a position when two pollers paged the same
        offsets within the index's lag; merged, a cursor (position, offset) stays exact."""
        position: str | None = None
        offsets: set[int] = set()
        created = completed = 0
        kwargs = dict(kwargs)
        while True:
            page = await self._call(partial(self._client.query, **kwargs), "list success pages")
            for item in page.get("Items", []):
                if item["position"]["S"] != position:
                    if position is not None:
                        yield position, sorted(offsets), created, completed
                    position, offsets = item["position"]["S"], set()
                    created, completed = int(item["created_at"]["N"]), 0
                offsets.update(_page_offsets(item))
                completed = max(completed, int(item["completed_at"]["N"]))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if position is not None:
            yield position, sorted(offsets), created, completed

    async def _query_positions(
        self, index_key: str, low: str, high: str, what: str, *, only: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item under ``index_key`` of the ``by_subscription`` index with a position in
        ``low..high`` (rows under a subscription ID, pages under its page key)."""
        kwargs: dict[str, Any] = {
            "TableName": self.names.invocations,
            "IndexName": "by_subscription",
            "KeyConditionExpression": "subscription_id = :s AND #p BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#p": "position"},
            "ExpressionAttributeValues": {
                ":s": {"S": index_key},
                ":lo": {"S": low},
                ":hi": {"S": high},
            },
        }
        if only is not None:
            kwargs["ProjectionExpression"] = only
        return await self._query_all(kwargs, what)

    async def _query_all(self, kwargs: dict[str, Any], what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs = dict(kwargs)
        while True:
            page = await self._call(partial(self._client.query, **kwargs), what)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def query_entries(
        self,
        subscription_id: str,
        *,
        limit: int = 100,
        start_after: str | None = None,
    ) -> tuple[list[LedgerEntry], str | None]:
        """One page of a subscription's ledger in (topic, partition, offset) order."""
        kwargs: dict[str, Any] = {
            "TableName": self.names.invocations,
            "IndexName": "by_subscription",
            "KeyConditionExpression": "subscription_id = :s",
            "ExpressionAttributeValues": {":s": {"S": subscription_id}},
            "Limit": limit,
        }
        if start_after:
            kwargs["ExclusiveStartKey"] = {
                "id": {"S": start_after.split("#", 1)[1]},
                "subscription_id": {"S": subscription_id},
                "position": {"S": start_after.split("#", 1)[0]},
            }
        resp = await self._call(lambda: self._client.query(**kwargs), "list invocations")
        entries = [_entry_from_item(i) for i in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        token = f"{last['position']['S']}#{last['id']['S']}" if last else None
        return entries, token

    async def scan_entries(self) -> list[LedgerEntry]:
        items = await self._scan_all(self.names.invocations, "list invocations")
        return [_entry_from_item(i) for i in items if is_ledger_row(i)]

    async def find_entries(
        self,
        *,
        subscription_id: str | None = None,
        statuses: Sequence[str] = (),
        key: str | None = None,
        target: str | None = None,
        limit: int = 100,
        start_key: dict[str, Any] | None = None,
    ) -> tuple[list[LedgerEntry], dict[str, Any] | None]:
        """One page of ledger rows matching every given filter, and the key to continue from.

        With a subscription the rows come from its index in (topic, partition, offset) order;
        without one the table is scanned (unordered). DynamoDB filters after reading, so this
        reads further pages until ``limit`` rows matched, the ledger ends or it has read
        :data:`FIND_READ_PAGES` pages: fewer than ``limit`` rows, even none, with a key to
        continue from are not the end. The key continues right after the last row returned,
        or after the last item read when the budget ran out first.
        """
        kwargs: dict[str, Any] = {"TableName": self.names.invocations}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        filters: list[str] = []
        if statuses:
            names["#st"] = "status"
            marks = []
            for index, status in enumerate(statuses):
                values[f":st{index}"] = {"S": status}
                marks.append(f":st{index}")
            filters.append(f"#st IN ({', '.join(marks)})")
        if key is not None:
            # A cut key is found by the hash of the whole key (adapter.store.row_limits).
            names["#kh"] = "key_sha256"
            values[":kh"] = {"S": key_sha256(key)}
            if stored_key(key).sha256 is not None:
                filters.append("#kh = :kh")
            else:
                names["#k"] = "key"
                values[":k"] = {"S": key}
                # A row written reduced has its key cut shorter than the store cuts keys.
                filters.append("((#k = :k AND attribute_not_exists(#kh)) OR #kh = :kh)")
        if target is not None:
            names["#t"] = "target"
            values[":t"] = {"S": target}
            filters.append("#t = :t")
        if subscription_id is not None:
            kwargs["IndexName"] = "by_subscription"
            kwargs["KeyConditionExpression"] = "subscription_id = :sub"
            values[":sub"] = {"S": subscription_id}
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if values:
            kwargs["ExpressionAttributeValues"] = values
        call = self._client.query if subscription_id is not None else self._client.scan
        by_subscription = subscription_id is not None
        found: list[LedgerEntry] = []
        start = start_key
        reads = 0
        while True:
            page_kwargs = {**kwargs, "Limit": max(limit - len(found), 100)}
            if start:
                page_kwargs["ExclusiveStartKey"] = start
            page = await self._call(partial(call, **page_kwargs), "list invocations")
            items = page.get("Items", [])
            for index, item in enumerate(items):
                if not is_ledger_row(item):
                    # Only a scan meets pages and topic references (not in this index).
                    continue
                found.append(_entry_from_item(item))
                if len(found) == limit:
                    if index == len(items) - 1 and "LastEvaluatedKey" not in page:
                        return found, None
                    return found, _ledger_page_key(item, by_subscription)
            start = page.get("LastEvaluatedKey")
            if start is None:
                return found, None
            reads += 1
            if reads == FIND_READ_PAGES:
                # The read budget is spent: continue after the last item read, in the key
                # shape of a row's (so the page token made of it is one the API accepts).
                return found, _ledger_page_key(start, by_subscription)

    # -- invocations by ID and newest first (adapter.store.ledger_index) ---------------------

    async def remember_topic(self, subscription_id: str, topic: str) -> bool:
        """Record a subscription's topic, once: a conditional put (another poller's item,
        written first, holds the same fact). Pollers record a topic before they write any
        ledger row of it, so ``True`` -- this put was the first -- means the ledger held
        nothing of the topic when it was sent. The item also says what the topic reference
        in invocation IDs stands for. A reference shared by two topics (a hash collision)
        only ever answers ``False``."""
        item = {
            "id": {"S": topic_ref_item_id(topic_ref(subscription_id, topic))},
            "ref_subscription": {"S": subscription_id},
            "topic_key": {"S": topic},
        }
        try:
            await self._call(
                lambda: self._client.put_item(
                    TableName=self.names.invocations,
                    Item=item,
                    ConditionExpression="attribute_not_exists(id)",
                ),
                f"record the topic reference of {subscription_id}",
            )
        except ConditionFailedError:
            return False
        return True

    async def resolve_topic_ref(self, ref: int) -> tuple[str, str] | None:
        """(subscription ID, topic key) of a topic reference, or None if none was recorded."""
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.invocations, Key={"id": {"S": topic_ref_item_id(ref)}}
            ),
            "resolve a topic reference",
        )
        item = resp.get("Item")
        if not item or "topic_key" not in item:
            return None
        return item["ref_subscription"]["S"], item["topic_key"]["S"]

    async def paged_success(
        self, subscription_id: str, topic: str, partition: int, offset: int, *, target: str
    ) -> LedgerEntry | None:
        """The success of this record if a page lists it."""
        low, high = range_bounds(topic, partition, offset, offset)
        pages = await self._query_positions(
            page_index_key(subscription_id), low, high, f"read success pages of {topic}/{partition}"
        )
        for item in pages:
            first, _ = parse_page_position(item["position"]["S"])
            if first <= offset and offset in _page_offsets(item):
                created, completed = int(item["created_at"]["N"]), int(item["completed_at"]["N"])
                return paged_entry(
                    subscription_id, topic, partition, offset, target, created, completed
                )
        return None

    async def newest_items(
        self,
        *,
        index: str,
        key: str,
        before_ms: int | None,
        weigh: Callable[[dict[str, Any]], int],
        limit: int,
        status: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Items under ``key`` of the ``by_time`` or ``by_status`` index, newest first, created
        at or before ``before_ms``, and whether the key has no more.

        Reads until the weights of the items kept (how many listing entries each stands for
        after the listing's cursor; 0 drops it) reach ``limit``, then on through every item
        created in the same millisecond as the last one kept: the listing orders those by ID.
        ``status`` keeps only rows of that status (a filter on the ``by_time`` index).
        """
        hash_attr = "sub_status" if index == BY_STATUS else "subscription_id"
        kwargs: dict[str, Any] = {
            "TableName": self.names.invocations,
            "IndexName": index,
            "KeyConditionExpression": "#h = :h",
            "ExpressionAttributeNames": {"#h": hash_attr},
            "ExpressionAttributeValues": {":h": {"S": key}},
            "ScanIndexForward": False,
            "Limit": min(1000, limit + 1),
        }
        if before_ms is not None:
            kwargs["KeyConditionExpression"] += " AND created_at <= :t"
            kwargs["ExpressionAttributeValues"][":t"] = {"N": str(before_ms)}
        if status is not None:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"]["#s"] = "status"
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status}
        items: list[dict[str, Any]] = []
        weight = 0
        last_ms: int | None = None
        while True:
            page = await self._call(partial(self._client.query, **kwargs), "list invocations")
            for item in page.get("Items", []):
                created = int(item["created_at"]["N"])
                if weight >= limit and last_ms is not None and created < last_ms:
                    return items, False
                count = weigh(item)
                if count:
                    items.append(item)
                    weight += count
                    last_ms = created
            if "LastEvaluatedKey" not in page:
                return items, True
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- admin commands for the poller that holds an invocation (adapter.store.commands) -----

    async def put_command(self, command: Command) -> Command:
        """Queue ``command`` unless one is pending for its invocation; returns the pending one."""
        item = command_item(command, int(self._clock()) + COMMAND_TTL_S)
        try:
            await self._call(
                lambda: self._client.put_item(
                    TableName=self.names.invocations,
                    Item=item,
                    ConditionExpression="attribute_not_exists(id) OR cmd_state <> :p",
                    ExpressionAttributeValues={":p": {"S": PENDING}},
                ),
                f"queue a command for {command.invocation_id}",
            )
        except ConditionFailedError:
            pending = await self.get_command(command.invocation_id)
            if pending is None:
                return await self.put_command(command)  # finished and expired meanwhile
            command = pending
        # Announced after it is stored (pollers look for commands only when told), and again
        # for one already pending, so that asking again mends an announcement that failed.
        await self.changes.write(
            [],
            [(ChangeKind.COMMAND, command.subscription_id)],
            f"announce the command for {command.invocation_id}",
        )
        return command

    async def get_command(self, invocation_id: str) -> Command | None:
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.invocations,
                Key={"id": {"S": command_id(invocation_id)}},
                ConsistentRead=True,
            ),
            f"read the command for {invocation_id}",
        )
        item = resp.get("Item")
        return command_from_item(item) if item else None

    async def pending_commands(self, since_ms: int) -> list[Command]:
        """Commands requested since ``since_ms`` and not yet carried out: one Query."""
        items = await self._query_all(
            {
                "TableName": self.names.invocations,
                "IndexName": "by_subscription",
                "KeyConditionExpression": "subscription_id = :k AND #p >= :since",
                "FilterExpression": "cmd_state = :pending",
                "ExpressionAttributeNames": {"#p": "position"},
                "ExpressionAttributeValues": {
                    ":k": {"S": COMMANDS_KEY},
                    ":since": {"S": command_position(since_ms)},
                    ":pending": {"S": PENDING},
                },
            },
            "read admin commands",
        )
        return [command_from_item(item) for item in items]

    async def finish_command(self, command: Command, outcome: str, done_at_ms: int) -> bool:
        """Mark a pending command carried out; False if it was not pending any more."""
        try:
            await self._call(
                lambda: self._client.update_item(
                    TableName=self.names.invocations,
                    Key={"id": {"S": command_id(command.invocation_id)}},
                    UpdateExpression="SET cmd_state = :done, outcome = :o, done_at = :t",
                    ConditionExpression="cmd_state = :pending AND requested_at = :r",
                    ExpressionAttributeValues={
                        ":done": {"S": DONE},
                        ":pending": {"S": PENDING},
                        ":o": {"S": outcome},
                        ":t": {"N": str(done_at_ms)},
                        ":r": {"N": str(command.requested_at_ms)},
                    },
                ),
                f"finish the command for {command.invocation_id}",
            )
        except ConditionFailedError:
            return False
        return True

    async def delete_entry_if(self, inv_id: str, statuses: Iterable[str]) -> bool:
        """Delete a ledger row only while its status is one of ``statuses``.

        False if the row is gone; ConditionFailedError if its status is another.
        """
        values = {f":s{i}": {"S": s} for i, s in enumerate(statuses)}
        resp = await self._call(
            lambda: self._client.delete_item(
                TableName=self.names.invocations,
                Key={"id": {"S": inv_id}},
                ConditionExpression=f"attribute_not_exists(id) OR #s IN ({', '.join(values)})",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD",
            ),
            f"delete invocation {inv_id}",
        )
        return "Attributes" in resp

    async def delete_entries_from(
        self, subscription_id: str, topic: str, partition: int, offset: int
    ) -> int:
        """Delete a partition's ledger rows at ``offset`` and above; returns how many."""
        low = position(topic, partition, offset)
        high = position(topic, partition, 10**20 - 1)
        rows = await self._query_positions(
            subscription_id, low, high, f"read ledger of {topic}/{partition}", only="id"
        )
        requests: list[dict[str, Any]] = [{"DeleteRequest": {"Key": {"id": r["id"]}}} for r in rows]
        deleted = len(rows)
        # Success pages whose last offset is at or above the reset point.
        pages = await self._query_positions(
            page_index_key(subscription_id),
            low,
            high + "|~",
            f"read success pages of {topic}/{partition}",
        )
        expires = int(self._clock() + self._retention_s)
        for item in pages:
            offsets = _page_offsets(item)
            kept = tuple(o for o in offsets if o < offset)
            deleted += len(offsets) - len(kept)
            if kept:
                # The page straddles the reset point: keep its part below.
                shrunk = Page(
                    subscription_id,
                    topic,
                    partition,
                    kept,
                    int(item["created_at"]["N"]),
                    int(item["completed_at"]["N"]),
                )
                page_item = _page_item(shrunk, expires, item["id"]["S"])
                requests.append({"PutRequest": {"Item": page_item}})
            else:
                requests.append({"DeleteRequest": {"Key": {"id": item["id"]}}})
        if requests:
            await asyncio.to_thread(self._batch_write_sync, requests, 30)
        return deleted

    # -- Kafka clusters ---------------------------------------------------------------------

    async def create_cluster(self, data: dict[str, Any], *, since: int | None = None) -> None:
        """Insert a cluster (``name``, ``properties``, ``created_at``); ConditionFailedError
        if the name is taken."""
        item = _to_item(await self.secrets.seal_row(data, CLUSTER_SECRETS))
        await self.changes.write(
            [
                self._put(
                    self.names.clusters,
                    item,
                    ConditionExpression="attribute_not_exists(#n)",
                    ExpressionAttributeNames={"#n": "name"},
                )
            ],
            [(ChangeKind.CLUSTER, str(data.get("name")))],
            f"create Kafka cluster {data.get('name')}",
            since=since,
        )

    async def replace_cluster(self, data: dict[str, Any], *, since: int | None = None) -> None:
        """Replace an existing cluster; ConditionFailedError if it does not exist."""
        item = _to_item(await self.secrets.seal_row(data, CLUSTER_SECRETS))
        await self.changes.write(
            [
                self._put(
                    self.names.clusters,
                    item,
                    ConditionExpression="attribute_exists(#n)",
                    ExpressionAttributeNames={"#n": "name"},
                )
            ],
            [(ChangeKind.CLUSTER, str(data.get("name")))],
            f"update Kafka cluster {data.get('name')}",
            since=since,
        )

    async def get_cluster(self, name: str) -> dict[str, Any] | None:
        resp = await self._call(
            lambda: self._client.get_item(
                TableName=self.names.clusters, Key={"name": {"S": name}}, ConsistentRead=True
            ),
            f"read Kafka cluster {name}",
        )
        item = resp.get("Item")
        if not item:
            return None
        return await self.secrets.open_row(_from_item(item), CLUSTER_SECRETS)

    async def list_clusters(self) -> list[dict[str, Any]]:
        items = await self._scan_all(self.names.clusters, "list Kafka clusters")
        rows = [await self.secrets.open_row(_from_item(i), CLUSTER_SECRETS) for i in items]
        return sorted(rows, key=lambda c: str(c["name"]))

    async def delete_cluster(self, name: str) -> bool:
        try:
            await self.changes.write(
                [
                    self._delete(
                        self.names.clusters,
                        {"name": {"S": name}},
                        ConditionExpression="attribute_exists(#n)",
                        ExpressionAttributeNames={"#n": "name"},
                    )
                ],
                [(ChangeKind.CLUSTER, name)],
                f"delete Kafka cluster {name}",
            )
        except ConditionsFailed:
            return False
        return True

    # -- workflows --------------------------------------------------------------------------

    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool:
        """Claim a workflow ID for one invocation; False if another invocation already has it.

        The claiming invocation may claim again (redelivery of the same record).
        """
        expires = int(self._clock() + self._retention_s)
        claim = workflow_claim_id(service, key)
        try:
            await self._call(
                lambda: self._client.put_item(
                    TableName=self.names.workflows,
                    Item={
                        "id": {"S": claim},
                        "invocation_id": {"S": invocation_id},
                        "expires_at": {"N": str(expires)},
                    },
                    ConditionExpression="attribute_not_exists(id) OR invocation_id = :me",
                    ExpressionAttributeValues={":me": {"S": invocation_id}},
                ),
                f"claim workflow {claim if len(claim) <= 200 else claim[:200] + '…'}",
            )
        except ConditionFailedError:
            return False
        return True


_CLAIM_ID_MAX_BYTES = 1024
"""A DynamoDB partition key holds at most 2,048 bytes; a record key may be far longer."""


def workflow_claim_id(service: str, key: str) -> str:
    """The ID of a workflow's claim item: ``service/key``, or, for a key that would not fit a
    partition key, ``service/sha256:<hex of the key>`` (one claim per key all the same)."""
    claim = f"{service}/{key}"
    if len(claim.encode()) <= _CLAIM_ID_MAX_BYTES:
        return claim
    return f"{service}/sha256:{hashlib.sha256(key.encode()).hexdigest()}"
