"""The engine's view of a Kafka consumer, and its aiokafka implementation.

The engine needs little from Kafka: records in partition order, explicit commits, pausing,
rebalance callbacks, and three pieces of evidence aiokafka does not hand out on its own —

* **liveness**: when this member last sent a heartbeat or SyncGroup request that the group
  coordinator accepted (see ``adapter.engine.ownership``), observed by wrapping the
  coordinator's request call and dated from the *request*, not the answer;
* **topic identity**: the topic ID (Metadata v10+, ``adapter.kafka.topics``), so a topic
  re-created under the same name is recognised; each commit carries the topic ID as its
  offset metadata, so a committed position of a dead topic is never applied to a new one,
  and a graceful handover's fence for the next owner (``adapter.kafka.commit_marks``);
* **retention loss**: the consumer runs with ``auto_offset_reset="none"``, so a position
  outside the log is *reported* here (and the records lost counted) instead of being reset
  silently; a partition without a committed offset starts where the subscription's
  ``auto.offset.reset`` says.

:class:`Consumer` is the narrow protocol the engine codes against; ``adapter.testing`` ships
an in-memory fake of it. :class:`AiokafkaConsumer` is the thin shell around aiokafka; it
touches private attributes of aiokafka (``_client`` for the metadata request,
``_coordinator`` for heartbeats and committed metadata, the fetcher's fetch wait — see
:class:`FetchWait`), pinned by the aiokafka version bound and covered by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    InvalidCommitOffsetSizeError,
    NoOffsetForPartitionError,
    OffsetMetadataTooLargeError,
    OffsetOutOfRangeError,
)
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.structs import OffsetAndMetadata

from adapter.clocks import suspend_aware
from adapter.errors import KafkaError
from adapter.kafka.commit_marks import (
    Committed,
    Handover,
    commit_metadata,
    parse_commit_metadata,
)
from adapter.kafka.errors import ConnectionWatch, translate
from adapter.kafka.topics import TopicInfo, describe_topics
from adapter.model import KafkaRecord, RetentionLoss

__all__ = [
    "AiokafkaConsumer",
    "CommitError",
    "CommitMetadataRefused",
    "Consumer",
    "FetchWait",
    "Fetched",
    "RebalanceListener",
    "to_record",
]

log = logging.getLogger(__name__)

TP = tuple[str, int]

# How long the broker may hold a fetch (``fetch.wait.max.ms`` when the subscription does not
# set it) while records flow: aiokafka's 500 ms. A fixed 5 s wait made idle consumers cheaper
# but cost throughput under load — a partition resumed after back-pressure waits for the fetch
# in flight — measured in bench (a) 3,808 against 5,198 records/s and in (d) 3,818 against
# 13,133 (docs/benchmarks.md). So the long wait is only for quiet consumers (FetchWait).
IDLE_FETCH_WAIT_MS = 500
# A consumer none of whose partitions returned a record for QUIET_AFTER_S, and none paused,
# lets the broker hold its fetches this long: an idle subscription makes one fetch per 5 s
# instead of two a second. The broker still answers at once when a record arrives.
QUIET_FETCH_WAIT_MS = 5_000
QUIET_AFTER_S = 10.0
# aiokafka's fetch task wakes at least this often (``consumer_timeout_ms``, 200 ms by default)
# even with a fetch in flight; the events it acts on are meant to wake it anyway, but not all
# do: with 10 s, a partition revoked and assigned straight back to the same member waited
# ~10 s for its next fetch (one topic of 200 in two of five (g) runs: 10.4-10.5 s delivery
# gaps), which 2 s keeps within the rebalance itself. Idle CPU at S = 50 on one poller: 1.28
# CPU-s/min at 200 ms, 1.04 at 2 s (140 bare aiokafka members: 1.08 at 2 s, 0.88 at 10 s;
# docs/operations.md#capacity).
FETCHER_TIMEOUT_MS = 2_000
# A group member without partitions (a subscription's standby on another poller, or one of more
# members than partitions) needs only its group coordinator connection, which heartbeats keep
# busy; its fetch connection idles. Closed after this long instead of aiokafka's 9 minutes, so
# a standby costs the broker one connection, not two; taking a partition over reconnects.
# (Fetching members keep theirs: a fetch is always in flight.)
IDLE_CONNECTION_MS = 30_000
# OAUTHBEARER sessions end when their token expires (the broker closes the connection;
# aiokafka does not re-authenticate): a held fetch must not outlive a short-lived token, or
# every fetch is cut before it returns. aiokafka's default there.
OAUTHBEARER_FETCH_WAIT_MS = 500
# While a partition is held back, getmany waits at most this long, then asks again with the
# partitions released meanwhile.
HELD_SLICE_MS = 100
# While a commit waits, this often the topics it names are looked up (one metadata request):
# a deleted topic's partitions are then left out (see AiokafkaConsumer.commit).
COMMIT_TOPIC_CHECK_S = 1.0
# A partition no consumer is assigned: asking aiokafka for it alone polls without fetching.
_NEVER_ASSIGNED = TopicPartition("", -1)
# Answers of the group coordinator that prove it renewed this member's session, by request
# API key. A heartbeat answered REBALANCE_IN_PROGRESS (27) renews it too (the member stays in
# the group until the join phase ends; aiokafka counts it as a good heartbeat); a SyncGroup
# counts only when it succeeded (the broker then schedules the member's next expiry).
_MEMBERSHIP_ACCEPTED: dict[int, frozenset[int]] = {
    12: frozenset({0, 27}),  # Heartbeat
    14: frozenset({0}),  # SyncGroup
}
# Answers that say the coordinator no longer knows this member or its generation:
# ILLEGAL_GENERATION (22), UNKNOWN_MEMBER_ID (25), FENCED_INSTANCE_ID (82).
_MEMBERSHIP_REFUSED = frozenset({22, 25, 82})
_LEAVE_GROUP = 13  # API key


class CommitError(KafkaError):
    """A commit was refused or timed out; the offsets stay uncommitted (redelivery only)."""


class CommitMetadataRefused(CommitError):
    """The broker refused the commit's offset metadata as too long for its
    ``offset.metadata.max.bytes``: the same commit with shorter metadata may pass."""


class RebalanceListener(Protocol):
    async def on_revoked(self, tps: set[TP]) -> None: ...

    async def on_assigned(self, tps: set[TP]) -> None: ...


@dataclass(slots=True)
class Fetched:
    """One fetch: records per partition, and any retention loss discovered on the way."""

    records: dict[TP, list[KafkaRecord]] = field(default_factory=dict)
    losses: list[RetentionLoss] = field(default_factory=list)


class Consumer(Protocol):
    """What the engine needs from a Kafka consumer (one consumer group member)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topic: str, listener: RebalanceListener) -> None: ...

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched: ...

    async def commit(
        self,
        offsets: dict[TP, int],
        topic_id: str | None,
        handovers: Mapping[TP, Handover] | None = None,
    ) -> None:
        """Commit ``offsets``, each with the topic ID and its partition's handover, if any, as
        metadata (:mod:`adapter.kafka.commit_marks`)."""
        ...

    def pause(self, tp: TP) -> None:
        """Fetch nothing more for ``tp``; records already fetched for it are dropped."""
        ...

    def resume(self, tp: TP) -> None: ...

    def hold(self, tp: TP) -> None:
        """Back-pressure: return no record of ``tp`` until :meth:`release`; records already
        fetched for it are kept."""
        ...

    def release(self, tp: TP) -> None: ...

    async def describe_topic(self, topic: str) -> TopicInfo | None: ...

    async def committed(self, tps: set[TP]) -> dict[TP, Committed]:
        """The committed offset of each partition that has one, with its metadata."""
        ...

    async def seek_to_beginning(self, tp: TP) -> None: ...

    async def position(self, tp: TP) -> int | None:
        """The offset of the next record of ``tp`` to fetch, once the reset policy (or a
        seek) has set it; None when ``tp`` is no longer assigned."""
        ...

    def log_end(self, tp: TP) -> int | None:
        """The partition's log end offset as of the last fetch (no request; None if unknown)."""
        ...

    def refresh_metadata(self) -> None:
        """Ask for fresh cluster metadata now (a topic appeared or changed)."""
        ...

    def observe_membership(
        self, confirmed: Callable[[float], None], lost: Callable[[float], None]
    ) -> None:
        """Call ``confirmed(sent_at)`` whenever the group coordinator accepts a heartbeat or a
        SyncGroup of this member, and ``lost(sent_at)`` when it refuses one because it no
        longer knows the member or its generation; ``sent_at`` is the
        :data:`~adapter.clocks.suspend_aware` reading taken before the request went out (the
        broker renewed the member's session, or found it gone, after it)."""
        ...

    def generation(self) -> int | None:
        """The group generation this member is in (None when it is in none)."""
        ...


def to_record(msg: Any) -> KafkaRecord:
    # A null header value stays null (AWS's Kafka events tell it from an empty one).
    headers: tuple[tuple[str, bytes | None], ...] = ()
    if msg.headers:  # most records have none: no generator for them (this runs per record)
        headers = tuple((str(k), bytes(v) if v is not None else None) for k, v in msg.headers)
    return KafkaRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        timestamp_ms=msg.timestamp,
        headers=headers,
        # aiokafka: 0 = CreateTime, 1 = LogAppendTime
        timestamp_type="LOG_APPEND_TIME" if msg.timestamp_type == 1 else "CREATE_TIME",
    )


class FetchWait:
    """The fetch wait of one consumer: short while records flow, long once it is quiet.

    A held fetch delays only what queues behind it on the consumer's connection: a partition
    resumed or assigned, or a seek, is fetched when the fetch in flight returns. Records end a
    held fetch at once, so a partition with records never waits; the cost of the long wait
    would fall on a partition resumed after back-pressure while its neighbours are caught up.
    Hence: long only after :data:`QUIET_AFTER_S` without records, pause, resume, seek or
    assignment, and with no partition paused; any of these makes it short again at once.
    What is left: a fetch already held when the consumer's assignment changes is not cut short
    (aiokafka drops its answer, the broker still holds it), so a partition newly assigned to a
    quiet consumer may be fetched up to the long wait, less the rebalance's own time, later.

    aiokafka has no setting for this: its fetcher reads ``_fetch_max_wait_ms`` each time it
    builds a fetch request (aiokafka 0.14, ``Fetcher._get_actions_per_node``), and this is the
    only place that writes it. ``tests/unit/test_fetch_wait.py`` fails if aiokafka changes that.
    """

    def __init__(
        self, short_ms: int, long_ms: int | None, quiet_after_s: float = QUIET_AFTER_S
    ) -> None:
        self.short_ms = short_ms
        self.long_ms = long_ms  # None: fixed at short_ms (set explicitly, or a short session)
        self._quiet_after_s = quiet_after_s
        self._last_activity = time.monotonic()
        self._paused: set[TP] = set()
        self._fetcher: Any = None
        self.current_ms = short_ms

    def attach(self, consumer: AIOKafkaConsumer) -> None:
        """Once the consumer has started (its fetcher exists)."""
        self._fetcher = getattr(consumer, "_fetcher", None)
        self._set(self.short_ms)

    def activity(self) -> None:
        self._last_activity = time.monotonic()
        if self.current_ms != self.short_ms:
            self._set(self.short_ms)

    def paused(self, tp: TP) -> None:
        self._paused.add(tp)
        self.activity()

    def resumed(self, tp: TP) -> None:
        self._paused.discard(tp)
        self.activity()

    def reassigned(self, tps: set[TP]) -> None:
        self._paused -= tps
        self.activity()

    def fetched(self, records: bool) -> None:
        """After each getmany: records keep the wait short; quiet long enough makes it long."""
        if records:
            self.activity()
        elif (
            self.long_ms is not None
            and self.current_ms != self.long_ms
            and not self._paused
            and time.monotonic() - self._last_activity >= self._quiet_after_s
        ):
            self._set(self.long_ms)

    def _set(self, wait_ms: int) -> None:
        self.current_ms = wait_ms
        if self._fetcher is not None:
            self._fetcher._fetch_max_wait_ms = wait_ms


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self, listener: RebalanceListener, held: set[TopicPartition], fetch_wait: FetchWait
    ) -> None:
        self._listener = listener
        self._held = held
        self._fetch_wait = fetch_wait

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # A partition assigned again starts afresh, not held by its last owner's backlog.
        self._held -= revoked
        self._fetch_wait.reassigned({(tp.topic, tp.partition) for tp in revoked})
        await self._listener.on_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._fetch_wait.reassigned({(tp.topic, tp.partition) for tp in assigned})
        await self._listener.on_assigned({(tp.topic, tp.partition) for tp in assigned})


def _left_out(
    positions: dict[TopicPartition, OffsetAndMetadata],
    existing: dict[TopicPartition, OffsetAndMetadata],
) -> dict[TopicPartition, OffsetAndMetadata]:
    """``existing``, having said which of ``positions`` it leaves out."""
    gone = sorted(f"{tp.topic}/{tp.partition}" for tp in positions if tp not in existing)
    if gone:
        log.warning("not committing the offsets of gone partitions %s", ", ".join(gone))
    return existing


def _drop(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` if it is still running; its outcome is of no interest, and is
    retrieved so that asyncio does not log it."""
    if not future.done():
        future.cancel()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())


class AiokafkaConsumer:
    """:class:`Consumer` over ``aiokafka.AIOKafkaConsumer``; errors come out as ours."""

    def __init__(
        self,
        *,
        watch: ConnectionWatch,
        commit_timeout_s: float = 10.0,
        metadata_timeout_s: float | None = None,
        start_gate: asyncio.Semaphore | None = None,
        quiet_after_s: float = QUIET_AFTER_S,
        **consumer_kwargs: Any,
    ) -> None:
        reset = str(consumer_kwargs.pop("auto_offset_reset", "latest"))
        if reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be earliest or latest, got {reset!r}")
        self._reset = reset
        self._watch = watch
        self._commit_timeout_s = commit_timeout_s
        oauth = consumer_kwargs.get("sasl_mechanism") == "OAUTHBEARER"
        # A wait set by the subscription is kept as it is; so is OAUTHBEARER's (see above).
        adaptive = "fetch_max_wait_ms" not in consumer_kwargs and not oauth
        consumer_kwargs.setdefault(
            "fetch_max_wait_ms", OAUTHBEARER_FETCH_WAIT_MS if oauth else IDLE_FETCH_WAIT_MS
        )
        self.fetch_wait_ms = int(consumer_kwargs["fetch_max_wait_ms"])
        request_timeout_ms = int(consumer_kwargs.get("request_timeout_ms", 40_000))
        long_ms = min(QUIET_FETCH_WAIT_MS, request_timeout_ms // 2)
        self.fetch_wait = FetchWait(
            self.fetch_wait_ms,
            long_ms if adaptive and long_ms > self.fetch_wait_ms else None,
            quiet_after_s,
        )
        longest_wait_ms = self.fetch_wait.long_ms or self.fetch_wait_ms
        # A metadata request may queue behind a held fetch on the same connection.
        self._metadata_timeout_s = (
            metadata_timeout_s if metadata_timeout_s is not None else longest_wait_ms / 1000 + 5
        )
        # Shared by a poller's consumers: how many start (connect, bootstrap) at once.
        self._start_gate = start_gate
        consumer_kwargs.setdefault("consumer_timeout_ms", FETCHER_TIMEOUT_MS)
        consumer_kwargs.setdefault("connections_max_idle_ms", IDLE_CONNECTION_MS)
        # "none": out-of-range positions and missing commits come to us instead of being
        # reset silently (see the module docstring).
        self._consumer = AIOKafkaConsumer(auto_offset_reset="none", **consumer_kwargs)
        self._membership_observers: list[Callable[[float], None]] = []
        self._membership_losses: list[Callable[[float], None]] = []
        # Partitions held back (see hold): left out of getmany, not paused in aiokafka.
        # Shared with the rebalance listener, so only ever changed in place.
        self._held: set[TopicPartition] = set()

    def _error(self, exc: BaseException) -> KafkaError:
        return translate(exc, context=self._watch.context, watch=self._watch)

    async def start(self) -> None:
        try:
            if self._start_gate is not None:
                async with self._start_gate:
                    await self._consumer.start()
            else:
                await self._consumer.start()
        except AIOKafkaError as exc:
            raise self._error(exc) from exc
        self.fetch_wait.attach(self._consumer)
        coordinator = self._consumer._coordinator
        send = coordinator._send_req
        observers = self._membership_observers
        losses = self._membership_losses

        async def dated_send(request: Any) -> Any:
            # Dated before the request goes out: an answer read late (the poller paused while
            # it sat in the socket) proves nothing about the time it is read at, only that
            # the broker renewed the session at some moment after this reading.
            sent_at = suspend_aware()
            if request.API_KEY == _LEAVE_GROUP:
                # Leaving (a stop, or aiokafka's own leave after max.poll.interval.ms): the
                # member is gone from the moment the broker reads this, answered or not.
                for callback in losses:
                    callback(sent_at)
            response = await send(request)
            accepted = _MEMBERSHIP_ACCEPTED.get(request.API_KEY)
            if accepted is not None:
                if response.error_code in accepted:
                    for callback in observers:
                        callback(sent_at)
                elif response.error_code in _MEMBERSHIP_REFUSED:
                    for callback in losses:
                        callback(sent_at)
            return response

        coordinator._send_req = dated_send

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        except AIOKafkaError as exc:
            raise self._error(exc) from exc

    def subscribe(self, topic: str, listener: RebalanceListener) -> None:
        try:
            self._consumer.subscribe(
                [topic], listener=_Listener(listener, self._held, self.fetch_wait)
            )
        except AIOKafkaError as exc:
            raise self._error(exc) from exc

    def observe_membership(
        self, confirmed: Callable[[float], None], lost: Callable[[float], None]
    ) -> None:
        self._membership_observers.append(confirmed)
        self._membership_losses.append(lost)

    def generation(self) -> int | None:
        # aiokafka keeps it on its coordinator (-1 when the member is in no generation).
        value = getattr(self._consumer._coordinator, "generation", -1)
        return int(value) if isinstance(value, int) and value >= 0 else None

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched:
        fetched = Fetched()
        try:
            batches = await self._fetch(timeout_ms, max_records)
        except OffsetOutOfRangeError as exc:
            positions = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            for tp, position in positions.items():
                loss = await self._out_of_range(tp, int(position))
                if loss is not None:
                    fetched.losses.append(loss)
            return fetched
        except NoOffsetForPartitionError as exc:
            for tp in exc.args:
                if isinstance(tp, TopicPartition):
                    await self._start_without_commit(tp)
            return fetched
        except AIOKafkaError as exc:
            raise self._error(exc) from exc
        for tp, messages in batches.items():
            if messages:
                fetched.records[(tp.topic, tp.partition)] = [to_record(m) for m in messages]
        self.fetch_wait.fetched(bool(fetched.records))
        return fetched

    async def _start_without_commit(self, tp: TopicPartition) -> None:
        self.fetch_wait.activity()
        log.info("%s/%d has no committed offset: starting at the %s", *tp, self._reset)
        try:
            if self._reset == "earliest":
                await self._consumer.seek_to_beginning(tp)
            else:
                await self._consumer.seek_to_end(tp)
        except (AIOKafkaError, IllegalStateError) as exc:
            raise self._error(exc) from exc

    async def _out_of_range(self, tp: TopicPartition, position: int) -> RetentionLoss | None:
        self.fetch_wait.activity()
        try:
            start = (await self._consumer.beginning_offsets([tp]))[tp]
            end = (await self._consumer.end_offsets([tp]))[tp]
        except (AIOKafkaError, IllegalStateError) as exc:
            raise self._error(exc) from exc
        if position < start:
            # Retention deleted records this group had not reached: go on from the log's
            # start, and say what was lost.
            self._consumer.seek(tp, start)
            return RetentionLoss((tp.topic, tp.partition), position, start - 1)
        # Past the end: the log was truncated (unclean leader election) or replaced.
        log.warning(
            "position %d of %s/%d is past the log end %d: starting at the %s",
            position,
            *tp,
            end,
            self._reset,
        )
        if self._reset == "earliest":
            self._consumer.seek(tp, start)
        else:
            self._consumer.seek(tp, end)
        return None

    async def commit(
        self,
        offsets: dict[TP, int],
        topic_id: str | None,
        handovers: Mapping[TP, Handover] | None = None,
    ) -> None:
        plain = commit_metadata(topic_id)
        handovers = handovers or {}
        positions = {
            TopicPartition(*tp): OffsetAndMetadata(
                offset,
                commit_metadata(topic_id, handovers[tp]) if tp in handovers else plain,
            )
            for tp, offset in offsets.items()
        }
        try:
            await self._commit_existing(positions)
        except (OffsetMetadataTooLargeError, InvalidCommitOffsetSizeError) as exc:
            raise CommitMetadataRefused(str(exc) or type(exc).__name__) from exc
        except (CommitFailedError, IllegalStateError, AIOKafkaError, TimeoutError) as exc:
            raise CommitError(str(exc) or "commit timed out") from exc

    async def _commit_existing(self, positions: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``positions`` within the commit timeout, leaving out deleted topics.

        Explicit offsets only: a bare commit() would commit everything *fetched*. The broker
        answers a commit naming a deleted topic with a retriable error, which aiokafka retries
        without end, so the commit is bounded in time (an uncommitted offset only means
        redelivery). And a deleted topic's partitions are left out as soon as a lookup shows
        the topic gone -- before the commit when the cached metadata lacks a partition, and every
        second while a commit waits -- so a stop or revocation after a deletion does not wait
        for the timeout once per commit. Nothing can read a dead topic's offsets.
        """
        deadline = time.monotonic() + self._commit_timeout_s
        if any(
            tp.partition not in (self._consumer.partitions_for_topic(tp.topic) or ())
            for tp in positions
        ):
            with contextlib.suppress(KafkaError):  # no answer now: commit them all
                positions = _left_out(positions, await self._of_existing(positions, deadline))
        while positions:
            commit = asyncio.ensure_future(self._consumer.commit(positions))
            try:
                positions = await self._wait_for_commit(commit, positions, deadline)
            finally:
                _drop(commit)

    async def _wait_for_commit(
        self,
        commit: asyncio.Future[None],
        positions: dict[TopicPartition, OffsetAndMetadata],
        deadline: float,
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Nothing once ``commit`` is done (its error raised), or what is left to commit once
        some of the topics it names turned out deleted.

        The lookup runs beside the commit, which is answered the moment it is done: the lookup
        may queue behind a fetch the broker holds on the same connection (up to 5 s), and its
        failure says nothing about the commit."""
        lookup: asyncio.Task[dict[TopicPartition, OffsetAndMetadata]] | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                if lookup is None:
                    await asyncio.wait({commit}, timeout=min(COMMIT_TOPIC_CHECK_S, remaining))
                else:
                    either: set[asyncio.Future[Any]] = {commit, lookup}
                    await asyncio.wait(either, timeout=remaining, return_when=FIRST_COMPLETED)
                if commit.done():
                    commit.result()
                    return {}
                if lookup is None:
                    lookup = asyncio.create_task(self._of_existing(positions, deadline))
                elif lookup.done():
                    found, lookup = lookup, None
                    if not found.cancelled() and found.exception() is None:
                        existing = found.result()
                        if len(existing) < len(positions):
                            return _left_out(positions, existing)
        finally:
            if lookup is not None:
                _drop(lookup)

    async def _of_existing(
        self, positions: dict[TopicPartition, OffsetAndMetadata], deadline: float
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """``positions`` without the partitions the cluster no longer has: of deleted topics,
        and above the partition count of a topic re-created with fewer (the broker refuses
        those as unknown too, and aiokafka retries). A topic re-created under its name keeps
        the others: its commit carries the dead topic's ID, which tells the next owner. Asked
        of one broker, naming the topics without creating them."""
        names = sorted({tp.topic for tp in positions})
        found = await describe_topics(
            self._consumer._client, names, timeout_s=max(deadline - time.monotonic(), 0.001)
        )
        return {
            tp: p
            for tp, p in positions.items()
            if (topic := found.get(tp.topic)) is not None and tp.partition < topic.partitions
        }

    async def _fetch(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """aiokafka's getmany for the partitions not held.

        While any partition is held the wait is cut into short slices, so a released (or newly
        assigned) partition is asked for within :data:`HELD_SLICE_MS`. aiokafka's getmany is
        never cancelled (its poll bookkeeping has no ``finally``: a cancelled call would leave
        ``max.poll.interval.ms`` unwatched for good) and never skipped (a member that stops
        calling it for ``max.poll.interval.ms`` leaves its group): with every partition held
        it is asked for a partition that is never assigned, which returns nothing."""
        if not self._held:
            batches: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=max_records
            )
            return batches
        assigned = self._consumer.assignment()
        self._held &= assigned  # in place: the rebalance listener holds the same set
        wanted = [tp for tp in assigned if tp not in self._held] or [_NEVER_ASSIGNED]
        held_back: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
            *wanted, timeout_ms=min(timeout_ms, HELD_SLICE_MS), max_records=max_records
        )
        return held_back

    def hold(self, tp: TP) -> None:
        """Back-pressure: getmany leaves ``tp`` out until :meth:`release`. Not aiokafka's
        pause, which drops the partition's prefetched records (up to max.partition.fetch.bytes,
        thousands of small records) to fetch them again after the resume: under back-pressure
        that re-read most of every fetch (bench (d): 12,500 against 16,500 records/s). Held,
        the records wait in aiokafka's buffer, which fetches nothing more for a partition until
        its buffered records are taken: one fetch response per partition at most. While a
        partition is held the fetch wait stays short (:class:`FetchWait`), so its release is
        not queued behind a long fetch."""
        self._held.add(TopicPartition(*tp))
        self.fetch_wait.paused(tp)

    def release(self, tp: TP) -> None:
        self._held.discard(TopicPartition(*tp))
        self.fetch_wait.resumed(tp)

    def pause(self, tp: TP) -> None:
        self.fetch_wait.paused(tp)
        with contextlib.suppress(IllegalStateError):  # no longer assigned: nothing to pause
            self._consumer.pause(TopicPartition(*tp))

    def resume(self, tp: TP) -> None:
        self.fetch_wait.resumed(tp)
        with contextlib.suppress(IllegalStateError):
            self._consumer.resume(TopicPartition(*tp))

    async def describe_topic(self, topic: str) -> TopicInfo | None:
        try:
            found = await asyncio.wait_for(
                describe_topics(self._consumer._client, [topic]), self._metadata_timeout_s
            )
        except TimeoutError as exc:
            raise KafkaError(f"metadata of topic {topic!r} not received in time") from exc
        return found.get(topic)

    async def committed(self, tps: set[TP]) -> dict[TP, Committed]:
        partitions = {TopicPartition(*tp) for tp in tps}
        try:
            committed = await asyncio.wait_for(
                self._consumer._coordinator.fetch_committed_offsets(partitions),
                self._metadata_timeout_s,
            )
        except (AIOKafkaError, TimeoutError) as exc:
            raise KafkaError(f"cannot read committed offsets: {exc or 'timed out'}") from exc
        out: dict[TP, Committed] = {}
        for tp, value in committed.items():
            offset = getattr(value, "offset", -1)
            if offset is None or offset < 0:
                continue
            topic_id, handover = parse_commit_metadata(getattr(value, "metadata", ""))
            out[(tp.topic, tp.partition)] = Committed(int(offset), topic_id, handover)
        return out

    async def seek_to_beginning(self, tp: TP) -> None:
        self.fetch_wait.activity()
        try:
            await self._consumer.seek_to_beginning(TopicPartition(*tp))
        except (AIOKafkaError, IllegalStateError) as exc:
            raise self._error(exc) from exc

    async def position(self, tp: TP) -> int | None:
        try:
            # aiokafka waits for the fetcher to resolve the position, with no end of its own.
            return int(
                await asyncio.wait_for(
                    self._consumer.position(TopicPartition(*tp)), self._metadata_timeout_s
                )
            )
        except IllegalStateError:
            return None
        except TimeoutError as exc:
            raise KafkaError(f"the position of {tp[0]}[{tp[1]}] was not resolved in time") from exc
        except AIOKafkaError as exc:
            raise self._error(exc) from exc

    def refresh_metadata(self) -> None:
        self._consumer._client.force_metadata_update()

    def log_end(self, tp: TP) -> int | None:
        try:
            # The high watermark of the last fetch response: free, and at most one fetch old.
            end = self._consumer.highwater(TopicPartition(*tp))
        except IllegalStateError:
            return None
        return int(end) if end is not None else None
