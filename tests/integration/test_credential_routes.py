"""Stored credentials go only where they were given for (real admin server, moto).

A token holder cannot read a secret back, so they must not be able to send it elsewhere
either: not by naming other brokers or another token endpoint in a subscription (which would
inherit the cluster's secrets), not by changing a cluster's brokers while writing back its
``***``. Also: a request with a flood of unknown option names is answered quickly and briefly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapter.store.dynamo import DynamoStore
from tests._admin_api import authorised_client, call, put_greeter

TOKEN = "credential-routes-token-0123456789"
PASSWORD = "stored-pw-Rk83x"
CLIENT_SECRET = "stored-client-secret-Jq51"

SASL = {
    "bootstrap.servers": "127.0.0.1:19092",
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "alice",
    "sasl.password": PASSWORD,
}
OIDC = {
    "bootstrap.servers": "127.0.0.1:19092",
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.oauthbearer.method": "oidc",
    "sasl.oauthbearer.client.id": "ingress",
    "sasl.oauthbearer.client.secret": CLIENT_SECRET,
    "sasl.oauthbearer.token.endpoint.url": "http://127.0.0.1:9/token",
}


@pytest.fixture
async def api(store: DynamoStore) -> AsyncIterator[httpx.AsyncClient]:
    async with authorised_client(store, TOKEN) as client:
        yield client


async def _greeter(store: DynamoStore) -> None:
    await put_greeter(store)


def _subscription(cluster: str, options: dict[str, str]) -> dict[str, Any]:
    return {"source": f"kafka://{cluster}/t", "sink": "service://Greeter/greet", "options": options}


@pytest.mark.promise("p-sec-credentials-stay")
async def test_subscription_cannot_send_the_clusters_password_to_other_brokers(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _greeter(store)
    await call(api, "POST", "/kafka-clusters", {"name": "c1", "properties": SASL}, 201)
    evil = {
        "bootstrap.servers": "evil.example:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
    }
    refused = await call(api, "POST", "/subscriptions", _subscription("c1", evil), 400)
    assert "'bootstrap.servers'" in refused["message"]
    assert "sasl.password" in refused["message"]
    assert PASSWORD not in refused["message"]
    assert await store.list_subscriptions() == []
    # With credentials of its own it may.
    own = {**evil, "sasl.username": "mallory", "sasl.password": "mallory-pw-1"}
    created = await call(api, "POST", "/subscriptions", _subscription("c1", own), 201)
    # ...but then cannot point them elsewhere while keeping them unnamed.
    patch = {"options": {"bootstrap.servers": "other.example:9092"}}
    refused = await call(api, "PATCH", f"/subscriptions/{created['id']}", patch, 400)
    assert "sasl.password" in refused["message"]


@pytest.mark.promise("p-sec-credentials-stay")
async def test_subscription_cannot_send_the_client_secret_to_another_token_endpoint(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _greeter(store)
    await call(api, "POST", "/kafka-clusters", {"name": "c2", "properties": OIDC}, 201)
    evil = {"sasl.oauthbearer.token.endpoint.url": "http://evil.example/token"}
    refused = await call(api, "POST", "/subscriptions", _subscription("c2", evil), 400)
    assert "'sasl.oauthbearer.token.endpoint.url'" in refused["message"]
    assert "sasl.oauthbearer.client.secret" in refused["message"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"bootstrap.servers": "evil.example:9092"}, "bootstrap.servers"),
        ({"metadata.broker.list": "evil.example:9092"}, "metadata.broker.list"),
        (
            {"sasl.oauthbearer.token.endpoint.url": "http://evil.example/token"},
            "sasl.oauthbearer.token.endpoint.url",
        ),
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_update_keeps_no_masked_secret_for_a_new_address(
    api: httpx.AsyncClient, store: DynamoStore, change: dict[str, str], named: str
) -> None:
    properties = {**SASL, **OIDC, "sasl.mechanism": "PLAIN"}
    await call(api, "POST", "/kafka-clusters", {"name": "c3", "properties": properties}, 201)
    shown = (await api.get("/kafka-clusters/c3")).json()["properties"]
    moved = dict(shown)
    if named == "metadata.broker.list":
        moved.pop("bootstrap.servers", None)
    refused = await call(
        api, "PATCH", "/kafka-clusters/c3", {"properties": {**moved, **change}}, 400
    )
    assert f"'{named}'" in refused["message"]
    (stored,) = [c for c in await store.list_clusters() if c["name"] == "c3"]
    assert stored["properties"] == properties
    # Written back unchanged, the secrets are still kept.
    await call(api, "PATCH", "/kafka-clusters/c3", {"properties": shown}, 200)


async def test_token_endpoint_on_the_metadata_address_is_refused(
    api: httpx.AsyncClient,
) -> None:
    properties = {**OIDC, "sasl.oauthbearer.token.endpoint.url": "http://169.254.169.254/x"}
    refused = await call(
        api, "POST", "/kafka-clusters", {"name": "c4", "properties": properties}, 400
    )
    assert "sasl.oauthbearer.token.endpoint.url" in refused["message"]
    assert "metadata" in refused["message"]


async def test_thirty_thousand_unknown_options_answered_quickly_and_briefly(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _greeter(store)
    options = {f"sesion.timeout.m{i}": "1" for i in range(30_000)}
    started = time.monotonic()
    response = await api.post("/subscriptions", json=_subscription("local", options))
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 8_000
    assert "more" in response.json()["message"]
    assert elapsed < 2.0
