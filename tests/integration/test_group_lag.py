"""``GET /subscriptions/{id}/lag`` against the test broker: the consumer group's lag per
partition as Kafka reports it — every record while the handler refuses them (nothing committed
yet), counted from the log start once retention removed some, and zero once all are acknowledged
— so any poller, whether it runs the subscription or not, can show it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from starlette.responses import JSONResponse, Response

from adapter.api.group_lag import partition_lag
from adapter.ids import subscription_id
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Call, Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_partition_lag_counts_from_the_committed_offset_or_the_log_start() -> None:
    assert partition_lag(0, None, 0, 5).lag == 5
    assert partition_lag(0, 3, 0, 5).lag == 2
    # Retention removed records past the committed offset: they count from the log start.
    assert partition_lag(0, 2, 4, 5).lag == 1
    assert partition_lag(0, None, 4, 5).lag == 1
    assert partition_lag(0, 5, 0, 5).lag == 0


@pytest.mark.promise("p-api-subscription-lag")
async def test_lag_is_the_groups_as_kafka_reports_it(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    store: DynamoStore,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
) -> None:
    accept = False

    async def refuse_until_told(call: Call) -> Response | None:
        return None if accept else JSONResponse({"message": "not yet"}, status_code=503)

    handler = RecordingHandler(refuse_until_told)
    url = await handler_server(handler.app)
    topic = await topic_factory(2)
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    await harness.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, InputKind.JSON)}
    )
    sub = await harness.subscribe(
        topic,
        "Greeter",
        "greet",
        {"retry.initial.interval.ms": "100", "retry.max.interval.ms": "200"},
    )
    await produce(kafka_bootstrap, topic, [(b"a", b"{}")] * 5, partition=0)
    await produce(kafka_bootstrap, topic, [(b"b", b"{}")] * 3, partition=1)
    poller = await harness.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{poller.admin_address}", timeout=30) as api:

            async def lag() -> dict[str, Any]:
                response = await api.get(f"/subscriptions/{sub.id}/lag")
                assert response.status_code == 200, response.text
                return dict(response.json())

            async def refused_seen() -> bool:
                return len(handler.calls) >= 8

            await eventually(refused_seen, timeout=60, interval=0.1)
            doc = await lag()
            assert (doc["group"], doc["topic"], doc["topic_exists"]) == (sub.id, topic, True)
            # Nothing finished: the group stands at each partition's start, committed before
            # any record was invoked.
            assert doc["partitions"] == [
                {"partition": 0, "committed": 0, "log_start": 0, "log_end": 5, "lag": 5},
                {"partition": 1, "committed": 0, "log_start": 0, "log_end": 3, "lag": 3},
            ]
            assert doc["lag"] == 8

            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(2)})
            finally:
                await admin.close()

            async def retention_counted() -> bool:
                return (await lag())["lag"] == 6

            await eventually(retention_counted, timeout=30, interval=0.3)

            accept = True

            async def caught_up() -> bool:
                return (await lag())["lag"] == 0

            await eventually(caught_up, timeout=60, interval=0.3)
            doc = await lag()
            assert [p["committed"] for p in doc["partitions"]] == [5, 3]

            assert (await api.get(f"/subscriptions/{subscription_id()}/lag")).status_code == 404
            assert (await api.get("/subscriptions/nope/lag")).status_code == 400
    finally:
        await harness.stop()


@pytest.mark.promise("p-api-subscription-lag")
async def test_a_commit_made_for_an_earlier_topic_of_the_name_does_not_hide_the_lag(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Kafka drops a deleted topic's offsets, but an owner that had not noticed the deletion
    may still commit its old position onto the new topic of that name (its commit carries the
    old topic's ID). The poller then consumes the new topic from its beginning, and the lag
    counts from there too, not from that stale offset."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import NewTopic
    from aiokafka.structs import OffsetAndMetadata

    from adapter.api.group_lag import read_group_lag
    from adapter.kafka.options import resolve_options
    from adapter.kafka.topics import describe_topics

    topic = await topic_factory(1)
    group = subscription_id()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        old = (await describe_topics(admin._client, [topic]))[topic]
        assert old is not None
        await admin.delete_topics([topic], timeout_ms=30_000)

        async def gone() -> bool:
            return (await describe_topics(admin._client, [topic]))[topic] is None

        await eventually(gone, timeout=30, interval=0.2)
        await admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1)], timeout_ms=30_000
        )
        new = await _described(admin, topic)
        assert new.topic_id != old.topic_id
    finally:
        await admin.close()
    await produce(kafka_bootstrap, topic, [(b"b", b"{}")] * 3, partition=0)

    # No auto-commit: on stop it would commit its own position over the commit under test.
    late_owner = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await late_owner.start()
    try:
        tp = TopicPartition(topic, 0)
        late_owner.assign([tp])
        await late_owner.commit({tp: OffsetAndMetadata(40, old.topic_id)})
    finally:
        await late_owner.stop()

    options = resolve_options(
        subscription_id=group,
        bootstrap_servers=[kafka_bootstrap],
        cluster_options={},
        subscription_options={},
    )
    lag = await read_group_lag(options, group, topic)
    assert [p.model_dump() for p in lag.partitions] == [
        {"partition": 0, "committed": None, "log_start": 0, "log_end": 3, "lag": 3}
    ]
    assert lag.lag == 3


async def _described(admin: AIOKafkaAdminClient, topic: str) -> Any:
    from adapter.kafka.topics import describe_topics

    found: list[Any] = []

    async def exists() -> bool:
        info = (await describe_topics(admin._client, [topic]))[topic]
        found[:] = [info]
        return info is not None and info.partitions == 1

    await eventually(exists, timeout=30, interval=0.2)
    return found[0]
