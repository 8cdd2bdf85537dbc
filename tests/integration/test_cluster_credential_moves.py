"""A cluster update does not take its subscriptions' own secrets elsewhere (real server, moto).

A subscription may give secret options of its own (``sasl.password`` …) while inheriting the
cluster's brokers, token endpoint and TLS settings. A token holder who could then point the
cluster at their own brokers or endpoint, or weaken its TLS, would receive those secrets: such
an update (``PATCH``, ``POST /apply``, or creating again a cluster deleted with ``force``) is
refused with a 400 naming the subscriptions, and nothing is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import boto3
import httpx
import pytest

from adapter.api import AdminState, ClusterCatalog
from adapter.api.checked_writes import WRITE_TRIES
from adapter.api.server import AdminServer, admin_state
from adapter.config import load_settings
from adapter.kafka.options import ClientOptions
from adapter.local.moto import MotoServer
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
OWN = {"sasl.username": "moves-user", "sasl.password": OWN_PW}
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
EVIL_CLUSTER = {**CLUSTER, **EVIL_BROKERS}
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
    own = {"sasl.oauthbearer.client.id": "moves-user", "sasl.oauthbearer.client.secret": OWN_PW}
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


# A subscription PATCH judged by where its credentials go in effect (the cluster's options
# overlaid with the subscription's), before and after.

PEM = "-----BEGIN CERTIFICATE-----\nMIIBevil\n-----END CERTIFICATE-----"


async def _options(api: httpx.AsyncClient, sub: str) -> dict[str, str]:
    return dict((await call(api, "GET", f"/subscriptions/{sub}", None, 200))["options"])


@pytest.mark.promise("p-sec-credentials-stay")
async def test_removing_its_own_brokers_does_not_send_a_subscriptions_password_to_the_clusters(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    # Step 1 is allowed: the subscription names its own brokers, so the cluster's move does
    # not take its password along. Step 2 would: its brokers become the cluster's new ones.
    await _cluster(api, CLUSTER)
    sub = await _subscription(api, {**OWN, "bootstrap.servers": "127.0.0.1:19093"})
    await call(api, "PATCH", "/kafka-clusters/c1", {"properties": {**CLUSTER, **EVIL_BROKERS}}, 200)
    before = await _options(api, sub)
    removed = {"options": {"bootstrap.servers": None}}
    refused = await call(api, "PATCH", f"/subscriptions/{sub}", removed, 400)
    message = refused["message"]
    assert "'bootstrap.servers'" in message
    assert "sasl.password" in message
    _no_secret_in(message)
    assert await _options(api, sub) == before
    # Given again with the removal, the password is one meant for the new brokers.
    await call(
        api, "PATCH", f"/subscriptions/{sub}", {"options": {**removed["options"], **OWN}}, 200
    )


@pytest.mark.promise("p-sec-credentials-stay")
async def test_removing_its_own_token_endpoint_does_not_send_its_client_secret_to_the_clusters(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, OIDC)
    own = {
        "sasl.oauthbearer.client.id": "moves-user",
        "sasl.oauthbearer.client.secret": OWN_CLIENT_SECRET,
        "sasl.oauthbearer.token.endpoint.url": OIDC["sasl.oauthbearer.token.endpoint.url"],
    }
    sub = await _subscription(api, own)
    evil = {"sasl.oauthbearer.token.endpoint.url": "http://evil.example/t"}
    await call(api, "PATCH", "/kafka-clusters/c1", {"properties": {**OIDC, **evil}}, 200)
    before = await _options(api, sub)
    removed = {"options": {"sasl.oauthbearer.token.endpoint.url": None}}
    refused = await call(api, "PATCH", f"/subscriptions/{sub}", removed, 400)
    assert "'sasl.oauthbearer.token.endpoint.url'" in refused["message"]
    assert "sasl.oauthbearer.client.secret" in refused["message"]
    _no_secret_in(refused["message"])
    assert await _options(api, sub) == before


@pytest.mark.promise("p-sec-credentials-stay")
async def test_removing_its_own_brokers_equal_to_the_clusters_keeps_its_password(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await _cluster(api, CLUSTER)
    sub = await _subscription(api, {**OWN, "bootstrap.servers": CLUSTER["bootstrap.servers"]})
    await call(api, "PATCH", f"/subscriptions/{sub}", {"options": {"bootstrap.servers": None}}, 200)
    assert (await _options(api, sub))["sasl.password"] == "***"


@pytest.mark.parametrize(
    ("cluster", "own", "patch"),
    [
        # The TLS it inherits, taken away by a protocol of its own.
        (CLUSTER, {}, {"security.protocol": "SASL_PLAINTEXT"}),
        # Its own TLS removed: it falls back to the cluster's clear text.
        (
            {**CLUSTER, "security.protocol": "SASL_PLAINTEXT"},
            {"security.protocol": "SASL_SSL"},
            {"security.protocol": None},
        ),
        # librdkafka's own spelling of false.
        (CLUSTER, {}, {"enable.ssl.certificate.verification": "f"}),
        (CLUSTER, {}, {"enable.ssl.certificate.verification": "F"}),
        # Another trust anchor is as good as no verification.
        (CLUSTER, {}, {"ssl.ca.pem": PEM}),
        # SCRAM never sends the password; PLAIN without TLS sends it in clear.
        (
            {
                **CLUSTER,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
            },
            {},
            {"sasl.mechanism": "PLAIN"},
        ),
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
async def test_subscription_patch_cannot_weaken_the_protection_its_own_password_travels_under(
    api: httpx.AsyncClient,
    store: DynamoStore,
    cluster: dict[str, str],
    own: dict[str, str],
    patch: dict[str, str | None],
) -> None:
    await _cluster(api, cluster)
    # Its own user name and password: the cluster's are not inherited, not in question.
    sub = await _subscription(api, {**own, **OWN})
    before = await _options(api, sub)
    refused = await call(api, "PATCH", f"/subscriptions/{sub}", {"options": patch}, 400)
    message = refused["message"]
    (option,) = patch
    assert f"'{option}'" in message
    assert "weakens" in message
    assert "sasl.password" in message
    _no_secret_in(message)
    assert await _options(api, sub) == before
    # With the secrets given again, it is the subscription's choice.
    await call(api, "PATCH", f"/subscriptions/{sub}", {"options": {**patch, **OWN}}, 200)


@pytest.mark.parametrize(
    ("cluster", "change"),
    [
        (CLUSTER, {"enable.ssl.certificate.verification": "f"}),
        (CLUSTER, {"ssl.ca.pem": PEM}),
        (
            {**CLUSTER, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"},
            {"sasl.mechanism": "PLAIN"},
        ),
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
async def test_cluster_update_cannot_weaken_protection_by_spelling_trust_anchor_or_mechanism(
    api: httpx.AsyncClient, store: DynamoStore, cluster: dict[str, str], change: dict[str, str]
) -> None:
    await _cluster(api, cluster)
    (option,) = change
    # Its own secrets would travel under it.
    sub = await _subscription(api, OWN)
    refused = await call(
        api, "PATCH", "/kafka-clusters/c1", {"properties": {**cluster, **change}}, 400
    )
    assert sub in refused["message"]
    assert f"'{option}'" in refused["message"]
    _no_secret_in(refused["message"])
    assert await _stored(store) == cluster
    # The cluster's own password, written back masked, is not kept either.
    response = await api.delete(f"/subscriptions/{sub}")
    assert response.status_code == 202, response.text
    shown = (await call(api, "GET", "/kafka-clusters/c1", None, 200))["properties"]
    refused = await call(
        api, "PATCH", "/kafka-clusters/c1", {"properties": {**shown, **change}}, 400
    )
    assert f"'{option}'" in refused["message"]
    assert "sasl.password" in refused["message"]
    _no_secret_in(refused["message"])
    assert await _stored(store) == cluster


def _before(
    monkeypatch: pytest.MonkeyPatch,
    store: DynamoStore,
    method: str,
    action: Callable[[], Awaitable[object]],
    *,
    every_call: bool = False,
) -> list[int]:
    """Run ``action`` -- another request coming in between -- before ``store.<method>``'s
    first call (every call with ``every_call``). Returns the calls, one entry each."""
    original = getattr(store, method)
    calls: list[int] = []

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)  # first: the action may call the method itself
        if every_call or len(calls) == 1:
            await action()
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, method, wrapped)
    return calls


class TestConcurrentChanges:
    """Each side reads the other, then writes itself; a write made after another admin write
    came in between is checked again (adapter/api/checked_writes.py)."""

    @pytest.mark.promise("p-sec-credentials-stay")
    async def test_a_subscription_created_between_a_cluster_updates_check_and_write_is_seen(
        self, api: httpx.AsyncClient, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await _cluster(api, CLUSTER)
        created: list[str] = []

        async def a_subscription_arrives() -> None:  # after the update's first check
            created.append(await _subscription(api, OWN))

        _before(monkeypatch, store, "replace_cluster", a_subscription_arrives)
        moved = {"properties": {**CLUSTER, **EVIL_BROKERS}}
        refused = await call(api, "PATCH", "/kafka-clusters/c1", moved, 400)
        assert created[0] in refused["message"]
        _no_secret_in(refused["message"])
        assert await _stored(store) == CLUSTER

    @pytest.mark.promise("p-sec-credentials-stay")
    async def test_a_cluster_moved_while_a_subscription_is_created_refuses_its_secrets(
        self, api: httpx.AsyncClient, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await _cluster(api, CLUSTER)
        # No subscription holds a secret yet: the move is allowed.
        _before(monkeypatch, store, "create_subscription", lambda: _move(api))
        body = {"source": "kafka://c1/t", "sink": "service://Greeter/greet", "options": OWN}
        refused = await call(api, "POST", "/subscriptions", body, 409)
        assert "'bootstrap.servers'" in refused["message"]
        assert "sasl.password" in refused["message"]
        _no_secret_in(refused["message"])
        assert await store.list_subscriptions() == []

    @pytest.mark.promise("p-sec-credentials-stay")
    async def test_a_cluster_moved_while_a_subscription_takes_a_secret_refuses_it(
        self, api: httpx.AsyncClient, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await _cluster(api, CLUSTER)
        sub = await _subscription(api, {})

        async def the_cluster_is_written() -> None:
            # The cluster update's own write, before it bumps its subscriptions' revisions
            # (which would refuse this write on its own).
            row = await store.get_cluster("c1")
            assert row is not None
            await store.replace_cluster({**row, "properties": EVIL_CLUSTER})

        _before(monkeypatch, store, "update_subscription", the_cluster_is_written)
        refused = await call(api, "PATCH", f"/subscriptions/{sub}", {"options": OWN}, 409)
        assert "sasl.password" in refused["message"]
        stored = await store.get_subscription(sub)
        assert stored is not None
        assert "sasl.password" not in stored.options

    async def test_a_write_that_other_writes_keep_overtaking_gives_up_with_a_409(
        self, api: httpx.AsyncClient, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await _cluster(api, CLUSTER)
        # Another admin write between the check and this one, every time.
        tries = _before(
            monkeypatch, store, "replace_cluster", lambda: put_greeter(store), every_call=True
        )
        # A move is guarded even with no subscription holding secrets: one may come.
        refused = await call(api, "PATCH", "/kafka-clusters/c1", {"properties": EVIL_CLUSTER}, 409)
        assert "kept changing" in refused["message"]
        assert len(tries) == WRITE_TRIES
        assert await _stored(store) == CLUSTER

    async def test_writes_that_move_no_secret_are_not_held_up_by_unrelated_ones(
        self, api: httpx.AsyncClient, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Every admin write moves the change feed's version (commands, other clusters):
        # a pause, or a cluster change of neither address nor protection, is not guarded.
        await _cluster(api, CLUSTER)
        sub = await _subscription(api, OWN)
        for method in ("update_subscription", "replace_cluster"):
            _before(monkeypatch, store, method, lambda: put_greeter(store), every_call=True)
        await call(api, "PATCH", f"/subscriptions/{sub}", {"paused": True}, 200)
        await call(api, "PATCH", f"/subscriptions/{sub}", {"options": {"client.id": "a"}}, 200)
        renamed = {"properties": {**CLUSTER, "client.id": "renamed"}}
        await call(api, "PATCH", "/kafka-clusters/c1", renamed, 200)

    @pytest.mark.promise("p-sec-credentials-stay")
    async def test_a_cluster_moved_before_a_subscription_create_checks_its_handler_is_seen(
        self, api: httpx.AsyncClient, store: DynamoStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The first read of the cluster is what the request's secrets were given for, even
        # when the cluster moves while the rest of the request is checked.
        await _cluster(api, CLUSTER)
        _before(monkeypatch, store, "get_service", lambda: _move(api))
        body = {"source": "kafka://c1/t", "sink": "service://Greeter/greet", "options": OWN}
        await call(api, "POST", "/subscriptions", body, 409)
        assert await store.list_subscriptions() == []


async def _move(api: httpx.AsyncClient) -> None:
    """Another request moves the cluster to other brokers."""
    await call(api, "PATCH", "/kafka-clusters/c1", {"properties": EVIL_CLUSTER}, 200)


class TestConnectingReadsOneMoment:
    """The routes that connect to Kafka themselves (an offset reset, group lag, a record's
    preview) take the subscription's options and its cluster's from one moment: a
    subscription read before another request took its secret away and moved the cluster
    would otherwise send that secret to the cluster's new brokers."""

    @pytest.fixture
    async def admin(
        self, store: DynamoStore, moto_server: MotoServer
    ) -> AsyncIterator[tuple[httpx.AsyncClient, AdminState, str]]:
        """The API, its state, and a subscription giving its own password on cluster c1."""
        await put_greeter(store)
        env = {
            "KAFKA_INGRESS_KAFKA_CLUSTERS": '[{name="local", brokers=["127.0.0.1:19092"]}]',
            "KAFKA_INGRESS_ADMIN_TOKEN": TOKEN,
            # Secret references are fetched from the moto server's Secrets Manager.
            "KAFKA_INGRESS_DYNAMODB_ENDPOINT_URL": moto_server.endpoint_url,
        }
        settings = load_settings(None, env=env)
        state = admin_state(settings, store, ClusterCatalog(settings, store))
        # No change signals: their connection reads the cluster too, at moments of their own.
        state.signals = None
        server = AdminServer(state, "127.0.0.1:0")
        await server.start()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=30) as client:
                await _cluster(client, CLUSTER)
                yield client, state, await _subscription(client, OWN)
        finally:
            await server.stop()

    @staticmethod
    def _secret_taken_and_cluster_moved(
        api: httpx.AsyncClient, sub: str
    ) -> Callable[[], Awaitable[None]]:
        async def other_requests() -> None:
            unset = {"options": {"sasl.username": None, "sasl.password": None}}
            await call(api, "PATCH", f"/subscriptions/{sub}", unset, 200)
            await _move(api)

        return other_requests

    @pytest.mark.promise("p-sec-credentials-stay")
    async def test_an_offset_reset_does_not_send_a_removed_secret_to_the_moved_cluster(
        self,
        admin: tuple[httpx.AsyncClient, AdminState, str],
        store: DynamoStore,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        api, state, sub = admin
        # Paused already (as before a planned reset): the reset writes nothing itself that
        # another request's change would refuse.
        await call(api, "PATCH", f"/subscriptions/{sub}", {"paused": True}, 200)
        connected = self._capture_resets(state)
        # The reset has read the subscription (with its password); before it reads the
        # cluster, other requests take the password away and move the cluster.
        _before(monkeypatch, store, "get_cluster", self._secret_taken_and_cluster_moved(api, sub))
        await call(api, "POST", f"/subscriptions/{sub}/reset", {"to": "earliest"}, 200)
        (options,) = connected
        assert options.bootstrap_servers == ["evil.example:9092"]
        assert options.security.sasl_password == CLUSTER_PW  # the cluster's own, not OWN_PW

    @pytest.mark.promise("p-sec-credentials-stay")
    async def test_lag_and_preview_do_not_send_a_removed_secret_to_the_moved_cluster(
        self,
        admin: tuple[httpx.AsyncClient, AdminState, str],
        store: DynamoStore,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        api, state, sub = admin
        read = await store.get_subscription(sub)  # what the route read first
        assert read is not None
        _before(monkeypatch, store, "get_cluster", self._secret_taken_and_cluster_moved(api, sub))
        options = await state.client_options(read.cluster, read.id)
        assert options.bootstrap_servers == ["evil.example:9092"]
        assert options.security.sasl_password == CLUSTER_PW
        # And with nothing in between, the subscription's own password as stored.
        await call(api, "PATCH", f"/subscriptions/{sub}", {"options": OWN}, 200)
        moved_back = {"properties": CLUSTER}
        await call(api, "PATCH", "/kafka-clusters/c1", moved_back, 400)  # its secret: refused
        options = await state.client_options(read.cluster, read.id)
        assert options.security.sasl_password == OWN_PW

    @staticmethod
    def _capture_resets(state: AdminState) -> list[ClientOptions]:
        connected: list[ClientOptions] = []

        async def reset(options: ClientOptions, topic: str, to: Any, *, timeout_s: float) -> Any:
            connected.append(options)
            return {(topic, 0): 0}

        state.reset_offsets = reset
        return connected

    async def test_an_offset_reset_resumes_a_subscription_whose_cluster_changed_meanwhile(
        self, admin: tuple[httpx.AsyncClient, AdminState, str]
    ) -> None:
        # A cluster change moves its subscriptions' revisions (to restart them) and nothing
        # else of theirs: the subscription the reset paused is resumed after it.
        api, state, sub = admin
        connected = self._capture_resets(state)
        reset = state.reset_offsets
        assert reset is not None

        async def reset_while_the_cluster_changes(*args: Any, **kwargs: Any) -> Any:
            renamed = {"properties": {**CLUSTER, "client.id": "renamed"}}
            await call(api, "PATCH", "/kafka-clusters/c1", renamed, 200)
            return await reset(*args, **kwargs)

        state.reset_offsets = reset_while_the_cluster_changes
        await call(api, "POST", f"/subscriptions/{sub}/reset", {"to": "earliest"}, 200)
        assert len(connected) == 1
        assert (await call(api, "GET", f"/subscriptions/{sub}", None, 200))["paused"] is False

    async def test_an_offset_reset_leaves_paused_a_subscription_whose_brokers_moved_meanwhile(
        self, admin: tuple[httpx.AsyncClient, AdminState, str]
    ) -> None:
        # The offsets were reset on the brokers it had; resumed on others, it would consume
        # from positions nobody reset. Paused, it shows that the reset needs doing again.
        api, state, holder = admin
        unset = {"options": {"sasl.username": None, "sasl.password": None}}
        await call(api, "PATCH", f"/subscriptions/{holder}", unset, 200)  # now it may move
        sub = await _subscription(api, {}, topic="plain")
        self._capture_resets(state)
        reset = state.reset_offsets
        assert reset is not None

        async def reset_while_the_cluster_moves(*args: Any, **kwargs: Any) -> Any:
            await _move(api)
            return await reset(*args, **kwargs)

        state.reset_offsets = reset_while_the_cluster_moves
        await call(api, "POST", f"/subscriptions/{sub}/reset", {"to": "earliest"}, 200)
        assert (await call(api, "GET", f"/subscriptions/{sub}", None, 200))["paused"] is True

    async def test_an_offset_reset_that_cannot_read_a_referenced_secret_pauses_nothing(
        self, admin: tuple[httpx.AsyncClient, AdminState, str], moto_server: MotoServer
    ) -> None:
        api, state, _ = admin
        name = f"reset/{uuid.uuid4().hex[:8]}"
        secrets = boto3.client(
            "secretsmanager", endpoint_url=moto_server.endpoint_url, region_name="us-east-1"
        )
        try:
            secrets.create_secret(Name=name, SecretString='{"password": "ref-pw-Qa71"}')
            options = {**OWN, "sasl.password": f"secretsmanager:{name}#password"}
            sub = await _subscription(api, options, topic="referenced")
            # The pollers may still hold it; this process cannot read it any more.
            secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        finally:
            secrets.close()
        connected = self._capture_resets(state)
        revision = (await call(api, "GET", f"/subscriptions/{sub}", None, 200))["revision"]
        refused = await call(api, "POST", f"/subscriptions/{sub}/reset", {"to": "earliest"}, 400)
        assert "no such secret" in refused["message"]
        assert connected == []
        shown = await call(api, "GET", f"/subscriptions/{sub}", None, 200)
        assert (shown["paused"], shown["revision"]) == (False, revision)  # never paused

    async def test_unrelated_admin_writes_meanwhile_do_not_refuse_a_connection(
        self,
        admin: tuple[httpx.AsyncClient, AdminState, str],
        store: DynamoStore,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Every admin write moves the change feed's version; only a change of this
        # subscription or its cluster between the reads has them read again.
        _, state, sub = admin
        _before(monkeypatch, store, "get_cluster", lambda: put_greeter(store), every_call=True)
        options = await state.client_options("c1", sub)
        assert options.security.sasl_password == OWN_PW
