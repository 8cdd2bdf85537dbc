"""One subscription's consumer loop: records in, invocations out, offsets committed.

The runner is the I/O shell around the pure cores: a fresh
:class:`~adapter.engine.partition.PartitionState` per partition assignment (offsets, fence,
backlog bound), :class:`~adapter.engine.ownership.Ownership` (may this poller still start
work?), and the :class:`~adapter.engine.dispatcher.Dispatcher` (lanes, attempts, ledger). It
moves data between the :class:`~adapter.kafka.consumer.Consumer`, the ledger and those cores.

A record's offset is *finished* only when its final result is durable in the ledger (and, for
dead letters, acknowledged by the dead-letter topic's broker); only finished offsets are
committed, always as explicit offsets, each commit carrying the topic's ID.

Topics are identified by their topic ID, not their name: the runner waits (``waiting for
topic``) until its topic exists, and when a topic is deleted and re-created, a committed
position of the dead topic is not applied to the new one — the new topic is consumed from its
beginning, and its records get invocation IDs and ledger keys of their own.

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
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapter.engine.dispatcher import DeadLetters, Dispatcher, Work
from adapter.engine.ledger import LedgerWriter
from adapter.engine.lifecycle import TERMINAL_STATUSES, InvocationStatus
from adapter.engine.ownership import Ownership
from adapter.engine.partition import PartitionState
from adapter.engine.retry import RetryPolicy, until_ok
from adapter.errors import IngressError, KafkaError, StoreError
from adapter.ids import invocation_id
from adapter.invokers.base import Invoker
from adapter.kafka.consumer import Consumer, RebalanceListener
from adapter.kafka.errors import ConnectionWatch, watch_connections
from adapter.model import KafkaRecord, RetentionLoss, Subscription, Target, topic_key

__all__ = [
    "RunnerSettings",
    "RunnerState",
    "RunnerStats",
    "RunnerStore",
    "SubscriptionRunner",
    "with_paged_successes",
]

log = logging.getLogger(__name__)

TP = tuple[str, int]

_COMPLETED = frozenset(s.value for s in TERMINAL_STATUSES)


class RunnerStore(Protocol):
    async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]: ...

    async def paged_offsets(
        self, subscription_id: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[int]: ...

    async def highest_recorded_offset(
        self, subscription_id: str, topic: str, partition: int
    ) -> int | None: ...

    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool: ...


class RunnerState(enum.StrEnum):
    STARTING = "starting"
    WAITING_FOR_TOPIC = "waiting-for-topic"
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
    revoke_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    close_timeout_s: float = 10.0
    session_timeout_s: float = 10.0
    topic_poll_s: float = 1.0
    """How often a subscription without partitions looks for its topic."""
    topic_check_s: float = 30.0
    """How often a consuming subscription checks that its topic was not re-created."""
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
    held: int = 0
    records_lost_to_retention: int = 0
    topic_recreations: int = 0


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


class SubscriptionRunner(RebalanceListener):
    """Consumes one subscription's topic in this poller and drives its invocations."""

    def __init__(
        self,
        subscription: Subscription,
        target: Target,
        *,
        consumer_factory: Callable[[ConnectionWatch], Consumer],
        store: RunnerStore,
        ledger: LedgerWriter,
        invoker: Invoker,
        dead_letters: DeadLetters | None,
        settings: RunnerSettings,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        retention_losses: list[RetentionLoss] | None = None,
    ) -> None:
        self.subscription = subscription
        self.target = target
        self.settings = settings
        self._consumer_factory = consumer_factory
        self._consumer: Consumer | None = None
        self._store = store
        self._ledger = ledger
        self._clock = clock
        self._ownership = Ownership(settings.session_timeout_s)
        self._ownership_changed = asyncio.Event()
        self._partitions: dict[TP, PartitionState] = {}
        self._topic_id: str | None = None
        self._dispatcher = Dispatcher(
            subscription_id=subscription.id,
            target=target,
            invoker=invoker,
            ledger=ledger,
            claims=store,
            dead_letters=dead_letters,
            dead_letter_topic=settings.dead_letter_topic,
            retry=settings.retry,
            max_in_flight=settings.max_in_flight,
            max_record_bytes=settings.max_record_bytes,
            invocation_timeout_s=settings.invocation_timeout_s,
            may_start=self._may_start,
            on_durable=self._durable,
            on_error=self._set_error,
            rng=rng,
        )
        self._stopping = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._consumed = 0
        self._skipped = 0
        self._commits = 0
        self._rebalances = 0
        self._recreations = 0
        self.state = RunnerState.STARTING
        self.last_error: str | None = None
        self.retention_losses = retention_losses if retention_losses is not None else []
        """Retention losses not yet acknowledged (kept by the supervisor across restarts)."""

    # -- public -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._dispatcher.in_flight

    @property
    def stats(self) -> RunnerStats:
        d = self._dispatcher.stats
        return RunnerStats(
            consumed=self._consumed,
            skipped_completed=self._skipped,
            succeeded=d.succeeded,
            failed=d.failed,
            dead_lettered=d.dead_lettered,
            duplicates=d.duplicates,
            retries=d.retries,
            commits=self._commits,
            rebalances=self._rebalances,
            abandoned=d.abandoned,
            held=d.held,
            records_lost_to_retention=sum(loss.count for loss in self.retention_losses),
            topic_recreations=self._recreations,
        )

    @property
    def topic_id(self) -> str | None:
        return self._topic_id

    def partition_status(self) -> dict[TP, dict[str, int | None]]:
        out: dict[TP, dict[str, int | None]] = {}
        for tp, state in self._partitions.items():
            tracker = state.tracker
            out[tp] = {
                "pending": tracker.pending,
                "committed": tracker.committed,
                "last_tracked": tracker.last_tracked,
                "oldest_unfinished": tracker.oldest_unfinished(),
            }
        return out

    def retry_now(self, inv_id: str) -> bool:
        return self._dispatcher.retry_now(inv_id)

    async def kill(self, inv_id: str, status: InvocationStatus) -> bool:
        return self._dispatcher.kill(inv_id, status)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`. Raises :class:`KafkaError` if the consumer fails."""
        # aiokafka logs and retries most connection failures instead of raising them; the
        # watch collects them for this consumer (its tasks inherit this task's context).
        watch = watch_connections(
            f"subscription {self.subscription.id}: cannot consume {self.subscription.source}"
        )
        consumer = self._consumer_factory(watch)
        self._consumer = consumer
        try:
            try:
                await consumer.start()
                consumer.observe_heartbeats(self._heartbeat)
                if not await self._await_topic(consumer):
                    return
                consumer.subscribe(self.subscription.topic, self)
            except KafkaError as exc:
                self.last_error = str(exc)
                raise
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
            await self._release(list(self._partitions.values()), self.settings.drain_timeout_s)
        finally:
            self.state = RunnerState.STOPPING
            await self._abandon_all()
            # aiokafka's close waits for its coordinator task, which retries for ever while
            # the broker is unreachable: a SIGTERM during an outage must still end the process.
            try:
                await asyncio.wait_for(consumer.stop(), self.settings.close_timeout_s)
            except (KafkaError, TimeoutError) as exc:
                log.warning(
                    "consumer of %s did not close cleanly: %s",
                    self.subscription.id,
                    exc or "timed out (broker unreachable?)",
                )
            self._consumer = None
            self.state = RunnerState.STOPPED

    # -- the topic ----------------------------------------------------------------------------

    async def _await_topic(self, consumer: Consumer) -> bool:
        """Wait until the topic exists; False if stopped first."""
        topic = self.subscription.topic
        while not self._stopping.is_set():
            try:
                info = await consumer.describe_topic(topic)
            except KafkaError as exc:
                self.last_error = str(exc)
                info = None
            if info is not None:
                self._topic_id = info.topic_id
                if self.state is RunnerState.WAITING_FOR_TOPIC:
                    log.info("topic %r of %s exists now", topic, self.subscription.id)
                    self.last_error = None
                return True
            if self.state is not RunnerState.WAITING_FOR_TOPIC:
                self.state = RunnerState.WAITING_FOR_TOPIC
                self.last_error = f"waiting for topic {topic!r}: it does not exist yet"
                log.warning("subscription %s is %s", self.subscription.id, self.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.topic_poll_s)
        return False

    async def _check_topic(self, consumer: Consumer) -> None:
        """Between fetches: find a topic that appeared, vanished or was re-created."""
        topic = self.subscription.topic
        try:
            info = await consumer.describe_topic(topic)
        except KafkaError as exc:
            log.debug("cannot check topic %r: %s", topic, exc)
            return
        if info is None:
            if self.state is RunnerState.RUNNING:
                self.state = RunnerState.WAITING_FOR_TOPIC
                self.last_error = f"waiting for topic {topic!r}: it was deleted"
                log.warning("subscription %s is %s", self.subscription.id, self.last_error)
            return
        if self.state is RunnerState.WAITING_FOR_TOPIC:
            self.state = RunnerState.RUNNING
            self.last_error = None
            log.info("topic %r of %s exists again", topic, self.subscription.id)
        if not self._partitions:
            # aiokafka refreshes metadata only every metadata.max.age.ms; the group assigns
            # the topic's partitions once this member sees them.
            consumer.refresh_metadata()
        elif info.topic_id != self._topic_id:
            # Deleted and re-created between two looks, without a rebalance in between: the
            # records fetched meanwhile carry the old identity. Start over: the next
            # assignment sees the dead topic's committed positions and starts at the
            # beginning of the new one.
            raise KafkaError(
                f"topic {topic!r} was re-created (topic ID {self._topic_id} -> "
                f"{info.topic_id}); restarting the subscription's consumer"
            )

    # -- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self, consumer: Consumer, watch: ConnectionWatch) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        last_check = time.monotonic()
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
                    fetched = fetch.result()
                except KafkaError as exc:
                    self.last_error = str(exc)
                    raise
                self._report_connection(watch)
                for loss in fetched.losses:
                    self._report_loss(loss)
                for tp, records in fetched.records.items():
                    state = self._partitions.get(tp)
                    if state is not None and state.admits:
                        await self._accept(state, records)
                # Without partitions the topic may be missing or new: look often. With them,
                # only re-creation is left to catch, so look rarely (one metadata request).
                settings = self.settings
                interval = settings.topic_check_s if self._partitions else settings.topic_poll_s
                if time.monotonic() - last_check >= interval:
                    last_check = time.monotonic()
                    await self._check_topic(consumer)
        finally:
            stop_wait.cancel()

    def _report_loss(self, loss: RetentionLoss) -> None:
        self.retention_losses.append(loss)
        log.warning(
            "subscription %s: %s (acknowledge by updating or resetting the subscription)",
            self.subscription.id,
            loss.describe(),
        )

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

    async def _accept(self, state: PartitionState, records: list[KafkaRecord]) -> None:
        sub_id = self.subscription.id
        key = state.topic_key
        ids = [invocation_id(sub_id, key, r.partition, r.offset) for r in records]
        pause = state.fetched([r.offset for r in records])
        if pause is not None and self._consumer is not None:
            self._consumer.pause(pause.tp)
        self._consumed += len(records)
        known = await self._ledger_statuses(state, records, ids)
        if self._partitions.get(state.tp) is not state or not state.admits:
            return  # revoked while we looked at the ledger
        now = _now_ms()
        for record, inv_id in zip(records, ids, strict=True):
            status = known.get(inv_id)
            if status is not None and status in _COMPLETED:
                # Finished by an earlier owner of this partition: never invoke it again.
                self._skipped += 1
                self._finish(state, record.offset)
                continue
            work = Work(inv_id, state, record, created_ms=now)
            work.replaces_row = status is not None
            self._dispatcher.admit(work)

    async def _ledger_statuses(
        self, state: PartitionState, records: list[KafkaRecord], ids: list[str]
    ) -> dict[str, str]:
        to_check = {
            i: r.offset
            for r, i in zip(records, ids, strict=True)
            if state.needs_ledger_check(r.offset)
        }
        if not to_check:
            return {}

        async def read() -> dict[str, str]:
            statuses = await self._store.get_statuses(to_check)
            paged = await self._store.paged_offsets(
                self.subscription.id,
                state.topic_key,
                state.tp[1],
                min(to_check.values()),
                max(to_check.values()),
            )
            return with_paged_successes(statuses, to_check, paged)

        def report(exc: IngressError) -> None:
            # Backpressure: no record is admitted before we know it was not completed.
            self.last_error = str(exc)
            log.warning("ledger check failed for %s, retrying: %s", state.tp, exc)

        return await until_ok(read, on_error=report, errors=(StoreError,))

    def _finish(self, state: PartitionState, offset: int) -> None:
        resume = state.finished(offset)
        if resume is not None and self._consumer is not None:
            self._consumer.resume(resume.tp)

    def _durable(self, work: Work) -> None:
        state = work.partition
        if self._partitions.get(state.tp) is state:
            self._finish(state, work.record.offset)
        # else: the partition was revoked meanwhile; its new owner decides.

    def _set_error(self, message: str) -> None:
        self.last_error = message

    # -- fencing ------------------------------------------------------------------------------

    def _heartbeat(self, at: float) -> None:
        self._ownership.confirmed(at)
        self._ownership_changed.set()

    def _current(self, work: Work) -> bool:
        state = work.partition
        return self._partitions.get(state.tp) is state and not state.revoking

    def _may_start(self, work: Work) -> bool | Coroutine[Any, Any, bool]:
        if not self._current(work):
            return False
        if self._ownership.may_start(self._clock()):
            return True
        return self._await_ownership(work)

    async def _await_ownership(self, work: Work) -> bool:
        """Hold an attempt until the group confirms this member, or its partition is gone."""
        age = self._ownership.age(self._clock())
        log.warning(
            "subscription %s: no heartbeat answered for %s; holding invocation %s until the "
            "group confirms this poller still owns %s/%d",
            self.subscription.id,
            "ever" if age is None else f"{age:.1f}s",
            work.inv_id,
            *work.partition.tp,
        )
        while self._current(work):
            if self._ownership.may_start(self._clock()):
                return True
            self._ownership_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ownership_changed.wait(), 1.0)
        return False

    # -- committing -------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await self._commit()

    async def _commit(self, only: list[PartitionState] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            states = list(self._partitions.values()) if only is None else only
            positions: dict[TP, int] = {}
            for state in states:
                position = state.tracker.committable()
                if position is not None:
                    positions[state.tp] = position
            if not positions:
                return
            try:
                await consumer.commit(positions, self._topic_id)
            except KafkaError as exc:
                log.warning("commit of %s failed (will retry): %s", self.subscription.id, exc)
                return
            for state in states:
                position = positions.get(state.tp)
                if position is not None:
                    state.tracker.mark_committed(position)
            self._commits += 1

    # -- rebalancing ------------------------------------------------------------------------

    async def on_assigned(self, tps: set[TP]) -> None:
        consumer = self._consumer
        assert consumer is not None
        # aiokafka hands out records of the new partitions as soon as they are assigned, while
        # this callback still awaits the topic's identity: paused, its fetched records are
        # dropped unread (the position stays) and fetched again after the resume below.
        for tp in tps:
            consumer.pause(tp)
        self._rebalances += 1
        # Joining the group is proof of membership, as good as a heartbeat.
        self._heartbeat(self._clock())
        await self._refresh_topic_id(consumer)
        committed: dict[TP, str | None] = {}
        if self._topic_id is not None:
            try:
                committed = await consumer.committed_topic_ids(tps)
            except KafkaError as exc:
                log.warning("cannot read committed positions' topic IDs: %s", exc)
        key = topic_key(self.subscription.topic, self._topic_id)
        for tp in tps:
            dead = committed.get(tp)
            if dead is not None and dead != self._topic_id:
                self._recreations += 1
                log.warning(
                    "subscription %s: topic %s was deleted and re-created (topic ID %s -> %s); "
                    "partition %d of the new topic is consumed from its beginning",
                    self.subscription.id,
                    tp[0],
                    dead,
                    self._topic_id,
                    tp[1],
                )
                await consumer.seek_to_beginning(tp)
            state = PartitionState(
                tp, key, pause_at=max(2, self.settings.max_buffered_per_partition)
            )
            self._partitions[tp] = state
            # aiokafka sends no heartbeats while this callback runs: a slow DynamoDB here
            # would get the member expired and the group would rebalance again and again.
            # So the fence is read in the background; until then every record is checked.
            self._spawn_background(self._read_fence(state))
        for tp in tps:
            consumer.resume(tp)
        log.info("subscription %s assigned %s", self.subscription.id, sorted(tps))

    async def _refresh_topic_id(self, consumer: Consumer) -> None:
        try:
            info = await consumer.describe_topic(self.subscription.topic)
        except KafkaError as exc:
            log.warning("cannot read the ID of topic %r: %s", self.subscription.topic, exc)
            return
        if info is not None and info.topic_id != self._topic_id:
            if self._topic_id is not None:
                log.warning(
                    "topic %r has a new topic ID (%s -> %s): it was re-created",
                    self.subscription.topic,
                    self._topic_id,
                    info.topic_id,
                )
            self._topic_id = info.topic_id

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_fence(self, state: PartitionState) -> None:
        try:
            fence = await self._store.highest_recorded_offset(
                self.subscription.id, state.topic_key, state.tp[1]
            )
        except StoreError as exc:
            # Unknown fence: keep checking every record of this partition against the ledger.
            self.last_error = str(exc)
            return
        state.fence_read(fence)

    async def on_revoked(self, tps: set[TP]) -> None:
        states = [self._partitions[tp] for tp in tps if tp in self._partitions]
        if not states:
            return
        log.info("subscription %s revoking %s", self.subscription.id, sorted(tps))
        await self._release(states, self.settings.revoke_timeout_s)

    async def _release(self, states: list[PartitionState], deadline_s: float) -> None:
        """Stop work on these partitions: drain within ``deadline_s``, commit, forget them."""
        if not states:
            return
        for state in states:
            state.revoke()
        self._ownership_changed.set()  # held attempts of these partitions give up now
        await self._dispatcher.release(states, deadline_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ledger.flushed(), deadline_s)
        await self._commit(only=states)
        for state in states:
            if self._partitions.get(state.tp) is state:
                del self._partitions[state.tp]
        self._dispatcher.forget(states)

    async def _abandon_all(self) -> None:
        await self._dispatcher.abandon_all()
        tasks = [task for task in self._background if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
