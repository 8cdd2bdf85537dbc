"""The Invoke client's connection pool and the send fence, against a loopback server standing
in for the Lambda endpoint."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from adapter.invokers.base import NotSent, Outcome, OutcomeKind, fence_sends
from adapter.invokers.lambda_client import LambdaClient
from adapter.invokers.lambda_errors import LambdaReply

_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@dataclass
class Endpoint:
    """Answers every Invoke; one for a function named ``hang`` only once ``release`` is set."""

    url: str = ""
    functions: list[str] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        function = request.match_info["function"]
        self.functions.append(function)
        if function == "hang":
            self.entered.set()
            await self.release.wait()
        return web.json_response({"function": function})


@pytest.fixture
async def endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Endpoint]:
    for name in _PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    served = Endpoint()
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{function}/invocations", served.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    served.url = f"http://{host}:{port}"
    try:
        yield served
    finally:
        served.release.set()
        await runner.cleanup()


@pytest.mark.promise("p-ops-send-fence")
async def test_no_call_goes_out_when_the_fence_lapsed_while_waiting_for_a_connection(
    endpoint: Endpoint,
) -> None:
    """All connections busy: a call waits for one, past the fence check made before it. If
    the poller's ownership lapses meanwhile, the call must not go out when one comes free."""
    owner = True

    async def fenced(client: LambdaClient) -> LambdaReply:
        fence_sends(lambda: owner)
        reply = await client.invoke("orders", b"{}")
        assert isinstance(reply, LambdaReply), reply
        return reply

    client = LambdaClient(endpoint_url=endpoint.url, region="us-east-1", max_connections=1)
    try:
        holding = asyncio.create_task(client.invoke("hang", b"{}"))
        await endpoint.entered.wait()  # the only connection is busy until `release`
        waiting = asyncio.create_task(fenced(client))
        await asyncio.sleep(0)  # let it run up to its wait for the connection
        assert not waiting.done()
        owner = False
        assert endpoint.functions == ["hang"]
        endpoint.release.set()
        assert isinstance(await holding, LambdaReply)
        with pytest.raises(NotSent):
            await waiting
        assert endpoint.functions == ["hang"]
        owner = True  # a call whose fence holds still goes out on the freed connection
        await fenced(client)
        assert endpoint.functions == ["hang", "orders"]
    finally:
        await client.aclose()


async def test_calls_beyond_the_pool_wait_before_the_client_never_in_it(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp queues a call for a connection only when ``max_connections`` are in use; the
    client's slots keep it from getting there (the wait is theirs, then fenced)."""
    queued: list[object] = []
    wait = aiohttp.TCPConnector._wait_for_available_connection

    async def recorded(self: aiohttp.TCPConnector, *args: object, **kwargs: object) -> None:
        queued.append(args)
        await wait(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.TCPConnector, "_wait_for_available_connection", recorded)
    client = LambdaClient(endpoint_url=endpoint.url, region="us-east-1", max_connections=2)
    try:
        replies = await asyncio.gather(*(client.invoke("orders", b"{}") for _ in range(20)))
    finally:
        await client.aclose()
    assert all(isinstance(reply, LambdaReply) for reply in replies)
    assert len(endpoint.functions) == 20
    assert queued == []


@pytest.mark.promise("p-ops-send-fence")
async def test_a_call_is_checked_once_signed_right_before_it_goes_out(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause may fall between the last wait and the SigV4 signing: the last check comes
    after the signing, so a call signed after a wake never goes out unchecked."""
    from adapter.invokers import lambda_client

    owner = True
    sign = lambda_client.signed_headers

    def pausing_sign(*args: object, **kwargs: object) -> dict[str, str]:
        nonlocal owner
        owner = False  # the poller pauses here, past its session
        return sign(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lambda_client, "signed_headers", pausing_sign)
    client = LambdaClient(endpoint_url=endpoint.url, region="us-east-1")
    fence_sends(lambda: owner)
    try:
        with pytest.raises(NotSent):
            await client.invoke("orders", b"{}")
        assert endpoint.functions == []
    finally:
        fence_sends(None)
        await client.aclose()


async def test_a_call_that_times_out_after_going_out_may_have_run(endpoint: Endpoint) -> None:
    client = LambdaClient(endpoint_url=endpoint.url, region="us-east-1")
    try:
        timed_out = await client.invoke("hang", b"{}", timeout_s=0.3)
    finally:
        await client.aclose()
    assert endpoint.functions == ["hang"]  # it got there
    assert isinstance(timed_out, Outcome)
    assert timed_out.kind is OutcomeKind.RETRY
    assert timed_out.maybe_ran


async def test_a_call_that_never_connected_did_not_run(
    endpoint: Endpoint, refused_port: int
) -> None:
    # The endpoint fixture provides credentials; the call goes to a port nobody listens on.
    client = LambdaClient(endpoint_url=f"http://127.0.0.1:{refused_port}", region="us-east-1")
    try:
        refused = await client.invoke("orders", b"{}", timeout_s=2)
    finally:
        await client.aclose()
    assert isinstance(refused, Outcome)
    assert refused.kind is OutcomeKind.RETRY
    assert "cannot connect" in (refused.error or "")
    assert not refused.maybe_ran


async def _invoke_silent_endpoint(
    scheme: str, on_request: Callable[[asyncio.StreamWriter], None] | None, timeout_s: float
) -> Outcome:
    """One Invoke of an endpoint that answers nothing; ``on_request`` gets the connection once
    a request has come in (None: it never reads, as a TLS endpoint stuck in its handshake,
    until the client gives up)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if on_request is None:
            await reader.read()  # until the client closes
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n")
        on_request(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = LambdaClient(endpoint_url=f"{scheme}://127.0.0.1:{port}", region="us-east-1")
    try:
        outcome = await client.invoke("orders", b"{}", timeout_s=timeout_s)
    finally:
        await client.aclose()
        server.close()
    assert isinstance(outcome, Outcome)
    assert outcome.kind is OutcomeKind.RETRY
    return outcome


async def test_a_call_stuck_before_it_was_sent_did_not_run(endpoint: Endpoint) -> None:
    """A TLS handshake that never ends, with an invocation timeout under the connect one's
    5 s default: it ends as a connect timeout, not as 'no answer'."""
    stuck = await _invoke_silent_endpoint("https", None, timeout_s=1)
    assert not stuck.maybe_ran, stuck.error


async def test_a_call_reset_while_waiting_for_its_answer_may_have_run(endpoint: Endpoint) -> None:
    def reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # closed with SO_LINGER 0: a reset

    reset_outcome = await _invoke_silent_endpoint("http", reset, timeout_s=5)
    assert reset_outcome.maybe_ran, reset_outcome.error
