"""Kafka security end to end: SASL (PLAIN, SCRAM), TLS, mutual TLS, SASL_SSL and OAUTHBEARER/OIDC.

One broker for the module with a listener per scheme, and one OIDC provider (JWKS + token
endpoint) that the broker validates tokens against. Every scheme is configured the way users
do it, as librdkafka options of a cluster in ``KAFKA_INGRESS_KAFKA_CLUSTERS`` (TOML inline)
and of a subscription, and consumes records through a real subscription into an HTTP handler.
Failures (wrong password, expired or untrusted certificate, refused token, token endpoint
outage) must show as clear errors in the status, the admin API and the log, never leak a
secret, be retried with backoff, and recover without losing a record once fixed.

The last section tests the pure parts underneath (token responses, failure diagnosis, the
connection watch, certificate dates) without any server.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import errors as ak

from adapter.errors import KafkaAuthError
from adapter.kafka import msk_iam as msk_iam_module
from adapter.kafka.change_signal import SIGNAL_TOPIC, ChangeListener, ensure_signal_topic
from adapter.kafka.errors import (
    ConnectionWatch,
    TokenUnavailableError,
    certificate_problem,
    diagnose,
    translate,
)
from adapter.kafka.oidc import (
    OidcTokenProvider,
    TokenEndpointError,
    TokenState,
    parse_token_response,
)
from adapter.kafka.options import SecuritySettings
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType, Subscription
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._security_fixtures import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    PLAIN_USERS,
    SCRAM_USERS,
    CertificateAuthority,
    OidcProvider,
    SecureBroker,
    create_topic,
    secure_broker,
    upsert_scram_user,
)
from tests.harness import Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

((PLAIN_USER, PLAIN_PASSWORD),) = PLAIN_USERS.items()
((SCRAM_USER, SCRAM_PASSWORD),) = SCRAM_USERS.items()
WRONG_PASSWORD = "wrong-pass-Qm42z"
KEY_PASSWORD = "key-pass-Vb93s"
LATE_USER, LATE_PASSWORD = "lateuser", "late-pass-Ke27p"
SECRETS = (
    PLAIN_PASSWORD,
    SCRAM_PASSWORD,
    WRONG_PASSWORD,
    KEY_PASSWORD,
    LATE_PASSWORD,
    CLIENT_SECRET,
)

SERVICE = "Secured"
HANDLER = "take"


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def secure(oidc: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with secure_broker(tmp_path_factory.mktemp("tls"), oidc) as broker:
        yield broker


@pytest.fixture
def idp(oidc: OidcProvider) -> Iterator[OidcProvider]:
    """The module's OIDC provider, its switches reset after the test."""
    yield oidc
    oidc.lifetime_s, oidc.audience, oidc.outage = 300, AUDIENCE, False
    oidc.client_secret = CLIENT_SECRET


MakeIngress = Callable[[str, dict[str, str]], Ingress]


@pytest.fixture
async def make_ingress(store: DynamoStore, moto_server: MotoServer) -> AsyncIterator[MakeIngress]:
    """``make_ingress(listener address, cluster options)``: a poller, stopped at teardown."""
    made: list[Ingress] = []

    def make(bootstrap: str, options: dict[str, str]) -> Ingress:
        ingress = Ingress(bootstrap, store, moto_server.endpoint_url, cluster_options=options)
        made.append(ingress)
        return ingress

    yield make
    for ingress in made:
        await ingress.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # DEBUG for our own loggers: secrets must not show up at any level we emit.
    caplog.set_level(logging.DEBUG, logger="adapter")
    caplog.set_level(logging.INFO)
    return caplog


# --------------------------------------------------------------------------------------------
# Helpers


def sasl(
    mechanism: str, user: str, password: str, protocol: str = "SASL_PLAINTEXT"
) -> dict[str, str]:
    return {
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def oauth(token_url: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": CLIENT_ID,
        "sasl.oauthbearer.client.secret": CLIENT_SECRET,
        "sasl.oauthbearer.token.endpoint.url": token_url,
        "sasl.oauthbearer.scope": "kafka",
    }


async def start_consuming(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic: str,
    options: dict[str, str] | None = None,
) -> tuple[RecordingHandler, Subscription]:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(
        url, SERVICE, ServiceType.SERVICE, {HANDLER: (HandlerType.SERVICE, InputKind.JSON)}
    )
    await ingress.start()
    sub = await ingress.subscribe(topic, SERVICE, HANDLER, options)
    return handler, sub


async def send(secure: SecureBroker, topic: str, first: int, count: int) -> None:
    """Records ``{"n": first}`` … through the broker's PLAINTEXT listener."""
    await produce(
        secure.plaintext,
        topic,
        [(None, orjson.dumps({"n": n})) for n in range(first, first + count)],
    )


def numbers(handler: RecordingHandler) -> set[int]:
    return {int(orjson.loads(call.body)["n"]) for call in handler.acked()}


async def all_acked(handler: RecordingHandler, count: int, timeout: float = 30) -> None:
    await eventually(
        lambda: numbers(handler) >= set(range(count)),
        timeout=timeout,
        message=lambda: f"acked {sorted(numbers(handler))} of {count}",
    )


async def new_tokens(idp: OidcProvider, *, after: int, count: int) -> None:
    await eventually(lambda: len(idp.issued) >= after + count, timeout=20)


def status(ingress: Ingress, sub: Subscription) -> dict[str, Any]:
    assert ingress.poller is not None
    return ingress.poller.supervisor.status().get(sub.id, {})


def error_of(ingress: Ingress, sub: Subscription) -> str:
    return str(status(ingress, sub).get("last_error") or "")


async def api_subscription(ingress: Ingress, sub: Subscription) -> dict[str, Any]:
    assert ingress.poller is not None
    async with httpx.AsyncClient(base_url=f"http://{ingress.poller.admin_address}") as client:
        response = await client.get(f"/subscriptions/{sub.id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        shown = str(text)
        for secret in SECRETS:
            assert secret not in shown, f"a secret leaked into: {shown[:300]}"


def failed_attempts(caplog: pytest.LogCaptureFixture, sub: Subscription) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "adapter.engine.supervisor"
        and f"subscription {sub.id} failed" in r.getMessage()
    ]


async def update_options(ingress: Ingress, sub: Subscription, options: dict[str, str]) -> None:
    new = dataclasses.replace(sub, options=options, revision=sub.revision + 1)
    await ingress.store.update_subscription(new, expected_revision=sub.revision)
    assert ingress.poller is not None
    ingress.poller.supervisor.wake()


# --------------------------------------------------------------------------------------------
# Each scheme consumes end to end


@pytest.mark.parametrize(
    ("listener", "options"),
    [
        ("SASL", sasl("PLAIN", PLAIN_USER, PLAIN_PASSWORD)),
        ("SASL", sasl("SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD)),
    ],
    ids=["sasl-plain", "sasl-scram-sha-512"],
)
async def test_sasl_plaintext_subscription_consumes(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
    listener: str,
    options: dict[str, str],
) -> None:
    ingress = make_ingress(secure.address(listener), options)
    # The cluster list, secrets included, travels in TOML inline syntax through the env var.
    assert '"sasl.password"=' in ingress.env()["KAFKA_INGRESS_KAFKA_CLUSTERS"]
    topic = await create_topic(secure.plaintext)
    handler, sub = await start_consuming(ingress, handler_server, topic)
    await send(secure, topic, 0, 3)
    await all_acked(handler, 3)
    assert status(ingress, sub)["state"] == "running"
    assert_no_secret(logs.text, status(ingress, sub), await api_subscription(ingress, sub))


async def test_tls_with_a_ca_generated_by_the_test(
    secure: SecureBroker, make_ingress: MakeIngress, handler_server: HandlerServer
) -> None:
    ingress = make_ingress(
        secure.address("SSL"),
        {"security.protocol": "SSL", "ssl.ca.location": str(secure.ca_file)},
    )
    topic = await create_topic(secure.plaintext)
    handler, _ = await start_consuming(ingress, handler_server, topic)
    await send(secure, topic, 0, 3)
    await all_acked(handler, 3)


async def test_a_change_listener_over_tls_stops_without_waiting_out_its_held_fetch(
    secure: SecureBroker,
) -> None:
    # Closing a TLS connection waits for the broker's close, which the broker sends only
    # once it has answered the fetch it holds: with a 5 s hold a listener took ~5 s to stop.
    connection: dict[str, Any] = {
        "bootstrap_servers": secure.address("SSL"),
        "security_protocol": "SSL",
        "ssl_context": ssl.create_default_context(cafile=str(secure.ca_file)),
    }
    await ensure_signal_topic(connection)
    heard = asyncio.Event()
    listener = ChangeListener("tls", connection, heard.set)
    running = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.ready.wait(), 30)
        # A signal heard proves the listener is fetching (a held fetch is in flight again).
        await produce(secure.plaintext, SIGNAL_TOPIC, [(None, b"")])
        await asyncio.wait_for(heard.wait(), 30)
    finally:
        started = time.monotonic()
        running.cancel()
        await asyncio.wait({running}, timeout=10)
    stopped_in = time.monotonic() - started
    assert running.done()
    assert stopped_in < 2.0, f"the listener took {stopped_in:.1f}s to stop"


@pytest.mark.promise("p-fault-sigterm")
async def test_a_poller_stopped_while_a_subscription_stops_lets_that_stop_finish(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    # Over TLS a consumer's stop waits for the fetch the broker holds (2 s here). A poller
    # stopped meanwhile cut that stop short: the runner's drain was lost and its consumer's
    # connections left open (an unclosed socket at the next garbage collection).
    ingress = make_ingress(
        secure.address("SSL"),
        {"security.protocol": "SSL", "ssl.ca.location": str(secure.ca_file)},
    )
    topic = await create_topic(secure.plaintext)
    handler, sub = await start_consuming(
        ingress, handler_server, topic, {"fetch.wait.max.ms": "2000"}
    )
    await send(secure, topic, 0, 3)
    await all_acked(handler, 3)
    supervisor = ingress.poller.supervisor if ingress.poller else None
    assert supervisor is not None
    await ingress.store.delete_subscription(sub.id)
    supervisor.wake()
    await eventually(lambda: sub.id not in supervisor.status(), timeout=30)  # its stop began
    await ingress.stop()
    assert f"stopped subscription {sub.id}" in logs.text


async def test_mutual_tls_with_an_encrypted_client_key(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    cert = secure.ca.issue("mtls-client").write(tmp_path, "mtls", key_password=KEY_PASSWORD)
    ingress = make_ingress(
        secure.address("MTLS"),
        {
            "security.protocol": "ssl",  # librdkafka reads enumerations case-insensitively
            "ssl.ca.location": str(secure.ca_file),
            "ssl.certificate.location": str(cert),
            "ssl.key.location": str(tmp_path / "mtls.key"),
            "ssl.key.password": KEY_PASSWORD,
        },
    )
    topic = await create_topic(secure.plaintext)
    handler, sub = await start_consuming(ingress, handler_server, topic)
    await send(secure, topic, 0, 3)
    await all_acked(handler, 3)
    assert_no_secret(logs.text, await api_subscription(ingress, sub))


async def test_sasl_ssl_with_cluster_and_subscription_options_merged(
    secure: SecureBroker, make_ingress: MakeIngress, handler_server: HandlerServer
) -> None:
    # TLS on the cluster, the SASL identity on the subscription: subscription options win.
    ingress = make_ingress(
        secure.address("SASLSSL"),
        {
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(secure.ca_file),
            "sasl.mechanism": "PLAIN",
            "sasl.username": PLAIN_USER,
            "sasl.password": PLAIN_PASSWORD,
        },
    )
    topic = await create_topic(secure.plaintext)
    scram = {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": SCRAM_USER}
    handler, _ = await start_consuming(
        ingress, handler_server, topic, {**scram, "sasl.password": SCRAM_PASSWORD}
    )
    await send(secure, topic, 0, 3)
    await all_acked(handler, 3)


async def test_oauthbearer_tokens_are_fetched_and_refreshed_before_expiry_without_loss(
    secure: SecureBroker,
    idp: OidcProvider,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    # The broker ends a session when its token expires (connections.max.reauth.ms), so every
    # reconnection after the first few seconds needs a token the poller refreshed in time.
    idp.lifetime_s = 4
    first_token = len(idp.issued)
    ingress = make_ingress(secure.address("OAUTH"), oauth(idp.token_url))
    topic = await create_topic(secure.plaintext)
    handler, sub = await start_consuming(ingress, handler_server, topic)
    sent = 0
    for _ in range(3):
        tokens_before = len(idp.issued)
        await send(secure, topic, sent, 5)
        sent += 5
        await all_acked(handler, sent)
        # Let a token generation pass before the next batch.
        await new_tokens(idp, after=tokens_before, count=2)
    await send(secure, topic, sent, 5)
    sent += 5
    await all_acked(handler, sent)

    tokens = idp.issued[first_token:]
    assert time.time() > tokens[0].claims["exp"], "the run must outlive the first token"
    # Each token was replaced while it was still valid.
    for earlier, later in itertools.pairwise(tokens):
        assert later.claims["iat"] <= earlier.claims["exp"]
    calls = [c.offset for c in handler.calls]
    assert sorted(set(calls)) == list(range(sent)), "every record, none lost"
    token_status = status(ingress, sub)["oauthbearer"]
    assert token_status["state"] == TokenState.VALID
    assert token_status["tokens_fetched"] >= 3
    assert_no_secret(logs.text, status(ingress, sub))
    for issued in tokens:
        assert issued.token not in logs.text


# --------------------------------------------------------------------------------------------
# AWS MSK IAM: the same OAUTHBEARER plumbing, tokens signed from AWS credentials


def msk_iam(region: str = "us-east-1") -> dict[str, str]:
    # SASL_PLAINTEXT only because the local OAUTHBEARER listener is; MSK listens on SASL_SSL.
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.config": f"provider=msk-iam,region={region}",
    }


async def test_msk_iam_token_is_sent_through_the_sasl_handshake_and_a_refusal_reported(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    # The real signer with the default credential chain (the test's environment): the token,
    # a SigV4 presigned URL, reaches the broker, which validates JWTs and refuses it. Only
    # MSK's brokers can accept it; that the refusal is seen shows the token was sent.
    ingress = make_ingress(secure.address("OAUTH"), msk_iam("eu-west-1"))
    topic = await create_topic(secure.plaintext)
    _, sub = await start_consuming(ingress, handler_server, topic)
    await eventually(
        lambda: "refused the OAUTHBEARER token" in error_of(ingress, sub),
        timeout=20,
        message=lambda: f"status: {status(ingress, sub)}",
    )
    token_status = status(ingress, sub)["oauthbearer"]
    assert token_status["token_endpoint"] == "AWS MSK IAM (eu-west-1)"
    assert token_status["tokens_fetched"] >= 1
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in logs.text


async def test_msk_iam_subscription_consumes_with_tokens_refreshed_before_expiry(
    secure: SecureBroker,
    idp: OidcProvider,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Everything but the signature is the MSK IAM path: option, provider, credential chain,
    # refresh, aiokafka's OAUTHBEARER. The signer is swapped for one the local broker can
    # verify: a 4 s JWT from the test's issuer whose subject is the access key it was given.
    signed: list[dict[str, Any]] = []

    class JwtSigner:
        @staticmethod
        def generate_auth_token_from_credentials_provider(
            region: str, provider: Any
        ) -> tuple[str, int]:
            now = int(time.time())
            claims = {
                "iss": idp.issuer,
                "aud": AUDIENCE,
                "sub": provider.load().access_key,
                "region": region,
                "iat": now,
                "exp": now + 4,
            }
            signed.append(claims)
            return idp.sign(claims), (now + 4) * 1000

    monkeypatch.setattr(msk_iam_module, "MSKAuthTokenProvider", JwtSigner)
    ingress = make_ingress(secure.address("OAUTH"), msk_iam("us-east-2"))
    topic = await create_topic(secure.plaintext)
    handler, sub = await start_consuming(ingress, handler_server, topic)
    await send(secure, topic, 0, 5)
    await all_acked(handler, 5)
    await eventually(lambda: len(signed) >= 3, timeout=20)
    await send(secure, topic, 5, 5)
    await all_acked(handler, 10)
    assert {c["sub"] for c in signed} == {os.environ["AWS_ACCESS_KEY_ID"]}
    assert {c["region"] for c in signed} == {"us-east-2"}
    assert time.time() > signed[0]["exp"], "the run must outlive the first token"
    for earlier, later in itertools.pairwise(signed):
        assert later["iat"] <= earlier["exp"], "each token replaced while still valid"
    assert status(ingress, sub)["oauthbearer"]["state"] == TokenState.VALID


# --------------------------------------------------------------------------------------------
# Failures: reported clearly, retried with backoff, recovered once fixed


@pytest.mark.promise("p-sec-auth-failure")
async def test_wrong_password_is_reported_retried_and_recovers_when_fixed(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    cluster = sasl("SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD)
    ingress = make_ingress(secure.address("SASL"), cluster)
    topic = await create_topic(secure.plaintext)
    await send(secure, topic, 0, 5)
    handler, sub = await start_consuming(
        ingress, handler_server, topic, {"sasl.password": WRONG_PASSWORD}
    )

    await eventually(
        lambda: len(failed_attempts(logs, sub)) >= 2,
        timeout=20,
        message=lambda: f"no retries: {status(ingress, sub)}",
    )
    state = status(ingress, sub)
    assert state["state"] == "backing-off"
    assert "SASL authentication failed" in state["last_error"]
    assert "invalid credentials" in state["last_error"]  # the broker's own words
    assert "sasl.password" in state["last_error"]  # what to fix
    assert all("SASL authentication failed" in m for m in failed_attempts(logs, sub))
    runtime = (await api_subscription(ingress, sub))["runtime"]
    assert runtime["state"] == "backing-off"
    assert "SASL authentication failed" in runtime["last_error"]
    assert not handler.calls

    await update_options(ingress, sub, {"auto.offset.reset": "earliest"})
    await all_acked(handler, 5)
    await eventually(lambda: error_of(ingress, sub) == "")
    assert status(ingress, sub)["state"] == "running"
    assert_no_secret(logs.text, status(ingress, sub), await api_subscription(ingress, sub))


async def test_user_created_through_the_admin_api_lets_the_retrying_subscription_in(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    # The credentials are right but the broker does not know the user yet: fixing it on the
    # broker's side is enough, the subscription's retries get in.
    ingress = make_ingress(secure.address("SASL"), sasl("SCRAM-SHA-512", LATE_USER, LATE_PASSWORD))
    topic = await create_topic(secure.plaintext)
    await send(secure, topic, 0, 3)
    handler, sub = await start_consuming(ingress, handler_server, topic)
    await eventually(lambda: "SASL authentication failed" in error_of(ingress, sub), timeout=20)

    await upsert_scram_user(secure.plaintext, LATE_USER, LATE_PASSWORD)
    await all_acked(handler, 3, timeout=45)
    await eventually(lambda: error_of(ingress, sub) == "")
    assert len(failed_attempts(logs, sub)) >= 1
    assert_no_secret(logs.text, status(ingress, sub))


async def test_expired_or_untrusted_client_certificate_is_reported_and_recovers_when_renewed(
    secure: SecureBroker,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    # Certificates are rotated on disk, as cert-manager & co. do; every retry reads them again.
    stranger = CertificateAuthority("someone else's CA").issue("mtls-client")
    cert = stranger.write(tmp_path, "client")
    ingress = make_ingress(
        secure.address("MTLS"),
        {
            "security.protocol": "SSL",
            "ssl.ca.location": str(secure.ca_file),
            "ssl.certificate.location": str(cert),
            "ssl.key.location": str(tmp_path / "client.key"),
        },
    )
    topic = await create_topic(secure.plaintext)
    await send(secure, topic, 0, 3)
    handler, sub = await start_consuming(ingress, handler_server, topic)

    await eventually(lambda: "rejected the connection" in error_of(ingress, sub), timeout=20)
    assert "alert 'certificate unknown'" in error_of(ingress, sub)
    assert "ssl.certificate.location" in error_of(ingress, sub)

    secure.ca.issue("mtls-client", valid_days=(-30, -1)).write(tmp_path, "client")
    await eventually(lambda: "expired on" in error_of(ingress, sub), timeout=20)
    assert status(ingress, sub)["state"] == "backing-off"
    assert any("expired on" in r.getMessage() for r in logs.records if r.levelno >= logging.WARNING)
    assert not handler.calls

    secure.ca.issue("mtls-client").write(tmp_path, "client")
    await all_acked(handler, 3)
    await eventually(lambda: error_of(ingress, sub) == "")


async def test_refused_token_is_reported_and_recovers_once_the_issuer_is_fixed(
    secure: SecureBroker,
    idp: OidcProvider,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    idp.audience = "some-other-service"
    ingress = make_ingress(secure.address("OAUTH"), oauth(idp.token_url))
    topic = await create_topic(secure.plaintext)
    await send(secure, topic, 0, 3)
    handler, sub = await start_consuming(ingress, handler_server, topic)

    await eventually(
        lambda: "refused the OAUTHBEARER token" in error_of(ingress, sub),
        timeout=20,
        message=lambda: f"status: {status(ingress, sub)}",
    )
    assert "invalid_token" in error_of(ingress, sub)
    assert status(ingress, sub)["state"] == "backing-off"
    assert any("refused the OAUTHBEARER token" in m for m in failed_attempts(logs, sub))
    runtime = (await api_subscription(ingress, sub))["runtime"]
    assert "refused the OAUTHBEARER token" in runtime["last_error"]
    refused = len(idp.issued)

    idp.audience = AUDIENCE
    await all_acked(handler, 3)
    # The refused token was dropped, not offered again.
    assert len(idp.issued) > refused
    await eventually(lambda: error_of(ingress, sub) == "")
    assert_no_secret(logs.text)
    for issued in idp.issued:
        assert issued.token not in logs.text


async def test_token_endpoint_outage_shows_in_status_and_log_and_consumption_resumes(
    secure: SecureBroker,
    idp: OidcProvider,
    make_ingress: MakeIngress,
    handler_server: HandlerServer,
    logs: pytest.LogCaptureFixture,
) -> None:
    idp.lifetime_s = 4
    ingress = make_ingress(secure.address("OAUTH"), oauth(idp.token_url))
    topic = await create_topic(secure.plaintext)
    handler, sub = await start_consuming(ingress, handler_server, topic)
    await send(secure, topic, 0, 3)
    await all_acked(handler, 3)

    idp.outage = True
    await send(secure, topic, 3, 3)
    # Refreshing fails first while the current token still works, then there is none left
    # and the broker, which ends sessions with their token, cannot be reached any more.
    # The token can leave its usable window a moment before the refresh fails (a busy loop
    # runs the refresh late): unavailable, then also the refresh's error.
    await eventually(
        lambda: (
            status(ingress, sub)["oauthbearer"]["state"] == TokenState.UNAVAILABLE
            and status(ingress, sub)["oauthbearer"]["last_error"] is not None
        ),
        timeout=20,
    )
    token_status = status(ingress, sub)["oauthbearer"]
    assert "HTTP 503" in token_status["last_error"]
    assert token_status["token_endpoint"] == idp.token_url
    await eventually(
        lambda: "no OAUTHBEARER token" in error_of(ingress, sub),
        timeout=20,
        message=lambda: f"status: {status(ingress, sub)}",
    )
    assert status(ingress, sub)["state"] == "backing-off"
    assert "HTTP 503" in error_of(ingress, sub)
    runtime = (await api_subscription(ingress, sub))["runtime"]
    assert "no OAUTHBEARER token" in runtime["last_error"]
    warnings = [r.getMessage() for r in logs.records if r.name == "adapter.kafka.oidc"]
    assert any("HTTP 503" in m for m in warnings)

    # Tokens issued from now on outlive the test: with 4 s tokens the broker keeps closing
    # connections as each one expires (aiokafka does not re-authenticate), a churn that can
    # keep the connection watch's episode open and hide the recovery under load.
    idp.lifetime_s = 120
    idp.outage = False
    await all_acked(handler, 6)
    await eventually(lambda: status(ingress, sub)["oauthbearer"]["state"] == TokenState.VALID)
    # The error clears at the runner's next successful start; on a loaded machine the slot's
    # restart back-off (up to 30 s) can put that well past the recovery.
    await eventually(lambda: error_of(ingress, sub) == "", timeout=45)
    assert status(ingress, sub)["state"] == "running"
    assert_no_secret(logs.text, status(ingress, sub))


# --------------------------------------------------------------------------------------------
# The token provider on its own (no broker)


async def test_token_provider_caches_and_refreshes_before_expiry(idp: OidcProvider) -> None:
    idp.lifetime_s = 2
    provider = OidcTokenProvider(
        token_endpoint_url=idp.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    try:
        first = await provider.token()
        assert await provider.token() == first  # cached
        issued = next(t for t in idp.issued if t.token == first)
        await eventually(lambda: provider.fetched >= 2, timeout=10)
        second = await provider.token()
        assert second != first
        assert time.time() < issued.claims["exp"] + 1, "refreshed before the first expired"
        assert provider.status()["state"] == TokenState.VALID
    finally:
        await provider.aclose()
    assert provider.state is TokenState.CLOSED


async def test_token_provider_reports_refused_credentials_without_the_secret(
    idp: OidcProvider, logs: pytest.LogCaptureFixture
) -> None:
    provider = OidcTokenProvider(
        token_endpoint_url=idp.token_url, client_id=CLIENT_ID, client_secret=WRONG_PASSWORD
    )
    try:
        with pytest.raises(TokenUnavailableError) as caught:
            await provider.token()
        message = str(caught.value)
        assert "refused client 'ingress-poller': HTTP 401" in message
        assert "invalid_client" in message
        assert "sasl.oauthbearer.client.secret" in message
        assert provider.status()["state"] == TokenState.UNAVAILABLE
        assert "HTTP 401" in provider.status()["last_error"]
        assert_no_secret(message, provider.status(), repr(provider), logs.text)
    finally:
        await provider.aclose()


async def test_token_provider_retries_an_unreachable_endpoint_with_backoff(
    refused_port: int, logs: pytest.LogCaptureFixture
) -> None:
    provider = OidcTokenProvider(
        token_endpoint_url=f"http://127.0.0.1:{refused_port}/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        backoff_initial_s=0.1,
    )
    try:
        with pytest.raises(TokenUnavailableError, match="cannot reach the token endpoint"):
            await provider.token()
        # The refresher keeps trying, with growing pauses, and says so in the log.
        await eventually(lambda: provider.failures >= 3, timeout=10)
        assert provider.state is TokenState.UNAVAILABLE
        warnings = [r for r in logs.records if r.name == "adapter.kafka.oidc"]
        assert len(warnings) >= 3
        assert "Connect call failed" in provider.status()["last_error"]
        assert_no_secret(logs.text)
    finally:
        await provider.aclose()


# --------------------------------------------------------------------------------------------
# The pure parts: token responses, failure diagnosis, the connection watch


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


def test_token_lifetime_is_the_shorter_of_expires_in_and_the_jwt_exp() -> None:
    token = _jwt({"exp": 1_000 + 60})
    body = orjson.dumps({"access_token": token, "expires_in": 3600})
    parsed = parse_token_response(200, body, now=5.0, wall_now=1_000, client_id="c")
    assert (parsed.obtained_at, parsed.expires_at) == (5.0, 65.0)
    assert parsed.refresh_at == pytest.approx(5.0 + 48.0)
    assert parsed.usable(59.0)
    assert not parsed.usable(61.0)  # never in the last tenth of its life
    assert token not in repr(parsed)

    opaque = orjson.dumps({"access_token": "opaque", "expires_in": "30"})
    assert parse_token_response(200, opaque, now=0, wall_now=0, client_id="c").lifetime_s == 30


@pytest.mark.parametrize(
    ("status", "body", "retryable", "words"),
    [
        (200, b'{"access_token": "opaque"}', False, "no expires_in"),
        (200, b"<html>", True, "not answer with a JSON object"),
        (200, b'{"expires_in": 60}', True, "no access_token"),
        (200, b'{"access_token": "t", "expires_in": 0}', True, "already expired"),
        (503, b'{"error": "temporarily_unavailable"}', True, "HTTP 503 (temporarily_unavailable)"),
        (429, b"", True, "HTTP 429"),
        (401, b'{"error": "invalid_client"}', False, "refused client 'c': HTTP 401"),
        (400, b'{"error": "invalid_scope"}', False, "sasl.oauthbearer.scope"),
    ],
)
def test_token_endpoint_answers_become_clear_errors(
    status: int, body: bytes, retryable: bool, words: str
) -> None:
    with pytest.raises(TokenEndpointError) as caught:
        parse_token_response(status, body, now=0, wall_now=0, client_id="c")
    assert caught.value.retryable is retryable
    assert words in str(caught.value)


def _ssl_error(reason: str, cls: type[ssl.SSLError] = ssl.SSLError) -> ssl.SSLError:
    error = cls(1, f"[SSL: {reason}] something")
    error.reason = reason
    return error


def _closed_by(cause: BaseException) -> ak.KafkaConnectionError:
    error = ak.KafkaConnectionError("Connection at 127.0.0.1:9093 closed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "auth", "fatal", "words"),
    [
        (ak.SaslAuthenticationFailed("Invalid username or password"), True, True, "sasl.password"),
        (_closed_by(_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE")), True, True, "bad certificate"),
        (_closed_by(_ssl_error("TLSV1_ALERT_PROTOCOL_VERSION")), False, True, "protocol version"),
        (_ssl_error("WRONG_VERSION_NUMBER"), False, True, "does not speak TLS"),
        (_ssl_error("UNEXPECTED_EOF_WHILE_READING", ssl.SSLEOFError), False, False, "TLS conn"),
        (_closed_by(asyncio.IncompleteReadError(b"\x15\x03\x03", 352518912)), False, True, "not"),
        (_closed_by(asyncio.IncompleteReadError(b"", 4)), False, False, "closed the connection"),
        (ConnectionRefusedError(111, "Connect call failed"), False, False, "connection refused"),
        (ak.TopicAuthorizationFailedError(), True, True, "READ and DESCRIBE"),
        (TokenUnavailableError("idp down"), True, False, "no OAUTHBEARER token: idp down"),
        (ak.KafkaConnectionError("Unable to bootstrap from [...]"), False, False, "bootstrap"),
    ],
)
def test_failures_are_diagnosed_from_their_cause_chain(
    exc: BaseException, auth: bool, fatal: bool, words: str
) -> None:
    found = diagnose(exc)
    assert (found.auth, found.fatal) == (auth, fatal)
    assert words in found.message
    error = translate(exc, context="subscription s")
    assert isinstance(error, KafkaAuthError) is auth
    assert str(error).startswith("subscription s: ")


def test_connection_watch_reports_lasting_failures_and_fatal_ones_once() -> None:
    now = [0.0]
    watch = ConnectionWatch("sub", grace_s=2.0, quiet_s=3.0, clock=lambda: now[0])
    refused = ConnectionRefusedError(111, "Connect call failed")
    watch.observe_exception(refused)
    assert watch.ongoing() is None  # too short to tell from a blip
    for step in range(1, 6):
        now[0] = step * 0.5
        watch.observe_exception(refused)
    assert "connection refused" in str(watch.ongoing())
    now[0] += 3.5
    assert watch.ongoing() is None  # quiet again

    assert watch.take_fatal() is None
    watch.observe_exception(ak.SaslAuthenticationFailed("bad"))
    fatal = watch.take_fatal()
    assert isinstance(fatal, KafkaAuthError)
    assert str(fatal).startswith("sub: SASL authentication failed")
    assert watch.take_fatal() is None
    # Explaining a bare "Unable to bootstrap": what the watch saw says more.
    bare = ak.KafkaConnectionError("Unable to bootstrap from [...]")
    assert "SASL authentication failed" in str(translate(bare, context="x", watch=watch))


def test_certificate_dates_are_checked_before_connecting(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    path = ca.issue("client", valid_days=(-3, -1)).write(tmp_path, "old")
    settings = SecuritySettings(protocol="SSL", ssl_certificate_location=str(path))
    assert "expired on" in str(certificate_problem(settings))
    path = ca.issue("client", valid_days=(1, 3)).write(tmp_path, "future")
    settings = SecuritySettings(protocol="SSL", ssl_certificate_location=str(path))
    assert "not valid before" in str(certificate_problem(settings))
    path = ca.issue("client").write(tmp_path, "good")
    assert (
        certificate_problem(SecuritySettings(protocol="SSL", ssl_certificate_location=str(path)))
        is None
    )
    # Without TLS the certificate options are ignored, as librdkafka does.
    plain = SecuritySettings(protocol="SASL_PLAINTEXT", ssl_certificate_location=str(path))
    assert certificate_problem(plain) is None
