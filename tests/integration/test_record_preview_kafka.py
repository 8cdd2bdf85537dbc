"""``GET /invocations/{id}/record`` against the test broker: the record read again outside the
subscription's group (its committed offsets untouched), and a 404 naming the coordinates once
retention has removed it."""

from __future__ import annotations

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from starlette.responses import JSONResponse, Response

from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Call, Ingress, RecordingHandler, committed_offsets, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


@pytest.mark.promise("p-api-invocation-record")
async def test_the_record_is_read_again_and_gone_once_deleted(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    store: DynamoStore,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
) -> None:
    async def fail(call: Call) -> Response | None:
        return JSONResponse({"message": "down"}, status_code=503)

    handler = RecordingHandler(fail)
    url = await handler_server(handler.app)
    topic = await topic_factory(1)
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    await harness.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, InputKind.JSON)}
    )
    sub = await harness.subscribe(
        topic,
        "Greeter",
        "greet",
        {"retry.initial.interval.ms": "120000", "retry.max.interval.ms": "120000"},
    )
    value = b'{"id": 1, "token": "abcdef-secret-token", "pad": "' + b"x" * 5000 + b'"}'
    await produce(kafka_bootstrap, topic, [(b"k1", value, [("trace", b"t-1")])])
    poller = await harness.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{poller.admin_address}", timeout=30) as api:

            async def listed() -> list[dict[str, object]]:
                doc = (await api.get("/invocations", params={"subscription": sub.id})).json()
                return list(doc["invocations"])

            async def backing_off() -> bool:
                return len(await listed()) == 1

            await eventually(backing_off, timeout=60, interval=0.2)
            [inv] = await listed()
            before = await committed_offsets(kafka_bootstrap, sub.id, topic, 1)

            shown = await api.get(f"/invocations/{inv['id']}/record")
            assert shown.status_code == 200, shown.text
            doc = shown.json()
            assert (doc["topic"], doc["partition"], doc["offset"], doc["key"]) == (
                topic,
                0,
                0,
                "k1",
            )
            assert doc["headers"] == [{"name": "trace", "value": "t-1"}]
            assert doc["value_bytes"] == len(value)
            assert doc["truncated"] is True
            assert doc["preview"].startswith('{"id": 1, "token": "***"')
            assert "abcdef-secret-token" not in shown.text
            # Read outside the group: its committed offsets did not move.
            assert await committed_offsets(kafka_bootstrap, sub.id, topic, 1) == before

            admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
            await admin.start()
            try:
                await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(1)})
            finally:
                await admin.close()
            gone = await api.get(f"/invocations/{inv['id']}/record")
            assert gone.status_code == 404, gone.text
            assert f"{topic}/0 at offset 0" in gone.json()["message"]
            assert (await api.get("/invocations/inv_1nope/record")).status_code == 400
    finally:
        await harness.stop()
