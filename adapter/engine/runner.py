"""One subscription's consumer loop: records in, invocations out, offsets committed.

The runner is the I/O shell around the pure cores: :class:`~adapter.engine.lanes.Lanes`
decides which record may run, :class:`~adapter.engine.offsets.PartitionOffsets` decides what
may be committed, :class:`~adapter.engine.retry.RetryPolicy` decides when to try again and
:func:`~adapter.engine.mapping.build_request` turns a record into a request. The runner only
moves data between Kafka, the invoker, the dead-letter producer and the ledger.

A record's offset is *finished* only when its final result is durable in the ledger (and, for
dead letters, acknowledged by the dead-letter topic's broker); only finished offsets are
committed, always as explicit offsets.

Lifecycle: ``run()`` until ``stop()``; stopping stops fetching, lets running invocations finish
within the drain deadline, cancels the rest, waits for the ledger, commits, and closes the
consumer. Records that were accepted but not finished are simply not committed, so the next
owner of the partition receives them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.errors import KafkaError as AIOKafkaError

from adapter.engine.lanes import Lanes
from adapter.engine.ledger import LedgerWriter
from adapter.engine.lifecycle import InvocationStatus
from adapter.engine.mapping import build_request, with_attempt
from adapter.engine.offsets import PartitionOffsets
from adapter.engine.retry import RetryPolicy
from adapter.errors import KafkaError, StoreError, TerminalInvokeError
from adapter.ids import invocation_id
from adapter.invokers.base import InvocationRequest, Invoker, OutcomeKind
from adapter.kafka.dead_letter import dead_letter_headers
from adapter.kafka.errors import ConnectionWatch, translate, watch_connections
from adapter.model import HandlerType, KafkaRecord, LedgerEntry, Subscription, Target

__all__ = ["RunnerSettings", "RunnerState", "RunnerStats", "SubscriptionRunner"]

log = logging.getLogger(__name__)

_COMPLETED = frozenset(
    {
        InvocationStatus.SUCCEEDED,
        InvocationStatus.FAILED,
        InvocationStatus.DEAD_LETTERED,
        InvocationStatus.DUPLICATE,
        InvocationStatus.KILLED,
        InvocationStatus.CANCELLED,
    }
)


_CHECK_ALL = 2**63 - 1

_COUNTERS = {  # RunnerStats fields of the results other than success
    InvocationStatus.FAILED: "failed",
    InvocationStatus.DEAD_LETTERED: "dead_lettered",
    InvocationStatus.DUPLICATE: "duplicates",
}


class RunnerStore(Protocol):
    async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]: ...

    async def paged_offsets(
        self, subscription_id: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[int]: ...

    async def highest_recorded_offset(
        self, subscription_id: str, topic: str, partition: int
    ) -> int | None: ...

    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool: ...


class DeadLetters(Protocol):
    async def send(
        self, topic: str, record: KafkaRecord, headers: list[tuple[str, bytes]]
    ) -> None: ...


class RunnerState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing-off"  # could not reach the cluster; retrying
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    max_in_flight: int = 256
    max_buffered_per_partition: int = 1000
    max_record_bytes: int = 6 * 1024 * 1024
    invocation_timeout_s: float = 30.0
    fetch_max_records: int = 500
    commit_interval_s: float = 0.2
    commit_timeout_s: float = 10.0
    close_timeout_s: float = 10.0
    revoke_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    dead_letter_topic: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(slots=True)
class RunnerStats:
    consumed: int = 0
    skipped_completed: int = 0
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    retries: int = 0
    commits: int = 0
    rebalances: int = 0
    abandoned: int = 0


@dataclass(slots=True, eq=False)
class _Work:
    """One accepted record on its way to a final result."""

    inv_id: str
    tp: TopicPartition
    generation: int
    record: KafkaRecord
    request: InvocationRequest | None
    attempts: int = 0
    created_ms: int = 0
    task: asyncio.Task[None] | None = None
    # Only a retrying invocation waits on these; made at its first retry, not per record.
    slot: asyncio.Event | None = None
    wake: asyncio.Event | None = None
    in_lanes: bool = False
    last_error: str | None = None
    replaces_row: bool = False  # the ledger holds a row of it already (see LedgerEntry)


def with_paged_successes(
    statuses: dict[str, str], offsets: dict[str, int], paged: set[int]
) -> dict[str, str]:
    """Row statuses with the successes found in pages added; a final status wins over a
    progress row (a revoked poller's late BACKING_OFF next to another poller's success)."""
    merged = dict(statuses)
    for inv_id, offset in offsets.items():
        if offset in paged and merged.get(inv_id) not in _COMPLETED:
            merged[inv_id] = InvocationStatus.SUCCEEDED.value
    return merged


def _now_ms() -> int:
    return int(time.time() * 1000)


def to_record(msg: Any) -> KafkaRecord:
    headers = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (msg.headers or ()))
    return KafkaRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        timestamp_ms=msg.timestamp,
        headers=headers,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: SubscriptionRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runner._on_assigned(set(assigned))


class SubscriptionRunner:
    """Consumes one subscription's topic in this poller and drives its invocations."""

    def __init__(
        self,
        subscription: Subscription,
        target: Target,
        *,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        store: RunnerStore,
        ledger: LedgerWriter,
        invoker: Invoker,
        dead_letters: DeadLetters | None,
        settings: RunnerSettings,
        rng: random.Random | None = None,
    ) -> None:
        self.subscription = subscription
        self.target = target
        self._consumer_factory = consumer_factory
        self._store = store
        self._ledger = ledger
        self._invoker = invoker
        self._dead_letters = dead_letters
        self.settings = settings
        self._rng = rng or random.Random()
        self._consumer: AIOKafkaConsumer | None = None
        self._lanes: Lanes[str, TopicPartition] = Lanes(
            settings.max_in_flight, max(2, settings.max_buffered_per_partition)
        )
        self._offsets = PartitionOffsets()
        self._work: dict[str, _Work] = {}
        self._generation: dict[TopicPartition, int] = {}
        self._fence: dict[TopicPartition, int | None] = {}
        self._paused: set[TopicPartition] = set()
        self._stopping = asyncio.Event()
        self._commit_wanted = asyncio.Event()
        self.state = RunnerState.STARTING
        self.last_error: str | None = None
        self.stats = RunnerStats()
        self._gen_counter = 0
        self._background: set[asyncio.Task[None]] = set()
        # Partitions being released: no new record of theirs is admitted meanwhile.
        self._revoking: set[TopicPartition] = set()
        self._commit_lock = asyncio.Lock()

    # -- public -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._lanes.in_flight

    def partition_status(self) -> dict[TopicPartition, dict[str, int | None]]:
        out: dict[TopicPartition, dict[str, int | None]] = {}
        for tp in self._offsets:
            tracker = self._offsets.tracker(tp)
            out[tp] = {
                "pending": tracker.pending,
                "committed": tracker.committed,
                "last_tracked": tracker.last_tracked,
                "oldest_unfinished": tracker.oldest_unfinished(),
            }
        return out

    def retry_now(self, inv_id: str) -> bool:
        """Skip the backoff of a backing-off invocation; False if it is not backing off here."""
        work = self._work.get(inv_id)
        # ``wake`` exists from a record's first retry on: without it there is no backoff to end.
        if work is None or work.task is None or work.wake is None:
            return False
        work.wake.set()
        return True

    async def kill(self, inv_id: str, status: InvocationStatus) -> bool:
        """Stop an unfinished invocation of this runner and record it as ``status`` (KILLED or
        CANCELLED); False if this runner has no such invocation.

        The record is completed through the normal path, so its offset finishes (and can be
        committed) once the row is durable, and the next record of its key may start.
        """
        work = self._work.get(inv_id)
        if work is None or not work.in_lanes:
            return False
        if work.task is not None and not work.task.done():
            work.task.cancel()
        self._complete(work, status, f"{status.value.lower()} by an operator")
        return True

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`. Raises :class:`KafkaError` if the consumer fails."""
        consumer = self._consumer_factory()
        self._consumer = consumer
        # aiokafka logs and retries most connection failures instead of raising them; the
        # watch collects them for this consumer (its tasks inherit this task's context).
        watch = watch_connections(
            f"subscription {self.subscription.id}: cannot consume {self.subscription.source}"
        )
        try:
            try:
                await consumer.start()
                consumer.subscribe([self.subscription.topic], listener=_Listener(self))
            except AIOKafkaError as exc:
                error = translate(exc, context=watch.context, watch=watch)
                self.last_error = str(error)
                raise error from exc
            fatal = watch.take_fatal(starting=True)
            if fatal is not None:
                self.last_error = str(fatal)
                raise fatal
            self.state = RunnerState.RUNNING
            committer = asyncio.create_task(self._commit_loop())
            try:
                await self._fetch_loop(consumer, watch)
            finally:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committer
            await self._drain()
        finally:
            self.state = RunnerState.STOPPING
            await self._abandon_all()
            # aiokafka's close waits for its coordinator task, which retries for ever while
            # the broker is unreachable: a SIGTERM during an outage must still end the process.
            try:
                await asyncio.wait_for(consumer.stop(), self.settings.close_timeout_s)
            except (AIOKafkaError, TimeoutError) as exc:
                log.warning(
                    "consumer of %s did not close cleanly: %s",
                    self.subscription.id,
                    exc or "timed out (broker unreachable?)",
                )
            self._consumer = None
            self.state = RunnerState.STOPPED

    # -- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self, consumer: AIOKafkaConsumer, watch: ConnectionWatch) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.create_task(
                    consumer.getmany(timeout_ms=500, max_records=self.settings.fetch_max_records)
                )
                await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetch
                    break
                try:
                    batches = fetch.result()
                except AIOKafkaError as exc:
                    error = translate(exc, context=watch.context, watch=watch)
                    self.last_error = str(error)
                    raise error from exc
                self._report_connection(watch)
                for tp, messages in batches.items():
                    if tp in self._generation and messages:
                        await self._accept(tp, [to_record(m) for m in messages])
        finally:
            stop_wait.cancel()

    def _report_connection(self, watch: ConnectionWatch) -> None:
        """Surface what aiokafka only logs: a fatal failure ends this consumer (the supervisor
        retries with a new one); an outage it is riding out shows as backing off."""
        fatal = watch.take_fatal()
        if fatal is not None:
            self.last_error = str(fatal)
            raise fatal
        ongoing = watch.ongoing()
        if ongoing is not None:
            if self.state is RunnerState.RUNNING:
                self.state = RunnerState.BACKING_OFF
                log.warning("%s (the Kafka client keeps retrying)", ongoing)
            self.last_error = str(ongoing)
        elif self.state is RunnerState.BACKING_OFF:
            self.state = RunnerState.RUNNING
            self.last_error = None
            log.info("subscription %s reaches its cluster again", self.subscription.id)

    async def _accept(self, tp: TopicPartition, records: list[KafkaRecord]) -> None:
        if tp in self._revoking:
            # aiokafka still returns records of a partition while its revocation drains; the
            # next owner will deliver them, and running them here would overlap with it.
            return
        generation = self._generation[tp]
        tracker = self._offsets.tracker(tp)
        sub_id = self.subscription.id
        ids = [invocation_id(sub_id, r.topic, r.partition, r.offset) for r in records]
        for record in records:
            tracker.track(record.offset)
        self.stats.consumed += len(records)
        known = await self._ledger_statuses(tp, records, ids)
        if self._generation.get(tp) != generation or tp in self._revoking:
            return  # revoked while we looked at the ledger
        now = _now_ms()
        for record, inv_id in zip(records, ids, strict=True):
            status = known.get(inv_id)
            if status is not None and status in _COMPLETED:
                # Finished by an earlier owner of this partition: never invoke it again.
                self.stats.skipped_completed += 1
                tracker.finish(record.offset)
                continue
            work = _Work(inv_id, tp, generation, record, None, created_ms=now)
            work.replaces_row = status is not None
            self._admit(work)
        if tracker.pending >= self.settings.max_buffered_per_partition and tp not in self._paused:
            self._pause(tp)

    async def _ledger_statuses(
        self, tp: TopicPartition, records: list[KafkaRecord], ids: list[str]
    ) -> dict[str, str]:
        fence = self._fence.get(tp)
        if fence is None:
            return {}
        to_check = {i: r.offset for r, i in zip(records, ids, strict=True) if r.offset <= fence}
        if not to_check:
            return {}
        delay = 0.1
        while True:
            try:
                statuses = await self._store.get_statuses(to_check)
                paged = await self._store.paged_offsets(
                    self.subscription.id,
                    tp.topic,
                    tp.partition,
                    min(to_check.values()),
                    max(to_check.values()),
                )
                return with_paged_successes(statuses, to_check, paged)
            except StoreError as exc:
                # Backpressure: no record is admitted before we know it was not completed.
                self.last_error = str(exc)
                log.warning("ledger check failed for %s, retrying: %s", tp, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _admit(self, work: _Work) -> None:
        try:
            work.request = build_request(
                subscription_id=self.subscription.id,
                record=work.record,
                target=self.target,
                max_body_bytes=self.settings.max_record_bytes,
                invocation_id=work.inv_id,
                timeout_s=self.settings.invocation_timeout_s,
            )
        except TerminalInvokeError as exc:
            # Bad input fails this one record; nothing about it may block its key or partition.
            self._spawn(work, self._fail(work, str(exc)))
            return
        self._work[work.inv_id] = work
        work.in_lanes = True
        lane_key = work.request.key if self.target.ordered else None
        self._start(self._lanes.offer(work.inv_id, work.tp, lane_key))

    def _pause(self, tp: TopicPartition) -> None:
        if self._consumer is not None and tp in self._generation:
            with contextlib.suppress(IllegalStateError):
                self._consumer.pause(tp)
            self._paused.add(tp)

    def _maybe_resume(self, tp: TopicPartition) -> None:
        if tp not in self._paused or tp not in self._offsets:
            return
        if self._offsets.tracker(tp).pending <= self.settings.max_buffered_per_partition // 2:
            self._paused.discard(tp)
            if self._consumer is not None:
                with contextlib.suppress(IllegalStateError):
                    self._consumer.resume(tp)

    # -- invoking ---------------------------------------------------------------------------

    def _spawn(self, work: _Work, coro: Awaitable[None]) -> None:
        self._work[work.inv_id] = work
        work.task = asyncio.ensure_future(coro)

    def _start(self, inv_ids: list[str]) -> None:
        for inv_id in inv_ids:
            work = self._work.get(inv_id)
            if work is None:
                continue
            if work.task is None:
                work.task = asyncio.create_task(self._invoke(work))
            elif work.slot is not None:
                work.slot.set()

    async def _invoke(self, work: _Work) -> None:
        assert work.request is not None
        is_run = self.target.handler_type is HandlerType.WORKFLOW
        if is_run and work.request.key is not None and not await self._claim_workflow(work):
            self._complete(work, InvocationStatus.DUPLICATE, "workflow already ran")
            return
        policy = self.settings.retry
        while True:
            work.attempts += 1
            request = (
                work.request if work.attempts == 1 else with_attempt(work.request, work.attempts)
            )
            outcome = await self._invoker.invoke(request)
            if outcome.kind is OutcomeKind.ACK:
                self._complete(work, InvocationStatus.SUCCEEDED, None)
                return
            work.last_error = outcome.error
            if outcome.kind is OutcomeKind.TERMINAL:
                await self._fail(work, outcome.error or "terminal error")
                return
            delay = policy.next_delay(work.attempts, outcome.retry_after, self._rng)
            if delay is None:
                await self._fail(work, f"gave up after {work.attempts} attempts: {outcome.error}")
                return
            self.stats.retries += 1
            self._ledger.submit(self._entry(work, InvocationStatus.BACKING_OFF, delay=delay))
            self._start(self._lanes.park(work.inv_id))
            wake = work.wake = work.wake or asyncio.Event()
            slot = work.slot = work.slot or asyncio.Event()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
            slot.clear()
            started = self._lanes.unpark(work.inv_id)
            own = work.inv_id in started
            self._start([i for i in started if i != work.inv_id])
            if not own:
                await slot.wait()

    async def _claim_workflow(self, work: _Work) -> bool:
        assert work.request is not None
        assert work.request.key is not None
        delay = 0.1
        while True:
            try:
                return await self._store.claim_workflow(
                    self.target.service, work.request.key, work.inv_id
                )
            except StoreError as exc:
                self.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _fail(self, work: _Work, reason: str) -> None:
        work.last_error = reason
        topic = self.settings.dead_letter_topic
        if topic is None or self._dead_letters is None:
            self._complete(work, InvocationStatus.FAILED, reason)
            return
        headers = dead_letter_headers(
            work.record,
            reason=reason,
            attempts=work.attempts,
            invocation_id=work.inv_id,
            subscription_id=self.subscription.id,
            failed_at_ms=_now_ms(),
        )
        delay = 0.1
        while True:
            try:
                await self._dead_letters.send(topic, work.record, headers)
                break
            except KafkaError as exc:
                # The offset stays unfinished until the dead letter is stored: nothing is lost.
                self.last_error = str(exc)
                log.warning("dead letter for %s not stored yet: %s", work.inv_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._complete(work, InvocationStatus.DEAD_LETTERED, reason)

    def _complete(self, work: _Work, status: InvocationStatus, error: str | None) -> None:
        if status is InvocationStatus.SUCCEEDED:
            self.stats.succeeded += 1
        else:
            name = _COUNTERS.get(status)
            if name is not None:
                setattr(self.stats, name, getattr(self.stats, name) + 1)
            log.info(
                "invocation %s (%s/%d@%d) %s: %s",
                work.inv_id,
                work.record.topic,
                work.record.partition,
                work.record.offset,
                status.value,
                error,
            )
        if work.in_lanes:
            work.in_lanes = False
            # The next record of this key may start now; only the commit waits for the ledger.
            self._start(self._lanes.done(work.inv_id))
        entry = self._entry(work, status, error=error)
        self._ledger.submit(entry, lambda: self._finished(work))

    def _finished(self, work: _Work) -> None:
        if self._work.get(work.inv_id) is work:
            del self._work[work.inv_id]
        if self._generation.get(work.tp) != work.generation:
            return  # partition revoked meanwhile; its new owner decides
        self._offsets.finish(work.tp, work.record.offset)
        self._maybe_resume(work.tp)

    def _entry(
        self,
        work: _Work,
        status: InvocationStatus,
        *,
        error: str | None = None,
        delay: float | None = None,
    ) -> LedgerEntry:
        now = _now_ms()
        key: str | None = None
        if work.request is not None:
            key = work.request.key
        elif work.record.key is not None:
            key = work.record.key.decode("utf-8", "backslashreplace")
        return LedgerEntry(
            id=work.inv_id,
            subscription_id=self.subscription.id,
            topic=work.record.topic,
            partition=work.record.partition,
            offset=work.record.offset,
            key=key,
            target=self.target.sink,
            status=status.value,
            attempts=work.attempts,
            last_error=error if error is not None else work.last_error,
            created_at_ms=work.created_ms,
            updated_at_ms=now,
            completed_at_ms=now if status in _COMPLETED else None,
            next_retry_at_ms=now + int(delay * 1000) if delay is not None else None,
            dead_letter_topic=(
                self.settings.dead_letter_topic
                if status is InvocationStatus.DEAD_LETTERED
                else None
            ),
            replaces_row=work.replaces_row,
        )

    # -- committing -------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            positions = self._offsets.commit_map()
            if only is not None:
                positions = {tp: pos for tp, pos in positions.items() if tp in only}
            if not positions:
                return
            try:
                # Explicit offsets only: a bare commit() would commit everything *fetched*.
                # aiokafka retries some commit errors (a deleted topic) forever; bound it so a
                # shutdown or revocation cannot hang. An uncommitted offset only means redelivery.
                await asyncio.wait_for(
                    consumer.commit(dict(positions)), self.settings.commit_timeout_s
                )
            except (CommitFailedError, IllegalStateError, AIOKafkaError, TimeoutError) as exc:
                log.warning(
                    "commit of %s failed (will retry): %s", self.subscription.id, exc or "timeout"
                )
                return
            self._offsets.mark_committed(positions)
            self.stats.commits += 1

    # -- rebalancing ------------------------------------------------------------------------

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.stats.rebalances += 1
        for tp in assigned:
            self._gen_counter += 1
            self._generation[tp] = self._gen_counter
            self._offsets.drop(tp)
            self._offsets.tracker(tp)
            self._paused.discard(tp)
            # Until the real fence is known, every record is checked against the ledger.
            self._fence[tp] = _CHECK_ALL
            # aiokafka sends no heartbeats while this callback runs: a slow DynamoDB here
            # would get the member expired and the group would rebalance again and again.
            # So the fence is read in the background; until then every record is checked.
            self._spawn_background(self._read_fence(tp, self._generation[tp]))
        log.info("subscription %s assigned %s", self.subscription.id, sorted(assigned))

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_fence(self, tp: TopicPartition, generation: int) -> None:
        try:
            fence = await self._store.highest_recorded_offset(
                self.subscription.id, tp.topic, tp.partition
            )
        except StoreError as exc:
            # Unknown fence: keep checking every record of this partition against the ledger.
            self.last_error = str(exc)
            return
        if self._generation.get(tp) == generation:
            self._fence[tp] = fence

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        log.info("subscription %s revoking %s", self.subscription.id, sorted(revoked))
        await self._release(revoked, self.settings.revoke_timeout_s)

    async def _release(self, tps: set[TopicPartition], deadline_s: float) -> None:
        """Stop work on these partitions: drain within ``deadline_s``, commit, forget them."""
        self._revoking |= tps
        try:
            await self._drain_partitions(tps, deadline_s)
        finally:
            self._revoking -= tps

    async def _drain_partitions(self, tps: set[TopicPartition], deadline_s: float) -> None:
        parked: list[_Work] = []
        for tp in tps:
            dropped = self._lanes.drop_partition(tp)
            for inv_id in dropped.abandoned:
                work = self._work.pop(inv_id, None)
                if work is not None:
                    work.in_lanes = False
                    if work.task is not None:
                        parked.append(work)
            self._start(dropped.start)
        for work in parked:
            assert work.task is not None
            work.task.cancel()
        running = [w.task for w in self._work.values() if w.tp in tps and w.task is not None]
        if running:
            _, still = await asyncio.wait(running, timeout=deadline_s)
            for task in still:
                task.cancel()
            if still:
                self.stats.abandoned += len(still)
                await asyncio.wait(still, timeout=1.0)
        for work in [w for w in self._work.values() if w.tp in tps]:
            if work.in_lanes:
                work.in_lanes = False
                self._start(self._lanes.done(work.inv_id))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ledger.flushed(), deadline_s)
        await self._commit(only=tps)
        for tp in tps:
            self._generation.pop(tp, None)
            self._fence.pop(tp, None)
            self._offsets.drop(tp)
            self._paused.discard(tp)
        for inv_id in [i for i, w in self._work.items() if w.tp in tps]:
            del self._work[inv_id]

    async def _drain(self) -> None:
        """Graceful stop: running invocations finish within the drain deadline."""
        await self._release(set(self._generation), self.settings.drain_timeout_s)

    async def _abandon_all(self) -> None:
        tasks = [w.task for w in self._work.values() if w.task is not None and not w.task.done()]
        tasks += [task for task in self._background if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self._work.clear()
