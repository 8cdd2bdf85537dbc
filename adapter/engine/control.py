"""What a poller should run, kept current from the change feed instead of scanning tables.

Each poll reads the change item (:mod:`adapter.store.changes`, one GetItem). When its version
moved, the keys it names are read again: a subscription by key, the changed Kafka clusters
through the catalog's hook, the registry entries dropped from the cache that
:func:`~adapter.engine.supervisor.resolve_target` reads, and a queued admin command wakes the
command poller. On start, or after falling further behind than the feed's ring, everything is
read once. An idle poller thus makes one request per poll interval, whatever the number of
subscriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from adapter.config import KafkaCluster
from adapter.ids import creation_order
from adapter.model import ServiceInfo, Subscription
from adapter.store.changes import Change, ChangeKind, ChangeLog

__all__ = ["SETTLE_TRIES", "ControlFeed", "ControlStore", "Registry", "RegistryCache"]

log = logging.getLogger(__name__)

RefreshClusters = Callable[[Iterable[str] | None], Awaitable[Mapping[str, KafkaCluster | None]]]
"""Reads the dynamic clusters, all (None) or those named, and returns what it found of them
(None: gone or unusable); the poller's catalog also takes them."""

SETTLE_TRIES = 5
"""Passes of :meth:`ControlFeed.poll` before it gives up on a moment with no changes."""

_PAIRED = frozenset({ChangeKind.SUBSCRIPTION, ChangeKind.CLUSTER})
"""What a subscription's runner is built from: read as of one moment."""


class Registry(Protocol):
    """Where a sink's service and deployment are looked up."""

    async def get_service(self, name: str) -> ServiceInfo | None: ...

    async def get_deployment(self, dep_id: str) -> dict[str, Any] | None: ...


class ControlStore(Registry, Protocol):
    async def read_changes(self) -> ChangeLog: ...

    async def list_subscriptions(self) -> list[Subscription]: ...

    async def get_subscription(self, sub_id: str) -> Subscription | None: ...


class RegistryCache:
    """Services and deployments as last read, until the change feed says they changed."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store
        self._services: dict[str, ServiceInfo | None] = {}
        self._deployments: dict[str, dict[str, Any] | None] = {}

    async def get_service(self, name: str) -> ServiceInfo | None:
        if name not in self._services:
            self._services[name] = await self._store.get_service(name)
        return self._services[name]

    async def get_deployment(self, dep_id: str) -> dict[str, Any] | None:
        if dep_id not in self._deployments:
            self._deployments[dep_id] = await self._store.get_deployment(dep_id)
        return self._deployments[dep_id]

    def forget(self, kind: str, key: str) -> None:
        if kind == ChangeKind.SERVICE:
            self._services.pop(key, None)
        elif kind == ChangeKind.DEPLOYMENT:
            self._deployments.pop(key, None)

    def clear(self) -> None:
        self._services.clear()
        self._deployments.clear()


class ControlFeed:
    """The subscriptions this poller knows, brought up to date by :meth:`poll`."""

    def __init__(
        self,
        store: ControlStore,
        *,
        refresh_clusters: RefreshClusters | None = None,
        on_commands: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._refresh_clusters = refresh_clusters
        self._on_commands = on_commands
        self.registry = RegistryCache(store)
        self._subs: dict[str, Subscription] = {}
        self._version: int | None = None
        self.full_reads = 0
        self.settled = False
        """Whether the last :meth:`poll` saw its subscriptions and clusters at one moment."""
        self.clusters: dict[str, KafkaCluster] = {}
        """The dynamic clusters as this feed read them, with its subscriptions (the shared
        catalog may be ahead: the admin API in the same process reads them too)."""

    @property
    def follows_clusters(self) -> bool:
        """Whether it reads the dynamic clusters (:attr:`clusters`) along with subscriptions."""
        return self._refresh_clusters is not None

    @property
    def subscriptions(self) -> list[Subscription]:
        return sorted(self._subs.values(), key=lambda s: creation_order(s.id))

    async def poll(self) -> list[Subscription]:
        """Apply what changed since the last poll; StoreError leaves the known state (and the
        version, so the next poll reads the same changes again).

        Clusters are read before subscriptions: an admin write landing between the two (a
        cluster moved, then a subscription given a secret for its new brokers) would pair a
        subscription with its cluster as it was before. So once something was read, the feed
        is read again, and what changed meanwhile is read again, until a pass saw no
        subscription or cluster change land during it: then what :meth:`poll` returns was
        true at one moment (:attr:`settled`), with the clusters as read by the same passes
        (:attr:`clusters`). After :data:`SETTLE_TRIES` passes that saw
        changes, :attr:`settled` is False: start nothing from this state (the next poll goes
        on from here)."""
        self.settled = False
        feed = await self._store.read_changes()
        changes = None if self._version is None else feed.since(self._version)
        for _ in range(SETTLE_TRIES):
            if changes is None:
                await self._read_everything()
            elif changes:
                await self._apply(changes)
            else:
                self.settled = True
                return self.subscriptions
            self._version = feed.version
            feed = await self._store.read_changes()
            changes = feed.since(self._version)
            if changes is not None and not any(c.kind in _PAIRED for c in changes):
                # Nothing they are read together with changed: the rest (registry entries,
                # commands) is applied as it is, with no need to be read again.
                await self._apply(changes)
                self._version = feed.version
                self.settled = True
                return self.subscriptions
        return self.subscriptions

    async def _read_everything(self) -> None:
        self.full_reads += 1
        if self._refresh_clusters is not None:
            found = await self._refresh_clusters(None)
            self.clusters = {name: c for name, c in found.items() if c is not None}
        subs = await self._store.list_subscriptions()
        self._subs = {s.id: s for s in subs}
        self.registry.clear()
        if self._on_commands is not None:
            self._on_commands()

    async def _apply(self, changes: Iterable[Change]) -> None:
        subs: set[str] = set()
        clusters: set[str] = set()
        for change in changes:
            if change.kind == ChangeKind.SUBSCRIPTION:
                subs.add(change.key)
            elif change.kind == ChangeKind.CLUSTER:
                clusters.add(change.key)
            elif change.kind == ChangeKind.COMMAND:
                if self._on_commands is not None:
                    self._on_commands()
            else:
                self.registry.forget(change.kind, change.key)
        if clusters and self._refresh_clusters is not None:
            for name, cluster in (await self._refresh_clusters(sorted(clusters))).items():
                if cluster is None:
                    self.clusters.pop(name, None)
                else:
                    self.clusters[name] = cluster
        for sub_id in sorted(subs):
            sub = await self._store.get_subscription(sub_id)
            if sub is None:
                self._subs.pop(sub_id, None)
            else:
                self._subs[sub_id] = sub
        log.debug("change feed: %d subscriptions, %d clusters changed", len(subs), len(clusters))
