"""Secrets at rest: no secret value reaches DynamoDB in clear (KMS envelope encryption in the
moto server), rows written in clear by earlier versions stay readable and are sealed on their
next write, and without a KMS key secret values are refused with a 400 naming the option.

Everything goes over HTTP: the admin API of a real poller, boto3 against the moto server.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from adapter import ids
from adapter.errors import SecretError, ValidationError
from adapter.local.moto import MotoServer
from adapter.sdk import Context, Endpoint, Service
from adapter.store.dynamo import DynamoStore
from adapter.store.sealing import KmsEnvelope, SecretSealing
from adapter.store.tables import TableNames
from tests._http_fixtures import HandlerServer
from tests.harness import Ingress

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

# Planted secrets: distinctive, so any trace of them in DynamoDB is found.
CLUSTER_PASSWORD = "AtRest-saslpw-9f3Kq"
CLUSTER_USER = "AtRest-user-Pp31d"
CLIENT_SECRET = "AtRest-oidc-Vb71x/+="
KEY_PASSWORD = "AtRest-keypw-Lm20z"
URL_PASSWORD = "AtRest-urlpw-Qe48t"
SUBSCRIPTION_PASSWORD = "AtRest-subpw-Ry55c"
HEADER_TOKEN = "AtRest-hdr-Zt66w"
SHARED_PW = "AtRest-shared-Hq17v"
URI_PASSWORD = "AtRest-uripw-Nk03p"
SECRETS = [
    CLUSTER_PASSWORD,
    CLUSTER_USER,
    CLIENT_SECRET,
    KEY_PASSWORD,
    URL_PASSWORD,
    SUBSCRIPTION_PASSWORD,
    HEADER_TOKEN,
    SHARED_PW,
    URI_PASSWORD,
]

greeter = Service("AtRest")


@greeter.handler()
def hello(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    return body


def encodings(secret: str) -> set[str]:
    """The secret and the forms it could hide in: URL-encoded, base64 (plain, URL-safe, and
    as HTTP Basic credentials)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    for raw in (secret.encode(), f"depuser:{secret}".encode()):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(raw).decode()
            forms |= {text, text.rstrip("=")}
    return forms


def scan_everything(client: Any, names: TableNames) -> str:
    """Every item of every table of this test, as one text."""
    # The session's moto holds many tables: list them all, page by page.
    listed = client.get_paginator("list_tables").paginate().build_full_result()["TableNames"]
    tables = [t for t in listed if t.startswith(names.prefix)]
    assert tables, "no tables to scan"
    items: list[Any] = []
    for table in tables:
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = client.scan(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return json.dumps(items, default=repr)


def assert_no_secret_in(text: str) -> list[str]:
    searched = []
    for secret in SECRETS:
        for form in encodings(secret):
            searched.append(form)
            assert form not in text, f"{secret!r} is stored in DynamoDB (as {form!r})"
    return searched


async def admin(ingress: Ingress) -> httpx.AsyncClient:
    await ingress.start()
    assert ingress.poller is not None
    return httpx.AsyncClient(base_url=f"http://{ingress.poller.admin_address}", timeout=30)


@pytest.mark.promise("p-sec-at-rest")
async def test_no_secret_is_stored_in_clear_and_every_one_reads_back(
    ingress: Ingress,
    handler_server: HandlerServer,
    dynamo_client: Any,
    table_names: TableNames,
    kafka_bootstrap: str,
) -> None:
    url = await handler_server(Endpoint([greeter]).asgi_app())
    host = url.removeprefix("http://")
    async with await admin(ingress) as api:
        sasl = {
            "bootstrap.servers": kafka_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": CLUSTER_USER,
            "sasl.password": CLUSTER_PASSWORD,
            "ssl.key.password": KEY_PASSWORD,
        }
        oidc = {
            "bootstrap.servers": kafka_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.client.id": "ingress",
            "sasl.oauthbearer.client.secret": CLIENT_SECRET,
            "sasl.oauthbearer.token.endpoint.url": f"https://svc:{URL_PASSWORD}@idp.test/token",
        }
        for name, properties in (("sasl", sasl), ("oidc", oidc)):
            created = await api.post(
                "/kafka-clusters", json={"name": name, "properties": properties}
            )
            assert created.status_code == 201, created.text
            updated = await api.patch(f"/kafka-clusters/{name}", json={"properties": properties})
            assert updated.status_code == 200, updated.text

        # The API refuses credentials in a deployment URI (docs/security.md); a row holding
        # one (written before that rule) is sealed by the store like any other secret.
        refused = await api.post(
            "/deployments", json={"uri": f"http://depuser:{URI_PASSWORD}@{host}/"}
        )
        assert refused.status_code == 400, refused.text
        assert URI_PASSWORD not in refused.text
        legacy_id = ids.deployment_id()
        await ingress.store.put_deployment(
            {"id": legacy_id, "uri": f"http://depuser:{URI_PASSWORD}@{host}/", "created_at": 1}
        )
        deployment = await api.post(
            "/deployments",
            json={
                "uri": f"http://{host}/",
                "additional_headers": {
                    "Authorization": f"Bearer {HEADER_TOKEN}",
                    "X-Shared-Pw": SHARED_PW,
                    "Content-Type": "application/json",
                },
            },
        )
        assert deployment.status_code == 201, deployment.text
        subscription = await api.post(
            "/subscriptions",
            json={
                "source": "kafka://sasl/at-rest-topic",
                "sink": "service://AtRest/hello",
                "options": {"sasl.password": SUBSCRIPTION_PASSWORD, "client.id": "at-rest"},
            },
        )
        assert subscription.status_code == 201, subscription.text
        sub_id = subscription.json()["id"]

    searched = assert_no_secret_in(scan_everything(dynamo_client, table_names))
    assert len(searched) >= 4 * len(SECRETS)

    # Every value reads back exactly as written.
    store = ingress.store
    cluster = await store.get_cluster("sasl")
    assert cluster is not None
    assert cluster["properties"] == sasl
    oidc_row = await store.get_cluster("oidc")
    assert oidc_row is not None
    assert oidc_row["properties"] == oidc
    sub = await store.get_subscription(sub_id)
    assert sub is not None
    assert sub.options["sasl.password"] == SUBSCRIPTION_PASSWORD
    assert sub.options["client.id"] == "at-rest"
    deployments = {str(d["id"]): d for d in await store.list_deployments()}
    assert deployments.pop(legacy_id)["uri"] == f"http://depuser:{URI_PASSWORD}@{host}/"
    (dep,) = deployments.values()
    assert dep["additional_headers"]["X-Shared-Pw"] == SHARED_PW
    assert dep["additional_headers"]["Authorization"] == f"Bearer {HEADER_TOKEN}"
    # Harmless values stay readable in the table: names, brokers, content type.
    raw = scan_everything(dynamo_client, table_names)
    assert "application/json" in raw
    assert "sasl.password" in raw  # the option's name, not its value


async def test_rows_written_in_clear_are_read_and_sealed_on_their_next_write(
    store: DynamoStore, dynamo_client: Any, table_names: TableNames
) -> None:
    # A cluster row as the previous version wrote it: the password in clear.
    dynamo_client.put_item(
        TableName=table_names.clusters,
        Item={
            "name": {"S": "legacy"},
            "created_at": {"N": "1"},
            "properties": {
                "M": {
                    "bootstrap.servers": {"S": "127.0.0.1:9092"},
                    "sasl.password": {"S": CLUSTER_PASSWORD},
                }
            },
        },
    )
    row = await store.get_cluster("legacy")
    assert row is not None
    assert row["properties"]["sasl.password"] == CLUSTER_PASSWORD
    assert CLUSTER_PASSWORD in scan_everything(dynamo_client, table_names)

    await store.replace_cluster(row)
    assert_no_secret_in(scan_everything(dynamo_client, table_names))
    again = await store.get_cluster("legacy")
    assert again == row


@pytest.mark.promise("p-sec-sealed-location")
async def test_a_sealed_value_copied_to_another_row_does_not_open(
    store: DynamoStore, dynamo_client: Any, table_names: TableNames
) -> None:
    for name in ("a", "b"):
        await store.create_cluster(
            {"name": name, "properties": {"sasl.password": f"pw-{name}"}, "created_at": 1}
        )
    item_a = dynamo_client.get_item(TableName=table_names.clusters, Key={"name": {"S": "a"}})
    forged = {**item_a["Item"], "name": {"S": "b"}}
    dynamo_client.put_item(TableName=table_names.clusters, Item=forged)
    with pytest.raises(SecretError, match="does not open"):
        await store.get_cluster("b")


@pytest.mark.promise("p-sec-data-key-bound")
async def test_data_keys_are_reused_within_their_bound_and_cached_for_reading(
    kms_client: Any, kms_key: str
) -> None:
    envelope = KmsEnvelope(kms_client, kms_key, max_uses=3)
    sealed = [await envelope.seal({"pw": f"secret-{n}"}, f"rows/{n}") for n in range(7)]
    # 7 values, at most 3 per data key: 3 GenerateDataKey calls.
    assert envelope.kms_calls == 3
    assert len({s["pw"].split(".")[1] for s in sealed}) == 3
    assert len({s["pw"] for s in sealed}) == 7
    for n, value in enumerate(sealed):
        assert await envelope.open(value, f"rows/{n}") == {"pw": f"secret-{n}"}
    assert envelope.kms_calls == 3  # the keys it generated are known without a Decrypt

    reader = KmsEnvelope(kms_client, kms_key)  # another poller: must ask KMS once per key
    for n, value in enumerate(sealed):
        assert await reader.open(value, f"rows/{n}") == {"pw": f"secret-{n}"}
    assert reader.kms_calls == 3


@pytest.mark.promise("p-sec-at-rest")
async def test_without_a_kms_key_secrets_are_refused_with_a_400_naming_the_option(
    kafka_bootstrap: str,
    dynamo_client: Any,
    table_names: TableNames,
    moto_server: MotoServer,
) -> None:
    refusing = DynamoStore(dynamo_client, table_names)  # no [secrets] kms-key-id
    refusing.create_tables()
    with pytest.raises(ValidationError, match=r"property 'sasl.password' .*kms-key-id"):
        await refusing.create_cluster(
            {"name": "c", "properties": {"sasl.password": CLUSTER_PASSWORD}, "created_at": 1}
        )
    # A reference is not a secret: stored as written.
    reference = {"sasl.password": "secretsmanager:kafka/ingress:password"}
    await refusing.create_cluster({"name": "r", "properties": reference, "created_at": 1})
    stored = await refusing.get_cluster("r")
    assert stored is not None
    assert stored["properties"] == reference
    with pytest.raises(ValidationError, match=r"additional header 'Authorization'"):
        await refusing.put_deployment(
            {"id": "dp_1", "uri": "http://h/", "additional_headers": {"Authorization": "x"}}
        )

    ingress = Ingress(kafka_bootstrap, refusing, moto_server.endpoint_url)
    try:
        async with await admin(ingress) as api:
            refused = await api.post(
                "/kafka-clusters",
                json={
                    "name": "plain",
                    "properties": {
                        "bootstrap.servers": kafka_bootstrap,
                        "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanism": "PLAIN",
                        "sasl.username": "u",
                        "sasl.password": CLUSTER_PASSWORD,
                    },
                },
            )
        assert refused.status_code == 400, refused.text
        message = refused.json()["message"]
        assert "'sasl.password'" in message
        assert "kms-key-id" in message
        assert CLUSTER_PASSWORD not in refused.text
    finally:
        await ingress.stop()
    assert_no_secret_in(scan_everything(dynamo_client, table_names))


async def test_a_store_that_can_read_plaintext_rows_needs_the_key_for_sealed_ones(
    store: DynamoStore, dynamo_client: Any, table_names: TableNames
) -> None:
    await store.create_cluster(
        {"name": "s", "properties": {"sasl.password": CLUSTER_PASSWORD}, "created_at": 1}
    )
    keyless = DynamoStore(dynamo_client, table_names, secrets=SecretSealing.plaintext())
    with pytest.raises(SecretError, match="kms-key-id"):
        await keyless.get_cluster("s")
