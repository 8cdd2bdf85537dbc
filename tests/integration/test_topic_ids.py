"""Topic IDs from a real broker: stable for a topic, new for a topic re-created under its name."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataRequest as AllowingMetadataRequest

from adapter.errors import KafkaError
from adapter.kafka.topics import TopicInfo, describe_topics
from adapter.local.kafka import KafkaBroker
from tests._kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

WAIT = 30.0
ADMIN_TIMEOUT_MS = 15_000


@pytest.fixture
async def client(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaClient]:
    """The client of a started consumer, the way the engine reaches it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), WAIT)
        yield consumer._client
    finally:
        await consumer.stop()


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka_bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS
    )
    try:
        await asyncio.wait_for(admin.start(), WAIT)
        yield admin
    finally:
        await admin.close()


async def wait_for_described(
    client: AIOKafkaClient, name: str, *, exists: bool
) -> TopicInfo | None:
    """The topic once the broker's metadata shows it existing (or gone), within ``WAIT``."""
    deadline = time.monotonic() + WAIT
    while True:
        found = (await describe_topics(client, [name], timeout_s=WAIT))[name]
        if (found is not None) == exists:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} still {'missing' if exists else 'there'}")
        await asyncio.sleep(0.05)


async def id_on_disk(broker: KafkaBroker, name: str, expected: str) -> str | None:
    """The topic ID the broker wrote beside partition 0's log, once it is ``expected``.

    Kafka records the ID in ``<log.dirs>/<topic>-0/partition.metadata`` (as
    ``topic_id: <Uuid.toString()>``), flushed in the background after the log is created.
    """
    path = Path(broker.work_dir) / "data" / f"{name}-0" / "partition.metadata"
    deadline = time.monotonic() + WAIT
    seen: str | None = None
    while time.monotonic() < deadline:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        fields = dict(line.split(": ", 1) for line in lines if ": " in line)
        seen = fields.get("topic_id")
        if seen == expected:
            return seen
        await asyncio.sleep(0.05)
    return seen


async def test_existing_topic_reports_its_id_and_partition_count(
    client: AIOKafkaClient, topic_factory: TopicFactory, kafka_broker: KafkaBroker
) -> None:
    name = await topic_factory(3)

    first = (await describe_topics(client, [name]))[name]
    again = (await describe_topics(client, [name, name]))[name]

    assert first is not None
    assert first.name == name
    assert first.partitions == 3
    assert len(first.topic_id) == 22
    assert again == first, "a topic's ID must not change between calls"
    # The broker's own record of the ID, rendered by Kafka itself.
    assert await id_on_disk(kafka_broker, name, first.topic_id) == first.topic_id


async def test_topics_are_described_together(
    client: AIOKafkaClient, topic_factory: TopicFactory
) -> None:
    one, two = await topic_factory(1), await topic_factory(2)

    found = await describe_topics(client, [one, two])

    assert set(found) == {one, two}
    first, second = found[one], found[two]
    assert first is not None
    assert second is not None
    assert (first.partitions, second.partitions) == (1, 2)
    assert first.topic_id != second.topic_id


async def test_missing_topic_is_none_and_is_not_created(
    client: AIOKafkaClient, admin: AIOKafkaAdminClient
) -> None:
    absent = f"t-absent-{uuid.uuid4().hex[:10]}"
    control = f"t-autocreated-{uuid.uuid4().hex[:10]}"

    assert await describe_topics(client, [absent]) == {absent: None}

    # The session broker has auto.create.topics.enable=true: a Metadata request that allows
    # it, sent after ours, creates its topic. Once that one exists, the broker has handled
    # our request too, and only AllowAutoTopicCreation=false kept it from creating ours.
    node_id = client.get_random_node()
    await client.send(node_id, AllowingMetadataRequest([control], allow_auto_topic_creation=True))
    try:
        created = await wait_for_described(client, control, exists=True)
        assert created is not None
        assert await describe_topics(client, [absent]) == {absent: None}
        assert absent not in await admin.list_topics()
    finally:
        await admin.delete_topics([control], timeout_ms=ADMIN_TIMEOUT_MS)


@pytest.mark.promise("p-fault-recreated-topic")
async def test_recreated_topic_gets_a_new_id(
    client: AIOKafkaClient,
    admin: AIOKafkaAdminClient,
    topic_factory: TopicFactory,
    kafka_broker: KafkaBroker,
) -> None:
    name = await topic_factory(1)
    before = (await describe_topics(client, [name]))[name]
    assert before is not None

    await admin.delete_topics([name], timeout_ms=ADMIN_TIMEOUT_MS)
    assert await wait_for_described(client, name, exists=False) is None
    created = await admin.create_topics(
        [NewTopic(name, num_partitions=2, replication_factor=1)], timeout_ms=ADMIN_TIMEOUT_MS
    )
    assert [err for err in created.topic_errors if err[1] != 0] == []
    after = await wait_for_described(client, name, exists=True)

    assert after is not None
    assert after.name == before.name
    assert after.topic_id != before.topic_id
    assert after.partitions == 2
    assert await id_on_disk(kafka_broker, name, after.topic_id) == after.topic_id


async def test_invalid_topic_name_is_an_error_naming_it(client: AIOKafkaClient) -> None:
    with pytest.raises(KafkaError, match=r"'bad name!'.*INVALID_TOPIC"):
        await describe_topics(client, ["bad name!"])


async def test_unstarted_client_is_an_error(kafka_bootstrap: str) -> None:
    unstarted = AIOKafkaClient(bootstrap_servers=kafka_bootstrap)
    try:
        with pytest.raises(KafkaError, match=r"'t'.*knows no broker"):
            await describe_topics(unstarted, ["t"])
    finally:
        await unstarted.close()
