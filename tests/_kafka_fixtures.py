"""Pytest plugin: a real Kafka broker for the session and fresh topics for each test.

A broker that cannot start fails the tests that need it, with the tail of its log: a missing
service must never turn into a silently skipped test.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any, Protocol

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from adapter.errors import LocalStackError
from adapter.local.kafka import KafkaBroker

__all__ = [
    "TopicFactory",
    "kafka_bootstrap",
    "kafka_broker",
    "new_topic",
    "topic_factory",
    "wait_for_leaders",
]

_TOPIC_READY_TIMEOUT = 30.0
_ADMIN_TIMEOUT_MS = 15_000


class TopicFactory(Protocol):
    def __call__(
        self, partitions: int = 1, *, config: Mapping[str, str] | None = None
    ) -> Awaitable[str]: ...


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One broker shared by the whole session, stopped (and its data removed) at the end."""
    broker = KafkaBroker()
    failure: str | None = None
    try:
        broker.start()
    except LocalStackError as exc:
        failure = str(exc)
    if failure is not None:
        # Outside the except block, so the report shows the log excerpt once, unchained.
        pytest.fail(f"the session's Kafka broker did not start: {failure}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    if not kafka_broker.running:
        pytest.fail(
            f"the session's Kafka broker has died\n{kafka_broker.log_tail()}", pytrace=False
        )
    return kafka_broker.bootstrap_servers


@pytest.fixture
async def topic_factory(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(partitions=3)`` -> name of a new, empty, ready topic.

    The topics are deleted after the test, so a long session does not pile up partitions.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka_bootstrap, request_timeout_ms=_ADMIN_TIMEOUT_MS
    )
    created: list[str] = []
    label = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:60].strip("-")

    async def create(partitions: int = 1, *, config: Mapping[str, str] | None = None) -> str:
        name = f"t-{label}-{uuid.uuid4().hex[:10]}"
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            topic_configs=dict(config or {}),
        )
        response = await admin.create_topics([topic], timeout_ms=_ADMIN_TIMEOUT_MS)
        errors = [err for err in response.topic_errors if err[1] != 0]
        if errors:
            raise AssertionError(f"creating topic {name} failed: {errors}")
        created.append(name)
        await wait_for_leaders(admin, name, partitions)
        return name

    try:
        await asyncio.wait_for(admin.start(), _ADMIN_TIMEOUT_MS / 1000)
        yield create
    finally:
        try:
            if created:
                await admin.delete_topics(created, timeout_ms=_ADMIN_TIMEOUT_MS)
        finally:
            await admin.close()


@pytest.fixture
async def new_topic(topic_factory: TopicFactory, request: pytest.FixtureRequest) -> str:
    """A new topic; one partition unless parametrized indirectly with a partition count."""
    partitions: int = getattr(request, "param", 1)
    return await topic_factory(partitions)


async def wait_for_leaders(admin: AIOKafkaAdminClient, name: str, partitions: int) -> None:
    # create_topics returns once the controller has committed the topic; the broker serves
    # it only after it has applied that metadata, and producers sent earlier would get
    # UNKNOWN_TOPIC_OR_PARTITION retries that blur what a test measures.
    deadline = time.monotonic() + _TOPIC_READY_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        last = await admin.describe_topics([name])
        found = last[0] if last else {}
        led = [p for p in found.get("partitions", []) if p.get("leader", -1) >= 0]
        if found.get("error_code") == 0 and len(led) == partitions:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"topic {name} had no leader for every partition in time: {last}")


async def delete_topic(bootstrap: str, name: str) -> None:
    """Delete a topic and return once the broker no longer lists it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=_ADMIN_TIMEOUT_MS)
    await admin.start()
    try:
        await admin.delete_topics([name], timeout_ms=_ADMIN_TIMEOUT_MS)
        deadline = time.monotonic() + _TOPIC_READY_TIMEOUT
        while name in await admin.list_topics():
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {name} was not deleted in time")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
