"""The shard filter's decisions that need no broker: poller groups, sharding switched off,
and the fall-back when a cluster refuses the control group."""

from __future__ import annotations

import asyncio
from typing import Any

from adapter.config import PollerSettings
from adapter.engine.shard_filter import ShardFilter
from adapter.errors import KafkaAuthError
from adapter.model import Subscription
from tests.harness import eventually


def sub(options: dict[str, str] | None = None, cluster: str = "c1") -> Subscription:
    return Subscription(
        id="sub_1", cluster=cluster, topic="t", service="S", handler="h", options=options or {}
    )


async def refused(cluster: str) -> dict[str, Any]:
    raise KafkaAuthError(f"cluster {cluster}: not authorised to create the control topic")


def shard_filter(
    settings: PollerSettings, cluster_options: dict[str, str] | None = None
) -> tuple[ShardFilter, list[int]]:
    changes: list[int] = []
    found = ShardFilter(
        settings,
        client_kwargs=refused,
        cluster_options=lambda _name: cluster_options or {},
        on_change=lambda: changes.append(1),
        table_prefix="t-",
        name="p1",
    )
    return found, changes


async def test_a_poller_runs_only_its_poller_groups_subscriptions() -> None:
    filter_, _ = shard_filter(PollerSettings(group="tenant-a", shards=0))
    assert filter_.owns(sub({"poller.group": "tenant-a"}))
    assert not filter_.owns(sub())  # the default group
    assert not filter_.owns(sub({"poller.group": "tenant-b"}))
    # A cluster option sets the group of the cluster's subscriptions; theirs wins.
    on_cluster, _ = shard_filter(
        PollerSettings(group="tenant-a", shards=0), {"poller.group": "tenant-a"}
    )
    assert on_cluster.owns(sub())
    assert not on_cluster.owns(sub({"poller.group": "tenant-b"}))


async def test_without_shards_every_poller_runs_every_subscription_of_its_group() -> None:
    filter_, _ = shard_filter(PollerSettings(shards=0))
    assert filter_.owns(sub())
    assert filter_.status() == {}  # no control group was joined


async def test_no_map_runs_nothing_and_a_refusing_cluster_runs_everything_meanwhile() -> None:
    filter_, changes = shard_filter(PollerSettings(shards=64))
    try:
        assert not filter_.owns(sub())  # no map yet: a joining poller takes nothing
        await eventually(lambda: bool(changes), timeout=5)
        status = filter_.status()["c1"]
        assert "not authorised" in str(status["error"])
        assert status["pollers"] == 1
        # Alone in the map, the poller runs everything, whatever the partition count.
        assert filter_.owns(sub())
    finally:
        await filter_.aclose()
    await asyncio.sleep(0)
