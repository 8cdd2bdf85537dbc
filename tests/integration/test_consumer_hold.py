"""Back-pressure holds a partition without dropping what the Kafka client already fetched.

aiokafka's ``pause`` throws a partition's prefetched records away and fetches them again after
``resume``; under back-pressure that re-read most of every fetch. The consumer shell's ``hold``
leaves the partition out of ``getmany`` instead, so its records wait in the client's buffer.
The proof uses retention: records deleted from the log while held still arrive after the
release, because they are never fetched again (a re-fetch would find them gone).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from adapter.kafka.consumer import TP, AiokafkaConsumer, Fetched
from adapter.kafka.errors import ConnectionWatch
from tests._kafka_fixtures import TopicFactory
from tests.harness import produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


class _Assigned:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_revoked(self, tps: set[TP]) -> None:
        self.event.clear()

    async def on_assigned(self, tps: set[TP]) -> None:
        if tps:
            self.event.set()


def _consumer(kafka_bootstrap: str, topic: str, **settings: Any) -> AiokafkaConsumer:
    return AiokafkaConsumer(
        watch=ConnectionWatch(f"test {topic}"),
        bootstrap_servers=kafka_bootstrap,
        group_id=f"hold-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings,
    )


async def _fetch_until(
    consumer: AiokafkaConsumer, tp: TP, count: int, timeout_s: float = 30.0
) -> list[int]:
    offsets: list[int] = []
    async with asyncio.timeout(timeout_s):
        while len(offsets) < count:
            fetched: Fetched = await consumer.getmany(timeout_ms=200, max_records=count)
            assert not fetched.losses, fetched.losses
            offsets += [r.offset for r in fetched.records.get(tp, [])]
    return offsets


@pytest.mark.promise("p-backpressure-keeps-prefetch")
async def test_held_records_are_kept_not_fetched_again(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    tp: TP = (topic, 0)
    await produce(kafka_bootstrap, topic, [(b"k", b"{}")] * 50, partition=0)
    consumer = _consumer(kafka_bootstrap, topic)
    assigned = _Assigned()
    await consumer.start()
    try:
        consumer.subscribe(topic, assigned)
        first = await _fetch_until(consumer, tp, 10)
        assert first == list(range(10))  # one fetch brought all 50 into the client's buffer

        consumer.hold(tp)
        held = await consumer.getmany(timeout_ms=300, max_records=100)
        assert tp not in held.records

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(50)})
        finally:
            await admin.close()

        consumer.release(tp)
        rest = await _fetch_until(consumer, tp, 40)
        assert rest == list(range(10, 50))
    finally:
        await consumer.stop()


class _Rebalances:
    def __init__(self) -> None:
        self.revoked = 0
        self.assigned = 0

    async def on_revoked(self, tps: set[TP]) -> None:
        self.revoked += bool(tps)  # aiokafka also calls it, empty, before the first join

    async def on_assigned(self, tps: set[TP]) -> None:
        self.assigned += bool(tps)


async def _joined_and_fetched(
    kafka_bootstrap: str, topic: str, tp: TP
) -> tuple[AiokafkaConsumer, _Rebalances, list[int]]:
    """A member of the group that has fetched the first 10 records, at aiokafka's own
    max.poll.interval.ms."""
    consumer = _consumer(
        kafka_bootstrap, topic, session_timeout_ms=10_000, heartbeat_interval_ms=300
    )
    rebalances = _Rebalances()
    await consumer.start()
    try:
        consumer.subscribe(topic, rebalances)
        return consumer, rebalances, await _fetch_until(consumer, tp, 10, timeout_s=20)
    except BaseException:
        await consumer.stop()
        raise


async def test_a_member_holding_everything_past_max_poll_interval_stays_in_its_group(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Back-pressure on every partition (a DynamoDB outage) must not look like a stuck
    consumer: aiokafka's getmany is still called, so the member is not dropped from its group
    after max.poll.interval.ms (a rebalance would redeliver what is not committed), and the
    held partition's buffered fetch is neither dropped nor fetched again."""
    topic = await topic_factory(1)
    tp: TP = (topic, 0)
    await produce(kafka_bootstrap, topic, [(b"k", b"{}")] * 50, partition=0)
    # A committed start, as in a running subscription (without one, aiokafka's poll
    # bookkeeping is already off after the first fetch raises NoOffsetForPartition).
    # Without auto-commit: aiokafka's default commits the position on stop(), and once that
    # position has resolved ("latest": 50) it overwrote the 0 below, so the member started at
    # the end and fetched nothing (in about one suite of three, by timing). Resolving the
    # position first makes that race certain, so putting auto-commit back fails every run.
    first_owner = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"hold-{topic}", enable_auto_commit=False
    )
    await first_owner.start()
    try:
        first_owner.assign([TopicPartition(topic, 0)])
        await first_owner.position(TopicPartition(topic, 0))
        await first_owner.commit({TopicPartition(topic, 0): 0})
    finally:
        await first_owner.stop()
    consumer, rebalances, first = await _joined_and_fetched(kafka_bootstrap, topic, tp)
    try:
        coordinator = consumer._consumer._coordinator
        assert first == list(range(10))
        coordinator._max_poll_interval = 2.0  # max.poll.interval.ms = 2 s from here on
        generation = coordinator.generation
        buffered = consumer._consumer._fetcher._records[TopicPartition(topic, 0)]

        consumer.hold(tp)
        loop = asyncio.get_running_loop()
        held_until = loop.time() + 4.0  # twice max.poll.interval.ms
        while loop.time() < held_until:  # the runner's fetch loop, every partition held
            fetched = await consumer.getmany(timeout_ms=500, max_records=100)
            assert tp not in fetched.records
        assert (coordinator.generation, rebalances.revoked) == (generation, 0)
        # The same buffered response: nothing dropped, nothing fetched again.
        assert consumer._consumer._fetcher._records[TopicPartition(topic, 0)] is buffered

        consumer.release(tp)
        assert await _fetch_until(consumer, tp, 40, timeout_s=5) == list(range(10, 50))
    finally:
        await consumer.stop()


async def test_a_released_partition_is_served_without_waiting_for_the_others(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """While a partition is held, getmany waits in short slices: one released while the
    others are idle is served at once, not after the caller's whole timeout."""
    topic = await topic_factory(2)
    tp0: TP = (topic, 0)
    await produce(kafka_bootstrap, topic, [(b"k", b"{}")] * 20, partition=0)
    consumer = _consumer(kafka_bootstrap, topic)
    await consumer.start()
    try:
        consumer.subscribe(topic, _Assigned())
        assert await _fetch_until(consumer, tp0, 5) == list(range(5))
        consumer.hold(tp0)
        # Partition 1 is empty: unsliced, this fetch would wait the whole 20 s for it.
        waiting = asyncio.ensure_future(consumer.getmany(timeout_ms=20_000, max_records=100))
        await asyncio.sleep(0)  # pacing: the fetch starts (and waits) before the release
        consumer.release(tp0)
        async with asyncio.timeout(5):
            first = await waiting
        assert tp0 not in first.records  # the slice ended empty; the next call serves tp0
        assert await _fetch_until(consumer, tp0, 15, timeout_s=5) == list(range(5, 20))
    finally:
        await consumer.stop()
