"""Which of the desired subscriptions this poller runs: the shard map's I/O shell.

The supervisor asks :meth:`ShardFilter.owns` for every subscription it would run. The answer
comes from the pure :class:`~adapter.engine.shards.ShardMap` of the subscription's Kafka
cluster, kept current by one :class:`~adapter.kafka.control_group.ControlGroup` member per
cluster; every change of a map (or of a topic's partition count) calls ``on_change`` so the
supervisor re-evaluates at once.

Until a cluster's first map arrives this poller runs none of its subscriptions: a poller
joining a running deployment takes over only what the map gives it, and a single poller owns
every shard after its first join. If the control group cannot be used (the cluster refuses
the control topic or group, or cannot be reached) or gives no map within ``_FIRST_MAP_S``,
the poller runs every subscription of that cluster meanwhile, as without sharding, and says
so in its log and :meth:`status`: each subscription then runs and reports its own errors
(refused credentials, an unreachable broker), and the subscriptions' own consumer groups
keep it correct, only costlier. The first map from the group narrows it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapter.config import PollerSettings
from adapter.engine.shards import ShardMap, poller_count, poller_group_of
from adapter.errors import ConfigError, KafkaError
from adapter.kafka.control_group import ControlGroup, control_group_id
from adapter.model import Subscription

__all__ = ["ShardFilter", "poller_name"]

log = logging.getLogger(__name__)

_RETRY_S = 5.0
# A poller whose control group gives it no map this long runs everything meanwhile.
_FIRST_MAP_S = 15.0
_COUNTS_REFRESH_S = 60.0


def poller_name(settings: PollerSettings) -> str:
    """This poller's name in the shard map: its instance ID, else unique per process."""
    if settings.instance_id:
        return settings.instance_id
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class _Member:
    cluster: str
    task: asyncio.Task[None] | None = None
    control: ControlGroup | None = None
    map: ShardMap | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)
    asked: asyncio.Event = field(default_factory=asyncio.Event)


class ShardFilter:
    def __init__(
        self,
        settings: PollerSettings,
        *,
        client_kwargs: Callable[[str], Awaitable[dict[str, Any]]],
        cluster_options: Callable[[str], Mapping[str, str]],
        on_change: Callable[[], None],
        table_prefix: str,
        name: str | None = None,
        on_signal: Callable[[], None] | None = None,
    ) -> None:
        self.group = settings.group
        self._group_id = control_group_id(table_prefix, settings.group)
        self.name = name or poller_name(settings)
        self._settings = settings
        self._client_kwargs = client_kwargs
        self._cluster_options = cluster_options
        self._on_change = on_change
        # The control group members also listen for change signals (adapter.kafka.control_group).
        self._on_signal = on_signal
        self._members: dict[str, _Member] = {}

    def listens(self, cluster: str) -> bool:
        """Does this poller's control group member on ``cluster`` hear its change signals
        (so no listener of its own is needed)?"""
        return self._on_signal is not None and cluster in self._members

    def owns(self, sub: Subscription) -> bool:
        """Does this poller run ``sub``? (False until the cluster's map is known.)"""
        options = {**self._cluster_options(sub.cluster), **sub.options}
        if poller_group_of(options) != self.group:
            return False
        if self._settings.shards == 0:
            return True
        member = self._member(sub.cluster)
        partitions = member.counts.get(sub.topic)
        if partitions is None and sub.topic not in member.wanted:
            member.wanted.add(sub.topic)
            member.asked.set()
        if member.map is None:
            return False
        # Until its partition count is known a subscription runs on the minimum of pollers:
        # the pollers of a larger count extend that list, so learning it stops nothing.
        return member.map.owns(sub.id, poller_count(options, partitions))

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            cluster: {
                "pollers": len(m.map.pollers) if m.map else None,
                "shards": len(m.map.owners) if m.map else None,
                "shards_owned": m.map.mine if m.map else None,
                "error": m.error,
            }
            for cluster, m in self._members.items()
        }

    async def aclose(self) -> None:
        tasks = [m.task for m in self._members.values() if m.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._members.clear()

    # -- one cluster --------------------------------------------------------------------------

    def _member(self, cluster: str) -> _Member:
        member = self._members.get(cluster)
        if member is None:
            member = _Member(cluster)
            self._members[cluster] = member
            member.task = asyncio.create_task(self._keep(member), name=f"shard map {cluster}")
        return member

    def _set_map(self, member: _Member, owners: list[str]) -> None:
        new = ShardMap(tuple(owners), self.name)
        if not owners or new == member.map:
            return  # no shards: the leader did not see the control topic yet
        member.map = new
        log.info(
            "shard map of cluster %r: %d poller(s), this one (%s) owns %d of %d shards",
            member.cluster,
            len(new.pollers),
            self.name,
            new.mine,
            len(new.owners),
        )
        self._on_change()

    async def _keep(self, member: _Member) -> None:
        """Stay a member of the cluster's control group, rejoining after failures."""
        loop = asyncio.get_running_loop()
        patience = loop.call_later(_FIRST_MAP_S, self._no_map_yet, member)
        try:
            await self._rejoin(member)
        finally:
            patience.cancel()

    async def _rejoin(self, member: _Member) -> None:
        while True:
            try:
                control = ControlGroup(
                    cluster=member.cluster,
                    group_id=self._group_id,
                    poller=self.name,
                    shards=self._settings.shards,
                    client_kwargs=await self._client_kwargs(member.cluster),
                    on_map=lambda owners: self._set_map(member, owners),
                    instance_id=self._settings.instance_id,
                    on_signal=self._on_signal,
                )
                member.control = control
                counts = asyncio.create_task(self._keep_counts(member, control))
                try:
                    await control.run()
                finally:
                    counts.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await counts
            except (KafkaError, ConfigError) as exc:
                self._fall_back(member, str(exc))
            member.control = None
            await asyncio.sleep(_RETRY_S)

    def _fall_back(self, member: _Member, reason: str) -> None:
        """No map from the control group: run every subscription of the cluster, so each
        one runs (and reports its own errors, such as refused credentials) rather than none."""
        member.error = f"{reason} (running every subscription of the cluster meanwhile)"
        log.warning("shard map of cluster %r unavailable: %s", member.cluster, member.error)
        self._set_map(member, [self.name])

    def _no_map_yet(self, member: _Member) -> None:
        if member.map is None:
            self._fall_back(member, f"no shard map within {_FIRST_MAP_S:g} s")

    async def _keep_counts(self, member: _Member, control: ControlGroup) -> None:
        """Partition counts of the topics the cluster's subscriptions read (they size how
        many pollers run each); looked up when a new topic is asked for, and every minute."""
        await control.ready.wait()
        while True:
            topics = sorted(member.wanted | set(member.counts))
            member.asked.clear()
            try:
                found = await control.partition_counts(topics)
            except KafkaError as exc:
                log.debug("cannot read partition counts of %r: %s", member.cluster, exc)
            else:
                # A missing topic counts 0: its subscription runs on the minimum of pollers.
                counts = {topic: found.get(topic, 0) for topic in topics}
                if counts != member.counts:
                    member.counts = counts
                    self._on_change()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.asked.wait(), _COUNTS_REFRESH_S)
