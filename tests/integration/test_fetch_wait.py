"""The adaptive fetch wait on a real broker: a quiet consumer's fetches are held 5 s, a record
still arrives at once, and records bring back aiokafka's short wait."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.protocol.fetch import FetchRequest

from adapter.kafka.consumer import (
    IDLE_FETCH_WAIT_MS,
    QUIET_FETCH_WAIT_MS,
    AiokafkaConsumer,
    Fetched,
)
from adapter.kafka.errors import ConnectionWatch
from tests._kafka_fixtures import TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

WAIT_S = 30.0


class _Quiet:
    async def on_revoked(self, tps: set[tuple[str, int]]) -> None:
        return None

    async def on_assigned(self, tps: set[tuple[str, int]]) -> None:
        return None


def _quiet_consumer(kafka_bootstrap: str) -> AiokafkaConsumer:
    """A consumer that counts as quiet after 0.5 s without records."""
    return AiokafkaConsumer(
        watch=ConnectionWatch("test"),
        quiet_after_s=0.5,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"fetch-wait-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def test_quiet_consumer_holds_fetches_long_yet_gets_a_record_at_once(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    consumer = _quiet_consumer(kafka_bootstrap)
    # Every fetch request the consumer sends, with when it was sent and the wait it asked for.
    sent: list[tuple[float, int]] = []
    await consumer.start()
    client: Any = consumer._consumer._client
    original_send = client.send

    async def recording_send(node_id: int, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            sent.append((time.monotonic(), request._max_wait_ms))
        return await original_send(node_id, request, **kwargs)

    client.send = recording_send
    consumer.subscribe(topic, _Quiet())
    batches: asyncio.Queue[tuple[float, Fetched]] = asyncio.Queue()

    async def fetch_loop() -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=100)
            if fetched.records:
                await batches.put((time.monotonic(), fetched))

    loop = asyncio.create_task(fetch_loop())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        # Quiet: a fetch held for the long wait goes out.
        deadline = time.monotonic() + WAIT_S
        while not any(w == QUIET_FETCH_WAIT_MS for _, w in sent):
            assert time.monotonic() < deadline, f"no long fetch within {WAIT_S} s: {sent[-5:]}"
            await asyncio.sleep(0.05)
        assert sent[0][1] == IDLE_FETCH_WAIT_MS  # short until quiet
        await asyncio.sleep(0.3)  # well inside the held fetch
        produced = time.monotonic()
        await producer.send_and_wait(topic, b"wake")
        arrived, fetched = await asyncio.wait_for(batches.get(), WAIT_S)
        # The broker answers the held fetch as soon as the record is there.
        assert arrived - produced < 2.0, f"record took {arrived - produced:.2f} s"
        assert [r.value for rs in fetched.records.values() for r in rs] == [b"wake"]
        # Records make the next fetch short again.
        deadline = time.monotonic() + WAIT_S
        while not any(t > arrived and w == IDLE_FETCH_WAIT_MS for t, w in sent):
            assert time.monotonic() < deadline, f"no short fetch after records: {sent[-5:]}"
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await producer.stop()
        await consumer.stop()


async def test_a_paused_partition_keeps_fetches_short_so_its_resume_is_not_held_up(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """The throughput regression a fixed long wait caused: a partition resumed after
    back-pressure waited for its caught-up neighbour's held fetch."""
    topic = await topic_factory(2)
    consumer = _quiet_consumer(kafka_bootstrap)
    sent: list[int] = []
    await consumer.start()
    client: Any = consumer._consumer._client
    original_send = client.send

    async def recording_send(node_id: int, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            sent.append(request._max_wait_ms)
        return await original_send(node_id, request, **kwargs)

    client.send = recording_send
    consumer.subscribe(topic, _Quiet())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()

    async def fetch_until(condition: Any, seconds: float) -> list[bytes | None]:
        values: list[bytes | None] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not condition(values):
            fetched = await consumer.getmany(timeout_ms=100, max_records=100)
            values += [r.value for rs in fetched.records.values() for r in rs]
        return values

    try:
        await producer.send_and_wait(topic, b"first", partition=0)
        assert await fetch_until(lambda v: b"first" in v, WAIT_S) == [b"first"]
        consumer.pause((topic, 0))  # back-pressure
        await producer.send_and_wait(topic, b"held", partition=0)
        # Quiet for four times the quiet period, one partition paused: still short fetches.
        sent.clear()
        assert await fetch_until(lambda v: False, 2.0) == []
        assert sent
        assert set(sent) == {IDLE_FETCH_WAIT_MS}, sent
        resumed = time.monotonic()
        consumer.resume((topic, 0))
        assert await fetch_until(lambda v: b"held" in v, WAIT_S) == [b"held"]
        assert time.monotonic() - resumed < 2.0
    finally:
        await producer.stop()
        await consumer.stop()
