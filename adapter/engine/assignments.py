"""The partitions a runner holds, and what happens when the group assigns or revokes them.

One :class:`~adapter.engine.partition.PartitionState` per assignment, created fresh each time
the group assigns a partition and dropped when it is revoked: work admitted under an earlier
assignment is recognised by identity and never counts in a later one.

On assignment (aiokafka's rebalance callback, which runs while no heartbeat is sent, so it only
does what it must before consuming):

* the new partitions are paused until their state exists (aiokafka would otherwise hand out
  their records while this callback still awaits the broker);
* the topic is looked up again, and each partition's committed position is checked for the
  topic ID it was committed against: a position of a *deleted* topic of the same name is not
  applied — the new topic is consumed from its beginning;
* the partition's fence comes from the *handover* its previous owner committed when it let
  the partition go, if that owner held it in the generation just before this one
  (:mod:`adapter.kafka.commit_marks`): nobody else owned it in between. Otherwise -- the owner
  crashed or was removed from the group, or the handover is older -- the ledger's fence is
  read in the background (until it is known, every record is checked);
* the topic is *recorded* (:meth:`DynamoStore.remember_topic`, one conditional put per topic
  and runner) before any of its records is admitted, so no poller writes a ledger row of a
  topic that is not recorded. The put that records it first proves that the ledger holds
  nothing of the topic: the partitions assigned before it was sent, with no handover and no
  committed position, start with no fence, settled, without reading the ledger's index (a
  new subscription's first records wait for one write, not for the index ``Query``s and
  per-record checks of a takeover).

On revocation (and when the runner stops): nothing more is admitted, running invocations drain
within the revoke timeout, the ledger is flushed, and the finished offsets are committed with a
handover for the next owner; then the states are forgotten. An eager rebalance revokes and
re-assigns every partition, also those that stay: the member that gets one back reads its own
handover.

Commits are explicit offsets only, each carrying the topic ID as offset metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from adapter.engine.ledger import LedgerWriter
from adapter.engine.ownership import OwnershipGate
from adapter.engine.partition import Growth, PartitionState
from adapter.engine.topic_watch import TopicWatch
from adapter.errors import KafkaError, StoreError
from adapter.kafka.commit_marks import Committed, Handover
from adapter.kafka.consumer import CommitMetadataRefused, Consumer

__all__ = ["Assignments", "FenceStore", "Releases"]

log = logging.getLogger(__name__)

TP = tuple[str, int]


class FenceStore(Protocol):
    async def highest_recorded_offset(
        self, subscription_id: str, topic: str, partition: int
    ) -> int | None: ...

    async def remember_topic(self, subscription_id: str, topic: str) -> bool: ...


class Releases(Protocol):
    """The part of a dispatcher (per record or partition batches) a revocation drives."""

    async def release(self, partitions: list[PartitionState], deadline_s: float) -> None: ...

    def forget(self, partitions: list[PartitionState]) -> None: ...


class Assignments:
    """The partition states of one runner (see the module docstring)."""

    def __init__(
        self,
        *,
        subscription_id: str,
        topic: TopicWatch,
        look_up_topic: Callable[[Consumer], Awaitable[object]],
        store: FenceStore,
        dispatcher: Releases,
        ledger: LedgerWriter,
        gate: OwnershipGate,
        pause_at: int,
        growth: Growth | None = None,
        revoke_timeout_s: float,
        on_error: Callable[[str], None],
        index_lag_s: float,
    ) -> None:
        self._subscription_id = subscription_id
        self._topic = topic
        self._look_up_topic = look_up_topic
        self._store = store
        self._dispatcher = dispatcher
        self._ledger = ledger
        self._gate = gate
        self._pause_at = max(2, pause_at)
        self._growth = growth
        self._revoke_timeout_s = revoke_timeout_s
        self._on_error = on_error
        self._index_lag_s = index_lag_s
        self.consumer: Consumer | None = None
        self.states: dict[TP, PartitionState] = {}
        self._commit_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._recorded_topics: set[str] = set()
        # The put recording a topic, shared by whoever waits for it, and when it was sent.
        self._recording: dict[str, tuple[asyncio.Task[bool], float]] = {}
        self._settled = asyncio.Event()
        self._settled.set()
        self.fences_handed_over = 0
        """Assignments whose fence came from the previous owner's handover."""
        self.commits = 0
        self.rebalances = 0
        self.recreations = 0

    def current(self, state: PartitionState) -> bool:
        """Is ``state`` the partition's current assignment, and not being revoked?"""
        return self.states.get(state.tp) is state and not state.revoking

    # -- assignment ---------------------------------------------------------------------------

    async def assigned(self, tps: set[TP]) -> None:
        self._settled.clear()
        try:
            await self._assign(tps)
        finally:
            self._settled.set()

    async def settled(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for an assignment in progress: a runner stopping right
        after a rebalance would otherwise release the partitions before their states exist,
        and leave them without a handover."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout_s)

    async def _assign(self, tps: set[TP]) -> None:
        consumer = self.consumer
        assert consumer is not None
        # aiokafka hands out records of the new partitions as soon as they are assigned, while
        # this callback still awaits the topic's identity: paused, its fetched records are
        # dropped unread (the position stays) and fetched again after the resume below.
        generation = consumer.generation()
        assigned_at = time.monotonic()
        for tp in tps:
            consumer.pause(tp)
        self.rebalances += 1
        await self._look_up_topic(consumer)
        topic_id = self._topic.topic_id
        committed: dict[TP, Committed] = {}
        unread: list[PartitionState] = []
        unknown: list[PartitionState] = []
        commits_read = topic_id is None
        if topic_id is not None:
            try:
                committed = await consumer.committed(tps)
                commits_read = True
            except KafkaError as exc:
                log.warning(
                    "subscription %s: cannot read the committed positions of %s (%s); they "
                    "wait until they are read",
                    self._subscription_id,
                    sorted(tps),
                    exc,
                )
        for tp in tps:
            commit = await self._take_commit(tp, committed.get(tp))
            state = PartitionState(
                tp, self._topic.key, pause_at=self._pause_at, growth=self._growth
            )
            state.generation = generation
            self.states[tp] = state
            if not commits_read:
                # Whose positions the group holds is unknown: one of a deleted topic of the
                # same name would skip the new topic's records, so nothing starts before it
                # is known; no handover is taken and the fence comes from the ledger.
                unknown.append(state)
                self._spawn_background(self._read_fence(state, assigned_at))
                continue
            if commit is not None:
                state.committed_at_start = commit.offset
            handover = commit.handover if commit is not None else None
            if (
                commit is not None
                and handover is not None
                and handover.applies_to(self._subscription_id, generation)
            ):
                self.fences_handed_over += 1
                state.fence_read(handover.fence, settled=handover.settled)
                state.take_handover(handover, commit.offset)
                # Its last pages went in just before this handover: the index may lag. Only
                # records above what it handed over as decided wait for that.
                state.pages_visible_at = assigned_at + self._index_lag_s
                if not handover.settled:
                    self._spawn_background(self._read_fence(state, assigned_at, wait=True))
                continue
            unread.append(state)
        if self.states and self._topic.key not in self._recorded_topics:
            self._start_recording(self._topic.key)  # sent now: after this assignment began
        if unread:
            # aiokafka sends no heartbeats while this callback runs: a slow DynamoDB here
            # would get the member expired and the group would rebalance again and again.
            # So the fence is read in the background; until then every record is checked.
            self._spawn_background(self._read_fences(unread, assigned_at))
        if unknown:
            self._spawn_background(self._read_commits(unknown))
        unstarted = [
            s
            for s in self.states.values()
            if s.tp in tps and s.committed_at_start is None and s not in unknown
        ]
        if unstarted:
            self._spawn_background(self._commit_start(unstarted))
        for tp in tps:
            if self.states[tp].committed_at_start is not None:
                consumer.resume(tp)
        log.info("subscription %s assigned %s", self._subscription_id, sorted(tps))

    async def _take_commit(self, tp: TP, commit: Committed | None) -> Committed | None:
        """The group's committed position of ``tp`` if it is one of this topic. One of a
        deleted topic of the same name is dropped, and the new topic read from its beginning;
        one without a topic ID (an earlier version) is not a position of this topic's either."""
        topic_id = self._topic.topic_id
        dead = commit.topic_id if commit is not None else None
        if dead is not None and dead != topic_id:
            self.recreations += 1
            log.warning(
                "subscription %s: topic %s was deleted and re-created (topic ID %s -> %s); "
                "partition %d of the new topic is consumed from its beginning",
                self._subscription_id,
                tp[0],
                dead,
                topic_id,
                tp[1],
            )
            consumer = self.consumer
            assert consumer is not None
            await consumer.seek_to_beginning(tp)
            return None
        if commit is None or commit.topic_id != topic_id:
            return None
        return commit

    async def _read_commits(self, states: list[PartitionState]) -> None:
        """Partitions whose committed positions could not be read at their assignment: read
        them again (backing off) until they are, then start them as an assignment does."""
        consumer = self.consumer
        assert consumer is not None
        delay = 0.5
        while True:
            live = [state for state in states if self.current(state)]
            if not live:
                return
            try:
                committed = await consumer.committed({state.tp for state in live})
                break
            except KafkaError as exc:
                where = sorted(state.tp for state in live)
                self._on_error(f"cannot read the committed positions of {where}: {exc}")
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
        unstarted: list[PartitionState] = []
        for state in live:
            if not self.current(state):
                continue  # given up or assigned anew while the read was on its way
            commit = await self._take_commit(state.tp, committed.get(state.tp))
            if commit is None:
                unstarted.append(state)
            elif self.current(state):
                state.committed_at_start = commit.offset
                consumer.resume(state.tp)
        if unstarted:
            await self._commit_start(unstarted)

    async def _commit_start(self, states: list[PartitionState]) -> None:
        """Partitions with no committed position of this topic (a new subscription, a
        re-created topic) stay paused until the position the reset policy chose is known and
        committed. Otherwise nothing would be committed before a record finished, and a
        rebalance before then (records retrying, a deploy) would let the next owner apply
        ``auto.offset.reset`` afresh: with ``latest``, every record that arrived in between
        would be skipped, unseen and unreported. Paused, the position cannot move on (fetched
        records would otherwise be ahead of it); aiokafka resolves it all the same."""
        consumer = self.consumer
        assert consumer is not None

        async def start(state: PartitionState) -> None:
            # Until the position is known: aiokafka resolves it only while the fetch loop
            # asks for records, which a slow ledger can hold up for a while.
            delay = 0.5
            while self.current(state):
                try:
                    position = await consumer.position(state.tp)
                except KafkaError as exc:
                    log.warning(
                        "subscription %s: start position of %s[%d] not known yet (%s)",
                        self._subscription_id,
                        *state.tp,
                        exc,
                    )
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
                    continue
                if position is not None and self.current(state):
                    state.tracker.start_at(position)
                return

        def uncommitted() -> list[PartitionState]:
            generation = consumer.generation()
            return [
                state
                for state in states
                if self.current(state)
                and state.generation == generation
                and state.tracker.committable() is not None
            ]

        try:
            await asyncio.gather(*(start(state) for state in states))
            # Committed before the partition is resumed, retried while the commit fails
            # (commit() reports and swallows a failed one).
            delay = 0.5
            while pending := uncommitted():
                await self.commit(pending)
                if not uncommitted():
                    break
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
        finally:
            for state in states:
                if self.current(state):
                    consumer.resume(state.tp)

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_fences(self, states: list[PartitionState], assigned_at: float) -> None:
        """The fences of partitions no handover covered: none at all if this runner recorded
        the topic first, with a put sent after they were assigned; else the ledger's."""
        topic_key = states[0].topic_key
        if topic_key not in self._recorded_topics:
            try:
                first, sent_at = await self.record_topic(topic_key)
            except StoreError as exc:
                self._on_error(str(exc))
                first, sent_at = False, 0.0
            # A put sent before an assignment says nothing of the rows an owner in between
            # (which found the topic recorded) may have written.
            if first and sent_at >= assigned_at:
                fresh = [s for s in states if s.committed_at_start is None]
                for state in fresh:
                    if self.current(state):
                        state.fence_read(None, settled=True)
                # A partition with a committed position has had an owner, maybe of a version
                # that wrote ledger rows before recording the topic: its ledger is read.
                states = [s for s in states if s.committed_at_start is not None]
        await asyncio.gather(*(self._read_fence(state, assigned_at) for state in states))

    async def _read_fence(
        self, state: PartitionState, assigned_at: float, *, wait: bool = False
    ) -> None:
        """Read the ledger's fence; read it again once the index has had time to show the
        previous owner's last rows (``wait``: only then)."""
        if wait:
            await asyncio.sleep(assigned_at + self._index_lag_s - time.monotonic())
            if not self.current(state):
                return
        while True:
            started = time.monotonic()
            try:
                fence = await self._store.highest_recorded_offset(
                    self._subscription_id, state.topic_key, state.tp[1]
                )
            except StoreError as exc:
                # Unknown fence: keep checking every record of this partition against the
                # ledger (and hand nothing on).
                self._on_error(str(exc))
                return
            settled = started - assigned_at >= self._index_lag_s
            state.fence_read(fence, settled=settled)
            if settled or not self.current(state):
                return
            await asyncio.sleep(assigned_at + self._index_lag_s - time.monotonic())
            if not self.current(state):
                return

    def topic_recorded(self, topic_key: str) -> bool:
        return topic_key in self._recorded_topics

    async def record_topic(self, topic_key: str) -> tuple[bool, float]:
        """Record the topic (once per runner) before any of its records is admitted: see the
        module docstring. Also what invocation IDs' topic reference stands for, so that an ID
        of a success kept only in a page resolves to its record.

        Returns whether this runner's put recorded it first, and when that put was sent.
        Raises StoreError (the next call tries again)."""
        entry = self._recording.get(topic_key)
        if entry is None:
            entry = self._start_recording(topic_key)
        task, sent_at = entry
        try:
            first = await asyncio.shield(task)
        except StoreError:
            if self._recording.get(topic_key) is entry:
                del self._recording[topic_key]
            raise
        self._recorded_topics.add(topic_key)
        return first, sent_at

    def _start_recording(self, topic_key: str) -> tuple[asyncio.Task[bool], float]:
        entry = self._recording.get(topic_key)
        failed = entry is not None and entry[0].done() and _failed(entry[0])
        if entry is None or failed:
            task = asyncio.create_task(self._store.remember_topic(self._subscription_id, topic_key))
            # Retrieved here so that a failure nobody awaits is not reported as never
            # retrieved; whoever awaits the task sees it anyway.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            entry = self._recording[topic_key] = (task, time.monotonic())
        return entry

    # -- revocation ---------------------------------------------------------------------------

    async def revoked(self, tps: set[TP]) -> None:
        states = [self.states[tp] for tp in tps if tp in self.states]
        if not states:
            return
        log.info("subscription %s revoking %s", self._subscription_id, sorted(tps))
        await self.release(states, self._revoke_timeout_s)

    async def release(self, states: list[PartitionState], deadline_s: float) -> None:
        """Stop work on these partitions: drain within ``deadline_s``, commit, forget them.

        A revocation may arrive while a stop is releasing the same partitions: each runs
        within its own deadline (the revocation's fits the group's rebalance timeout), and
        whichever commits after the group has moved to a new generation commits nothing."""
        if not states:
            return
        for state in states:
            state.revoke()
        self._gate.wake()  # held attempts of these partitions give up now
        await self._dispatcher.release(states, deadline_s)
        durable = True
        try:
            await asyncio.wait_for(self._ledger.flushed(), deadline_s)
        except TimeoutError:
            durable = False  # a success written late could be missed: hand over no ranges
        durable = durable and self._ledger.abandoned == 0
        await self.commit(only=states, handover=True, finished_durable=durable)
        for state in states:
            if self.states.get(state.tp) is state:
                del self.states[state.tp]
        self._dispatcher.forget(states)

    async def close(self) -> None:
        """Cancel background work (fence reads) of a stopping runner."""
        tasks: list[asyncio.Task[Any]] = [t for t in self._background if not t.done()]
        tasks += [task for task, _ in self._recording.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # -- committing ---------------------------------------------------------------------------

    async def commit_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.commit()

    async def commit(
        self,
        only: list[PartitionState] | None = None,
        *,
        handover: bool = False,
        finished_durable: bool = False,
    ) -> None:
        """Commit what finished. With ``handover``, the last commit of these partitions before
        they go: each whose fence is known is committed -- again, if nothing finished since
        -- with the fence for the next owner, and with ``finished_durable`` (the ledger has
        every result written) which records above the commit finished."""
        consumer = self.consumer
        if consumer is None:
            return
        async with self._commit_lock:
            states = list(self.states.values()) if only is None else only
            topic_id = self._topic.topic_id
            generation = consumer.generation()
            moved: dict[TP, int] = {}
            positions: dict[TP, int] = {}
            handovers: dict[TP, Handover] = {}
            for state in states:
                if state.topic_key != self._topic.key:
                    # A topic re-created while this one was let go: its positions and what
                    # finished are of the dead topic, not of the one topic_id now names.
                    continue
                if generation != state.generation:
                    # The group moved on without revoking it from this member (a release
                    # that outlived a rebalance): whatever it commits now would overwrite
                    # the commits of the partition's next owner.
                    continue
                tracker = state.tracker
                position = tracker.committable()
                if position is not None:
                    moved[state.tp] = positions[state.tp] = position
                if not handover or topic_id is None or generation is None:
                    continue
                if not state.fence_known:
                    continue
                if position is None:
                    position = (
                        tracker.committed
                        if tracker.committed is not None
                        else state.committed_at_start
                    )
                if position is not None:
                    positions[state.tp] = position
                    # A state another release already let go (a stop and a revocation at
                    # once) missed the results that became durable after: no ranges.
                    known = finished_durable and self.states.get(state.tp) is state
                    through, done = state.successor_done(position) if known else (None, ())
                    handovers[state.tp] = Handover(
                        generation,
                        state.successor_fence,
                        self._subscription_id,
                        settled=state.fence_settled,
                        through=through,
                        done=done,
                    )
            if not positions:
                return
            try:
                await consumer.commit(positions, topic_id, handovers)
            except KafkaError as exc:
                ranged = {tp: h for tp, h in handovers.items() if h.through is not None}
                if not ranged or not isinstance(exc, CommitMetadataRefused):
                    # Anything else (a timeout, an unreachable coordinator) would fail the
                    # same way again: a stop with the broker gone waited for it twice.
                    log.warning("commit of %s failed (will retry): %s", self._subscription_id, exc)
                    return
                # A broker whose offset.metadata.max.bytes is below the default refuses the
                # finished ranges, and a handover is not retried: once more without them.
                log.warning(
                    "handover commit of %s failed (%s): once more without finished ranges",
                    self._subscription_id,
                    exc,
                )
                for tp, h in ranged.items():
                    handovers[tp] = dataclasses.replace(h, through=None, done=())
                try:
                    await consumer.commit(positions, topic_id, handovers)
                except KafkaError as again:
                    log.warning(
                        "commit of %s failed (will retry): %s", self._subscription_id, again
                    )
                    return
            for state in states:
                position = moved.get(state.tp)
                if position is not None:
                    state.tracker.mark_committed(position)
            self.commits += 1


def _failed(task: asyncio.Task[Any]) -> bool:
    return task.cancelled() or task.exception() is not None
