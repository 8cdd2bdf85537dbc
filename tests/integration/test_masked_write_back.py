"""Writing back what the admin API showed keeps the stored secrets (real server, moto).

GET shows secrets as ``***`` (and credentials in URLs as ``https://***@...``); a client that
edits one field and sends the rest back as it read it, as Restate's and Kubernetes' tooling
do, must not replace the stored secrets with the mask.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.store.dynamo import DynamoStore
from tests._admin_api import authorised_client, call, put_greeter
from tests._http_fixtures import HandlerServer

TOKEN = "write-back-token-0123456789"
PASSWORD = "stored-pw-Ty62e"
URL_PASSWORD = "url-pw-Bn27c"
HEADER_SECRET = "hdr-pw-Mx84d"


@pytest.fixture
async def api(store: DynamoStore) -> AsyncIterator[httpx.AsyncClient]:
    async with authorised_client(store, TOKEN) as client:
        yield client


@pytest.mark.promise("p-sec-write-back")
async def test_cluster_properties_written_back_as_shown_keep_their_secrets(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    properties = {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "alice",
        "sasl.password": PASSWORD,
        "client.id": "before",
    }
    await call(api, "POST", "/kafka-clusters", {"name": "c1", "properties": properties}, 201)
    shown = (await api.get("/kafka-clusters/c1")).json()["properties"]
    assert shown["sasl.password"] == shown["sasl.username"] == "***"
    await call(
        api, "PATCH", "/kafka-clusters/c1", {"properties": {**shown, "client.id": "after"}}, 200
    )
    (stored,) = [c for c in await store.list_clusters() if c["name"] == "c1"]
    assert stored["properties"] == {**properties, "client.id": "after"}


@pytest.mark.promise("p-sec-write-back")
async def test_subscription_options_written_back_as_shown_keep_their_secrets(
    api: httpx.AsyncClient, store: DynamoStore
) -> None:
    await put_greeter(store)
    token_url = f"https://client:{URL_PASSWORD}@idp.example/token"
    options = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "bob",
        "sasl.password": PASSWORD,
        "sasl.oauthbearer.token.endpoint.url": token_url,
    }
    body = {"source": "kafka://local/t", "sink": "service://Greeter/greet", "options": options}
    created = await call(api, "POST", "/subscriptions", body, 201)
    shown = created["options"]
    assert shown["sasl.password"] == "***"
    assert shown["sasl.oauthbearer.token.endpoint.url"] == "https://***@idp.example/token"
    patched = {**shown, "max.in.flight": "3"}
    await call(api, "PATCH", f"/subscriptions/{created['id']}", {"options": patched}, 200)
    stored = await store.get_subscription(created["id"])
    assert stored is not None
    assert stored.options["sasl.password"] == PASSWORD
    assert stored.options["sasl.oauthbearer.token.endpoint.url"] == token_url
    assert stored.options["max.in.flight"] == "3"
    # A mask with nothing stored behind it is refused, naming the option.
    fresh = {**body, "options": {"sasl.password": "***"}}
    refused = await call(api, "POST", "/subscriptions", fresh, 400)
    assert "'sasl.password'" in refused["message"]


async def test_deployment_headers_written_back_as_listed_keep_their_values(
    api: httpx.AsyncClient, store: DynamoStore, handler_server: HandlerServer
) -> None:
    seen: list[str | None] = []

    async def discover(request: Request) -> Response:
        seen.append(request.headers.get("x-shared-pw"))
        return JSONResponse({"services": [{"name": "S", "ty": "SERVICE", "handlers": []}]})

    url = await handler_server(Starlette(routes=[Route("/discover", discover)]))
    headers = {"X-Shared-Pw": HEADER_SECRET, "Content-Type": "application/json"}
    await call(api, "POST", "/deployments", {"uri": url, "additional_headers": headers}, 201)
    listed = (await api.get("/deployments")).json()["deployments"][0]
    assert listed["additional_headers"] == {
        "X-Shared-Pw": "***",
        "Content-Type": "application/json",
    }
    body = {"uri": url, "additional_headers": listed["additional_headers"], "force": True}
    await api.post("/deployments", json=body)
    assert seen == [HEADER_SECRET, HEADER_SECRET]
    (stored,) = await store.list_deployments()
    assert stored["additional_headers"] == headers
