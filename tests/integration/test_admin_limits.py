"""The admin API bounds everything a client sends, on a real server (uvicorn on loopback).

Each test reproduces one attack of the security review against the server a poller runs
(:class:`adapter.api.server.AdminServer`, with the real protocol, middleware and moto-backed
store): oversized or endless headers, oversized bodies, deep JSON, long strings, items too
large for DynamoDB, bad version prefixes and inputs that used to end in a 5xx. Every refusal
is a 4xx with a message, and the server keeps answering ``/health`` at once afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.api.catalog import ClusterCatalog
from adapter.api.server import AdminServer, admin_state
from adapter.config import load_settings
from adapter.store.dynamo import DynamoStore
from tests._admin_api import put_greeter
from tests._http_fixtures import HandlerServer

TOKEN = "limits-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MANIFEST = {"services": [{"name": "Greeter", "ty": "SERVICE", "handlers": [{"name": "greet"}]}]}


@contextlib.asynccontextmanager
async def admin_server(store: DynamoStore, **limits: Any) -> AsyncIterator[str]:
    env = {
        "KAFKA_INGRESS_KAFKA_CLUSTERS": '[{name="local", brokers=["127.0.0.1:19092"]}]',
        "KAFKA_INGRESS_ADMIN_TOKEN": TOKEN,
    }
    settings = load_settings(None, env=env)
    admin_settings = settings.admin.model_copy(update={"header_timeout_s": 1.0, **limits})
    settings = settings.model_copy(update={"admin": admin_settings})
    state = admin_state(settings, store, ClusterCatalog(settings, store))
    server = AdminServer(state, "127.0.0.1:0")
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest.fixture
async def admin(store: DynamoStore) -> AsyncIterator[str]:
    async with admin_server(store) as url:
        yield url


async def raw_exchange(url: str, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server answers before closing."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))

    async def send() -> None:
        # The server may answer, and stop reading, before all of it is sent.
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        sending.cancel()
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def message_of(answer: bytes) -> str:
    return str(json.loads(answer.partition(b"\r\n\r\n")[2])["message"])


async def health_is_prompt(url: str) -> None:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        assert (await client.get("/health")).status_code == 200
    assert time.monotonic() - started < 1.0


@pytest.mark.promise("p-config-max-header-bytes", "p-api-limits")
async def test_a_1_mib_header_is_refused_with_431_before_the_token_check(admin: str) -> None:
    request = b"GET /subscriptions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    answer = await raw_exchange(admin, request)
    assert status_of(answer) == 431
    assert "larger than 16384 bytes" in message_of(answer)
    await health_is_prompt(admin)


@pytest.mark.promise("p-config-max-header-bytes")
async def test_the_header_limit_is_configurable(store: DynamoStore) -> None:
    async with (
        admin_server(store, max_header_bytes=64 * 1024) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as client,
    ):
        fits = await client.get("/subscriptions", headers={"X-Big": "a" * 40_000})
        assert fits.status_code == 200
        too_big = await client.get("/subscriptions", headers={"X-Big": "a" * 70_000})
        assert too_big.status_code == 431


@pytest.mark.promise("p-config-max-headers", "p-api-limits")
async def test_too_many_headers_are_refused_with_431(admin: str) -> None:
    headers = {f"X-H{i}": "1" for i in range(150)}
    async with httpx.AsyncClient(base_url=admin, headers=AUTH) as client:
        response = await client.get("/subscriptions", headers=headers)
    assert response.status_code == 431
    assert "more than 100 request headers" in response.json()["message"]


@pytest.mark.promise("p-config-header-timeout", "p-api-limits")
async def test_headers_that_never_finish_are_cut_off_with_408(admin: str) -> None:
    # A slow client (slowloris): the header timeout is 1 s in this test's settings.
    started = time.monotonic()
    answer = await raw_exchange(admin, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a", timeout=10)
    assert status_of(answer) == 408
    assert time.monotonic() - started < 5


@pytest.mark.promise("p-config-max-body", "p-api-limits")
async def test_a_16_mib_body_is_refused_with_413_without_being_read(admin: str) -> None:
    # Only the head is sent: the answer comes from Content-Length alone.
    head = (
        f"POST /subscriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {16 << 20}\r\n\r\n"
    )
    answer = await raw_exchange(admin, head.encode())
    assert status_of(answer) == 413
    assert "larger than 1048576 bytes" in message_of(answer)
    await health_is_prompt(admin)


@pytest.mark.promise("p-config-max-body")
async def test_a_chunked_body_past_the_limit_is_refused_with_413(admin: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    async with httpx.AsyncClient(base_url=admin, headers=AUTH) as client:
        response = await client.post("/subscriptions", content=chunks())
    assert response.status_code == 413


SUB = {"source": "kafka://local/orders", "sink": "service://Greeter/greet"}
BAD_INPUT: list[tuple[str, Any, str]] = [
    ("/subscriptions", "[" * 100_000 + "]" * 100_000, "nested more than 32"),
    ("/subscriptions", {**SUB, "options": {"client.id": "c" * 300_000}}, "client.id"),
    # The reported freeze: a 100,000-character unknown option name.
    ("/subscriptions", {**SUB, "options": {"x" * 100_000: "1"}}, "at most 1024"),
    ("/subscriptions", {**SUB, "options": {"x" * 1000: "1"}}, "at most 256"),
    ("/subscriptions", {**SUB, "options": {"retry.max.attempts": "-5"}}, "retry.max.attempts"),
    (
        "/kafka-clusters",
        {"name": "big", "properties": {"bootstrap.servers": "h:1", "client.id": "p" * 500_000}},
        "at most 65536",
    ),
    ("/deployments", {"uri": "http://[::1"}, "'uri' is invalid"),
    ("/deployments", {"uri": "http://127.0.0.1:9/x?"}, "no query or fragment"),
    ("/deployments", {"uri": "http://127.0.0.1:9/x#"}, "no query or fragment"),
    (
        "/deployments",
        {"uri": "http://127.0.0.1:9", "additional_headers": {"Host": "evil"}},
        "'Host' cannot be set",
    ),
    (
        "/deployments",
        {"uri": "http://127.0.0.1:9", "additional_headers": {"Content-Length": "0"}},
        "'Content-Length' cannot be set",
    ),
]


@pytest.mark.parametrize(("path", "body", "expected"), BAD_INPUT, ids=[c[2] for c in BAD_INPUT])
@pytest.mark.promise("p-config-body-limits", "p-api-400")
async def test_bad_input_is_a_prompt_400_naming_the_field(
    admin: str, store: DynamoStore, path: str, body: Any, expected: str
) -> None:
    await put_greeter(store)
    async with httpx.AsyncClient(base_url=admin, headers=AUTH, timeout=10) as client:
        content = body if isinstance(body, str) else json.dumps(body)
        started = time.monotonic()
        response = await client.post(path, content=content)
        assert response.status_code == 400, (path, expected, response.text[:300])
        message = response.json()["message"]
        assert expected in message, (expected, message[:300])
        assert len(response.content) < 4096  # never the input echoed back
        assert time.monotonic() - started < 2.0
    await health_is_prompt(admin)


@pytest.mark.promise("p-config-body-limits")
async def test_an_item_too_large_for_dynamodb_is_400(
    admin: str, handler_server: HandlerServer
) -> None:
    async def discover(request: Request) -> Response:
        return JSONResponse(MANIFEST)

    url = await handler_server(Starlette(routes=[Route("/discover", discover)]))
    metadata = {f"k{i}": "m" * 60_000 for i in range(10)}  # 600 kB: fits the body, not an item
    async with httpx.AsyncClient(base_url=admin, headers=AUTH, timeout=10) as client:
        response = await client.post("/deployments", json={"uri": url, "metadata": metadata})
    assert response.status_code == 400, response.text[:300]
    assert "item limit" in response.json()["message"]


@pytest.mark.parametrize("prefix", ["/v02", "/v0004", "/v\u0662", "/v2\u0662"])
async def test_only_plain_version_numbers_are_version_prefixes(admin: str, prefix: str) -> None:
    async with httpx.AsyncClient(base_url=admin, headers=AUTH) as client:
        assert (await client.get("/v2/subscriptions")).status_code == 200
        response = await client.get(f"{prefix}/subscriptions")
    assert response.status_code == 404
    assert "no route" in response.json()["message"]
