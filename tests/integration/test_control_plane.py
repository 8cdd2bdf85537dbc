"""The control plane's DynamoDB budget, counted on the wire (real moto server over HTTP).

Every request the poller's or the admin API's boto3 client sends is counted by operation
(:class:`bench.dynamo_counts.DynamoCounts`, botocore's ``before-call`` hook). An idle poller
reads one item a second, whatever the number of subscriptions, and never scans; creating a
subscription costs the same requests at 10 and at 100 subscriptions.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapter import ids
from adapter.api import AdminState, ClusterCatalog, create_app
from adapter.config import load_settings
from adapter.engine.control import ControlFeed
from adapter.model import HandlerType, InputKind, ServiceType, Subscription
from adapter.store.changes import CHANGES_ID, claim_id
from adapter.store.dynamo import DynamoStore, make_client
from bench.dynamo_counts import DynamoCounts
from tests._kafka_fixtures import TopicFactory
from tests.harness import Ingress, eventually

IDLE_SUBSCRIPTIONS = 50
WINDOW_S = 10.0


@pytest.mark.kafka
@pytest.mark.timeout(300)
@pytest.mark.promise("p-control-budget")
async def test_idle_poller_makes_one_request_a_second_and_no_scan_at_50_subscriptions(
    ingress: Ingress, store: DynamoStore, topic_factory: TopicFactory
) -> None:
    await ingress.register(
        "http://127.0.0.1:9",
        "Idle",
        ServiceType.SERVICE,
        {"run": (HandlerType.SERVICE, InputKind.JSON)},
    )
    topic = await topic_factory(1)
    for _ in range(IDLE_SUBSCRIPTIONS):
        await ingress.subscribe(topic, "Idle", "run")
    ingress.limits = {"subscription_refresh_ms": 1000}  # the default
    counts = DynamoCounts().attach(store._client)
    poller = await ingress.start()

    def all_assigned() -> bool:
        runners = poller.supervisor.runners().values()
        return sum(1 for r in runners if r.partition_status()) == IDLE_SUBSCRIPTIONS

    await eventually(all_assigned, timeout=180, interval=0.5)
    assert counts.snapshot()["Scan"] >= 1  # the one full read at start

    # Steady state: each new subscription records its topic (one PutItem) and, having
    # recorded it first, reads no fence from the ledger's index; wait for all of them, then
    # for two seconds in which the poller read the change feed and nothing else.
    await eventually(
        lambda: counts.snapshot()["PutItem"] >= IDLE_SUBSCRIPTIONS, timeout=120, interval=0.5
    )
    mark = counts.snapshot()

    def settled() -> bool:
        nonlocal mark
        made, mark = counts.since(mark), counts.snapshot()
        return bool(made) and set(made) == {"GetItem"}

    await eventually(settled, timeout=120, interval=2.0)
    # One Query: the admin command queue, read once at start; none for a fence.
    assert counts.snapshot()["Query"] <= 1, "a new subscription read its fence from the index"

    before = counts.snapshot()
    t0 = time.monotonic()
    await asyncio.sleep(WINDOW_S)  # the measured window, not a synchronisation
    made = counts.since(before)
    elapsed = time.monotonic() - t0
    print(f"\nidle poller, S={IDLE_SUBSCRIPTIONS}, {elapsed:.1f}s: {dict(made)}")
    assert made["Scan"] == 0, made
    # One GetItem of the change item per second (+1 for a poll at each edge of the window).
    assert sum(made.values()) <= elapsed + 1, made
    assert set(made) <= {"GetItem"}, made


@pytest.fixture
async def admin(store: DynamoStore) -> AsyncIterator[tuple[httpx.AsyncClient, DynamoCounts]]:
    """The admin API without a poller (as deployed on Lambda), on its own counted client."""
    settings = load_settings(
        None,
        env={"KAFKA_INGRESS_KAFKA_CLUSTERS": '[{name = "plain", brokers = ["127.0.0.1:9"]}]'},
    )
    state = AdminState(settings=settings, store=store, catalog=ClusterCatalog(settings, store))
    counts = DynamoCounts().attach(store._client)
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client, counts


async def _register(store: DynamoStore) -> None:
    await Ingress("127.0.0.1:9", store, "http://unused").register(
        "http://127.0.0.1:9",
        "Greeter",
        ServiceType.SERVICE,
        {"greet": (HandlerType.SERVICE, InputKind.JSON)},
    )


async def _seed(store: DynamoStore, count: int) -> None:
    for _ in range(count):
        sub_id = ids.subscription_id()
        await store.put_subscription(
            Subscription(sub_id, "plain", f"t-{sub_id}", "Greeter", "greet", {"group.id": sub_id})
        )


async def _post(client: httpx.AsyncClient, topic: str, expect: int) -> dict[str, Any]:
    body = {"source": f"kafka://plain/{topic}", "sink": "service://Greeter/greet"}
    response = await client.post("/subscriptions", json=body)
    assert response.status_code == expect, response.text
    doc: dict[str, Any] = response.json()
    return doc


@pytest.mark.promise("p-control-create-o1")
async def test_creating_a_subscription_costs_the_same_requests_at_10_and_100_subscriptions(
    admin: tuple[httpx.AsyncClient, DynamoCounts], store: DynamoStore
) -> None:
    client, counts = admin
    await _register(store)
    before = counts.snapshot()
    await _post(client, "first", 201)
    # A table created by this version has nothing to back-fill claims for: no Scan.
    assert counts.since(before)["Scan"] == 0
    costs: dict[int, Counter[str]] = {}
    for size in (10, 100):
        await _seed(store, size - len(await store.list_subscriptions()))
        before = counts.snapshot()
        await _post(client, f"orders-{size}", 201)
        costs[size] = counts.since(before)
    print(f"\nPOST /subscriptions: {dict(costs[10])} at S=10, {dict(costs[100])} at S=100")
    assert costs[10] == costs[100]
    assert costs[100]["Scan"] == 0
    assert sum(costs[100].values()) <= 4  # cluster lookup excepted: service, write (+ retry)

    # A duplicate is found by its claim, as cheaply.
    before = counts.snapshot()
    again = await _post(client, "orders-100", 200)
    duplicate = counts.since(before)
    assert duplicate["Scan"] == 0, duplicate
    assert sum(duplicate.values()) <= 5, duplicate
    listed = [s for s in await store.list_subscriptions() if s.topic == "orders-100"]
    assert len(listed) == 1
    assert listed[0].id in ids.stored_forms(again["id"], "sub")


async def test_a_subscription_stored_before_claims_is_found_as_a_duplicate(
    admin: tuple[httpx.AsyncClient, DynamoCounts], store: DynamoStore
) -> None:
    client, _ = admin
    await _register(store)
    old_id = ids.subscription_id()
    old = Subscription(old_id, "plain", "legacy", "Greeter", "greet", {"group.id": old_id})
    await store.put_subscription(old)
    # As an earlier version stored it: no claim item, and no mark that claims are complete.
    store._client.delete_item(TableName=store.names.subscriptions, Key={"id": {"S": claim_id(old)}})
    store._client.update_item(
        TableName=store.names.subscriptions,
        Key={"id": {"S": CHANGES_ID}},
        UpdateExpression="REMOVE claims",
    )
    doc = await _post(client, "legacy", 200)
    assert old_id in ids.stored_forms(doc["id"], "sub")
    assert [s.id for s in await store.list_subscriptions()] == [old_id]


async def test_concurrent_creations_of_one_consumer_make_one_subscription(
    admin: tuple[httpx.AsyncClient, DynamoCounts], store: DynamoStore
) -> None:
    client, _ = admin
    await _register(store)
    body = {"source": "kafka://plain/race", "sink": "service://Greeter/greet"}
    responses = await asyncio.gather(*(client.post("/subscriptions", json=body) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await store.list_subscriptions()) == 1


async def test_pausing_and_deleting_a_subscription_read_no_table(
    admin: tuple[httpx.AsyncClient, DynamoCounts], store: DynamoStore
) -> None:
    client, counts = admin
    await _register(store)
    await _seed(store, 50)
    sub_id = (await _post(client, "orders", 201))["id"]
    before = counts.snapshot()
    paused = await client.patch(f"/subscriptions/{sub_id}", json={"paused": True})
    assert paused.status_code == 200, paused.text
    deleted = await client.delete(f"/subscriptions/{sub_id}")
    assert deleted.status_code == 202, deleted.text
    made = counts.since(before)
    assert made["Scan"] == 0, made
    assert made["TransactWriteItems"] == 2, made  # each change with its feed entry
    assert sum(made.values()) <= 8, made
    # The consumer is free again: the same source and sink can be subscribed anew.
    assert (await _post(client, "orders", 201))["id"] != sub_id


async def test_moving_a_subscription_to_a_group_another_one_uses_is_a_conflict(
    admin: tuple[httpx.AsyncClient, DynamoCounts], store: DynamoStore
) -> None:
    client, _ = admin
    await _register(store)
    body = {"source": "kafka://plain/orders", "sink": "service://Greeter/greet"}
    first = await client.post("/subscriptions", json={**body, "options": {"group.id": "g1"}})
    second = await client.post("/subscriptions", json={**body, "options": {"group.id": "g2"}})
    assert (first.status_code, second.status_code) == (201, 201)
    moved = await client.patch(
        f"/subscriptions/{second.json()['id']}", json={"options": {"group.id": "g1"}}
    )
    assert moved.status_code == 409, moved.text
    assert "g1" in moved.json()["message"]
    # Its own old group is free once it moves elsewhere.
    away = await client.patch(
        f"/subscriptions/{second.json()['id']}", json={"options": {"group.id": "g3"}}
    )
    assert away.status_code == 200, away.text
    again = await client.post("/subscriptions", json={**body, "options": {"group.id": "g2"}})
    assert again.status_code == 201, again.text


async def test_a_following_poller_sees_every_change_of_two_writers_key_by_key(
    store: DynamoStore, moto_server: Any
) -> None:
    """Two admin processes write in turns while a poller follows the feed. Each writer's
    cached version is stale after the other's write, so every write but the first also goes
    through the refused-condition path (read the version again, retry). Turns, not true
    concurrency: moto applies a transaction item by item and rolls a refused one back by
    restoring whole tables, so concurrent transactions there can undo each other (DynamoDB's
    are atomic); concurrent creations are covered above."""
    writers = [
        DynamoStore(make_client(moto_server.endpoint_url, "us-east-1"), store.names)
        for _ in range(2)
    ]
    feed = ControlFeed(store)
    await feed.poll()
    made: list[str] = []
    try:
        for turn in range(40):
            writer = writers[turn % 2]
            sub_id = ids.subscription_id()
            await writer.put_subscription(
                Subscription(sub_id, "plain", f"t-{sub_id}", "S", "h", {"group.id": sub_id})
            )
            made.append(sub_id)
            if turn % 3 == 2:
                assert await writer.delete_subscription(made.pop(0))
            if turn % 5 == 4:
                await feed.poll()
    finally:
        for writer in writers:
            writer._client.close()
    await feed.poll()
    assert {s.id for s in feed.subscriptions} == set(made)
    assert {s.id for s in await store.list_subscriptions()} == set(made)
    assert (await store.read_changes()).version == 40 + 40 // 3
    assert feed.full_reads == 1, "the follower caught up key by key"
