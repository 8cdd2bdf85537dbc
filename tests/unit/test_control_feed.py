"""The change feed's ring and the poller's control feed, against an in-memory store."""

from __future__ import annotations

from typing import Any

from adapter.engine.control import SETTLE_TRIES, ControlFeed
from adapter.model import ServiceInfo, ServiceType, Subscription
from adapter.store.changes import RING, Change, ChangeKind, ChangeLog, claim_id


def _log(version: int, changes: list[tuple[str, str]]) -> ChangeLog:
    """The item after ``changes``, the last of which made ``version``."""
    first = version - len(changes) + 1
    ring = {(first + i) % RING: Change(first + i, k, key) for i, (k, key) in enumerate(changes)}
    return ChangeLog(version, ring)


def test_since_lists_the_changes_after_a_version_oldest_first() -> None:
    log = _log(5, [("sub", "a"), ("cluster", "c"), ("sub", "b")])
    assert [c.key for c in log.since(2) or []] == ["a", "c", "b"]
    assert log.since(5) == []


def test_since_is_none_when_the_ring_lost_changes_or_the_item_went_back() -> None:
    changes = [("sub", str(i)) for i in range(RING + 5)]
    log = _log(RING + 5, changes)
    assert log.since(RING + 5 - RING) is not None  # exactly a ring's worth
    assert log.since(3) is None  # overwritten slots
    assert log.since(RING + 9) is None  # the item was recreated


def test_claims_ignore_the_subscription_id_but_not_an_explicit_group() -> None:
    a = Subscription("sub_a", "c", "t", "S", "h", {"group.id": "sub_a"})
    b = Subscription("sub_b", "c", "t", "S", "h", {"group.id": "sub_b"})
    g = Subscription("sub_g", "c", "t", "S", "h", {"group.id": "shared"})
    assert claim_id(a) == claim_id(b)
    assert claim_id(g) != claim_id(a)
    assert claim_id(a).startswith("~")


class _Store:
    def __init__(self) -> None:
        self.log = ChangeLog(0, {})
        self.subs: dict[str, Subscription] = {}
        self.services: dict[str, ServiceInfo] = {}
        self.calls: list[str] = []

    def change(self, kind: str, key: str) -> None:
        version = self.log.version + 1
        ring = dict(self.log.ring)
        ring[version % RING] = Change(version, kind, key)
        self.log = ChangeLog(version, ring)

    async def read_changes(self) -> ChangeLog:
        self.calls.append("read_changes")
        return self.log

    async def list_subscriptions(self) -> list[Subscription]:
        self.calls.append("list_subscriptions")
        return list(self.subs.values())

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        self.calls.append(f"get_subscription {sub_id}")
        return self.subs.get(sub_id)

    async def get_service(self, name: str) -> ServiceInfo | None:
        self.calls.append(f"get_service {name}")
        return self.services.get(name)

    async def get_deployment(self, dep_id: str) -> dict[str, Any] | None:
        return None


def _sub(sub_id: str, revision: int = 1) -> Subscription:
    return Subscription(sub_id, "c", "t", "S", "h", {}, revision=revision)


async def test_the_feed_reads_everything_once_then_only_what_changed() -> None:
    store = _Store()
    store.subs = {"sub_a": _sub("sub_a"), "sub_b": _sub("sub_b")}
    store.log = _log(7, [("sub", "sub_a")])
    clusters: list[list[str] | None] = []

    async def refresh(names: Any) -> dict[str, Any]:
        clusters.append(None if names is None else list(names))
        return {}

    feed = ControlFeed(store, refresh_clusters=refresh)
    assert [s.id for s in await feed.poll()] == ["sub_a", "sub_b"]
    # Read again once something was read: nothing changed meanwhile.
    assert store.calls == ["read_changes", "list_subscriptions", "read_changes"]
    assert clusters == [None]

    store.calls.clear()
    await feed.poll()
    assert store.calls == ["read_changes"]  # nothing changed: one read

    store.subs["sub_a"] = _sub("sub_a", revision=2)
    del store.subs["sub_b"]
    store.subs["sub_c"] = _sub("sub_c")
    for key in ("sub_a", "sub_b", "sub_c"):
        store.change(ChangeKind.SUBSCRIPTION, key)
    store.change(ChangeKind.CLUSTER, "east")
    store.calls.clear()
    subs = {s.id: s.revision for s in await feed.poll()}
    assert subs == {"sub_a": 2, "sub_c": 1}
    assert "list_subscriptions" not in store.calls
    assert clusters[-1] == ["east"]


async def test_falling_behind_the_ring_reads_everything_again() -> None:
    store = _Store()
    feed = ControlFeed(store)
    await feed.poll()
    for i in range(RING + 1):
        store.change(ChangeKind.SUBSCRIPTION, f"sub_{i}")
    store.calls.clear()
    await feed.poll()
    assert store.calls == ["read_changes", "list_subscriptions", "read_changes"]


async def test_registry_reads_are_cached_until_the_feed_names_them() -> None:
    store = _Store()
    store.services["Greeter"] = ServiceInfo("Greeter", ServiceType.SERVICE, "dp_1")
    feed = ControlFeed(store)
    await feed.poll()
    await feed.registry.get_service("Greeter")
    await feed.registry.get_service("Greeter")
    assert store.calls.count("get_service Greeter") == 1
    store.change(ChangeKind.SERVICE, "Greeter")
    await feed.poll()
    await feed.registry.get_service("Greeter")
    assert store.calls.count("get_service Greeter") == 2


async def test_a_queued_command_wakes_the_command_poller() -> None:
    store = _Store()
    told: list[int] = []
    feed = ControlFeed(store, on_commands=lambda: told.append(1))
    await feed.poll()  # a full read tells it too (commands queued before the start)
    await feed.poll()
    assert len(told) == 1
    store.change(ChangeKind.COMMAND, "sub_a")
    await feed.poll()
    assert len(told) == 2


async def test_a_cluster_and_a_subscription_changed_while_they_were_read_are_read_again() -> None:
    """Clusters are read before subscriptions. A cluster moved, and then a subscription given
    a secret for the new brokers, between those reads (a `kafka-ingress apply`) left the
    subscription paired with the cluster's old brokers: its new secret went there."""
    store = _Store()
    store.subs = {"sub_a": _sub("sub_a")}
    reads: list[list[str] | None] = []

    async def refresh(names: Any) -> dict[str, Any]:
        reads.append(None if names is None else list(names))
        if len(reads) == 2:  # the admin writes land after this read of the cluster
            store.change(ChangeKind.CLUSTER, "c")
            store.subs["sub_a"] = _sub("sub_a", revision=2)
            store.change(ChangeKind.SUBSCRIPTION, "sub_a")
        return {}

    feed = ControlFeed(store, refresh_clusters=refresh)
    await feed.poll()
    store.change(ChangeKind.CLUSTER, "c")
    store.calls.clear()
    subs = await feed.poll()
    assert feed.settled
    assert reads == [None, ["c"], ["c"]]  # the cluster read again, after the writes
    assert [s.revision for s in subs] == [2]
    assert store.calls.count("read_changes") == 3


async def test_changes_of_other_kinds_meanwhile_need_no_second_pass() -> None:
    store = _Store()
    told: list[int] = []
    store.subs = {"sub_a": _sub("sub_a")}

    async def refresh(names: Any) -> dict[str, Any]:
        store.change(ChangeKind.COMMAND, "sub_a")  # an invocation command queued meanwhile
        return {}

    feed = ControlFeed(store, refresh_clusters=refresh, on_commands=lambda: told.append(1))
    await feed.poll()
    store.change(ChangeKind.CLUSTER, "c")
    store.calls.clear()
    told.clear()
    await feed.poll()
    assert feed.settled
    assert store.calls == ["read_changes", "read_changes"]
    assert told == [1]  # the command still wakes the command poller
    store.calls.clear()
    await feed.poll()
    assert store.calls == ["read_changes"]  # and is not applied again


async def test_a_feed_that_keeps_changing_gives_no_state_to_start_from() -> None:
    store = _Store()
    store.subs = {"sub_a": _sub("sub_a")}

    async def refresh(names: Any) -> dict[str, Any]:
        store.change(ChangeKind.CLUSTER, "c")  # another write lands during every pass
        return {}

    feed = ControlFeed(store, refresh_clusters=refresh)
    await feed.poll()
    assert not feed.settled
    assert store.calls.count("read_changes") == SETTLE_TRIES + 1


async def test_the_feed_keeps_the_clusters_it_read_with_its_subscriptions() -> None:
    """Not the catalog's: the admin API in the same process reads the same catalog and may
    be ahead of the feed."""
    store = _Store()
    rows: dict[str, Any] = {"c": "c@1", "d": "d@1"}

    async def refresh(names: Any) -> dict[str, Any]:
        return dict(rows) if names is None else {name: rows.get(name) for name in names}

    feed = ControlFeed(store, refresh_clusters=refresh)
    await feed.poll()
    assert feed.follows_clusters
    assert feed.clusters == {"c": "c@1", "d": "d@1"}
    rows["c"] = "c@2"  # read by someone else: the feed has seen no change of it
    await feed.poll()
    assert feed.clusters["c"] == "c@1"
    del rows["d"]
    store.change(ChangeKind.CLUSTER, "c")
    store.change(ChangeKind.CLUSTER, "d")
    await feed.poll()
    assert feed.clusters == {"c": "c@2"}
