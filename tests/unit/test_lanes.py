"""Ordering lanes: per-key serialisation, the global in-flight bound, revocation."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.engine.lanes import Dropped, Lanes, LaneState

PROPERTY = settings(max_examples=200, deadline=None, database=None)


def lanes(max_in_flight: int = 10) -> Lanes[str, int]:
    return Lanes(max_in_flight)


class TestFreeItems:
    def test_start_immediately_up_to_the_limit(self) -> None:
        ln = lanes(max_in_flight=2)
        assert ln.offer("a", 0, None) == ["a"]
        assert ln.offer("b", 0, None) == ["b"]
        assert ln.offer("c", 0, None) == []
        assert ln.in_flight == 2
        assert ln.ready == 1
        assert ln.state("c") is LaneState.READY

    def test_freed_slot_goes_to_the_oldest_waiting(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("a", 0, None)
        ln.offer("b", 1, None)
        ln.offer("c", 0, None)
        assert ln.done("a") == ["b"]
        assert ln.done("b") == ["c"]
        assert ln.done("c") == []
        assert len(ln) == 0

    def test_free_items_do_not_wait_behind_a_busy_key(self) -> None:
        ln = lanes()
        assert ln.offer("k1", 0, "key") == ["k1"]
        assert ln.offer("k2", 0, "key") == []
        assert ln.offer("f", 0, None) == ["f"]
        assert ln.state("k2") is LaneState.WAITING_KEY


class TestKeyedItems:
    def test_one_at_a_time_per_key_in_offer_order(self) -> None:
        ln = lanes()
        assert ln.offer("a1", 0, "a") == ["a1"]
        assert ln.offer("a2", 0, "a") == []
        assert ln.offer("a3", 0, "a") == []
        assert ln.waiting_key == 2
        assert ln.done("a1") == ["a2"]
        assert ln.done("a2") == ["a3"]
        assert ln.done("a3") == []
        assert ln.active_keys == 0

    def test_different_keys_run_concurrently(self) -> None:
        ln = lanes()
        assert ln.offer("a1", 0, "a") == ["a1"]
        assert ln.offer("b1", 0, "b") == ["b1"]
        assert ln.offer("a2", 0, "a") == []
        assert ln.in_flight == 2
        assert ln.active_keys == 2

    def test_key_is_shared_across_partitions(self) -> None:
        ln = lanes()
        assert ln.offer("p0", 0, "k") == ["p0"]
        assert ln.offer("p1", 1, "k") == []
        assert ln.done("p0") == ["p1"]

    def test_next_of_key_waits_for_a_slot_when_full(self) -> None:
        ln = lanes(max_in_flight=2)
        ln.offer("a1", 0, "a")
        ln.offer("a2", 0, "a")
        ln.offer("f1", 0, None)
        ln.offer("f2", 0, None)  # ready, no slot
        # a2 was offered before f2, so it gets the slot a1 frees.
        assert ln.done("a1") == ["a2"]
        assert ln.state("f2") is LaneState.READY
        assert ln.done("f1") == ["f2"]

    def test_empty_string_is_a_key_not_free(self) -> None:
        ln = lanes()
        assert ln.offer("x", 0, "") == ["x"]
        assert ln.offer("y", 0, "") == []


class TestParking:
    def test_parked_item_releases_its_slot_but_holds_its_key(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("a1", 0, "a")
        ln.offer("a2", 0, "a")
        ln.offer("f", 0, None)
        assert ln.park("a1") == ["f"]
        assert ln.parked == 1
        assert ln.in_flight == 1
        assert ln.state("a2") is LaneState.WAITING_KEY
        assert ln.done("f") == []  # a2 still waits for a1, parked
        assert ln.unpark("a1") == ["a1"]
        assert ln.done("a1") == ["a2"]

    def test_unparked_item_keeps_its_priority(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("old", 0, None)
        assert ln.park("old") == []
        ln.offer("new1", 0, None)  # takes the freed slot
        ln.offer("new2", 0, None)
        assert ln.unpark("old") == []  # no slot yet
        assert ln.done("new1") == ["old"]  # ahead of new2, offered later
        assert ln.done("old") == ["new2"]

    def test_done_while_parked(self) -> None:
        ln = lanes()
        ln.offer("a1", 0, "a")
        ln.offer("a2", 0, "a")
        ln.park("a1")
        assert ln.done("a1") == ["a2"]
        assert ln.parked == 0

    def test_park_requires_running(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("a", 0, None)
        ln.offer("b", 0, None)
        with pytest.raises(ValueError, match="cannot park 'b': it is ready"):
            ln.park("b")
        with pytest.raises(ValueError, match="not in the lanes"):
            ln.park("zzz")

    def test_unpark_requires_parked(self) -> None:
        ln = lanes()
        ln.offer("a", 0, None)
        with pytest.raises(ValueError, match="cannot unpark 'a': it is running"):
            ln.unpark("a")


class TestDoneBeforeStart:
    def test_killing_a_waiting_item_removes_it_from_its_key(self) -> None:
        ln = lanes()
        ln.offer("a1", 0, "a")
        ln.offer("a2", 0, "a")
        ln.offer("a3", 0, "a")
        assert ln.done("a2") == []
        assert ln.done("a1") == ["a3"]

    def test_killing_a_ready_head_promotes_the_next(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("f", 0, None)
        ln.offer("a1", 0, "a")  # head of "a", ready, no slot
        ln.offer("a2", 0, "a")
        assert ln.done("a1") == []
        assert ln.state("a2") is LaneState.READY
        assert ln.done("f") == ["a2"]

    def test_done_unknown_raises(self) -> None:
        with pytest.raises(ValueError, match="not in the lanes"):
            lanes().done("nope")


class TestBounds:
    def test_buffered_counts_per_partition(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("a", 0, None)
        ln.offer("b", 0, None)  # a fetched batch may overshoot any bound; never refuse
        ln.offer("c", 1, None)
        assert ln.buffered(0) == 2
        assert ln.buffered(1) == 1
        assert ln.buffered(7) == 0

    def test_invalid_in_flight_bound(self) -> None:
        with pytest.raises(ValueError, match="max_in_flight"):
            Lanes(0)


class TestDropPartition:
    def test_abandons_everything_not_running(self) -> None:
        ln = lanes(max_in_flight=2)
        ln.offer("r", 0, None)  # running, then parked
        ln.offer("a1", 0, "a")  # running
        ln.offer("a2", 0, "a")  # waiting on key
        ln.offer("f", 0, None)  # ready; starts when r parks
        ln.offer("x", 1, None)  # other partition, ready
        assert ln.park("r") == ["f"]
        dropped = ln.drop_partition(0)
        assert dropped == Dropped(abandoned=["r", "a2"], start=[])
        assert ln.state("a1") is LaneState.RUNNING
        assert ln.state("f") is LaneState.RUNNING
        assert ln.buffered(0) == 2  # running ones count until reported done
        assert ln.done("a1") == ["x"]
        assert ln.done("f") == []
        assert ln.buffered(0) == 0
        assert ln.active_keys == 0

    def test_promotes_other_partitions_behind_an_abandoned_head(self) -> None:
        ln = lanes()
        ln.offer("p0", 0, "k")
        ln.park("p0")
        ln.offer("p0b", 0, "k")
        ln.offer("p1", 1, "k")
        assert ln.drop_partition(0) == Dropped(abandoned=["p0", "p0b"], start=["p1"])
        assert ln.active_keys == 1

    def test_running_head_keeps_its_key_across_the_drop(self) -> None:
        ln = lanes()
        ln.offer("p0", 0, "k")
        ln.offer("p0b", 0, "k")
        ln.offer("p1", 1, "k")
        assert ln.drop_partition(0) == Dropped(abandoned=["p0b"], start=[])
        assert ln.state("p1") is LaneState.WAITING_KEY
        assert ln.done("p0") == ["p1"]

    def test_dropping_a_partition_frees_slots_for_others(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("a", 0, None)
        ln.park("a")
        ln.offer("b", 0, None)
        ln.offer("c", 1, None)  # waits for b's slot
        assert ln.drop_partition(0).abandoned == ["a"]  # b runs, stays
        assert ln.done("b") == ["c"]

    def test_unknown_partition_is_a_no_op(self) -> None:
        assert lanes().drop_partition(3) == Dropped([], [])

    def test_ids_can_be_reoffered_after_a_drop(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("busy", 1, None)
        ln.offer("x", 0, None)  # ready, heap entry left behind by the drop
        ln.drop_partition(0)
        ln.offer("x", 0, None)
        assert ln.done("busy") == ["x"]
        assert ln.done("x") == []
        assert ln.ready == 0

    def test_reoffered_id_does_not_inherit_its_old_priority(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("busy", 1, None)
        ln.offer("x", 0, None)
        ln.drop_partition(0)
        ln.offer("y", 1, None)
        ln.offer("x", 0, None)  # now younger than y
        assert ln.done("busy") == ["y"]
        assert ln.done("y") == ["x"]

    def test_stale_heap_entries_stay_bounded_while_saturated(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("busy", 1, None)
        for round_ in range(50):
            for i in range(100):
                ln.offer(f"{round_}-{i}", 0, None)
            ln.drop_partition(0)
        # Reaching into the queues is the only way to observe the leak this guards against.
        assert len(ln._fresh) + len(ln._heap) <= 200
        assert ln.done("busy") == []

    def test_stale_entries_of_records_ready_later_stay_bounded_too(self) -> None:
        ln = lanes(max_in_flight=1)
        ln.offer("busy", 1, None)
        for round_ in range(50):
            for i in range(100):
                ln.offer(f"{round_}-{i}-head", 0, f"k{i}")
                ln.offer(f"{round_}-{i}-next", 0, f"k{i}")
            for i in range(100):
                ln.done(f"{round_}-{i}-head")  # the next of each key becomes ready (later)
            ln.drop_partition(0)
        assert len(ln._fresh) + len(ln._heap) <= 200
        assert ln.done("busy") == []

    def test_the_oldest_ready_starts_first_whichever_way_it_became_ready(self) -> None:
        # Records ready when offered, and records ready later (a key's next record, an
        # unparked one, each with its older place), are kept apart but start in one order.
        ln = lanes(max_in_flight=1)
        assert ln.offer("a1", 0, "a") == ["a1"]
        ln.offer("a2", 0, "a")  # waits for its key
        ln.offer("free1", 0, None)
        assert ln.done("a1") == ["a2"]  # ready later, but older than free1
        ln.offer("free2", 0, None)
        assert ln.done("a2") == ["free1"]
        ln.offer("free3", 0, None)
        assert ln.park("free1") == ["free2"]
        assert ln.unpark("free1") == []  # no slot; older than free3
        assert ln.done("free2") == ["free1"]
        assert ln.done("free1") == ["free3"]

    def test_a_record_offered_earlier_starts_before_a_keys_next_one(self) -> None:
        ln = lanes(max_in_flight=1)
        assert ln.offer("a1", 0, "a") == ["a1"]
        ln.offer("f", 0, None)  # ready when offered
        ln.offer("a2", 0, "a")  # ready once a1 is done: younger than f
        assert ln.done("a1") == ["f"]
        assert ln.done("f") == ["a2"]


class TestMisc:
    def test_duplicate_offer_raises(self) -> None:
        ln = lanes()
        ln.offer("a", 0, None)
        with pytest.raises(ValueError, match="already"):
            ln.offer("a", 1, "k")

    def test_counts_and_introspection(self) -> None:
        ln = lanes(max_in_flight=2)
        ln.offer("a1", 0, "a")
        ln.offer("a2", 0, "a")
        ln.offer("b1", 0, "b")
        ln.offer("f", 1, None)
        ln.park("b1")
        assert (ln.in_flight, ln.ready, ln.waiting_key, ln.parked) == (2, 0, 1, 1)
        assert ln.queued == 1
        assert ln.active_keys == 2
        assert len(ln) == 4
        assert "a2" in ln
        assert "zz" not in ln
        assert ln.state("zz") is None
        assert ln.max_in_flight == 2
        assert repr(ln) == "Lanes(in_flight=2/2, ready=0, waiting_key=1, parked=1, keys=2)"

    def test_tuple_partitions_and_int_ids(self) -> None:
        ln: Lanes[int, tuple[str, int]] = Lanes(4)
        assert ln.offer(1, ("t", 0), "k") == [1]
        assert ln.offer(2, ("t", 1), "k") == []
        assert ln.done(1) == [2]


# -- properties -----------------------------------------------------------------------------


@dataclass
class Harness:
    """Drives Lanes like the engine would, with an independent model, checking invariants."""

    lanes: Lanes[int, int]
    max_in_flight: int
    next_id: int = 0
    key_of: dict[int, str | None] = field(default_factory=dict)
    partition_of: dict[int, int] = field(default_factory=dict)
    alive: set[int] = field(default_factory=set)
    running: set[int] = field(default_factory=set)
    parked: set[int] = field(default_factory=set)
    started: set[int] = field(default_factory=set)
    starts_by_key: dict[str, list[int]] = field(default_factory=dict)

    def apply_starts(self, starts: list[int]) -> None:
        # The oldest first: whatever still waits for a slot is younger than what started
        # (ids are in offer order; an unparked or promoted item keeps its offer's place).
        still_ready = [i for i in self.alive if self.lanes.state(i) is LaneState.READY]
        if starts and still_ready:
            assert max(starts) < min(still_ready), f"{starts} started before {still_ready}"
        for item in starts:
            assert item in self.alive
            assert item not in self.running
            assert item not in self.parked
            if item not in self.started:
                key = self.key_of[item]
                if key is not None:
                    earlier = [i for i in self.alive if self.key_of[i] == key and i < item]
                    assert not earlier, f"{item} started while {earlier} of its key are alive"
                    self.starts_by_key.setdefault(key, []).append(item)
                self.started.add(item)
            # else: an unparked item re-acquiring a slot
            self.running.add(item)

    def offer(self, partition: int, key: str | None) -> None:
        item = self.next_id
        self.next_id += 1
        self.key_of[item] = key
        self.partition_of[item] = partition
        self.alive.add(item)
        self.apply_starts(self.lanes.offer(item, partition, key))

    def done(self, item: int) -> None:
        self.alive.discard(item)
        self.running.discard(item)
        self.parked.discard(item)
        self.apply_starts(self.lanes.done(item))

    def park(self, item: int) -> None:
        self.running.remove(item)
        self.parked.add(item)
        self.apply_starts(self.lanes.park(item))

    def unpark(self, item: int) -> None:
        self.parked.remove(item)
        self.apply_starts(self.lanes.unpark(item))

    def drop(self, partition: int) -> None:
        expected = [
            i
            for i in sorted(self.alive)
            if self.partition_of[i] == partition and i not in self.running
        ]
        dropped = self.lanes.drop_partition(partition)
        assert dropped.abandoned == expected
        for item in dropped.abandoned:
            self.alive.discard(item)
            self.parked.discard(item)
        self.apply_starts(dropped.start)

    def check(self) -> None:
        ln = self.lanes
        assert ln.in_flight == len(self.running) <= self.max_in_flight
        assert len(ln) == len(self.alive)
        assert ln.parked == len(self.parked)
        assert ln.queued == len(self.alive) - len(self.running) - len(self.parked)
        # A started item holds its key until done: running, parked, or waiting to re-run.
        holders: dict[str, int] = {}
        for item in self.alive & self.started:
            key = self.key_of[item]
            if key is not None:
                assert key not in holders, f"{holders[key]} and {item} both hold {key!r}"
                holders[key] = item
        for item in self.alive:
            state = ln.state(item)
            if item in self.running:
                assert state is LaneState.RUNNING
            elif item in self.parked:
                assert state is LaneState.PARKED
            elif state is LaneState.READY:
                # Work-conserving: anything runnable waits only for a slot.
                assert ln.in_flight == self.max_in_flight
            else:
                assert state is LaneState.WAITING_KEY
                key = self.key_of[item]
                assert key is not None, "a free item waited on a key"
                assert item not in self.started
                assert any(i < item and self.key_of[i] == key for i in self.alive)
        for partition in set(self.partition_of.values()):
            assert ln.buffered(partition) == sum(
                1 for i in self.alive if self.partition_of[i] == partition
            )
        for starts in self.starts_by_key.values():
            assert starts == sorted(starts), "per-key start order differs from offer order"


keys = st.sampled_from([None, None, "a", "b", "c"])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(0, 2), keys),
        st.tuples(st.just("done"), st.integers(0, 1_000), st.none()),
        st.tuples(st.just("done_any"), st.integers(0, 1_000), st.none()),
        st.tuples(st.just("park"), st.integers(0, 1_000), st.none()),
        st.tuples(st.just("unpark"), st.integers(0, 1_000), st.none()),
        st.tuples(st.just("drop"), st.integers(0, 2), st.none()),
    ),
    max_size=80,
)


def pick(pool: set[int], index: int) -> int | None:
    if not pool:
        return None
    return sorted(pool)[index % len(pool)]


@PROPERTY
@given(max_in_flight=st.integers(1, 4), steps=ops)
@pytest.mark.promise("p-ops-per-key-order")
def test_lanes_invariants_under_random_schedules(
    max_in_flight: int, steps: list[tuple[str, int, str | None]]
) -> None:
    h = Harness(Lanes(max_in_flight), max_in_flight)
    for op, arg, key in steps:
        if op == "offer":
            h.offer(arg, key)
        elif op == "done":
            if (item := pick(h.running, arg)) is not None:
                h.done(item)
        elif op == "done_any":  # cancel/kill in whatever state
            if (item := pick(h.alive, arg)) is not None:
                h.done(item)
        elif op == "park":
            if (item := pick(h.running, arg)) is not None:
                h.park(item)
        elif op == "unpark":
            if (item := pick(h.parked, arg)) is not None:
                h.unpark(item)
        else:
            h.drop(arg)
        h.check()

    # Drain: wake everything parked, then finish whatever runs; everything left must start.
    for item in sorted(h.parked):
        h.unpark(item)
        h.check()
    while h.running:
        h.done(min(h.running))
        h.check()
    assert not h.alive
    assert len(h.lanes) == 0
    assert h.lanes.active_keys == 0
    assert h.lanes.queued == 0


@PROPERTY
@given(
    items=st.lists(st.tuples(st.integers(0, 3), keys), min_size=1, max_size=60),
    max_in_flight=st.integers(1, 5),
    order=st.randoms(use_true_random=False),
)
def test_everything_offered_starts_exactly_once_in_any_completion_order(
    items: list[tuple[int, str | None]], max_in_flight: int, order: random.Random
) -> None:
    h = Harness(Lanes(max_in_flight), max_in_flight)
    for partition, key in items:
        h.offer(partition, key)
        h.check()
    while h.running:
        h.done(order.choice(sorted(h.running)))
        h.check()
    assert h.started == set(range(len(items)))
    for key, starts in h.starts_by_key.items():
        assert starts == [i for i, (_, k) in enumerate(items) if k == key]
