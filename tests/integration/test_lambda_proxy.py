"""The Invoke client takes its proxy from the environment as boto3 does (HTTP(S)_PROXY,
NO_PROXY), read once when the endpoint is resolved, and no credentials from ``~/.netrc``
beside its signature. Real loopback servers play the proxy and the endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from adapter.invokers.lambda_client import LambdaClient
from adapter.invokers.lambda_errors import LambdaReply

PROXIED_ENDPOINT = "http://lambda.invalid:9"
_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@dataclass
class Server:
    """A loopback HTTP server answering every request itself; what it was asked is kept."""

    url: str = ""
    asked: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(str(request.url))
        self.authorizations.append(request.headers.get("Authorization", ""))
        return web.json_response({"from": self.url})


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    """(proxy, direct endpoint)."""
    made: list[web.AppRunner] = []
    pair = (Server(), Server())
    for server in pair:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}"
        made.append(runner)
    try:
        yield pair
    finally:
        for runner in made:
            await runner.cleanup()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in _PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    return monkeypatch


async def _invoke_once(endpoint_url: str) -> None:
    client = LambdaClient(endpoint_url=endpoint_url, region="us-east-1")
    try:
        reply = await client.invoke("orders", b"{}")
    finally:
        await client.aclose()
    assert isinstance(reply, LambdaReply), reply


async def test_calls_go_through_the_proxy_the_environment_names_read_once(
    servers: tuple[Server, Server], env: pytest.MonkeyPatch
) -> None:
    proxy, _ = servers
    env.setenv("HTTP_PROXY", proxy.url)
    client = LambdaClient(endpoint_url=PROXIED_ENDPOINT, region="us-east-1")
    try:
        first = await client.invoke("orders", b"{}")
        env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # read once: later changes do nothing
        second = await client.invoke("orders", b"{}")
    finally:
        await client.aclose()
    for reply in (first, second):
        assert isinstance(reply, LambdaReply), reply
    assert proxy.asked == [f"{PROXIED_ENDPOINT}/2015-03-31/functions/orders/invocations"] * 2


async def test_no_proxy_sends_the_call_directly(
    servers: tuple[Server, Server], env: pytest.MonkeyPatch
) -> None:
    proxy, direct = servers
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("NO_PROXY", "127.0.0.1")
    await _invoke_once(direct.url)
    assert direct.asked == [f"{direct.url}/2015-03-31/functions/orders/invocations"]
    assert proxy.asked == []


async def test_netrc_credentials_never_ride_beside_the_signature(
    servers: tuple[Server, Server], env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """aiohttp's trust_env added ~/.netrc credentials for the endpoint's host, and then
    refused the request for having two Authorization values."""
    _, direct = servers
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    env.setenv("NETRC", str(netrc))
    await _invoke_once(direct.url)
    assert direct.authorizations[0].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
