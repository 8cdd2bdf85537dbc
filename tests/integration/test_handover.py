"""A graceful owner's handover (its fence, in the offset commit's metadata) on a real broker.

The next owner takes that fence instead of reading the ledger only because the group
coordinator keeps two promises: the metadata comes back exactly as committed, and a member
the group has removed -- a paused or partitioned poller -- can no longer commit, so it cannot
leave a handover behind for an owner that came after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapter.kafka.commit_marks import Committed, Handover
from adapter.kafka.consumer import TP, AiokafkaConsumer, CommitError
from adapter.kafka.errors import ConnectionWatch
from tests._kafka_fixtures import TopicFactory
from tests.harness import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

TOPIC_ID = "Zm9vYmFyYmF6cXV4cXV1eA"
SUB_ID = "sub_2Wfv1q0bXcH8rXsOa9yDd3Kw1Pz"
WAIT_S = 45.0


class _Assigned:
    def __init__(self) -> None:
        self.partitions: set[TP] = set()
        self.changed = asyncio.Event()

    async def on_revoked(self, tps: set[TP]) -> None:
        self.partitions -= tps

    async def on_assigned(self, tps: set[TP]) -> None:
        self.partitions |= tps
        self.changed.set()

    async def owns(self, tp: TP) -> None:
        async with asyncio.timeout(WAIT_S):
            while tp not in self.partitions:
                self.changed.clear()
                await self.changed.wait()


def _member(kafka_bootstrap: str, group: str, **settings: Any) -> AiokafkaConsumer:
    return AiokafkaConsumer(
        watch=ConnectionWatch(f"test {group}"),
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        commit_timeout_s=10.0,
        **settings,
    )


async def _keep_polling(member: AiokafkaConsumer) -> None:
    while True:
        await member.getmany(timeout_ms=200, max_records=10)


async def test_a_handover_comes_back_as_committed(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    tp: TP = (topic, 0)
    member = _member(kafka_bootstrap, f"handover-{topic}")
    assigned = _Assigned()
    await member.start()
    polling = asyncio.create_task(_keep_polling(member))
    try:
        member.subscribe(topic, assigned)
        await assigned.owns(tp)
        generation = member.generation()
        assert generation is not None
        await member.commit({tp: 3}, TOPIC_ID, {tp: Handover(generation, 7, SUB_ID)})
        assert await member.committed({tp}) == {
            tp: Committed(3, TOPIC_ID, Handover(generation, 7, SUB_ID))
        }
        await member.commit({tp: 4}, TOPIC_ID)  # a later plain commit replaces it
        assert await member.committed({tp}) == {tp: Committed(4, TOPIC_ID)}
        # The largest handover there can be -- the longest subscription ID, finished ranges
        # filling their budget -- is kept whole within the broker's default metadata limit.
        base = 10**15
        done = tuple((base + i * 1_000, base + i * 1_000 + 999 - 2) for i in range(1_000))
        longest = Handover(generation, base * 2, "s" * 256, through=base * 2, done=done)
        await member.commit({tp: base}, TOPIC_ID, {tp: longest})
        (kept,) = (await member.committed({tp})).values()
        assert kept.handover is not None
        assert kept.handover.subscription_id == "s" * 256
        assert len(kept.handover.done) > 100
        assert kept.handover.done == done[: len(kept.handover.done)]
    finally:
        polling.cancel()
        await member.stop()


async def test_a_member_removed_from_its_group_cannot_leave_a_handover(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    tp: TP = (topic, 0)
    group = f"handover-{topic}"
    # The broker's minimum session: the paused member is removed about 6 s after its last
    # heartbeat; the rebalance waits no longer than that for it.
    paused = _member(kafka_bootstrap, group, session_timeout_ms=6_000, max_poll_interval_ms=6_000)
    successor = _member(kafka_bootstrap, group, session_timeout_ms=6_000)
    paused_assigned, successor_assigned = _Assigned(), _Assigned()
    await paused.start()
    await successor.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        paused.subscribe(topic, paused_assigned)
        tasks.append(asyncio.create_task(_keep_polling(paused)))
        await paused_assigned.owns(tp)
        old_generation = paused.generation()
        assert old_generation is not None
        await paused.commit({tp: 3}, TOPIC_ID)

        # A pause (GC, SIGSTOP, a partition) as the group sees it: no more heartbeats.
        async def silent() -> bool:
            await asyncio.Event().wait()
            return False

        paused._consumer._coordinator._do_heartbeat = silent
        successor.subscribe(topic, successor_assigned)
        tasks.append(asyncio.create_task(_keep_polling(successor)))
        await successor_assigned.owns(tp)

        # The paused member still believes it owns the partition in its generation ...
        assert paused.generation() == old_generation
        with pytest.raises(CommitError):
            await paused.commit({tp: 3}, TOPIC_ID, {tp: Handover(old_generation, 99, SUB_ID)})
        # ... but what it left is a plain commit: its successor reads the ledger's fence.
        assert await successor.committed({tp}) == {tp: Committed(3, TOPIC_ID)}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await successor.stop()
        await asyncio.wait_for(paused.stop(), 20)


def _open_connections(member: AiokafkaConsumer) -> int:
    conns = member._consumer._client._conns.values()
    return sum(1 for conn in conns if conn.connected())


async def test_a_member_without_partitions_keeps_only_its_coordinator_connection(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    # A subscription's standby member: two connections to one broker would be one too many.
    topic = await topic_factory(1)
    tp: TP = (topic, 0)
    group = f"standby-{topic}"
    # Idle for longer than the 3 s between heartbeats: the coordinator connections stay.
    members = [_member(kafka_bootstrap, group, connections_max_idle_ms=4_000) for _ in "ab"]
    assigned = [_Assigned(), _Assigned()]
    tasks: list[asyncio.Task[None]] = []
    try:
        for member, listener in zip(members, assigned, strict=True):
            await member.start()
            member.subscribe(topic, listener)
            tasks.append(asyncio.create_task(_keep_polling(member)))
        await eventually(
            lambda: (
                all(m.generation() is not None for m in members)
                and sum(tp in a.partitions for a in assigned) == 1
            ),
            timeout=WAIT_S,
            message="both members in the group, one owning the partition",
        )
        owner = 0 if tp in assigned[0].partitions else 1
        standby = 1 - owner
        await eventually(
            lambda: _open_connections(members[standby]) == 1,
            timeout=WAIT_S,
            interval=0.2,
            message=lambda: f"the standby holds {_open_connections(members[standby])}",
        )
        assert _open_connections(members[owner]) == 2, "the owner's fetch connection was dropped"
        # The standby still takes over: its fetch connection comes back.
        tasks[owner].cancel()
        await members[owner].stop()
        await assigned[standby].owns(tp)
        await eventually(
            lambda: _open_connections(members[standby]) == 2,
            timeout=WAIT_S,
            interval=0.2,
            message="the new owner does not fetch",
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for member in members:
            await member.stop()


async def test_the_idle_connection_limit_is_ours_unless_configured(kafka_bootstrap: str) -> None:
    from adapter.kafka.consumer import IDLE_CONNECTION_MS

    default = _member(kafka_bootstrap, "g")
    disabled = _member(kafka_bootstrap, "g", connections_max_idle_ms=None)
    try:
        assert default._consumer._client._connections_max_idle_ms == IDLE_CONNECTION_MS
        assert disabled._consumer._client._connections_max_idle_ms is None
    finally:
        await default.stop()
        await disabled.stop()
