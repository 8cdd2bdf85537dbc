"""Topics that misbehave, on a real broker: retention ahead of the group, a topic that appears
after its subscription, a dead-letter topic that does not exist.

These run on a broker of their own: it does not create topics on first use (so a missing
dead-letter topic stays missing) and checks retention every second from its start (so a sweep
happens within the test).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from starlette.responses import JSONResponse, Response

from adapter.errors import LocalStackError
from adapter.local.kafka import KafkaBroker
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import delete_topic, wait_for_leaders
from tests.harness import (
    Call,
    Ingress,
    RecordingHandler,
    committed_offsets,
    eventually,
    produce,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

JSON = InputKind.JSON


@pytest.fixture(scope="module")
def strict_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker(
        extra_properties={
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "1000",
            # The retention check's first run, 30 s after start by default: the retention test
            # waited for it.
            "log.initial.task.delay.ms": "0",
            "log.segment.delete.delay.ms": "0",
        }
    )
    try:
        broker.start()
    except LocalStackError as exc:
        pytest.fail(f"the test's Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def strict(
    strict_broker: KafkaBroker, store: DynamoStore, moto_server: MotoServer
) -> AsyncIterator[Ingress]:
    harness = Ingress(strict_broker.bootstrap_servers, store, moto_server.endpoint_url)
    try:
        yield harness
    finally:
        await harness.stop()


async def create_topic(bootstrap: str, name: str, config: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=config or {})])
        await wait_for_leaders(admin, name, 1)
    finally:
        await admin.close()


async def alter_topic(bootstrap: str, name: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, config)])
    finally:
        await admin.close()


async def log_start(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return int((await consumer.beginning_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


@pytest.mark.promise("p-fault-retention")
async def test_records_deleted_by_retention_before_processing_are_reported(
    strict: Ingress,
    handler_server: HandlerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/operations.md, fault table: retention ahead of the group."""
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await strict.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = _name("retention")
    bootstrap = strict.bootstrap
    # The smallest segments Kafka allows (1 MiB), so retention has whole segments to delete.
    await create_topic(bootstrap, topic, {"segment.bytes": str(1024 * 1024)})
    await produce(bootstrap, topic, [(None, b'{"n": 1}') for _ in range(10)])
    sub = await strict.subscribe(topic, "Svc", "h")
    await strict.start()
    await eventually(lambda: len(handler.acked()) == 10, timeout=30)

    async def all_committed() -> bool:
        return (await committed_offsets(bootstrap, sub.id, topic, 1))[0] == 10

    await eventually(all_committed, timeout=30)
    await strict.stop()  # the group stays at offset 10 while records pile up and expire

    padding = b'{"pad": "' + b"x" * 10_000 + b'"}'
    await produce(bootstrap, topic, [(None, padding) for _ in range(300)])
    await alter_topic(bootstrap, topic, {"retention.ms": "1"})

    async def swept() -> bool:
        return await log_start(bootstrap, topic) > 10

    await eventually(swept, timeout=60, message="retention did not delete the old segments")
    start = await log_start(bootstrap, topic)
    caplog.set_level(logging.WARNING, logger="adapter.engine.runner")
    poller = await strict.start()

    def reported() -> bool:
        info = poller.supervisor.status().get(sub.id, {})
        return bool(info.get("retention_losses"))

    await eventually(reported, timeout=30, message="the loss was not reported")
    [loss] = poller.supervisor.status()[sub.id]["retention_losses"]
    assert (loss.first, loss.last, loss.count) == (10, start - 1, start - 10)
    warning = next(r for r in caplog.records if "deleted by retention" in r.getMessage())
    assert sub.id in warning.getMessage()
    assert f"offsets 10..{start - 1}" in warning.getMessage()
    # Loud, then on: what is left of the log is delivered.
    await eventually(lambda: len(handler.acked()) == 10 + (310 - start), timeout=30)


@pytest.mark.promise("p-fault-topic-not-yet")
async def test_a_topic_created_after_its_subscription_is_consumed_within_seconds(
    strict: Ingress, handler_server: HandlerServer
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await strict.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = _name("later")
    sub = await strict.subscribe(topic, "Svc", "h")
    poller = await strict.start()

    def waiting() -> bool:
        info = poller.supervisor.status().get(sub.id, {})
        return info.get("state") == "waiting-for-topic"

    await eventually(waiting, timeout=30, message="the subscription does not say it waits")
    assert f"waiting for topic {topic!r}" in str(poller.supervisor.status()[sub.id]["last_error"])

    await create_topic(strict.bootstrap, topic)
    created = time.monotonic()
    await produce(strict.bootstrap, topic, [(None, b"{}")])
    await eventually(lambda: len(handler.acked()) == 1, timeout=30)
    assert handler.acked()[0].started - created < 5.0, "consumed later than 5 s after creation"
    assert poller.supervisor.status()[sub.id]["state"] == "running"


@pytest.mark.promise("p-fault-dlq-missing", "p-dlq-commit-after-ack")
async def test_a_missing_dead_letter_topic_is_named_and_holds_the_record(
    strict: Ingress, handler_server: HandlerServer
) -> None:
    async def reject(call: Call) -> Response:
        # A 4xx is terminal: the record goes straight to the dead-letter topic.
        return JSONResponse({"message": "rejected"}, status_code=400)

    handler = RecordingHandler(reject)
    url = await handler_server(handler.app)
    await strict.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = _name("source")
    dlq = _name("missing-dlq")
    await create_topic(strict.bootstrap, topic)
    await produce(strict.bootstrap, topic, [(None, b"{}")])
    sub = await strict.subscribe(topic, "Svc", "h", {"dead.letter.topic": dlq})
    poller = await strict.start()

    def named() -> bool:
        error = poller.supervisor.status().get(sub.id, {}).get("last_error") or ""
        return dlq in error

    started = time.monotonic()
    await eventually(named, timeout=30, message="last_error does not name the dead-letter topic")
    assert time.monotonic() - started < 15
    error = str(poller.supervisor.status()[sub.id]["last_error"])
    assert f"'{topic}'" not in error, f"the source topic is blamed: {error}"
    # Nothing is committed past the record while its dead letter cannot be stored.
    # (the partition's start, 0, is committed before any record of it is invoked)
    assert (await committed_offsets(strict.bootstrap, sub.id, topic, 1))[0] in (None, 0)

    await create_topic(strict.bootstrap, dlq)

    async def committed_after_dead_letter() -> bool:
        return (await committed_offsets(strict.bootstrap, sub.id, topic, 1))[0] == 1

    await eventually(committed_after_dead_letter, timeout=60)


@pytest.mark.promise("p-fault-deleted-topic")
async def test_a_poller_whose_topic_was_deleted_stops_without_waiting_for_commits(
    strict: Ingress, handler_server: HandlerServer
) -> None:
    """The broker answers a commit naming a deleted topic with a retriable error, which
    aiokafka retries until the commit's timeout (10 s). A stop after the deletion made two or
    three such commits in a row (the revocation's, the handover and its retry): 20-30 s, past
    a container's stop timeout, so the poller was killed before it left its other groups."""
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await strict.register(url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, JSON)})
    topic = _name("deleted")
    await create_topic(strict.bootstrap, topic)
    await produce(strict.bootstrap, topic, [(None, b"{}") for _ in range(5)])
    sub = await strict.subscribe(topic, "Svc", "h")
    await strict.start()

    async def all_committed() -> bool:
        return (await committed_offsets(strict.bootstrap, sub.id, topic, 1))[0] == 5

    await eventually(all_committed, timeout=30)
    await delete_topic(strict.bootstrap, topic)
    started = time.monotonic()
    await strict.stop()
    stopped_in = time.monotonic() - started
    assert stopped_in < 5.0, f"the stop took {stopped_in:.1f} s"
