"""The shard map's control group member hears change signals from its first join, also when
it is the poller that creates the signal topic (a new cluster, a first deployment)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

from adapter.kafka import control_group
from adapter.kafka.change_signal import SIGNAL_TOPIC, ChangeSignaller, ensure_signal_topic
from adapter.kafka.control_group import ControlGroup
from tests.harness import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def _without_signal_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(UnknownTopicOrPartitionError):
            await admin.delete_topics([SIGNAL_TOPIC])

        async def gone() -> bool:
            return SIGNAL_TOPIC not in await admin.list_topics()

        await eventually(gone, timeout=30, interval=0.1)
    finally:
        await admin.close()


def _member(kafka_bootstrap: str, heard: list[float]) -> ControlGroup:
    return ControlGroup(
        cluster="local",
        group_id=f"control-{uuid.uuid4().hex[:8]}",
        poller="p1",
        shards=4,
        client_kwargs={"bootstrap_servers": kafka_bootstrap},
        on_map=lambda owners: None,
        instance_id=None,
        on_signal=lambda: heard.append(asyncio.get_running_loop().time()),
    )


async def _hears_signals(kafka_bootstrap: str, member: ControlGroup, heard: list[float]) -> None:
    task = asyncio.create_task(member.run())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks=1)
    await producer.start()
    try:
        await eventually(lambda: member.listening.is_set(), timeout=30)
        # A signal sent now is heard at once (the member long-polls the topic's end).
        sent = asyncio.get_running_loop().time()
        await producer.send_and_wait(SIGNAL_TOPIC, b"")
        await eventually(lambda: bool(heard), timeout=5)
        assert heard[0] - sent < 1.0
    finally:
        await producer.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_member_that_creates_the_signal_topic_hears_signals(
    kafka_bootstrap: str,
) -> None:
    await _without_signal_topic(kafka_bootstrap)
    heard: list[float] = []
    await _hears_signals(kafka_bootstrap, _member(kafka_bootstrap, heard), heard)


@pytest.mark.promise("p-control-propagation")
async def test_a_member_whose_first_assignment_missed_the_signal_topic_hears_signals_soon(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The group's leader assigns what its metadata shows: a topic created a moment before
    # may not be in it yet (seen on a busy broker). It must not wait for aiokafka's
    # metadata refresh (5 minutes) to hear signals.
    await _without_signal_topic(kafka_bootstrap)

    async def not_yet(connection: object) -> None:
        return None

    monkeypatch.setattr(control_group, "ensure_signal_topic", not_yet)
    heard: list[float] = []
    member = _member(kafka_bootstrap, heard)

    first_had_signals: list[bool] = []

    async def create_later() -> None:
        await member.ready.wait()
        await eventually(lambda: member.assignments > 0, timeout=30)
        assigned = member._consumer.assignment()
        first_had_signals.append(any(tp.topic == SIGNAL_TOPIC for tp in assigned))
        await ensure_signal_topic({"bootstrap_servers": kafka_bootstrap})

    creating = asyncio.create_task(create_later())
    try:
        await _hears_signals(kafka_bootstrap, member, heard)
    finally:
        await creating
    assert first_had_signals == [False], "the path under test was not taken"


async def test_the_first_signals_of_a_cluster_share_one_producer(kafka_bootstrap: str) -> None:
    # An /apply of many subscriptions signals their cluster many times at once; each signal
    # that made a producer of its own left all but the last one unclosed.
    signaller = ChangeSignaller()
    connects: list[int] = []
    connected = asyncio.Event()

    async def connect() -> dict[str, str]:
        connects.append(1)
        await connected.wait()
        return {"bootstrap_servers": kafka_bootstrap}

    try:
        for _ in range(3):
            signaller.signal("local", connect)
        # The first has connected and waits; the others ran meanwhile (eventually yields).
        await eventually(lambda: len(connects) == 1, timeout=5)
        connected.set()
        await eventually(lambda: not signaller._tasks, timeout=30)
        assert len(connects) == 1
    finally:
        await signaller.aclose()


async def test_signals_of_an_unreachable_cluster_do_not_queue_for_a_connection_each() -> None:
    # Nothing listens on port 9: the first signal's producer fails to start; the signals
    # after it within RETRY_AFTER_FAILURE_S are dropped (the feed's poll covers them) instead
    # of each waiting its turn to fail the same way.
    signaller = ChangeSignaller()
    connects: list[int] = []

    async def connect() -> dict[str, str]:
        connects.append(1)
        return {"bootstrap_servers": "127.0.0.1:9"}

    try:
        signaller.signal("gone", connect)
        await eventually(lambda: not signaller._tasks, timeout=30)
        for _ in range(5):
            signaller.signal("gone", connect)
        await eventually(lambda: not signaller._tasks, timeout=5)
        assert len(connects) == 1
    finally:
        await signaller.aclose()
