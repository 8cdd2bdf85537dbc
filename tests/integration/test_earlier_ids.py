"""Tables written before IDs took Restate's form keep working through the admin API.

The rows here are written as the earlier code wrote them — raw DynamoDB items keyed by IDs of
the earlier form (``sub_``/``dp_`` + 26 Crockford base32 characters; ``inv_`` + 26), on the
session's moto server. They are never rewritten (a subscription's ID can be its Kafka consumer
group); the API shows them in Restate's form (the same ULID) and finds them by either form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapter import ids
from adapter.api import AdminState, ClusterCatalog, create_app
from adapter.config import load_settings
from adapter.model import LedgerEntry, Subscription
from adapter.store.dynamo import DynamoStore
from tests._earlier_ids import earlier_invocation_id, earlier_resource_id

pytestmark = pytest.mark.timeout(90)

CREATED_MS = 1_767_225_600_000  # 2026-01-01
CLUSTERS = '[{name="local", brokers=["PLAINTEXT://127.0.0.1:19092"]}]'


SUB = earlier_resource_id("sub_", CREATED_MS, 0x0123_4567_89AB_CDEF_0123)
DEP = earlier_resource_id("dp_", CREATED_MS, 0x0FED_CBA9_8765_4321_0FED)
INV = earlier_invocation_id(SUB, "orders", 0, 7)


def write_earlier_rows(client: Any, store: DynamoStore) -> None:
    names = store.names
    client.put_item(
        TableName=names.subscriptions,
        Item={
            "id": {"S": SUB},
            "cluster": {"S": "local"},
            "topic": {"S": "orders"},
            "service": {"S": "Greeter"},
            "handler": {"S": "greet"},
            "options": {"M": {"auto.offset.reset": {"S": "earliest"}, "group.id": {"S": SUB}}},
            "created_at": {"N": str(CREATED_MS)},
            "paused": {"BOOL": True},
            "revision": {"N": "1"},
        },
    )
    client.put_item(
        TableName=names.deployments,
        Item={
            "id": {"S": DEP},
            "uri": {"S": "http://127.0.0.1:9080"},
            "use_http_11": {"BOOL": False},
            "additional_headers": {"M": {}},
            "created_at": {"N": str(CREATED_MS)},
            "min_protocol_version": {"N": "1"},
            "max_protocol_version": {"N": "1"},
            "metadata": {"M": {}},
            "digest": {"S": "0" * 64},
        },
    )
    client.put_item(
        TableName=names.services,
        Item={
            "name": {"S": "Greeter"},
            "service_type": {"S": "SERVICE"},
            "deployment_id": {"S": DEP},
            "revision": {"N": "1"},
            "handlers": {
                "L": [
                    {
                        "M": {
                            "name": {"S": "greet"},
                            "type": {"S": "SERVICE"},
                            "input": {"S": "JSON"},
                        }
                    }
                ]
            },
        },
    )


@pytest.fixture
async def api(store: DynamoStore, dynamo_client: Any) -> AsyncIterator[httpx.AsyncClient]:
    write_earlier_rows(dynamo_client, store)
    await store.write_entries(
        [
            LedgerEntry(
                id=INV,
                subscription_id=SUB,
                topic="orders",
                partition=0,
                offset=7,
                key="k",
                target="service://Greeter/greet",
                status="FAILED",
                attempts=3,
                last_error="boom",
                created_at_ms=CREATED_MS,
                updated_at_ms=CREATED_MS + 500,
                completed_at_ms=CREATED_MS + 500,
            )
        ]
    )
    conf = load_settings(None, env={"KAFKA_INGRESS_KAFKA_CLUSTERS": CLUSTERS})
    state = AdminState(settings=conf, store=store, catalog=ClusterCatalog(conf, store))
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client


def test_the_earlier_ids_are_the_same_ulids_in_restates_form() -> None:
    assert ids.parse_resource_id(SUB, "sub").legacy
    shown = ids.restate_form(SUB)
    assert shown.startswith("sub_1")
    assert len(shown) == 27
    assert ids.parse_resource_id(shown, "sub").ulid == ids.parse_resource_id(SUB, "sub").ulid
    assert ids.created_ms(SUB) == ids.created_ms(shown) == CREATED_MS


async def test_earlier_subscriptions_are_listed_in_restates_form_and_found_by_either(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    shown = ids.restate_form(SUB)
    newer = ids.subscription_id(CREATED_MS + 1)
    await store.put_subscription(
        Subscription(id=newer, cluster="local", topic="orders", service="Greeter", handler="greet")
    )
    listed = (await api.get("/subscriptions")).json()["subscriptions"]
    assert [s["id"] for s in listed] == [shown, newer]  # oldest first, by creation time
    # The consumer group is the one the subscription always had.
    assert listed[0]["options"]["group.id"] == SUB

    for name in (SUB, shown):
        got = await api.get(f"/subscriptions/{name}")
        assert got.status_code == 200, got.text
        assert got.json()["id"] == shown

    patched = await api.patch(f"/subscriptions/{shown}", json={"paused": False})
    assert patched.status_code == 200, patched.text
    stored = await store.get_subscription(SUB)
    assert stored is not None
    assert (stored.paused, stored.revision) == (False, 2)  # changed in place, under its key
    assert await store.get_subscription(shown) is None

    deleted = await api.delete(f"/subscriptions/{shown}")
    assert deleted.status_code == 202, deleted.text
    assert await store.get_subscription(SUB) is None
    assert (await api.get(f"/subscriptions/{SUB}")).status_code == 404


async def test_earlier_deployments_and_services_show_restates_form(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    shown = ids.restate_form(DEP)
    listed = (await api.get("/deployments")).json()["deployments"]
    assert [d["id"] for d in listed] == [shown]
    service = (await api.get("/services/Greeter")).json()
    assert service["deployment_id"] == shown
    for name in (DEP, shown):
        got = await api.get(f"/deployments/{name}")
        assert got.status_code == 200, got.text
        assert got.json()["id"] == shown
    removed = await api.delete(f"/deployments/{shown}", params={"force": "true"})
    assert removed.status_code == 202, removed.text
    assert await store.get_deployment(DEP) is None


async def test_earlier_invocation_rows_are_found_by_their_id_and_subscription(
    api: httpx.AsyncClient,
) -> None:
    got = await api.get(f"/invocations/{INV}")
    assert got.status_code == 200, got.text
    assert got.json()["id"] == INV
    assert got.json()["subscription_id"] == ids.restate_form(SUB)
    for name in (SUB, ids.restate_form(SUB)):
        listed = (await api.get("/invocations", params={"subscription": name})).json()
        assert [i["id"] for i in listed["invocations"]] == [INV], name


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/subscriptions/{}", "sub_14qABEEcoWcStSkhfGdFRD"),  # one character short
        ("/subscriptions/{}", "sub_24qABEEcoWcStSkhfGdFRDP"),  # codec version 2
        ("/subscriptions/{}", "dp_14qABEEcoWcStSkhfGdFRDP"),  # a deployment's ID
        ("/deployments/{}", "dp_11nGQpCRmau6ypL82KH2T-P"),
        ("/invocations/{}", "inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT7"),  # check bits
        ("/invocations/{}/kill", "inv_1jfsEiMEytec0QZRwV8dvOd9bPassQ1YT7"),
    ],
)
async def test_a_malformed_id_is_a_400_naming_it(
    api: httpx.AsyncClient, path: str, name: str
) -> None:
    method = "PATCH" if path.endswith("kill") else "GET"
    response = await api.request(method, path.format(name))
    assert response.status_code == 400, response.text
    assert name in response.json()["message"]
