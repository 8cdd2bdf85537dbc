"""Table definitions, read from the single source of truth ``adapter/store/tables.json``.

The same JSON feeds serverless.yml's Resources (``infra/poller/dynamodb-resources.js`` reads it
from the checkout), the local bootstrap and the tests, so the code and the deployed tables cannot
drift apart. It ships inside the package and is read with :mod:`importlib.resources`, so an
installed wheel finds it wherever site-packages is.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapter.errors import StoreError
from adapter.store.changes import new_table_item

log = logging.getLogger(__name__)

__all__ = ["TABLES_FILE", "TableNames", "create_tables", "table_definitions"]

TABLES_FILE: Traversable = files(__package__ or "adapter.store").joinpath("tables.json")
_LOGICAL = ("subscriptions", "deployments", "services", "clusters", "workflows", "invocations")


@cache
def table_definitions() -> dict[str, dict[str, Any]]:
    """Logical name → CreateTable arguments (without TableName)."""
    try:
        raw: dict[str, Any] = json.loads(TABLES_FILE.read_text(encoding="utf-8"))
        return {name: raw[name] for name in _LOGICAL}
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(
            f"the package's table definitions ({TABLES_FILE}) are unusable: {exc!r}"
        ) from exc


@dataclass(frozen=True, slots=True)
class TableNames:
    prefix: str = "kafka-ingress-"

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}subscriptions"

    @property
    def deployments(self) -> str:
        return f"{self.prefix}deployments"

    @property
    def services(self) -> str:
        return f"{self.prefix}services"

    @property
    def clusters(self) -> str:
        return f"{self.prefix}clusters"

    @property
    def workflows(self) -> str:
        return f"{self.prefix}workflows"

    @property
    def invocations(self) -> str:
        return f"{self.prefix}invocations"

    def all(self) -> dict[str, str]:
        return {name: f"{self.prefix}{name}" for name in _LOGICAL}


def create_tables(client: Any, names: TableNames) -> list[str]:
    """Create every missing table and every missing index of an existing one (idempotent);
    returns what was created."""
    created: list[str] = []
    try:
        # ListTables answers 100 names a page: an account (or a moto server) may hold more.
        pages = client.get_paginator("list_tables").paginate()
        existing = {name for page in pages for name in page["TableNames"]}
        for logical, table in names.all().items():
            if table in existing:
                created += _add_missing_indexes(client, table, table_definitions()[logical])
                continue
            spec = dict(table_definitions()[logical])
            ttl = spec.pop("TimeToLiveSpecification", None)
            client.create_table(TableName=table, **spec)
            client.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
            )
            if ttl:
                client.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
            if logical == "subscriptions":
                _mark_new_subscriptions_table(client, table)
            created.append(table)
    except (BotoCoreError, ClientError) as exc:
        raise StoreError(f"cannot create DynamoDB tables: {exc}") from exc
    return created


def _mark_new_subscriptions_table(client: Any, table: str) -> None:
    """Write the change item of a table just created (nothing to back-fill claims for).
    Conditional: another process may have written first. Without it, the first POST does
    the one-time back-fill instead, so a failure is only logged."""
    try:
        client.put_item(
            TableName=table, Item=new_table_item(), ConditionExpression="attribute_not_exists(id)"
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            log.warning("cannot mark new table %s as needing no claim back-fill: %s", table, exc)


def _add_missing_indexes(client: Any, table: str, spec: dict[str, Any]) -> list[str]:
    """Add the global secondary indexes a table written by an earlier version lacks.

    DynamoDB builds one index per UpdateTable, so each is awaited before the next (the
    backfill of a large table takes minutes; moto's is immediate)."""
    described = client.describe_table(TableName=table)["Table"]
    have = {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])}
    types = {a["AttributeName"]: a for a in spec.get("AttributeDefinitions", [])}
    added: list[str] = []
    for index in spec.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] in have:
            continue
        keys = [types[k["AttributeName"]] for k in index["KeySchema"]]
        create = dict(index)
        if spec.get("BillingMode") != "PAY_PER_REQUEST":
            create.setdefault(
                "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
            )
        client.update_table(
            TableName=table,
            AttributeDefinitions=keys,
            GlobalSecondaryIndexUpdates=[{"Create": create}],
        )
        _wait_index_active(client, table, index["IndexName"])
        added.append(f"{table}:{index['IndexName']}")
    return added


def _wait_index_active(client: Any, table: str, name: str, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        indexes = client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
        status = next((i.get("IndexStatus") for i in indexes if i["IndexName"] == name), None)
        if status in (None, "ACTIVE"):
            return
        if time.monotonic() > deadline:
            raise StoreError(f"index {name} of {table} not active after {timeout_s:.0f}s")
        time.sleep(2)
