"""Secret references against real services: Secrets Manager and SSM in the moto server (boto3
over HTTP), and a SASL/SCRAM broker whose password is rotated while a subscription runs.

The rotation test is the point of references: the secret changes in Secrets Manager and on the
broker, the consumer's next connection is refused, the refusal makes the poller fetch the
secret again, and consumption goes on — no restart, no API call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import orjson
import pytest

from adapter.errors import ConfigError
from adapter.local.kafka import KafkaBroker, ListenerSpec
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType, Subscription
from adapter.secrets import AwsSecretFetcher, SecretRef
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._security_fixtures import create_topic, upsert_scram_user
from tests.harness import Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

USER = "rotuser"
FIRST_PASSWORD = "rot-pass-one-Ua81x"
ROTATED_PASSWORD = "rot-pass-two-Kc09m"


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker with a SASL_PLAINTEXT listener (SCRAM-SHA-512) beside its PLAINTEXT one."""
    sasl = ListenerSpec(
        "SASL",
        "SASL_PLAINTEXT",
        {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
    )
    broker = KafkaBroker(
        work_dir=tmp_path_factory.mktemp("rotation"),
        extra_listeners=[sasl],
        scram_users=[("SCRAM-SHA-512", USER, FIRST_PASSWORD)],
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[dict[str, Any]]:
    clients = {
        name: boto3.client(name, endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
        for name in ("secretsmanager", "ssm")
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
async def rotation_ingress(
    scram_broker: KafkaBroker, store: DynamoStore, moto_server: MotoServer
) -> AsyncIterator[tuple[Ingress, str]]:
    secret = f"kafka/ingress-{uuid.uuid4().hex[:8]}"
    cluster = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        # References in the settings (KAFKA_INGRESS_KAFKA_CLUSTERS): only names are stored.
        "sasl.username": f"secretsmanager:{secret}:username",
        "sasl.password": f"secretsmanager:{secret}:password",
    }
    ingress = Ingress(
        scram_broker.listeners["SASL"], store, moto_server.endpoint_url, cluster_options=cluster
    )
    try:
        yield ingress, secret
    finally:
        await ingress.stop()


def _acked(handler: RecordingHandler) -> set[int]:
    return {int(orjson.loads(call.body)["n"]) for call in handler.acked()}


async def _send(broker: KafkaBroker, topic: str, numbers: range) -> None:
    await produce(
        broker.bootstrap_servers, topic, [(None, orjson.dumps({"n": n})) for n in numbers]
    )


async def _ready(ingress: Ingress) -> httpx.Response:
    assert ingress.poller is not None
    async with httpx.AsyncClient(base_url=f"http://{ingress.poller.admin_address}") as api:
        return await api.get("/health/ready", timeout=30)


def _auth_failures(caplog: pytest.LogCaptureFixture, sub: Subscription) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if f"subscription {sub.id} failed" in r.getMessage()
        and "SASL authentication failed" in r.getMessage()
    ]


@pytest.mark.promise("p-sec-reference-rotation")
async def test_a_rotated_password_is_fetched_again_after_the_broker_refuses_the_old_one(
    scram_broker: KafkaBroker,
    rotation_ingress: tuple[Ingress, str],
    aws: dict[str, Any],
    handler_server: HandlerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ingress, secret = rotation_ingress
    secrets = aws["secretsmanager"]
    secrets.create_secret(
        Name=secret, SecretString=json.dumps({"username": USER, "password": FIRST_PASSWORD})
    )
    topic = await create_topic(scram_broker.bootstrap_servers)
    await _send(scram_broker, topic, range(3))
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Rotated", ServiceType.SERVICE, {"take": (HandlerType.SERVICE, InputKind.JSON)}
    )
    await ingress.start()
    sub = await ingress.subscribe(topic, "Rotated", "take")
    await eventually(lambda: _acked(handler) >= {0, 1, 2}, timeout=45)
    assert (await _ready(ingress)).status_code == 200

    # Rotation: the new password goes to Secrets Manager and to the broker; the old one is
    # refused from now on. The running consumer's connections stay authenticated.
    secrets.put_secret_value(
        SecretId=secret, SecretString=json.dumps({"username": USER, "password": ROTATED_PASSWORD})
    )
    await upsert_scram_user(scram_broker.bootstrap_servers, USER, ROTATED_PASSWORD)

    # The consumer reconnects (here: the subscription is changed, so it is restarted). The
    # cached password (kept 300 s by default) is refused once, which fetches the new one.
    changed = dataclasses.replace(sub, options={**sub.options, "client.id": "rotated"}, revision=2)
    await ingress.store.update_subscription(changed, expected_revision=sub.revision)
    assert ingress.poller is not None
    ingress.poller.supervisor.wake()
    await eventually(lambda: len(_auth_failures(caplog, sub)) >= 1, timeout=30)
    await _send(scram_broker, topic, range(3, 6))
    await eventually(
        lambda: _acked(handler) >= set(range(6)),
        timeout=45,
        message=lambda: f"acked {sorted(_acked(handler))}; {ingress.poller.supervisor.status()}",
    )
    state = ingress.poller.supervisor.status()[sub.id]
    assert state["state"] == "running"
    # Readiness connects with the rotated password too (it answers from a 5 s cache).

    async def ready() -> bool:
        return (await _ready(ingress)).status_code == 200

    await eventually(ready, timeout=20, interval=0.5)
    text = caplog.text + json.dumps(state, default=str)
    for password in (FIRST_PASSWORD, ROTATED_PASSWORD):
        assert password not in text


async def test_the_fetcher_reads_secrets_and_secure_parameters_and_names_what_is_wrong(
    aws: dict[str, Any], moto_server: MotoServer
) -> None:
    name = f"app/{uuid.uuid4().hex[:8]}"
    aws["secretsmanager"].create_secret(Name=name, SecretString='{"password": "pw-Yt61"}')
    arn = aws["secretsmanager"].describe_secret(SecretId=name)["ARN"]
    aws["secretsmanager"].create_secret(Name=f"{name}-text", SecretString="whole-Gh20")
    aws["ssm"].put_parameter(Name=f"/{name}/secure", Value="ssm-pw-Lk83", Type="SecureString")
    aws["ssm"].put_parameter(Name=f"/{name}/plain", Value="clear-Jd44", Type="String")
    fetcher = AwsSecretFetcher(endpoint_url=moto_server.endpoint_url)
    try:
        fetch = fetcher.fetch
        assert fetch(SecretRef("secretsmanager", name, "password")) == "pw-Yt61"
        assert fetch(SecretRef("secretsmanager", arn, "password")) == "pw-Yt61"
        assert fetch(SecretRef("secretsmanager", f"{name}-text")) == "whole-Gh20"
        assert fetch(SecretRef("ssm", f"/{name}/secure")) == "ssm-pw-Lk83"
        problems = [
            (SecretRef("ssm", f"/{name}/plain"), "is a String, stored in clear"),
            (SecretRef("ssm", f"/{name}/missing"), "no such parameter"),
            (SecretRef("secretsmanager", f"{name}-missing"), "no such secret"),
            (SecretRef("secretsmanager", name, "user"), "has no key 'user'"),
            (SecretRef("secretsmanager", f"{name}-text", "k"), "not a JSON object"),
        ]
        for ref, why in problems:
            with pytest.raises(ConfigError, match=why) as caught:
                fetch(ref)
            for value in ("pw-Yt61", "whole-Gh20", "clear-Jd44"):
                assert value not in str(caught.value)
    finally:
        fetcher.close()


@pytest.mark.promise("p-sec-reference-reset-ready")
async def test_offset_reset_and_readiness_connect_with_the_referenced_credentials(
    scram_broker: KafkaBroker,
    rotation_ingress: tuple[Ingress, str],
    aws: dict[str, Any],
    handler_server: HandlerServer,
) -> None:
    # The admin API's offset reset and readiness talk to the broker themselves: they resolve
    # references too.
    ingress, secret = rotation_ingress
    aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"username": USER, "password": FIRST_PASSWORD})
    )
    await upsert_scram_user(scram_broker.bootstrap_servers, USER, FIRST_PASSWORD)
    topic = await create_topic(scram_broker.bootstrap_servers)
    await _send(scram_broker, topic, range(2))
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Rotated", ServiceType.SERVICE, {"take": (HandlerType.SERVICE, InputKind.JSON)}
    )
    await ingress.start()
    sub = await ingress.subscribe(topic, "Rotated", "take")
    await eventually(lambda: _acked(handler) >= {0, 1}, timeout=45)
    assert ingress.poller is not None
    async with httpx.AsyncClient(
        base_url=f"http://{ingress.poller.admin_address}", timeout=60
    ) as api:
        # Readiness connects to every cluster: with the referenced credentials, too.
        ready = await api.get("/health/ready")
        assert ready.status_code == 200, ready.text
        reset = await api.post(f"/subscriptions/{sub.id}/reset", json={"to": "earliest"})
    assert reset.status_code == 200, reset.text
    # Delivered again from the start once the subscription resumes.
    await eventually(lambda: len(handler.acked()) >= 4, timeout=45)
