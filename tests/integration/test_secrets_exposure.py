"""No secret is ever shown: a full scenario with planted secrets, then a search for them.

A real poller (admin API with a token, real broker with SASL and OAUTHBEARER listeners, a real
OIDC provider, moto over HTTP, handler deployments on loopback) is driven the way an operator
would, through the admin API and the CLI, with secrets planted everywhere they can go: a SASL
password, an OIDC client secret, credentials in a token endpoint URL, credentials in a
deployment URI, a custom credential header of a deployment, secrets in rejected options and a
deployment that echoes its request headers into its error answers. Then every API response,
every CLI output and every log line (as the poller writes it) is searched for each secret and
its encodings (URL-encoded, base64, inside HTTP Basic credentials): none may be found.

Also here: writing back what GET showed keeps the credentials working, and readiness checks
OAUTHBEARER clusters with the consumers' token provider (and says only the status to strangers).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.config import Settings
from adapter.local.moto import MotoServer
from adapter.logs import SecretMaskingFilter
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._security_fixtures import (
    CLIENT_ID,
    CLIENT_SECRET,
    PLAIN_USERS,
    OidcProvider,
    SecureBroker,
    create_topic,
    secure_broker,
)
from tests.harness import Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

TOKEN = "exposure-admin-token-0123456789"
((PLAIN_USER, PLAIN_PASSWORD),) = PLAIN_USERS.items()
URL_USER, URL_PASSWORD = "tokuser", "url-pw-Rk72vQ"
URI_PASSWORD = "uri-pw-Jd55tW"
HEADER_SECRET = "hdr-pw-Lk39qZ"
OPTION_SECRET = "opt-pw-Hs48nX"
PLANTED = (PLAIN_PASSWORD, CLIENT_SECRET, URL_PASSWORD, URI_PASSWORD, HEADER_SECRET, OPTION_SECRET)
SERVICE, HANDLER = "Secured", "take"


def encodings(secret: str, *users: str) -> dict[str, str]:
    """Each form a secret could take in a text: as is, URL-encoded, base64, HTTP Basic."""
    raw = secret.encode()
    forms = {
        "plain": secret,
        "url": quote(secret, safe=""),
        "form": quote_plus(secret),
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    for user in users:
        forms[f"basic:{user}"] = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return forms


def find_secrets(texts: dict[str, str]) -> list[str]:
    found = []
    for secret in PLANTED:
        for form, needle in encodings(secret, CLIENT_ID, PLAIN_USER, URL_USER, "user").items():
            for where, text in texts.items():
                if needle in text:
                    found.append(f"{secret} ({form}) in {where}")
    return found


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def secure(oidc: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with secure_broker(tmp_path_factory.mktemp("tls"), oidc) as broker:
        yield broker


class TokenIngress(Ingress):
    """The harness's in-process poller, with an admin token."""

    def build_settings(self) -> Settings:
        settings = super().build_settings()
        admin = settings.admin.model_copy(update={"token": TOKEN, "allow_open": False})
        return settings.model_copy(update={"admin": admin})


@pytest.fixture
async def ingress(
    secure: SecureBroker, store: DynamoStore, moto_server: MotoServer
) -> AsyncIterator[TokenIngress]:
    harness = TokenIngress(secure.plaintext, store, moto_server.endpoint_url)
    try:
        yield harness
    finally:
        await harness.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log line at every level, as the poller writes it (through its masking filter)."""
    caplog.set_level(logging.DEBUG, logger="adapter")
    caplog.set_level(logging.DEBUG, logger="kafka_ingress")
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(SecretMaskingFilter())
    return caplog


class Recorder:
    """An admin API client that keeps every response text."""

    def __init__(self, base_url: str) -> None:
        self.texts: dict[str, str] = {}
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
            event_hooks={"response": [self._keep]},
        )

    async def _keep(self, response: httpx.Response) -> None:
        await response.aread()
        where = f"{response.request.method} {response.request.url.path} #{len(self.texts)}"
        self.texts[where] = response.text

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.client.request(method, path, json=body)
        assert response.status_code == status, (method, path, response.text[:500])
        return response.json() if response.content else None


def oauth_properties(bootstrap: str, token_url: str) -> dict[str, str]:
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": CLIENT_ID,
        "sasl.oauthbearer.client.secret": CLIENT_SECRET,
        "sasl.oauthbearer.token.endpoint.url": token_url,
    }


async def deployment(handler_server: HandlerServer) -> tuple[RecordingHandler, str, str]:
    """A handler that serves discovery, and a deployment that echoes its request headers
    (credentials included) into the body of a 500 answer to discovery."""
    handler = RecordingHandler()

    async def discover(request: Request) -> Response:
        services = [{"name": SERVICE, "ty": "SERVICE", "handlers": [{"name": HANDLER}]}]
        return JSONResponse({"services": services})

    async def echo(request: Request) -> Response:
        return JSONResponse({"you sent": dict(request.headers)}, status_code=500)

    handler.app.router.routes.append(Route("/discover", discover))
    url = await handler_server(handler.app)
    echo_url = await handler_server(Starlette(routes=[Route("/discover", echo)]))
    return handler, url, echo_url


async def cli(ingress: Ingress, *args: str) -> str:
    """The CLI's output (it talks to the in-process poller, so it must not block the loop)."""
    assert ingress.poller is not None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapter",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_INGRESS_ADMIN_URL": f"http://{ingress.poller.admin_address}",
            "KAFKA_INGRESS_ADMIN_TOKEN": TOKEN,
        },
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return f"exit {process.returncode}\n{out.decode()}\n{err.decode()}"


async def consumed(handler: RecordingHandler, topic_numbers: set[int]) -> None:
    def seen() -> set[int]:
        return {int(orjson.loads(c.body)["n"]) for c in handler.acked()}

    await eventually(
        lambda: seen() >= topic_numbers,
        timeout=60,
        message=lambda: f"acked {sorted(seen())}, want {sorted(topic_numbers)}",
    )


async def send(secure: SecureBroker, topic: str, numbers: range) -> None:
    await produce(secure.plaintext, topic, [(None, orjson.dumps({"n": n})) for n in numbers])


@pytest.mark.promise("p-api-secrets", "p-sec-secrets-masked")
async def test_planted_secrets_never_show_in_responses_cli_output_or_logs(
    secure: SecureBroker,
    oidc: OidcProvider,
    ingress: TokenIngress,
    handler_server: HandlerServer,
    refused_port: int,
    logs: pytest.LogCaptureFixture,
) -> None:
    handler, url, echo_url = await deployment(handler_server)
    poller = await ingress.start()
    api = Recorder(f"http://{poller.admin_address}")
    cli_outputs: dict[str, str] = {}
    try:
        # Clusters through the API: SASL/PLAIN, OIDC, and OIDC whose token endpoint URL
        # carries credentials (and cannot be reached).
        plain = {
            "bootstrap.servers": secure.address("SASL"),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": PLAIN_USER,
            "sasl.password": PLAIN_PASSWORD,
        }
        await api.call("POST", "/kafka-clusters", {"name": "plain", "properties": plain}, 201)
        good = oauth_properties(secure.address("OAUTH"), oidc.token_url)
        await api.call("POST", "/kafka-clusters", {"name": "oidc", "properties": good}, 201)
        broken_url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{refused_port}/token"
        broken = oauth_properties(secure.address("OAUTH"), broken_url)
        await api.call("POST", "/kafka-clusters", {"name": "broken", "properties": broken}, 201)

        # Deployments: credentials in the URI are refused; a credential header is kept but
        # never shown; a deployment echoing its headers into an error is not quoted.
        userinfo = url.replace("http://", f"http://user:{URI_PASSWORD}@")
        await api.call("POST", "/deployments", {"uri": userinfo}, 400)
        headers = {"X-Shared-Pw": HEADER_SECRET}
        await api.call(
            "POST", "/deployments", {"uri": echo_url, "additional_headers": headers}, 400
        )
        cli_outputs["register"] = await cli(
            ingress, "deployments", "register", url, "--header", f"X-Shared-Pw:{HEADER_SECRET}"
        )
        assert cli_outputs["register"].startswith("exit 0"), cli_outputs["register"]

        # Subscriptions; bad ones carry secrets as option values.
        sink = f"service://{SERVICE}/{HANDLER}"
        topics = {name: await create_topic(secure.plaintext) for name in ("plain", "oidc")}
        subs = {}
        for cluster in ("plain", "oidc", "broken"):
            topic = topics.get(cluster, "never")
            body = {"source": f"kafka://{cluster}/{topic}", "sink": sink}
            body["options"] = {"auto.offset.reset": "earliest"}
            subs[cluster] = (await api.call("POST", "/subscriptions", body, 201))["id"]
        bad_options: list[dict[str, Any]] = [
            {"sasl.password": OPTION_SECRET, "sasl.mechanism": "NOPE"},
            {"sasl.oauthbearer.client.secret": OPTION_SECRET, "x.password": OPTION_SECRET},
            {"ssl.key.password": OPTION_SECRET, "ssl.key.pem": OPTION_SECRET},
            {"sasl.jaas.config": f'x required password="{OPTION_SECRET}";'},
            {"sasl.password": OPTION_SECRET, "security.protocol": "NOPE"},
            {"sasl.oauthbearer.token.endpoint.url": f"ftp://u:{OPTION_SECRET}@h/t"},
        ]
        for options in bad_options:
            body = {"source": "kafka://plain/x", "sink": sink, "options": options}
            await api.call("POST", "/subscriptions", body, 400)

        await send(secure, topics["plain"], range(5))
        await send(secure, topics["oidc"], range(100, 105))
        await consumed(handler, {*range(5), *range(100, 105)})
        assert {c.headers["x-shared-pw"] for c in handler.calls} == {HEADER_SECRET}

        # The broken cluster's subscription reports why, with the URL's credentials masked.
        async def broken_reported() -> bool:
            sub = await api.call("GET", f"/subscriptions/{subs['broken']}")
            return bool((sub.get("runtime") or {}).get("last_error"))

        await eventually(broken_reported, timeout=60, message="no last_error for 'broken'")

        # Writing back exactly what GET showed keeps working credentials.
        shown = await api.call("GET", "/kafka-clusters/plain")
        assert shown["properties"]["sasl.password"] == "***"
        await api.call("PATCH", "/kafka-clusters/plain", {"properties": shown["properties"]})
        listed = (await api.call("GET", "/deployments"))["deployments"][0]
        assert listed["additional_headers"] == {"X-Shared-Pw": "***"}
        await api.call(
            "POST",
            "/deployments",
            {"uri": url, "additional_headers": listed["additional_headers"], "force": True},
        )
        handler.calls.clear()
        await send(secure, topics["plain"], range(5, 10))
        await consumed(handler, set(range(5, 10)))
        assert {c.headers["x-shared-pw"] for c in handler.calls} == {HEADER_SECRET}

        for path in (
            "/kafka-clusters",
            "/kafka-clusters/broken?include_subscriptions=true",
            "/deployments",
            f"/deployments/{listed['id']}",
            "/subscriptions",
            *(f"/subscriptions/{s}" for s in subs.values()),
            "/invocations",
            "/metrics",
        ):
            response = await api.client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        ready = await api.client.get("/health/ready")
        assert ready.json()["checks"]["kafka:oidc"] == "ok"
        for args in (
            ("deployments", "list"),
            ("deployments", "describe", listed["id"]),
            ("subscriptions", "list"),
            *(("subscriptions", "describe", s) for s in subs.values()),
            ("invocations", "list"),
        ):
            cli_outputs[" ".join(args)] = await cli(ingress, *args)
    finally:
        await api.client.aclose()

    texts = {
        **api.texts,
        **{f"cli {k}": v for k, v in cli_outputs.items()},
        **{f"log {i}": r.getMessage() for i, r in enumerate(logs.records)},
    }
    assert len(api.texts) >= 25
    assert any("***" in t for t in texts.values())
    assert find_secrets(texts) == []


async def test_readiness_uses_the_consumers_token_provider_and_tells_strangers_only_the_status(
    secure: SecureBroker,
    oidc: OidcProvider,
    ingress: TokenIngress,
    handler_server: HandlerServer,
) -> None:
    ingress.cluster_options = {
        k: v
        for k, v in oauth_properties(secure.address("OAUTH"), oidc.token_url).items()
        if k != "bootstrap.servers"
    }
    ingress.bootstrap = secure.address("OAUTH")
    handler, url, _ = await deployment(handler_server)
    await ingress.register(
        url, SERVICE, ServiceType.SERVICE, {HANDLER: (HandlerType.SERVICE, InputKind.JSON)}
    )
    poller = await ingress.start()
    topic = await create_topic(secure.plaintext)
    await ingress.subscribe(topic, SERVICE, HANDLER)
    await send(secure, topic, range(3))
    await consumed(handler, set(range(3)))
    fetched = len(oidc.issued)

    async with httpx.AsyncClient(base_url=f"http://{poller.admin_address}", timeout=30) as client:
        ready = await client.get("/health/ready", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"dynamodb": "ok", "kafka:local": "ok"}
        # The consumers' provider served the check: no token of its own was fetched.
        assert len(oidc.issued) == fetched
        stranger = await client.get("/health/ready")
        assert stranger.status_code == 200
        assert stranger.json() == {"status": "ready"}
