"""The dispatcher's ordering bookkeeping: which record may run now.

Records arrive in partition order, each with a lane key:

* ``None`` — a *free* record (service handlers, shared handlers): no ordering, it only waits
  for a global in-flight slot.
* a string — a *keyed* record (virtual-object exclusive handlers, workflow ``run``): at most
  one record per key is active at a time, across every partition of the subscription, and
  records of one key start in the order they were offered. Different keys run concurrently.

Each record moves through these states::

                 offer (key busy)          head of its key finished
    offer ──▶ WAITING_KEY ─────────────────────────────┐
      │                                                 ▼
      └── (free, or key idle) ───────────────────────▶ READY ──slot free──▶ RUNNING ──▶ done
                                                        ▲                    │  ▲
                                                 unpark │              park  ▼  │
                                                        └────────────── PARKED ─┘ (done)

A PARKED record is backing off before a retry: it gives its in-flight slot back but keeps its
key, so a retrying record holds back only its own key. When a slot frees, the *oldest* READY
record (by offer order) starts first, because the oldest unfinished record is what holds each
partition's commit position back.

:class:`Lanes` is a pure state machine in the style of httpcore's connection pool: every call
returns the records the caller must start now, and the caller does the I/O. Items are opaque
hashable ids; the engine maps them to records. Partitions are opaque too (the engine passes
its per-assignment partition state, so records of an earlier assignment stay apart).
Bounding a partition's backlog is the partition state's job, not the lanes'.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Dropped", "LaneState", "Lanes"]

ItemT = TypeVar("ItemT", bound=Hashable)
PartT = TypeVar("PartT", bound=Hashable)


class LaneState(enum.Enum):
    WAITING_KEY = "waiting_key"
    """Keyed, and an earlier record of the same key is still active."""
    READY = "ready"
    """May run; waiting for a global in-flight slot."""
    RUNNING = "running"
    """Holds an in-flight slot (and its key, if keyed)."""
    PARKED = "parked"
    """Backing off before a retry: holds its key but no slot."""


@dataclass(slots=True)
class _Entry(Generic[PartT]):
    partition: PartT
    key: str | None
    seq: int
    state: LaneState


@dataclass(frozen=True, slots=True)
class Dropped(Generic[ItemT]):
    """Result of :meth:`Lanes.drop_partition`."""

    abandoned: list[ItemT]
    """Records removed without finishing; the caller forgets them (Kafka redelivers them)."""
    start: list[ItemT]
    """Records of other partitions whose key the abandoned ones were holding; start them."""


class Lanes(Generic[ItemT, PartT]):
    """Ordering and concurrency bookkeeping for one subscription.

    All operations are O(log n) in the number of buffered records (O(1) for a record that is
    ready when offered and starts in offer order, the common case), except
    :meth:`drop_partition` (linear in that partition's backlog) and :meth:`done` on a record
    that never started (linear in its key's queue) — both rare.
    """

    __slots__ = (
        "_by_partition",
        "_fresh",
        "_heap",
        "_items",
        "_keys",
        "_max_in_flight",
        "_parked",
        "_ready",
        "_running",
        "_seq",
        "_stale",
        "_waiting",
    )

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._max_in_flight = max_in_flight
        self._items: dict[ItemT, _Entry[PartT]] = {}
        # Per key, its active record (head) followed by the waiting ones in offer order.
        self._keys: dict[str, deque[ItemT]] = {}
        # dicts as insertion-ordered sets: drop_partition abandons in offer order.
        self._by_partition: dict[PartT, dict[ItemT, None]] = {}
        # (seq, item) of READY records, in two sorted sources merged by _fill: records ready
        # when offered, whose seqs only grow (a deque: no heap work for the common case), and
        # records that became ready later (a key's next record, an unparked one: a heap, as
        # they keep their older seq). Entries of records that left READY without being
        # popped (done/dropped while waiting) are skipped lazily in both.
        self._fresh: deque[tuple[int, ItemT]] = deque()
        self._heap: list[tuple[int, ItemT]] = []
        self._seq = 0
        self._stale = 0
        self._running = 0
        self._ready = 0
        self._waiting = 0
        self._parked = 0

    def __repr__(self) -> str:
        return (
            f"Lanes(in_flight={self._running}/{self._max_in_flight}, ready={self._ready}, "
            f"waiting_key={self._waiting}, parked={self._parked}, keys={len(self._keys)})"
        )

    # -- the state machine -------------------------------------------------------------------

    def offer(self, item: ItemT, partition: PartT, key: str | None) -> list[ItemT]:
        """Accept a record in partition order; returns the records to start now."""
        if item in self._items:
            raise ValueError(f"item {item!r} is already in the lanes")
        self._seq += 1
        entry = _Entry(partition, key, self._seq, LaneState.READY)
        self._items[item] = entry
        self._by_partition.setdefault(partition, {})[item] = None
        if key is not None:
            queue = self._keys.get(key)
            if queue is None:
                self._keys[key] = deque((item,))
            else:
                queue.append(item)
                entry.state = LaneState.WAITING_KEY
                self._waiting += 1
                return []
        self._ready += 1
        self._fresh.append((entry.seq, item))
        return self._fill()

    def done(self, item: ItemT) -> list[ItemT]:
        """The record finished (or was cancelled/killed), whatever its state; returns the
        records to start now: the next one of its key and any waiting for a slot."""
        entry = self._pop(item)
        if entry.key is not None:
            queue = self._keys[entry.key]
            if queue[0] == item:
                queue.popleft()
                if queue:
                    self._promote(queue[0])
                else:
                    del self._keys[entry.key]
            else:
                # Only a record that never became the key's head is behind it.
                queue.remove(item)
        return self._fill()

    def park(self, item: ItemT) -> list[ItemT]:
        """A running record is backing off: release its slot, keep its key."""
        entry = self._get(item, LaneState.RUNNING, "park")
        entry.state = LaneState.PARKED
        self._running -= 1
        self._parked += 1
        return self._fill()

    def unpark(self, item: ItemT) -> list[ItemT]:
        """A parked record's backoff elapsed: it wants a slot again (with its original
        priority). The returned list contains it if a slot was free."""
        entry = self._get(item, LaneState.PARKED, "unpark")
        self._parked -= 1
        self._make_ready(item, entry)
        return self._fill()

    def drop_partition(self, partition: PartT) -> Dropped[ItemT]:
        """The partition was revoked: forget its records that are not running.

        Running records stay until the caller reports them with :meth:`done` (after
        cancelling them or letting them finish), so a key never has two records executing
        even across a revocation. Records still in flight after a drop keep counting towards
        that partition's backlog.
        """
        members = self._by_partition.get(partition)
        if not members:
            return Dropped([], [])
        abandoned = [i for i in members if self._items[i].state is not LaneState.RUNNING]
        gone = set(abandoned)
        touched: set[str] = set()
        for item in abandoned:
            entry = self._pop(item)
            if entry.key is not None:
                touched.add(entry.key)
        for key in touched:
            kept = deque(i for i in self._keys[key] if i not in gone)
            if not kept:
                del self._keys[key]
                continue
            self._keys[key] = kept
            if self._items[kept[0]].state is LaneState.WAITING_KEY:
                self._promote(kept[0])
        return Dropped(abandoned, self._fill())

    # -- introspection -------------------------------------------------------------------------

    def buffered(self, partition: PartT) -> int:
        """Records of ``partition`` accepted and not yet done (running ones included)."""
        members = self._by_partition.get(partition)
        return 0 if members is None else len(members)

    def state(self, item: ItemT) -> LaneState | None:
        entry = self._items.get(item)
        return None if entry is None else entry.state

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        return self._running

    @property
    def ready(self) -> int:
        """Records that may run but wait for an in-flight slot."""
        return self._ready

    @property
    def waiting_key(self) -> int:
        """Records waiting behind an earlier record of their key."""
        return self._waiting

    @property
    def queued(self) -> int:
        """Records accepted and not yet started (``ready + waiting_key``)."""
        return self._ready + self._waiting

    @property
    def parked(self) -> int:
        return self._parked

    @property
    def active_keys(self) -> int:
        """Keys with at least one record in the lanes."""
        return len(self._keys)

    # -- internals -----------------------------------------------------------------------------

    def _get(self, item: ItemT, expected: LaneState, op: str) -> _Entry[PartT]:
        entry = self._items.get(item)
        if entry is None:
            raise ValueError(f"cannot {op} {item!r}: not in the lanes")
        if entry.state is not expected:
            raise ValueError(f"cannot {op} {item!r}: it is {entry.state.value}")
        return entry

    def _pop(self, item: ItemT) -> _Entry[PartT]:
        """Remove ``item`` from every index except its key queue (callers handle that)."""
        entry = self._items.pop(item, None)
        if entry is None:
            raise ValueError(f"{item!r} is not in the lanes")
        state = entry.state
        if state is LaneState.RUNNING:
            self._running -= 1
        elif state is LaneState.READY:
            self._ready -= 1
            self._stale += 1
        elif state is LaneState.WAITING_KEY:
            self._waiting -= 1
        else:
            self._parked -= 1
        members = self._by_partition[entry.partition]
        del members[item]
        if not members:
            del self._by_partition[entry.partition]
        return entry

    def _compact(self) -> None:
        # Stale entries (in either queue) are normally skipped when popped, but with every
        # slot busy they are not popped; rebuild once they outnumber the live ones so memory
        # stays bounded.
        if self._stale > 64 and self._stale > self._ready:
            items = self._items

            def live(seq: int, item: ItemT) -> bool:
                e = items.get(item)
                return e is not None and e.seq == seq and e.state is LaneState.READY

            self._fresh = deque((seq, item) for seq, item in self._fresh if live(seq, item))
            self._heap = [(seq, item) for seq, item in self._heap if live(seq, item)]
            heapq.heapify(self._heap)
            self._stale = 0

    def _promote(self, item: ItemT) -> None:
        entry = self._items[item]
        self._waiting -= 1
        self._make_ready(item, entry)

    def _make_ready(self, item: ItemT, entry: _Entry[PartT]) -> None:
        entry.state = LaneState.READY
        self._ready += 1
        heapq.heappush(self._heap, (entry.seq, item))

    def _fill(self) -> list[ItemT]:
        self._compact()
        start: list[ItemT] = []
        fresh = self._fresh
        heap = self._heap
        items = self._items
        while (fresh or heap) and self._running < self._max_in_flight:
            # The oldest READY record of the two sources (each is sorted by seq).
            if fresh and (not heap or fresh[0][0] < heap[0][0]):
                seq, item = fresh.popleft()
            else:
                seq, item = heapq.heappop(heap)
            entry = items.get(item)
            # Stale: the record left READY without being popped, or the id was re-offered.
            if entry is None or entry.seq != seq or entry.state is not LaneState.READY:
                self._stale -= 1
                continue
            entry.state = LaneState.RUNNING
            self._ready -= 1
            self._running += 1
            start.append(item)
        return start
