"""A cluster update does not take its subscriptions' own secrets elsewhere (real server, moto).

A subscription may give secret options of its own (``sasl.password`` …) while inheriting the
cluster's brokers, token endpoint and TLS settings. A token holder who could then point the
cluster at their own brokers or endpoint, or weaken its TLS, would receive those secrets: such
an update (``PATCH``, ``POST /apply``, or creating again a cluster deleted with ``force``) is
refused with a 400 naming the subscriptions, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapter.store.dynamo import DynamoStore
from tests._admin_api import authorised_client, call, put_greeter

TOKEN = "cluster-credential-moves-token-0123"
CLUSTER_PW = "cluster-pw-Hb27q"
OWN_PW = "own-pw-Xv49m"
OWN_CLIENT_SECRET = "own-client-secret-Lp83"

CLUSTER = {
    "bootstrap.servers": "127.0.0.1:19092",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "ingress",
    "sasl.password": CLUSTER_PW,
}
OWN = {"sasl.username": "team-a", "sasl.password": OWN_PW}
OIDC = {
    "bootstrap.servers": "127.0.0.1:19092",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.oauthbearer.method": "oidc",
    "sasl.oauthbearer.client.id": "ingress",
    "sasl.oauthbearer.client.secret": "cluster-client-secret-Tz61",
    "sasl.oauthbearer.token.endpoint.url": "http://127.0.0.1:9/token",
}
EVIL_BROKERS = {"bootstrap.servers": "evil.example:9092"}
# The TLS settings CLUSTER has (two of them by default), as a subscription sets them itself.
OWN_TLS = {
    "security.protocol": "SASL_SSL",
    "enable.ssl.certificate.verification": "true",
    "ssl.endpoint.identification.algorithm": "https",
}


@pytest.fixture
async def api(store: DynamoStore) -> AsyncIterator[httpx.AsyncClient]:
    await put_greeter(store)
    async with authorised_client(store, TOKEN) as client:
        yield client


async def _cluster(api: httpx.AsyncClient, properties: dict[str, str]) -> None:
    await call(api, "POST", "/kafka-clusters", {"name": "c1", "properties": properties}, 201)


async def _subscription(api: httpx.AsyncClient, options: dict[str, str], topic: str = "t") -> str:
    body = {"source": f"kafka://c1/{topic}", "sink": "service://Greeter/greet", "options": options}
    return str((await call(api, "POST", "/subscriptions", body, 201))["id"])


async def _stored(store: DynamoStore) -> dict[str, Any]:
    row = await store.get_cluster("c1")
    assert row is not None
    return dict(row["properties"])


def _no_secret_in(message: str) -> None:
    for secret in (CLUSTER_PW, OWN_PW, OWN_CLIENT_SECRET):
        assert secret not in message


@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_update_cannot_send_a_subscriptions_own_password_to_other_brokers(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, CLUSTER)
    sub = await _subscription(api, OWN)
    revision = (await call(api, "GET", f"/subscriptions/{sub}", None, 200))["revision"]
    moved = {"properties": {**CLUSTER, **EVIL_BROKERS}}
    refused = await call(api, "PATCH", "/kafka-clusters/c1", moved, 400)
    message = refused["message"]
    assert sub in message
    assert "'bootstrap.servers'" in message
    assert "sasl.password" in message
    assert "own bootstrap.servers" in message  # says what to do
    _no_secret_in(message)
    assert await _stored(store) == CLUSTER
    assert (await call(api, "GET", f"/subscriptions/{sub}", None, 200))["revision"] == revision
    # Once the subscription holds no secret of its own, the cluster may move.
    unset = {"options": {"sasl.username": None, "sasl.password": None}}
    await call(api, "PATCH", f"/subscriptions/{sub}", unset, 200)
    await call(api, "PATCH", "/kafka-clusters/c1", moved, 200)
    assert (await _stored(store))["bootstrap.servers"] == "evil.example:9092"


@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_update_moves_brokers_under_subscriptions_naming_their_own(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, CLUSTER)
    # Its own brokers, its own password: the cluster's brokers are not where it sends them.
    await _subscription(api, {**OWN, "bootstrap.servers": "127.0.0.1:19093"})
    await _subscription(api, {}, topic="u")  # inherits everything, holds no secret
    await call(api, "PATCH", "/kafka-clusters/c1", {"properties": {**CLUSTER, **EVIL_BROKERS}}, 200)
    # An update that moves nothing works whatever the subscriptions hold.
    await _subscription(api, OWN, topic="v")
    shown = (await call(api, "GET", "/kafka-clusters/c1", None, 200))["properties"]
    await call(api, "PATCH", "/kafka-clusters/c1", {"properties": {**shown, "client.id": "x"}}, 200)
    assert (await _stored(store))["client.id"] == "x"


@pytest.mark.parametrize(
    "weakening",
    [
        {"security.protocol": "SASL_PLAINTEXT"},
        {"enable.ssl.certificate.verification": "false"},
        {"ssl.endpoint.identification.algorithm": "none"},
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_update_cannot_weaken_the_tls_a_subscriptions_own_password_travels_under(
    api: httpx.AsyncClient, store: DynamoStore, weakening: dict[str, str]
) -> None:
    await _cluster(api, CLUSTER)
    sub = await _subscription(api, OWN)
    weaker = {"properties": {**CLUSTER, **weakening}}
    refused = await call(api, "PATCH", "/kafka-clusters/c1", weaker, 400)
    message = refused["message"]
    (option,) = weakening
    assert sub in message
    assert f"'{option}'" in message
    assert "sasl.password" in message
    _no_secret_in(message)
    assert await _stored(store) == CLUSTER
    # A subscription that sets the option itself keeps its protection: not in the way.
    await call(api, "PATCH", f"/subscriptions/{sub}", {"options": OWN_TLS}, 200)
    await call(api, "PATCH", "/kafka-clusters/c1", weaker, 200)
    assert await _stored(store) == {**CLUSTER, **weakening}


@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_update_cannot_send_a_subscriptions_own_client_secret_to_another_endpoint(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, OIDC)
    own = {"sasl.oauthbearer.client.id": "team-a", "sasl.oauthbearer.client.secret": OWN_PW}
    sub = await _subscription(api, own)
    moved = {"properties": {**OIDC, "sasl.oauthbearer.token.endpoint.url": "http://evil.example/t"}}
    refused = await call(api, "PATCH", "/kafka-clusters/c1", moved, 400)
    message = refused["message"]
    assert sub in message
    assert "'sasl.oauthbearer.token.endpoint.url'" in message
    assert "sasl.oauthbearer.client.secret" in message
    _no_secret_in(message)
    assert await _stored(store) == OIDC
    # Naming its own endpoint (the one it uses now), the subscription is not in the way. (A
    # PATCH that names an address gives the secrets sent there again.)
    endpoint = {"sasl.oauthbearer.token.endpoint.url": OIDC["sasl.oauthbearer.token.endpoint.url"]}
    await call(api, "PATCH", f"/subscriptions/{sub}", {"options": {**endpoint, **own}}, 200)
    await call(api, "PATCH", "/kafka-clusters/c1", moved, 200)


@pytest.mark.promise("p-sec-credentials-stay")
async def test_refusal_names_at_most_ten_subscriptions(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, CLUSTER)
    subs = [await _subscription(api, OWN, topic=f"t{i}") for i in range(12)]
    moved = {"properties": {**CLUSTER, **EVIL_BROKERS}}
    message = (await call(api, "PATCH", "/kafka-clusters/c1", moved, 400))["message"]
    assert sum(sub in message for sub in subs) == 10
    assert "and 2 more" in message
    assert len(message) < 2_000


@pytest.mark.promise("p-sec-credentials-stay")
async def test_apply_cannot_move_a_cluster_under_subscriptions_own_secrets(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, CLUSTER)
    sub = await _subscription(api, OWN)
    for properties, force in (
        ({**CLUSTER, **EVIL_BROKERS}, True),  # forced past the consumer-position refusal
        ({**CLUSTER, "security.protocol": "SASL_PLAINTEXT"}, False),
    ):
        document = {"clusters": [{"name": "c1", "properties": properties}]}
        body = {"document": document, "force": force}
        refused = await call(api, "POST", "/apply", body, 400)
        assert sub in refused["message"]
        assert "sasl.password" in refused["message"]
        assert refused["applied"] == []
        _no_secret_in(str(refused))
        assert await _stored(store) == CLUSTER


@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_created_again_does_not_take_over_subscriptions_own_secrets(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    # Deleted with force, the cluster leaves its subscriptions without one; a cluster of the
    # same name is not known to be the same brokers.
    await _cluster(api, CLUSTER)
    sub = await _subscription(api, OWN)
    bare = await _subscription(api, {}, topic="u")
    response = await api.delete("/kafka-clusters/c1", params={"force": "true"})
    assert response.status_code == 202, response.text
    body = {"name": "c1", "properties": {**CLUSTER, **EVIL_BROKERS}}
    refused = await call(api, "POST", "/kafka-clusters", body, 400)
    assert sub in refused["message"]
    assert bare not in refused["message"]
    assert "sasl.password" in refused["message"]
    _no_secret_in(refused["message"])
    assert await store.get_cluster("c1") is None
    response = await api.delete(f"/subscriptions/{sub}")
    assert response.status_code == 202, response.text
    await call(api, "POST", "/kafka-clusters", body, 201)
