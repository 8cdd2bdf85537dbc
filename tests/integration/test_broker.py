"""The local broker launcher against what the poller needs from a real Kafka 4.x broker."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AIOKafkaError

from adapter.errors import LocalStackError
from adapter.local.kafka import KafkaBroker, ListenerSpec

pytestmark = pytest.mark.kafka

WAIT = 30.0


async def _produce(bootstrap: str, topic: str, values: list[bytes], **options: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)
    try:
        # Closed even after a failed start(): aiokafka warns about unclosed clients.
        await asyncio.wait_for(producer.start(), WAIT)
        for value in values:
            await asyncio.wait_for(producer.send_and_wait(topic, value, partition=0), WAIT)
    finally:
        await producer.stop()


@asynccontextmanager
async def _consumer(
    bootstrap: str, topic: str, group: str | None
) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), WAIT)
        yield consumer
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + WAIT
    while len(records) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"read {len(records)} of {count} records in {WAIT} s")
        batches = await consumer.getmany(timeout_ms=500)
        records.extend(record for batch in batches.values() for record in batch)
    return records


@asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await asyncio.wait_for(admin.start(), WAIT)
        yield admin
    finally:
        await admin.close()


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process ended while we looked
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_group_resumes_from_the_explicitly_committed_offset(
    kafka_bootstrap: str, new_topic: str
) -> None:
    values = [f"v{i}".encode() for i in range(10)]
    await _produce(kafka_bootstrap, new_topic, values)
    tp = TopicPartition(new_topic, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"

    async with _consumer(kafka_bootstrap, new_topic, group) as first:
        seen = await _read(first, 4)
        # The consumer has fetched past offset 4; only the explicit offset may be committed.
        await asyncio.wait_for(first.commit({tp: seen[3].offset + 1}), WAIT)
        assert await asyncio.wait_for(first.committed(tp), WAIT) == 4

    async with _consumer(kafka_bootstrap, new_topic, group) as second:
        rest = await _read(second, 6)
    assert [(r.offset, r.value) for r in rest] == list(enumerate(values))[4:]


@pytest.mark.parametrize("new_topic", [3], indirect=True)
async def test_new_topic_has_the_requested_partitions(kafka_bootstrap: str, new_topic: str) -> None:
    async with _admin(kafka_bootstrap) as admin:
        (described,) = await asyncio.wait_for(admin.describe_topics([new_topic]), WAIT)
    assert len(described["partitions"]) == 3


async def test_two_brokers_are_independent_clusters(
    kafka_broker: KafkaBroker, new_topic: str
) -> None:
    other = KafkaBroker()
    await asyncio.to_thread(other.start)
    try:
        assert other.bootstrap_servers != kafka_broker.bootstrap_servers
        async with _admin(other.bootstrap_servers) as admin:
            cluster = await asyncio.wait_for(admin.describe_cluster(), WAIT)
            assert cluster["cluster_id"] == other.cluster_id != kafka_broker.cluster_id
            assert new_topic not in await asyncio.wait_for(admin.list_topics(), WAIT)
            await asyncio.wait_for(admin.create_topics([NewTopic("only-on-other", 1, 1)]), WAIT)
        async with _admin(kafka_broker.bootstrap_servers) as admin:
            assert "only-on-other" not in await asyncio.wait_for(admin.list_topics(), WAIT)
    finally:
        await asyncio.to_thread(other.stop)


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
async def test_restart_keeps_ports_and_data_and_stop_leaves_no_process(hard: bool) -> None:
    broker = KafkaBroker()
    await asyncio.to_thread(broker.start)
    try:
        bootstrap, work_dir, first_pid = broker.bootstrap_servers, broker.work_dir, broker.pid
        assert first_pid is not None
        await _produce(bootstrap, "survives-restart", [b"kept"])

        await asyncio.to_thread(broker.restart, hard=hard)
        assert broker.bootstrap_servers == bootstrap
        assert broker.pid != first_pid
        assert _gone(first_pid)
        async with _consumer(bootstrap, "survives-restart", None) as consumer:
            (record,) = await _read(consumer, 1)
        assert record.value == b"kept"

        pid = broker.pid
        assert pid is not None
    finally:
        await asyncio.to_thread(broker.stop)
    assert not broker.running
    assert _gone(pid)
    assert _processes_mentioning(str(work_dir)) == []
    assert not work_dir.exists()


async def test_scram_user_authenticates_on_an_extra_sasl_listener() -> None:
    sasl = ListenerSpec(
        "SASL",
        "SASL_PLAINTEXT",
        {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
    )
    broker = KafkaBroker(
        extra_listeners=[sasl], scram_users=[("SCRAM-SHA-512", "alice", "alice-secret")]
    )
    await asyncio.to_thread(broker.start)
    try:
        address = broker.listeners["SASL"]
        assert address != broker.bootstrap_servers
        scram = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "alice",
        }
        await _produce(
            address, "over-sasl", [b"hello"], sasl_plain_password="alice-secret", **scram
        )
        with pytest.raises(AIOKafkaError):
            await _produce(address, "over-sasl", [b"nope"], sasl_plain_password="wrong", **scram)
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.mark.parametrize(
    ("options", "cause"),
    [
        # rejected by the storage tool, before the broker is launched
        ({"extra_properties": {"num.io.threads": "many"}}, r"num\.io\.threads"),
        # accepted by the storage tool, fatal when the broker opens its listeners
        (
            {"extra_listeners": [ListenerSpec("SASL", "SASL_PLAINTEXT")]},
            r"JAAS configuration",
        ),
    ],
    ids=["bad-property", "sasl-without-jaas"],
)
def test_a_broker_that_cannot_start_reports_the_cause(options: dict[str, Any], cause: str) -> None:
    broker = KafkaBroker(**options)
    with pytest.raises(LocalStackError, match=rf"(?s)exit.*first errors.*{cause}"):
        broker.start(timeout=30)
    assert broker.pid is None
    assert not broker.running


def test_missing_jars_say_how_to_fetch_them(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="make kafka-jars"):
        KafkaBroker(jars_dir=tmp_path).start()
