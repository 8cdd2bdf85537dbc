"""Table definitions, read from the single source of truth ``adapter/store/tables.json``.

The same JSON feeds serverless.yml's Resources (``infra/poller/dynamodb-resources.js`` reads it
from the checkout), the local bootstrap and the tests, so the code and the deployed tables cannot
drift apart. It ships inside the package and is read with :mod:`importlib.resources`, so an
installed wheel finds it wherever site-packages is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapter.errors import StoreError

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
    """Create every missing table (idempotent); returns the names created."""
    created: list[str] = []
    try:
        existing = set(client.list_tables()["TableNames"])
        for logical, table in names.all().items():
            if table in existing:
                continue
            spec = dict(table_definitions()[logical])
            ttl = spec.pop("TimeToLiveSpecification", None)
            client.create_table(TableName=table, **spec)
            client.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
            )
            if ttl:
                client.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
            created.append(table)
    except (BotoCoreError, ClientError) as exc:
        raise StoreError(f"cannot create DynamoDB tables: {exc}") from exc
    return created
