"""The Invoke client takes its proxy from the environment as boto3 does (HTTP(S)_PROXY,
NO_PROXY), read once when the endpoint is resolved; a real loopback server plays the proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from adapter.invokers.base import Outcome
from adapter.invokers.lambda_client import LambdaClient
from adapter.invokers.lambda_errors import LambdaReply

ENDPOINT = "http://lambda.invalid:9"


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """A forward proxy that answers every request itself; yields the URLs it was asked for."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(str(request.url))
        return web.json_response({"proxied": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    try:
        yield asked
    finally:
        await runner.cleanup()


async def test_calls_go_through_the_proxy_the_environment_names(proxy: list[str]) -> None:
    client = LambdaClient(endpoint_url=ENDPOINT, region="us-east-1")
    try:
        for _ in range(2):
            reply = await client.invoke("orders", b"{}")
            assert isinstance(reply, LambdaReply), reply
            assert reply.payload == b'{"proxied": true}'
    finally:
        await client.aclose()
    assert proxy == [f"{ENDPOINT}/2015-03-31/functions/orders/invocations"] * 2


async def test_no_proxy_sends_the_call_directly(
    proxy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "lambda.invalid")
    client = LambdaClient(endpoint_url=ENDPOINT, region="us-east-1", timeout_s=5)
    try:
        outcome = await client.invoke("orders", b"{}")
    finally:
        await client.aclose()
    assert isinstance(outcome, Outcome)
    assert "cannot connect to http://lambda.invalid:9" in (outcome.error or "")
    assert proxy == []
