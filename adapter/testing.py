"""In-memory fakes of the engine's I/O edges, for tests of the engine without a broker.

Like httpx's ``MockTransport``, they ship with the package so that anyone extending the
engine can drive it through exact sequences — a rebalance in the middle of a retry, a poller
that stops hearing from its group, a topic re-created under the same name — in milliseconds:

* :class:`FakeConsumer` — the :class:`~adapter.kafka.consumer.Consumer` protocol; the test
  assigns and revokes partitions, delivers records, answers heartbeats and creates topics.
* :class:`FakeInvoker` — answers each request with what the test's ``respond`` returns
  (default: acknowledge), optionally holding calls until released, and records every call.
* :class:`FakeStore` — the runner's ledger reads and the ledger writer's writes in dicts.
* :class:`ManualClock` — a monotonic clock the test moves (for ownership deadlines).

The real counterparts run the same engine in the integration and chaos suites.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from adapter.invokers.base import InvocationRequest, Outcome, check_fence
from adapter.kafka.commit_marks import (
    Committed,
    Handover,
    commit_metadata,
    parse_commit_metadata,
)
from adapter.kafka.consumer import CommitError, CommitMetadataRefused, Fetched, RebalanceListener
from adapter.kafka.topics import TopicInfo
from adapter.model import KafkaRecord, LedgerEntry, RetentionLoss

__all__ = [
    "FakeConsumer",
    "FakeInvoker",
    "FakeStore",
    "ManualClock",
    "SendWait",
    "record",
]

TP = tuple[str, int]


def record(
    topic: str,
    partition: int,
    offset: int,
    *,
    key: bytes | None = None,
    value: bytes | None = b"{}",
    timestamp_ms: int = 0,
) -> KafkaRecord:
    return KafkaRecord(topic, partition, offset, key, value, timestamp_ms)


@dataclass
class ManualClock:
    """A monotonic clock that only moves when told."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeConsumer:
    """An in-memory consumer-group member (see the module docstring)."""

    def __init__(self, clock: Callable[[], float], topics: Iterable[TopicInfo] = ()) -> None:
        self._clock = clock
        self.topics: dict[str, TopicInfo] = {t.name: t for t in topics}
        self.listener: RebalanceListener | None = None
        self.subscribed: str | None = None
        self.assigned: set[TP] = set()
        self.paused: set[TP] = set()
        self.held: set[TP] = set()
        """Partitions held back by :meth:`hold` (back-pressure)."""
        self.current_generation = 0
        self.group_commits: dict[TP, Committed] = {}
        """What the group has committed per partition (two fakes may share one, as two
        members of one group share the coordinator's)."""
        self.commits: list[dict[TP, int]] = []
        self.seeks: list[TP] = []
        self.metadata_refreshes = 0
        self.log_ends: dict[TP, int] = {}
        """What :meth:`log_end` answers per partition (the test sets it)."""
        self.positions: dict[TP, int] = {}
        """What :meth:`position` answers per assigned partition (the test sets it; a
        partition missing here has no position yet, and none is reported)."""
        self.reject_commits = False
        self.rejected_commits = 0
        """Commits refused while :attr:`reject_commits` was set."""
        self.metadata_limit: int | None = None
        """A broker's ``offset.metadata.max.bytes``: a commit with longer metadata is
        refused as a whole."""
        self.started = False
        self.stopped = False
        self._fetches: asyncio.Queue[Fetched] = asyncio.Queue()
        # Records of paused or held partitions: not returned, handed out on resume/release.
        self._kept: dict[TP, list[KafkaRecord]] = {}
        self.describe_gate: asyncio.Event | None = None
        self.descriptions = 0
        """Topic look-ups (metadata requests) so far."""
        self.describing = 0
        """Topic look-ups waiting at :attr:`describe_gate` now."""
        """If set, describing a topic waits for it (a slow metadata request)."""
        self._membership_callbacks: list[Callable[[float], None]] = []
        self._loss_callbacks: list[Callable[[float], None]] = []

    # -- the Consumer protocol --------------------------------------------------------------

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topic: str, listener: RebalanceListener) -> None:
        self.subscribed = topic
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched:
        fetched = Fetched()
        with contextlib.suppress(TimeoutError):
            fetched = await asyncio.wait_for(self._fetches.get(), timeout_ms / 1000)
        for tp in [
            tp
            for tp in fetched.records
            if tp in self.paused or tp in self.held or tp not in self.assigned
        ]:
            records = fetched.records.pop(tp)
            if tp in self.assigned:
                self._kept.setdefault(tp, []).extend(records)
        # Records kept while the partition was paused or held come first, before anything
        # fetched after them: a partition's records go out in offset order, as Kafka's do.
        for tp in [tp for tp in self._kept if tp not in self.paused and tp not in self.held]:
            fetched.records[tp] = self._kept.pop(tp) + fetched.records.get(tp, [])
        return fetched

    async def commit(
        self,
        offsets: dict[TP, int],
        topic_id: str | None,
        handovers: Mapping[TP, Handover] | None = None,
    ) -> None:
        if self.reject_commits:
            self.rejected_commits += 1
            raise CommitError("the group rebalanced (fake)")
        kept = {tp: commit_metadata(topic_id, (handovers or {}).get(tp)) for tp in offsets}
        limit = self.metadata_limit
        if limit is not None and any(len(m) > limit for m in kept.values()):
            self.rejected_commits += 1
            raise CommitMetadataRefused("the offset metadata is too large (fake)")
        self.commits.append(dict(offsets))
        for tp, offset in offsets.items():
            # Through the metadata string, as Kafka keeps it.
            self.group_commits[tp] = Committed(offset, *parse_commit_metadata(kept[tp]))

    def pause(self, tp: TP) -> None:
        self.paused.add(tp)

    def resume(self, tp: TP) -> None:
        self.paused.discard(tp)
        self._hand_out(tp)

    def hold(self, tp: TP) -> None:
        self.held.add(tp)

    def release(self, tp: TP) -> None:
        self.held.discard(tp)
        self._hand_out(tp)

    def _hand_out(self, tp: TP) -> None:
        if tp in self.paused or tp in self.held:
            return
        if self._kept.get(tp):
            # Wakes a waiting getmany, which hands the kept records out ahead of the rest.
            self._fetches.put_nowait(Fetched())

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        self.descriptions += 1
        if self.describe_gate is not None:
            self.describing += 1
            try:
                await self.describe_gate.wait()
            finally:
                self.describing -= 1
        return self.topics.get(topic)

    async def committed(self, tps: set[TP]) -> dict[TP, Committed]:
        return {tp: self.group_commits[tp] for tp in tps if tp in self.group_commits}

    async def seek_to_beginning(self, tp: TP) -> None:
        self.seeks.append(tp)

    def refresh_metadata(self) -> None:
        self.metadata_refreshes += 1

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp) if tp in self.assigned else None

    def log_end(self, tp: TP) -> int | None:
        return self.log_ends.get(tp)

    def observe_membership(
        self, confirmed: Callable[[float], None], lost: Callable[[float], None]
    ) -> None:
        self._membership_callbacks.append(confirmed)
        self._loss_callbacks.append(lost)

    def generation(self) -> int | None:
        return self.current_generation

    # -- what the test does -------------------------------------------------------------------

    def create_topic(self, name: str, topic_id: str, partitions: int = 1) -> None:
        self.topics[name] = TopicInfo(name=name, topic_id=topic_id, partitions=partitions)

    def delete_topic(self, name: str) -> None:
        self.topics.pop(name, None)

    async def assign(self, *tps: TP, generation: int | None = None) -> None:
        """A rebalance assigns ``tps``: the generation goes up by one unless given (a jump
        stands for rebalances this member missed)."""
        assert self.listener is not None, "the runner has not subscribed yet"
        self.current_generation = (
            generation if generation is not None else self.current_generation + 1
        )
        self.assigned |= set(tps)
        # The SyncGroup that brought the assignment renewed the member's session.
        self.heartbeat()
        await self.listener.on_assigned(set(tps))

    async def revoke(self, *tps: TP) -> None:
        assert self.listener is not None, "the runner has not subscribed yet"
        await self.listener.on_revoked(set(tps))
        self.assigned -= set(tps)
        self.paused -= set(tps)
        self.held -= set(tps)
        for tp in tps:
            self._kept.pop(tp, None)

    def deliver(self, records: Sequence[KafkaRecord]) -> None:
        by_tp: dict[TP, list[KafkaRecord]] = {}
        for r in records:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        self._fetches.put_nowait(Fetched(records=by_tp))

    def lose(self, *losses: RetentionLoss) -> None:
        self._fetches.put_nowait(Fetched(losses=list(losses)))

    def heartbeat(self) -> None:
        """The coordinator answers a heartbeat now."""
        now = self._clock()
        for callback in self._membership_callbacks:
            callback(now)

    def lose_membership(self) -> None:
        """The coordinator refuses a heartbeat sent now: it no longer knows this member."""
        now = self._clock()
        for callback in self._loss_callbacks:
            callback(now)


@dataclass
class SendWait:
    """An invoker's own wait before it sends (an address check, a batch's linger, a
    credentials refresh), released by the test; afterwards the send fence is checked, as real
    invokers do (``adapter.invokers.base``)."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0

    async def __call__(self) -> None:
        self.waiting += 1
        try:
            await self.release.wait()
        finally:
            self.waiting -= 1
        check_fence()


@dataclass
class FakeInvoker:
    """Answers requests with ``respond(request)`` (default: acknowledge) and records them."""

    respond: Callable[[InvocationRequest], Outcome | Awaitable[Outcome]] | None = None
    calls: list[InvocationRequest] = field(default_factory=list)
    gate: asyncio.Event | None = None
    """If set, every call waits for it before answering."""
    before_send: SendWait | None = None
    """If set, every call waits here before it is sent (see :class:`SendWait`)."""
    running: int = 0
    max_running: int = 0

    async def invoke(self, request: InvocationRequest) -> Outcome:
        if self.before_send is not None:
            await self.before_send()
        self.calls.append(request)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.respond is None:
                return Outcome.ack()
            outcome = self.respond(request)
            if not isinstance(outcome, Outcome):
                outcome = await outcome
            return outcome
        finally:
            self.running -= 1

    def offsets(self) -> list[int]:
        return [r.record.offset for r in self.calls if r.record is not None]


@dataclass
class FakeStore:
    """Ledger rows by invocation ID, highest recorded offsets, workflow claims — in dicts."""

    rows: dict[str, LedgerEntry] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    topics: set[tuple[str, str]] = field(default_factory=set)
    rows_before_recording: list[str] = field(default_factory=list)
    """Ledger rows written before their topic was recorded: the engine promises none."""
    fence_reads: int = 0
    """Calls of :meth:`highest_recorded_offset`."""

    # -- the runner's reads ---------------------------------------------------------------------

    async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]:
        return {i: self.rows[i].status for i in ids if i in self.rows}

    async def paged_offsets(
        self, subscription_id: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[int]:
        return set()

    async def highest_recorded_offset(
        self, subscription_id: str, topic: str, partition: int
    ) -> int | None:
        self.fence_reads += 1
        offsets = [
            e.offset
            for e in self.rows.values()
            if e.subscription_id == subscription_id
            and e.topic == topic
            and e.partition == partition
        ]
        return max(offsets, default=None)

    async def remember_topic(self, subscription_id: str, topic: str) -> bool:
        first = (subscription_id, topic) not in self.topics
        self.topics.add((subscription_id, topic))
        return first

    def seed(self, entry: LedgerEntry) -> None:
        """A row an earlier owner wrote (having recorded its topic first, as pollers do)."""
        self.topics.add((entry.subscription_id, entry.topic))
        self.rows[entry.id] = entry

    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool:
        holder = self.claims.setdefault(f"{service}/{key}", invocation_id)
        return holder == invocation_id

    # -- the ledger writer's writes ------------------------------------------------------------

    async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
        for entry in entries:
            self._check_recorded(entry)
            self.rows[entry.id] = entry

    async def write_progress(self, entry: LedgerEntry) -> bool:
        self._check_recorded(entry)
        current = self.rows.get(entry.id)
        if current is not None and current.completed_at_ms is not None:
            return False
        self.rows[entry.id] = entry
        return True

    def _check_recorded(self, entry: LedgerEntry) -> None:
        # The promise a first recording of a topic stands on (DynamoStore.remember_topic).
        if (entry.subscription_id, entry.topic) not in self.topics:
            self.rows_before_recording.append(entry.id)
