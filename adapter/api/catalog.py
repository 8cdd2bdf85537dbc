"""The Kafka clusters a poller knows: static ones from the settings, dynamic ones from the API.

Static clusters come from ``[[ingress.kafka-clusters]]`` and cannot be changed through the
API. Dynamic clusters are created with ``POST /kafka-clusters`` and stored in DynamoDB's
``clusters`` table; every poller reloads the ones the change feed names as changed (the
supervisor's ``refresh_clusters`` hook; all of them when it starts), so a subscription on a
new cluster starts anywhere.

Like Restate, a cluster is shown as flat librdkafka properties; the brokers of a static
cluster appear as ``metadata.broker.list`` and its creation time as the epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from adapter.config import KafkaCluster, Settings
from adapter.errors import ConfigError, ValidationError
from adapter.kafka.options import resolve_options, validate_options
from adapter.secrets import check_references
from adapter.store.dynamo import DynamoStore

__all__ = ["BROKER_KEYS", "ClusterCatalog", "ClusterEntry", "cluster_from_properties"]

BROKER_KEYS = ("bootstrap.servers", "metadata.broker.list")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterEntry:
    name: str
    properties: dict[str, str]
    created_at_ms: int
    static: bool


def cluster_from_properties(name: str, properties: Mapping[str, str]) -> KafkaCluster:
    """A :class:`KafkaCluster` from flat properties; ValidationError says what is wrong."""
    if not any(properties.get(k) for k in BROKER_KEYS):
        raise ValidationError(
            f"Kafka cluster {name!r}: properties need bootstrap.servers (or "
            'metadata.broker.list), e.g. {"bootstrap.servers": "broker:9092"}'
        )
    try:
        validate_options(properties)
        check_references(properties)
        options = resolve_options(
            subscription_id="sub_",
            bootstrap_servers=(),
            cluster_options=properties,
            subscription_options={},
        )
    except ConfigError as exc:
        raise ValidationError(f"Kafka cluster {name!r}: {exc}") from None
    extra = {k: v for k, v in properties.items() if k not in BROKER_KEYS}
    try:
        return KafkaCluster.model_validate(
            {"name": name, "brokers": options.bootstrap_servers, **extra}
        )
    except ValueError as exc:
        raise ValidationError(f"Kafka cluster {name!r}: {exc}") from None


def _static_entry(cluster: KafkaCluster) -> ClusterEntry:
    properties = dict(cluster.options)
    properties["metadata.broker.list"] = ",".join(cluster.brokers)
    return ClusterEntry(cluster.name, properties, 0, static=True)


class ClusterCatalog:
    """Static + dynamic clusters. ``snapshot()`` is synchronous (the supervisor calls it)."""

    def __init__(self, settings: Settings, store: DynamoStore) -> None:
        self._static = dict(settings.clusters)
        self._store = store
        self._dynamic: dict[str, ClusterEntry] = {}
        self._built: dict[str, KafkaCluster] = {}
        # Stored clusters this version cannot use, and why (warned about once per reason).
        self.unusable: dict[str, str] = {}
        self._warned: dict[str, str] = {}
        # Reads are numbered as they begin; an entry keeps the number of the read it came
        # from, and a read that began earlier does not replace it when it ends later (a full
        # listing begun before a by-name read of a cluster just updated).
        self._reads = 0
        self._read_of: dict[str, int] = {}

    def snapshot(self) -> dict[str, KafkaCluster]:
        return {**self._built, **self._static}

    def entries(self) -> list[ClusterEntry]:
        static = [_static_entry(c) for c in self._static.values()]
        dynamic = [e for name, e in self._dynamic.items() if name not in self._static]
        return sorted(static + dynamic, key=lambda e: e.name)

    def get(self, name: str) -> ClusterEntry | None:
        if name in self._static:
            return _static_entry(self._static[name])
        return self._dynamic.get(name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def is_static(self, name: str) -> bool:
        return name in self._static

    async def lookup(self, name: str) -> KafkaCluster | None:
        """One cluster as stored now: static from the settings, dynamic read by key (one
        GetItem, whatever the number of clusters)."""
        if name in self._static:
            return self._static[name]
        await self.refresh([name])
        return self._built.get(name)

    async def refresh(self, names: Iterable[str] | None = None) -> dict[str, KafkaCluster | None]:
        """Reload the dynamic clusters, all of them or only ``names`` (the change feed says
        which changed). StoreError leaves the known ones in place.

        Returns what this read found of the dynamic clusters it read (None: gone, or stored
        in a form this version cannot use), whatever reads of others ended meanwhile: the
        change feed pairs them with the subscriptions it read in the same pass."""
        found: dict[str, KafkaCluster | None] = {}
        if names is not None:
            for name in names:
                read = self._begin_read()
                found[name] = self._apply(name, await self._store.get_cluster(name), read)
        else:
            read = self._begin_read()
            rows = {str(row["name"]): row for row in await self._store.list_clusters()}
            for name in set(self._dynamic) - set(rows):
                found[name] = self._apply(name, None, read)
            for name, row in rows.items():
                found[name] = self._apply(name, row, read)
        return {name: c for name, c in found.items() if name not in self._static}

    def _begin_read(self) -> int:
        self._reads += 1
        return self._reads

    def _apply(self, name: str, row: dict[str, Any] | None, read: int) -> KafkaCluster | None:
        """Take what a read found of ``name`` unless a read begun later gave it already;
        return the cluster this read found either way (None: none, or unusable)."""
        properties: dict[str, str] | None = None
        built: KafkaCluster | None = None
        problem: ValidationError | None = None
        if row is not None:
            properties = {str(k): str(v) for k, v in (row.get("properties") or {}).items()}
            try:
                built = cluster_from_properties(name, properties)
            except ValidationError as exc:
                problem = exc
        if self._read_of.get(name, 0) > read:
            return built  # a read begun after this one already gave this cluster
        self._read_of[name] = read
        self._dynamic.pop(name, None)
        self._built.pop(name, None)
        self.unusable.pop(name, None)
        if row is None or properties is None:
            return None
        self._dynamic[name] = ClusterEntry(name, properties, int(row.get("created_at", 0)), False)
        if built is not None:
            self._built[name] = built
        elif problem is not None:
            # Stored by an older version with other rules: keep it listed, do not use it,
            # and say so once (its subscriptions would otherwise just wait, unexplained).
            if self._warned.get(name) != str(problem):
                log.warning(
                    "not using stored %s; PATCH /kafka-clusters/%s to fix it", problem, name
                )
            self._warned[name] = str(problem)
            self.unusable[name] = str(problem)
        return built
