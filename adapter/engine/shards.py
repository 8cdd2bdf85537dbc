"""Which subscriptions this poller runs: the pure core of the shard map.

The control group (``adapter.kafka.control_group``) hands every poller the owner of each
shard. A subscription visits the shards in an order of its own (rendezvous hashing) and runs
on the owners met first, the first ``count`` *distinct* pollers — so it runs
on ``count`` different pollers whenever there are that many (fast failover: its consumer
group already has a live member elsewhere), and on all of them when there are fewer.

``count`` is the subscription's ``pollers.count`` option, else its partition count, and at
least :data:`MIN_POLLERS`: more pollers than partitions would only hold idle group members.

Stability: a subscription's pollers change only when the owner of a shard on its walk
changes, so adding a poller to ``n`` touches about ``count/(n+1)`` of the subscriptions (the
ones the newcomer has to run, mostly replacing one of their pollers) and removing one
touches only those it ran.

Poller groups (like AWS Lambda's ``PollerGroupName``) isolate tenants: each group has a
control group and a map of its own, and a poller runs only subscriptions of its group
(``poller.group`` option, default ``default``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_POLLER_GROUP",
    "MIN_POLLERS",
    "POLLERS_COUNT_OPTION",
    "POLLER_GROUP_OPTION",
    "ShardMap",
    "poller_count",
    "poller_group_of",
]

MIN_POLLERS = 2
DEFAULT_POLLER_GROUP = "default"
POLLERS_COUNT_OPTION = "pollers.count"
POLLER_GROUP_OPTION = "poller.group"


def poller_group_of(options: Mapping[str, str]) -> str:
    return str(options.get(POLLER_GROUP_OPTION) or DEFAULT_POLLER_GROUP)


def poller_count(options: Mapping[str, str], partitions: int | None) -> int:
    """On how many pollers a subscription runs (see the module docstring)."""
    explicit = options.get(POLLERS_COUNT_OPTION)
    if explicit:
        return max(1, int(explicit))
    return max(MIN_POLLERS, partitions or 0)


@functools.lru_cache(maxsize=65_536)
def _shard_order(key: str, shards: int) -> tuple[int, ...]:
    """The shards in the order ``key`` visits them: rendezvous (highest random weight)
    hashing, a random permutation per key, so the shards a subscription depends on are
    independent of each other and of other subscriptions'."""

    def weight(shard: int) -> bytes:
        return hashlib.blake2b(f"{key}/{shard}".encode(), digest_size=8).digest()

    return tuple(sorted(range(shards), key=weight))


@dataclass(frozen=True, slots=True)
class ShardMap:
    """The owner of every shard, as this poller (``me``) last heard it."""

    owners: tuple[str, ...]
    me: str

    @classmethod
    def alone(cls, me: str) -> ShardMap:
        """The map with one poller: it runs everything (also: sharding switched off)."""
        return cls((me,), me)

    @property
    def pollers(self) -> frozenset[str]:
        return frozenset(self.owners)

    @property
    def mine(self) -> int:
        return sum(1 for owner in self.owners if owner == self.me)

    def pollers_for(self, key: str, count: int) -> tuple[str, ...]:
        """The pollers that run ``key``, in ring order (at most ``count``)."""
        shards = len(self.owners)
        if not shards:
            return ()
        found: list[str] = []
        for shard in _shard_order(key, shards):
            owner = self.owners[shard]
            if owner not in found:
                found.append(owner)
                if len(found) >= count:
                    break
        return tuple(found)

    def owns(self, key: str, count: int) -> bool:
        return self.me in self.pollers_for(key, count)
