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
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from adapter.clocks import suspend_aware
from adapter.engine.assignments import Assignments
from adapter.engine.batch_dispatch import BatchCaller, BatchDispatcher
from adapter.engine.dispatcher import DeadLetters, Dispatcher, Work
from adapter.engine.ledger import LedgerWriter, with_paged_successes
from adapter.engine.lifecycle import TERMINAL_STATUSES, InvocationStatus
from adapter.engine.ownership import OwnershipGate
from adapter.engine.partition import Growth, PartitionState
from adapter.engine.retry import RetryAbandoned, until_ok
from adapter.engine.settings import RunnerSettings, RunnerState, RunnerStats, RunnerStore
from adapter.engine.topic_watch import TopicChange, TopicWatch
from adapter.errors import ConfigError, IngressError, KafkaError, StoreError
from adapter.ids import invocation_id
from adapter.invokers.base import Invoker
from adapter.kafka.consumer import Consumer, RebalanceListener
from adapter.kafka.errors import ConnectionWatch, watch_connections
from adapter.model import KafkaRecord, RetentionLoss, Subscription, Target

__all__ = ["BATCHES_BUFFERED", "SubscriptionRunner", "pause_bound", "pause_growth"]

log = logging.getLogger(__name__)

TP = tuple[str, int]

_COMPLETED = frozenset(s.value for s in TERMINAL_STATUSES)
# A record the previous owner handed over as finished: its ledger entry is not read.
_HANDED_OVER_DONE = InvocationStatus.SUCCEEDED.value

# How long one fetch call may wait for records. A fetch returns as soon as records arrive
# and stop() interrupts it, so this only sets how often an idle runner wakes up
# (docs/operations.md#capacity); a runner still looking for its topic wakes every
# ``topic_poll_s``.
_IDLE_WAIT_MS = 5_000
# How often a wait of the fetch loop for a handover's pages looks whether the partition was
# revoked meanwhile (a stop ends it at once).
_RECHECK_S = 0.1


def _now_ms() -> int:
    return int(time.time() * 1000)


DEFAULT_BUFFERED_PER_PARTITION = 1000
BATCHES_BUFFERED = 40
"""Partition batches may buffer this many batches by default (up to
:data:`MAX_DEFAULT_BATCH_BUFFER` records, and only as many as fit in
:data:`DEFAULT_BATCH_BUFFER_BYTES`): 1,000 records are 10 batches of 100, which a partition
moving a batch per call got through faster than its records were recorded in the ledger (they
stay unfinished until then) and fetched again, so its line ran dry (bench (d): 15,900
records/s with 1,000, 20,500-21,500 with 4,000, at the same CPU per record)."""
MAX_DEFAULT_BATCH_BUFFER = 10_000
DEFAULT_BATCH_BUFFER_BYTES = 4 * 1024 * 1024
"""Record bytes (key, value, headers) the default partition-batch buffer grows within: large
records keep the 1,000-record bound, so the default never buffers more bytes than before plus
this much."""


def pause_bound(settings: RunnerSettings) -> int:
    """Unfinished records per partition before fetching is held back: ``[limits]
    max-buffered-per-partition``, by default 1,000 records. Partition batches always get room
    for two batches (the one in flight and the next, full), or a batch.size above the bound
    could never fill and every batch would wait out its window."""
    bound = settings.max_buffered_per_partition
    if bound is None:
        bound = DEFAULT_BUFFERED_PER_PARTITION
    if settings.batches is not None:
        bound = max(bound, 2 * settings.batches.policy.size)
    return bound


def pause_growth(settings: RunnerSettings) -> Growth | None:
    """How far the default bound of partition batches grows (see :data:`BATCHES_BUFFERED`);
    None when ``max-buffered-per-partition`` is set, or records go one at a time."""
    if settings.batches is None or settings.max_buffered_per_partition is not None:
        return None
    records = min(BATCHES_BUFFERED * settings.batches.policy.size, MAX_DEFAULT_BATCH_BUFFER)
    if records <= pause_bound(settings):
        return None
    return Growth(records, DEFAULT_BATCH_BUFFER_BYTES)


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
        clock: Callable[[], float] = suspend_aware,
        retention_losses: list[RetentionLoss] | None = None,
    ) -> None:
        self.subscription = subscription
        self.target = target
        self.settings = settings
        self._consumer_factory = consumer_factory
        self._consumer: Consumer | None = None
        self._store = store
        self._ledger = ledger
        self._gate = OwnershipGate(
            settings.session_timeout_s,
            clock=clock,
            describe=lambda: f"subscription {subscription.id}",
        )
        self._topic = TopicWatch(subscription.topic)
        self._filter = settings.filter_criteria
        self._dispatcher: Dispatcher | BatchDispatcher
        if settings.batches is not None:
            # ESM partition batches (batch.mode=partition): the invoker calls whole batches.
            if not isinstance(invoker, BatchCaller):
                raise ConfigError(
                    f"subscription {subscription.id}: batch.mode=partition needs a Lambda sink"
                )
            self._dispatcher = BatchDispatcher(
                subscription_id=subscription.id,
                target=target,
                caller=invoker,
                settings=settings.batches,
                ledger=ledger,
                dead_letters=dead_letters,
                dead_letter_topic=settings.dead_letter_topic,
                retry=settings.retry,
                invocation_timeout_s=settings.invocation_timeout_s,
                may_start=self._may_start,
                may_send=self._gate.fresh,
                on_durable=self._durable,
                on_error=self._set_error,
            )
        else:
            self._dispatcher = self._per_record(invoker, ledger, store, dead_letters, rng)
        self._assignments = Assignments(
            subscription_id=subscription.id,
            topic=self._topic,
            look_up_topic=self._look_up_topic,
            store=store,
            dispatcher=self._dispatcher,
            ledger=ledger,
            gate=self._gate,
            pause_at=pause_bound(settings),
            growth=pause_growth(settings),
            revoke_timeout_s=settings.revoke_timeout_s,
            on_error=self._set_error,
            index_lag_s=settings.index_lag_s,
        )
        self._stopping = asyncio.Event()
        # A record finished since the last commit: only then is there anything to commit.
        self._finished = asyncio.Event()
        # The group has assigned this member (perhaps nothing): it knows the topic.
        self._assigned_once = False
        self._consumed = 0
        self._skipped = 0
        self._filtered = 0
        self.state = RunnerState.STARTING
        self.last_error: str | None = None
        self.retention_losses = retention_losses if retention_losses is not None else []
        """Retention losses not yet acknowledged (kept by the supervisor across restarts)."""

    def _per_record(
        self,
        invoker: Invoker,
        ledger: LedgerWriter,
        store: RunnerStore,
        dead_letters: DeadLetters | None,
        rng: random.Random | None,
    ) -> Dispatcher:
        settings = self.settings
        return Dispatcher(
            subscription_id=self.subscription.id,
            target=self.target,
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
            may_send=self._gate.fresh,
            on_durable=self._durable,
            on_error=self._set_error,
            rng=rng,
        )

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
            filtered=self._filtered,
            succeeded=d.succeeded,
            failed=d.failed,
            dead_lettered=d.dead_lettered,
            duplicates=d.duplicates,
            retries=d.retries,
            commits=self._assignments.commits,
            rebalances=self._assignments.rebalances,
            abandoned=d.abandoned,
            held=d.held,
            unsent=d.unsent,
            records_lost_to_retention=sum(loss.count for loss in self.retention_losses),
            topic_recreations=self._assignments.recreations,
        )

    @property
    def topic_id(self) -> str | None:
        return self._topic.topic_id

    def partition_status(self) -> dict[TP, dict[str, int | None]]:
        out: dict[TP, dict[str, int | None]] = {}
        consumer = self._consumer
        for tp, state in self._assignments.states.items():
            tracker = state.tracker
            log_end = consumer.log_end(tp) if consumer is not None else None
            out[tp] = {
                "pending": tracker.pending,
                "committed": tracker.committed,
                "last_tracked": tracker.last_tracked,
                "oldest_unfinished": tracker.oldest_unfinished(),
                "log_end": log_end,
                "lag": state.lag(log_end),
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
        self._assignments.consumer = consumer
        try:
            try:
                await consumer.start()
                consumer.observe_membership(self._gate.confirmed, self._gate.lost)
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
            assignments = self._assignments
            await assignments.settled(self.settings.drain_timeout_s)
            await assignments.release(
                list(assignments.states.values()), self.settings.drain_timeout_s
            )
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
            self._assignments.consumer = None
            self.state = RunnerState.STOPPED

    # -- the topic ----------------------------------------------------------------------------

    async def _look_up_topic(self, consumer: Consumer) -> TopicChange | None:
        """Ask the broker about the topic; None if it could not answer (nothing changes)."""
        try:
            info = await consumer.describe_topic(self.subscription.topic)
        except KafkaError as exc:
            log.debug("cannot look up topic %r: %s", self.subscription.topic, exc)
            return None
        change = self._topic.observe(info)
        if change is TopicChange.MISSING:
            self.state = RunnerState.WAITING_FOR_TOPIC
            self.last_error = self._topic.waiting_reason()
            log.warning("subscription %s is %s", self.subscription.id, self.last_error)
        elif self._topic.exists and self.state is RunnerState.WAITING_FOR_TOPIC:
            self.state = RunnerState.RUNNING
            self.last_error = None
            log.info("topic %r of %s exists now", self._topic.topic, self.subscription.id)
        if change is TopicChange.RECREATED:
            log.warning(
                "topic %r has a new topic ID (%s -> %s): it was deleted and re-created",
                self._topic.topic,
                self._topic.previous_id,
                self._topic.topic_id,
            )
        return change

    async def _await_topic(self, consumer: Consumer) -> bool:
        """Wait until the topic exists; False if stopped first."""
        while not self._stopping.is_set():
            await self._look_up_topic(consumer)
            if self._topic.exists:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.topic_poll_s)
        return False

    async def _check_topic(self, consumer: Consumer) -> None:
        """Between fetches: find a topic that appeared, vanished or was re-created."""
        change = await self._look_up_topic(consumer)
        if not self._assignments.states:
            if self._topic.exists:
                # aiokafka refreshes metadata only every metadata.max.age.ms; the group
                # assigns the topic's partitions once this member sees them.
                consumer.refresh_metadata()
        elif change is TopicChange.RECREATED:
            # Deleted and re-created between two looks, without a rebalance in between: the
            # records fetched meanwhile carry the old identity. Start over: the next
            # assignment sees the dead topic's committed positions and starts at the
            # beginning of the new one.
            raise KafkaError(
                f"topic {self._topic.topic!r} was re-created; restarting the subscription's "
                "consumer"
            )

    # -- fetching ---------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        """Commit at most every commit interval, and only after a record finished: an idle
        subscription does not wake up for commits."""
        while True:
            await self._finished.wait()
            await asyncio.sleep(self.settings.commit_interval_s)
            self._finished.clear()
            await self._assignments.commit()

    async def _fetch_loop(self, consumer: Consumer, watch: ConnectionWatch) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        last_check = time.monotonic()
        settings = self.settings
        try:
            while not self._stopping.is_set():
                # No partitions while the topic is missing, or before the group has seen
                # it (no assignment yet): look often. Otherwise only re-creation is left to
                # catch: look rarely (one metadata request). A member with no partition of
                # an existing topic (more pollers than partitions) stays quiet.
                if self._assignments.states:
                    interval = settings.topic_check_s
                elif not self._assigned_once or not self._topic.exists:
                    interval = settings.topic_poll_s
                else:
                    interval = settings.standby_check_s
                wait_ms = min(_IDLE_WAIT_MS, int(interval * 1000))
                fetch = asyncio.create_task(
                    consumer.getmany(timeout_ms=wait_ms, max_records=settings.fetch_max_records)
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
                # Each partition's records go to the assignment they were fetched under, taken
                # now: accepting one partition's records may wait (the ledger, a handover's
                # pages), and a rebalance meanwhile may replace another's assignment, whose
                # new owner starts from the committed offset, not after these records.
                fetched_under = [
                    (self._assignments.states.get(tp), records)
                    for tp, records in fetched.records.items()
                ]
                for state, records in fetched_under:
                    if self._stopping.is_set():
                        break  # a stop during one partition's acceptance admits no other's
                    if state is not None and state.admits and self._assignments.current(state):
                        await self._accept(state, records)
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
        if not self._assignments.topic_recorded(key) and not await self._record_topic(state):
            return
        size = sum(r.size for r in records) if state.grows else 0
        pause = state.fetched([r.offset for r in records], size)
        if pause is not None and self._consumer is not None:
            self._consumer.hold(pause.tp)
        self._consumed += len(records)
        last_offset = records[-1].offset if records else None
        if self._filter is not None:
            records = self._filtered_out(state, records)
        ids = [invocation_id(sub_id, key, r.partition, r.offset) for r in records]
        # Before the fence settles, a check may miss pages the index does not show yet.
        sound = state.fence_known and state.fence_settled and not state.unproven
        known = await self._ledger_statuses(state, records, ids)
        if known is None or not self._assignments.current(state):
            return  # stopped or revoked while we looked at the ledger: the next owner's
        if last_offset is not None:
            state.decided(last_offset, sound=sound)  # nothing below awaits: all of them now
        now = _now_ms()
        admitted: list[Work] = []
        for record, inv_id in zip(records, ids, strict=True):
            status = known.get(inv_id)
            if status is not None and status in _COMPLETED:
                # Finished by an earlier owner of this partition: never invoke it again.
                self._skipped += 1
                self._finish(state, record.offset)
                continue
            work = Work(inv_id, state, record, created_ms=now)
            work.replaces_row = status is not None
            admitted.append(work)
        dispatcher = self._dispatcher
        if isinstance(dispatcher, BatchDispatcher):
            if admitted:
                dispatcher.admit_all(state, admitted)
        else:
            for work in admitted:
                dispatcher.admit(work)

    async def _record_topic(self, state: PartitionState) -> bool:
        """Record the partition's topic before admitting any of its records (no ledger row of
        a topic before it is recorded: a later owner that records it first concludes that the
        ledger holds nothing of it). Retried while DynamoDB refuses; False if the partition
        was revoked or the runner stops meanwhile."""
        failed = False

        def report(exc: IngressError) -> None:
            nonlocal failed
            failed = True
            self.last_error = str(exc)
            log.warning("cannot record topic %s, retrying: %s", state.topic_key, exc)

        try:
            await until_ok(
                lambda: self._assignments.record_topic(state.topic_key),
                on_error=report,
                errors=(StoreError,),
                give_up=lambda: not self._assignments.current(state),
                stop=self._stopping,
            )
        except RetryAbandoned:
            return False
        if failed:
            self.last_error = None
        return self._assignments.current(state)

    def _filtered_out(self, state: PartitionState, records: list[KafkaRecord]) -> list[KafkaRecord]:
        """Records ``filter.criteria`` excludes are finished without an invocation (their
        offsets are committed like any other); the rest are returned."""
        criteria = self._filter
        assert criteria is not None
        kept: list[KafkaRecord] = []
        for record in records:
            if criteria.matches(record):
                kept.append(record)
            else:
                self._filtered += 1
                self._finish(state, record.offset)
        return kept

    async def _ledger_statuses(
        self, state: PartitionState, records: list[KafkaRecord], ids: list[str]
    ) -> dict[str, str] | None:
        """Ledger statuses of the records that may have been finished by an earlier owner;
        None if the runner stopped or the partition was revoked before they were known (the
        fetch loop waits for this: nothing here may outlast a stop or a revocation)."""
        to_check = {
            i: r.offset
            for r, i in zip(records, ids, strict=True)
            if state.needs_ledger_check(r.offset)
        }
        if not to_check:
            return {}
        known: dict[str, str] = {}
        rows_only: dict[str, int] = {}
        handed = state.handed
        if handed is not None:
            # The previous owner's handover says which of these it finished; for the others
            # it decided, no page of its can exist, and rows are read consistently.
            for inv_id, offset in list(to_check.items()):
                finished = state.handed_finished(offset)
                if finished is None:
                    continue
                del to_check[inv_id]
                if finished:
                    known[inv_id] = _HANDED_OVER_DONE
                else:
                    rows_only[inv_id] = offset
            if not to_check and not rows_only:
                return known
        wait_s = state.pages_visible_at - time.monotonic() if to_check else 0.0
        if wait_s > 0:
            # The previous owner handed the partition over a moment ago, after writing its
            # last success pages; found through an eventually consistent index, a page not
            # in it yet would let a finished record run again (only records between its
            # commit and its fence -- ones finished out of order -- are checked at all).
            # The fetch loop waits with it: a stop or the partition's revocation ends it.
            while wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), min(wait_s, _RECHECK_S))
                if self._stopping.is_set() or not self._assignments.current(state):
                    return None
                wait_s = state.pages_visible_at - time.monotonic()

        async def read() -> dict[str, str]:
            statuses = await self._store.get_statuses([*to_check, *rows_only])
            if to_check:
                paged = await self._store.paged_offsets(
                    self.subscription.id,
                    state.topic_key,
                    state.tp[1],
                    min(to_check.values()),
                    max(to_check.values()),
                )
                statuses = with_paged_successes(statuses, to_check, paged)
            return known | statuses

        def report(exc: IngressError) -> None:
            # Backpressure: no record is admitted before we know it was not completed.
            self.last_error = str(exc)
            log.warning("ledger check failed for %s, retrying: %s", state.tp, exc)

        try:
            return await until_ok(
                read,
                on_error=report,
                errors=(StoreError,),
                give_up=lambda: not self._assignments.current(state),
                stop=self._stopping,
            )
        except RetryAbandoned:
            return None

    def _finish(self, state: PartitionState, offset: int) -> None:
        resume = state.finished(offset)
        self._finished.set()
        if resume is not None and self._consumer is not None:
            self._consumer.release(resume.tp)

    def _durable(self, work: Work) -> None:
        state = work.partition
        if self._assignments.states.get(state.tp) is state:
            self._finish(state, work.record.offset)
        # else: the partition was revoked meanwhile; its new owner decides.

    def _set_error(self, message: str) -> None:
        self.last_error = message

    # -- fencing ------------------------------------------------------------------------------

    def _may_start(self, work: Work) -> bool | Coroutine[Any, Any, bool]:
        state = work.partition

        if not self._assignments.current(state):
            return False
        if self._gate.fresh():
            return True
        return self._gate.wait(
            lambda: self._assignments.current(state),
            f"invocation {work.inv_id} ({state.tp[0]}/{state.tp[1]})",
        )

    # -- rebalancing ------------------------------------------------------------------------

    async def on_assigned(self, tps: set[TP]) -> None:
        self._assigned_once = True
        await self._assignments.assigned(tps)

    async def on_revoked(self, tps: set[TP]) -> None:
        await self._assignments.revoked(tps)

    async def _abandon_all(self) -> None:
        await self._dispatcher.abandon_all()
        await self._assignments.close()
