"""The shard map's pure core: the control group's balance and the ring walk over it."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.engine.shards import MIN_POLLERS, ShardMap, poller_count, poller_group_of
from adapter.kafka.control_group import balance

SUBS = [f"sub_{i:04d}" for i in range(2000)]


def runs(owners: list[str], count: int = MIN_POLLERS) -> dict[str, frozenset[str]]:
    """Which pollers run each subscription under ``owners``."""
    ring = ShardMap(tuple(owners), me="")
    return {s: frozenset(ring.pollers_for(s, count)) for s in SUBS}


@given(
    shards=st.integers(1, 256),
    pollers=st.sets(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=12),
)
def test_balance_is_even_and_complete(shards: int, pollers: set[str]) -> None:
    owners = balance(shards, pollers)
    counts = Counter(owners)
    assert len(owners) == shards
    assert set(owners) <= pollers
    expected_holders = min(shards, len(pollers))
    assert len(counts) == expected_holders
    assert max(counts.values()) - min(counts.values()) <= 1


@given(
    shards=st.integers(8, 128),
    before=st.sets(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=8),
    joined=st.text("xyz", min_size=1, max_size=2),
)
def test_a_joining_poller_takes_only_its_share(shards: int, before: set[str], joined: str) -> None:
    old = balance(shards, before)
    new = balance(shards, before | {joined}, old)
    moved = [s for s in range(shards) if old[s] != new[s]]
    # Every moved shard goes to the newcomer, and it gets no more than an even share.
    assert all(new[s] == joined for s in moved)
    assert len(moved) <= -(-shards // (len(before) + 1))


@given(
    shards=st.integers(8, 128),
    pollers=st.sets(st.text("abcdefgh", min_size=1, max_size=3), min_size=2, max_size=8),
    data=st.data(),
)
def test_a_leaving_poller_moves_only_its_shards(
    shards: int, pollers: set[str], data: st.DataObject
) -> None:
    old = balance(shards, pollers)
    gone = data.draw(st.sampled_from(sorted(pollers)))
    new = balance(shards, pollers - {gone}, old)
    assert [s for s in range(shards) if old[s] != new[s]] == [
        s for s in range(shards) if old[s] == gone
    ]


def test_a_single_poller_runs_everything() -> None:
    ring = ShardMap(tuple(balance(64, ["p1"])), me="p1")
    assert all(ring.owns(s, poller_count({}, 1)) for s in SUBS)
    assert ShardMap.alone("p1").owns("sub_x", 5)


@pytest.mark.promise("p-ops-shards-pollers")
def test_each_subscription_runs_on_at_least_two_pollers() -> None:
    for n in (2, 3, 5, 10):
        pollers = [f"p{i}" for i in range(n)]
        placed = runs(balance(64, pollers))
        assert all(len(chosen) == 2 for chosen in placed.values())
        # Spread: every poller runs close to its share 2/n of the subscriptions.
        load = Counter(p for chosen in placed.values() for p in chosen)
        share = 2 * len(SUBS) / n
        assert all(0.6 * share <= load[p] <= 1.4 * share for p in pollers), load


@pytest.mark.promise("p-ops-shards-stable")
def test_adding_a_poller_touches_about_its_share_of_subscriptions() -> None:
    three = balance(64, ["p0", "p1", "p2"])
    four = balance(64, ["p0", "p1", "p2", "p3"], three)
    before, after = runs(three), runs(four)
    changed = [s for s in SUBS if before[s] != after[s]]
    # Each changed subscription changed because the newcomer now runs it ...
    assert all("p3" in after[s] for s in changed)
    # ... nearly always replacing just one of its pollers (the other keeps consuming), and
    # the newcomer runs about its share: 2 of 4 pollers.
    kept_one = [s for s in changed if len(before[s] & after[s]) == 1]
    assert len(kept_one) >= 0.9 * len(changed)
    assert 0.4 * len(SUBS) <= len(changed) <= 0.6 * len(SUBS)
    # Removing it again restores exactly the old placement (the map is sticky).
    back = balance(64, ["p0", "p1", "p2"], four)
    assert runs(back) == before


@pytest.mark.promise("p-ops-shards-stable")
def test_removing_a_poller_touches_only_what_it_ran() -> None:
    four = balance(64, ["p0", "p1", "p2", "p3"])
    three = balance(64, ["p0", "p1", "p2"], four)
    before, after = runs(four), runs(three)
    assert all(after[s] == before[s] for s in SUBS if "p3" not in before[s])
    # What it ran keeps its other poller (which already is a member of the consumer group),
    # except where the walk met two of its shards first.
    ran = [s for s in SUBS if "p3" in before[s]]
    assert sum(1 for s in ran if before[s] - {"p3"} <= after[s]) >= 0.9 * len(ran)


def test_count_comes_from_the_option_or_the_partitions_and_is_at_least_two() -> None:
    assert poller_count({}, None) == 2
    assert poller_count({}, 1) == 2
    assert poller_count({}, 12) == 12
    assert poller_count({"pollers.count": "1"}, 12) == 1
    assert poller_count({"pollers.count": "5"}, 1) == 5
    ring = ShardMap(tuple(balance(64, [f"p{i}" for i in range(6)])), me="p0")
    assert len(ring.pollers_for("sub_a", poller_count({}, 12))) == 6
    assert len(ring.pollers_for("sub_a", poller_count({"pollers.count": "1"}, 12))) == 1


@pytest.mark.parametrize(
    ("options", "group"),
    [({}, "default"), ({"poller.group": "tenant-a"}, "tenant-a")],
)
def test_poller_group_of(options: dict[str, str], group: str) -> None:
    assert poller_group_of(options) == group


def test_a_larger_count_only_adds_pollers() -> None:
    # A subscription runs on the minimum until its partition count is known; learning a
    # larger count must not stop it anywhere it already runs.
    ring = ShardMap(tuple(balance(64, [f"p{i}" for i in range(8)])), me="p0")
    for s in SUBS[:200]:
        assert ring.pollers_for(s, 2) == ring.pollers_for(s, 6)[:2]
