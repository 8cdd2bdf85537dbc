"""HttpInvoker against real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.engine.mapping import (
    HEADER_KAFKA_HEADERS,
    build_request,
    decode_kafka_headers,
    is_valid_traceparent,
)
from adapter.ids import invocation_id
from adapter.invokers.base import InvocationRequest, NotSent, OutcomeKind, fence_sends
from adapter.invokers.http import HttpInvoker, HttpInvokerState
from adapter.invokers.http_clients import ClientName
from adapter.model import Deployment, HandlerType, InputKind, KafkaRecord, ServiceType, Target
from tests._http_fixtures import HandlerServer

SUB = "sub_0000000000bbbbbbbbbbbbbbbb"
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    raw_path: bytes
    headers: list[tuple[str, str]]
    body: bytes
    client_port: int

    def header(self, name: str) -> str:
        values = [v for k, v in self.headers if k == name.lower()]
        assert len(values) == 1, (name, values)
        return values[0]


@dataclass
class Handler:
    """A test handler app whose behaviour is chosen by the handler name in the URL."""

    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def endpoint(self, request: Request) -> Response:
        client = request.client
        assert client is not None
        self.seen.append(
            Seen(
                method=request.method,
                raw_path=request.scope["raw_path"],
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                body=await request.body(),
                client_port=client.port,
            )
        )
        handler = request.scope["raw_path"].rsplit(b"/", 1)[-1].decode()
        match handler:
            case "ok":
                return JSONResponse({"done": True})
            case "bad":
                return JSONResponse({"message": "amount must be positive"}, status_code=400)
            case "busy":
                return Response("overloaded", status_code=503, headers={"Retry-After": "2"})
            case "throttle":
                return Response("slow down", status_code=429, headers={"Retry-After": "7"})
            case "moved":
                return Response(status_code=302, headers={"Location": "/elsewhere"})
            case "hang":
                self.entered.set()
                await self.release.wait()
                return Response("too late")
        return Response(f"no handler {handler}", status_code=404)

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self.endpoint, methods=["POST", "GET"])],
        )


def make_target(
    base_url: str | None,
    handler: str,
    *,
    service_type: ServiceType = ServiceType.SERVICE,
    input_kind: InputKind = InputKind.JSON,
    additional_headers: Mapping[str, str] | None = None,
) -> Target:
    keyed = service_type is not ServiceType.SERVICE
    return Target(
        service="Orders",
        handler=handler,
        service_type=service_type,
        handler_type=HandlerType.EXCLUSIVE if keyed else HandlerType.SERVICE,
        input_kind=input_kind,
        deployment=Deployment(
            id="dp_test", uri=base_url, additional_headers=dict(additional_headers or {})
        ),
    )


def make_request(
    tgt: Target,
    *,
    value: bytes | None = b'{"amount": 5}',
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
    offset: int = 10,
    attempt: int = 1,
) -> InvocationRequest:
    rec = KafkaRecord(
        topic="orders",
        partition=1,
        offset=offset,
        key=key,
        value=value,
        timestamp_ms=1_700_000_000_000,
        headers=headers,
    )
    return build_request(
        subscription_id=SUB, record=rec, target=tgt, max_body_bytes=1 << 22, attempt=attempt
    )


@pytest.fixture
async def invoker(http_client: ClientName) -> AsyncIterator[HttpInvoker]:
    async with HttpInvoker(timeout_s=5.0, client=http_client) as inv:
        assert inv.client == http_client
        yield inv


@pytest.fixture
async def served(handler_server: HandlerServer) -> tuple[Handler, str]:
    handler = Handler()
    return handler, await handler_server(handler.app())


# --- outcomes -------------------------------------------------------------------------------


async def test_200_is_ack_with_the_response_body(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    outcome = await invoker.invoke(make_request(make_target(base, "ok")))
    assert outcome.kind is OutcomeKind.ACK
    assert outcome.response == b'{"done":true}'
    assert handler.seen[0].method == "POST"
    assert handler.seen[0].raw_path == b"/invoke/Orders/ok"


@pytest.mark.promise("p-ops-paused-starts-nothing", "p-ops-send-fence")
async def test_no_request_goes_out_when_the_fence_lapsed_during_the_address_check(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    """The first request to a deployment waits for its address check; a poller paused then
    may have lost its partition: the fence is asked after the wait, before anything is sent."""
    handler, base = served
    owner = False
    fence_sends(lambda: owner)
    try:
        with pytest.raises(NotSent):
            await invoker.invoke(make_request(make_target(base, "ok")))
        assert handler.seen == []
        owner = True
        outcome = await invoker.invoke(make_request(make_target(base, "ok")))
        assert outcome.kind is OutcomeKind.ACK
        assert len(handler.seen) == 1
    finally:
        fence_sends(None)


@pytest.mark.promise("p-ops-paused-starts-nothing", "p-ops-send-fence")
async def test_a_request_is_checked_once_signed_right_before_the_client_takes_it(
    served: tuple[Handler, str], http_client: ClientName
) -> None:
    """A pause may fall between the engine's check and the signing: the last check comes
    after the signing, so a request signed after a wake never goes out unchecked (and one
    that goes out was signed before any pause that followed)."""
    handler, base = served
    owner = True

    def sign(request: InvocationRequest, url: str) -> dict[str, str]:
        nonlocal owner
        owner = False  # the poller pauses here, past its session
        return {"x-signature": "signed"}

    fence_sends(lambda: owner)
    try:
        async with HttpInvoker(timeout_s=5.0, sign=sign, client=http_client) as invoker:
            with pytest.raises(NotSent):
                await invoker.invoke(make_request(make_target(base, "ok")))
        assert handler.seen == []
    finally:
        fence_sends(None)


@pytest.mark.promise("p-proto-4xx-terminal")
async def test_400_is_terminal_with_the_handler_message(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    _, base = served
    outcome = await invoker.invoke(make_request(make_target(base, "bad")))
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error == "handler returned HTTP 400 Bad Request: amount must be positive"


@pytest.mark.promise("p-ops-retry-same-id")
async def test_503_with_retry_after_is_retry_after_2s(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    _, base = served
    outcome = await invoker.invoke(make_request(make_target(base, "busy")))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after == 2.0
    assert outcome.error == "handler returned HTTP 503 Service Unavailable: overloaded"


@pytest.mark.promise("p-ops-retry-same-id")
async def test_429_is_retry_honouring_retry_after(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    _, base = served
    outcome = await invoker.invoke(make_request(make_target(base, "throttle")))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after == 7.0
    assert outcome.error is not None
    assert "HTTP 429" in outcome.error


@pytest.mark.promise("p-proto-other-terminal")
async def test_redirect_is_not_followed_and_is_terminal(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    outcome = await invoker.invoke(make_request(make_target(base, "moved")))
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error is not None
    assert "Location: /elsewhere" in outcome.error
    assert len(handler.seen) == 1


@pytest.mark.promise("p-fault-handler-down", "p-proto-transport-retry")
async def test_timeout_is_retry_naming_the_url(
    served: tuple[Handler, str], http_client: ClientName
) -> None:
    handler, base = served
    try:
        async with HttpInvoker(timeout_s=0.3, client=http_client) as invoker:
            outcome = await invoker.invoke(make_request(make_target(base, "hang")))
        assert handler.entered.is_set()
        assert outcome.kind is OutcomeKind.RETRY
        assert outcome.error == f"POST {base}/invoke/Orders/hang timed out after 0.3s (attempt 1)"
    finally:
        handler.release.set()


@pytest.mark.promise("p-fault-handler-down", "p-proto-transport-retry")
async def test_connection_refused_is_retry_naming_the_url(
    invoker: HttpInvoker, refused_port: int
) -> None:
    base = f"http://127.0.0.1:{refused_port}"
    outcome = await invoker.invoke(make_request(make_target(base, "ok")))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot connect to {base}/invoke/Orders/ok: ")
    assert "refused" in outcome.error.lower() or "connect call failed" in outcome.error.lower()


@pytest.mark.promise("p-proto-transport-retry")
async def test_server_disconnect_is_retry(invoker: HttpInvoker) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outcome = await invoker.invoke(make_request(make_target(f"http://127.0.0.1:{port}", "ok")))
    finally:
        server.close()
        await server.wait_closed()
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert f"http://127.0.0.1:{port}/invoke/Orders/ok" in outcome.error


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (None, "deployment dp_test has no HTTP uri"),
        ("ftp://h/x", "is not an absolute http(s) URL"),
        ("/relative", "is not an absolute http(s) URL"),
        ("http://h:99999", "has an invalid uri"),
        ("http://h/x?q=1", "must not have a query"),
    ],
)
async def test_unusable_deployment_uri_is_terminal(
    invoker: HttpInvoker, uri: str | None, message: str
) -> None:
    outcome = await invoker.invoke(make_request(make_target(uri, "ok")))
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error is not None
    assert message in outcome.error


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://svc.1:8080", "is invalid: invalid IPv4 address"),
        ("http://[fe80::1%25eth0]:9080", "is invalid"),
    ],
)
async def test_bases_reqwest_cannot_parse_are_refused_up_front(uri: str, message: str) -> None:
    """reqwest parses by the WHATWG rules, stricter than yarl: such a base is a terminal
    outcome naming it, never a request that fails on every attempt."""
    async with HttpInvoker(client="pyreqwest") as invoker:
        outcome = await invoker.invoke(make_request(make_target(uri, "ok")))
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error is not None
    assert message in outcome.error


async def test_credentials_in_an_invalid_uri_never_reach_error_messages(
    invoker: HttpInvoker,
) -> None:
    outcome = await invoker.invoke(make_request(make_target("http://u:s3cret@h:99999", "ok")))
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error is not None
    assert "has an invalid uri" in outcome.error
    assert "s3cret" not in outcome.error


async def test_credentials_in_the_uri_never_reach_error_messages(
    invoker: HttpInvoker, refused_port: int
) -> None:
    base = f"http://user:s3cret@127.0.0.1:{refused_port}"
    outcome = await invoker.invoke(make_request(make_target(base, "ok")))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert "s3cret" not in outcome.error


# --- what arrives ---------------------------------------------------------------------------


@pytest.mark.promise("p-proto-headers")
async def test_headers_arrive_exactly_as_documented(
    served: tuple[Handler, str], http_client: ClientName
) -> None:
    handler, base = served
    record_headers = (
        ("traceparent", TP.encode()),
        ("tracestate", b"vendor=abc"),
        ("X-Request-Id", b"req-1"),
        ("tenant", b"acme corp"),
        ("binary", b"\x00\xff"),
    )
    signed: list[str] = []

    def sign(request: InvocationRequest, url: str) -> Mapping[str, str]:
        signed.append(url)
        return {"x-signature": f"sig:{request.invocation_id}"}

    tgt = make_target(base, "ok", additional_headers={"Authorization": "Bearer dep"})
    request = make_request(tgt, key=b"cust 7", headers=record_headers, offset=77, attempt=2)
    async with HttpInvoker(sign=sign, client=http_client) as invoker:
        outcome = await invoker.invoke(request)
    assert outcome.kind is OutcomeKind.ACK

    seen = handler.seen[0]
    inv = invocation_id(SUB, "orders", 1, 77)
    assert signed == [f"{base}/invoke/Orders/ok"]
    expected = {
        "content-type": "application/json",
        "restate.subscription.id": SUB,
        "kafka.topic": "orders",
        "kafka.partition": "1",
        "kafka.offset": "77",
        "kafka.timestamp": "1700000000000",
        "kafka.key": "cust%207",
        "idempotency-key": inv,
        "x-kafka-ingress-invocation-id": inv,
        "x-kafka-ingress-attempt": "2",
        "traceparent": TP,
        "tracestate": "vendor=abc",
        "x-request-id": "req-1",
        "tenant": "acme corp",
        "authorization": "Bearer dep",
        "x-signature": f"sig:{inv}",
        "user-agent": "kafka-ingress/0.1.0",
    }
    for name, value in expected.items():
        assert seen.header(name) == value, name
    assert decode_kafka_headers(seen.header(HEADER_KAFKA_HEADERS)) == list(record_headers)
    assert "binary" not in {k for k, _ in seen.headers}
    assert seen.body == b'{"amount": 5}'


async def test_attempt_header_follows_request_attempt(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    first = make_request(make_target(base, "ok"))
    await invoker.invoke(replace(first, attempt=3))
    assert handler.seen[0].header("x-kafka-ingress-attempt") == "3"
    assert first.headers["x-kafka-ingress-attempt"] == "1"


async def test_fresh_traceparent_when_record_has_none(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    await invoker.invoke(make_request(make_target(base, "ok")))
    assert is_valid_traceparent(handler.seen[0].header("traceparent"))
    assert HEADER_KAFKA_HEADERS not in {k for k, _ in handler.seen[0].headers}


@pytest.mark.promise("p-proto-precedence")
async def test_deployment_headers_override_record_headers_case_insensitively(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    tgt = make_target(base, "ok", additional_headers={"Authorization": "Bearer dep"})
    await invoker.invoke(make_request(tgt, headers=(("authorization", b"Bearer forged"),)))
    assert handler.seen[0].header("authorization") == "Bearer dep"


async def test_empty_key_arrives_as_empty_kafka_key(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    await invoker.invoke(make_request(make_target(base, "ok"), key=b""))
    assert handler.seen[0].header("kafka.key") == ""


async def test_raw_body_arrives_byte_identical(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    payload = bytes(range(256)) * 4096 + b"\r\n\r\n\x00"
    tgt = make_target(base, "ok", input_kind=InputKind.RAW)
    outcome = await invoker.invoke(make_request(tgt, value=payload))
    assert outcome.kind is OutcomeKind.ACK
    assert handler.seen[0].body == payload
    assert handler.seen[0].header("content-type") == "application/octet-stream"
    assert handler.seen[0].header("content-length") == str(len(payload))


async def test_null_value_arrives_as_empty_body(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    await invoker.invoke(make_request(make_target(base, "ok"), value=None))
    assert handler.seen[0].body == b""


@pytest.mark.parametrize(
    ("key", "segment"),
    [("a/b é", b"a%2Fb%20%C3%A9"), ("..", b"%2E%2E"), ("plain", b"plain")],
)
async def test_keyed_url_under_a_path_prefix(
    invoker: HttpInvoker, served: tuple[Handler, str], key: str, segment: bytes
) -> None:
    handler, base = served
    tgt = make_target(f"{base}/prefix/", "ok", service_type=ServiceType.VIRTUAL_OBJECT)
    outcome = await invoker.invoke(make_request(tgt, key=key.encode()))
    assert outcome.kind is OutcomeKind.ACK
    raw_path = handler.seen[0].raw_path
    assert raw_path == b"/prefix/invoke/Orders/" + segment + b"/ok"
    assert unquote(raw_path.split(b"/")[-2].decode()) == key


# --- connection pool ------------------------------------------------------------------------


async def test_keep_alive_connections_are_reused(
    invoker: HttpInvoker, served: tuple[Handler, str]
) -> None:
    handler, base = served
    tgt = make_target(base, "ok")
    for offset in range(30):
        assert (await invoker.invoke(make_request(tgt, offset=offset))).kind is OutcomeKind.ACK
    assert len({s.client_port for s in handler.seen}) == 1

    for round_ in range(5):
        outcomes = await asyncio.gather(
            *(invoker.invoke(make_request(tgt, offset=1000 + round_ * 10 + i)) for i in range(8))
        )
        assert all(o.kind is OutcomeKind.ACK for o in outcomes)
    assert len(handler.seen) == 70
    assert len({s.client_port for s in handler.seen}) <= 8


async def test_pool_limit_bounds_concurrent_connections(
    served: tuple[Handler, str], http_client: ClientName
) -> None:
    handler, base = served
    tgt = make_target(base, "ok")
    async with HttpInvoker(limit=2, client=http_client) as invoker:
        outcomes = await asyncio.gather(
            *(invoker.invoke(make_request(tgt, offset=i)) for i in range(20))
        )
    assert all(o.kind is OutcomeKind.ACK for o in outcomes)
    assert len({s.client_port for s in handler.seen}) <= 2


@pytest.mark.promise("p-ops-send-fence")
async def test_no_request_goes_out_when_the_fence_lapsed_while_waiting_for_a_connection(
    served: tuple[Handler, str], http_client: ClientName
) -> None:
    """All connections busy: a request waits for one, past the fence checks made before it.
    If the poller's ownership lapses meanwhile, the request must not go out when a connection
    comes free (it would reach the handler after the partition may have moved)."""
    handler, base = served
    owner = True

    async def fenced(invoker: HttpInvoker) -> OutcomeKind:
        fence_sends(lambda: owner)
        return (await invoker.invoke(make_request(make_target(base, "ok")))).kind

    async with HttpInvoker(limit=1, timeout_s=5.0, client=http_client) as invoker:
        holding = asyncio.create_task(invoker.invoke(make_request(make_target(base, "hang"))))
        await handler.entered.wait()  # the only connection is busy until `release`
        waiting = asyncio.create_task(fenced(invoker))
        await asyncio.sleep(0)  # let it run up to its wait for the connection
        assert not waiting.done()
        owner = False
        assert len(handler.seen) == 1
        handler.release.set()
        assert (await holding).kind is OutcomeKind.ACK
        with pytest.raises(NotSent):
            await waiting
        assert [s.raw_path for s in handler.seen] == [b"/invoke/Orders/hang"]
        owner = True  # a request whose fence holds still goes out on the freed connection
        assert await fenced(invoker) is OutcomeKind.ACK
        assert len(handler.seen) == 2


async def test_requests_beyond_the_pool_wait_before_the_client_never_in_it(
    served: tuple[Handler, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp queues a request for a connection only when ``limit`` are in use; the
    invoker's slots keep it from getting there (the wait is theirs, then fenced)."""
    handler, base = served
    queued: list[object] = []
    wait = aiohttp.TCPConnector._wait_for_available_connection

    async def recorded(self: aiohttp.TCPConnector, *args: object, **kwargs: object) -> None:
        queued.append(args)
        await wait(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiohttp.TCPConnector, "_wait_for_available_connection", recorded)
    tgt = make_target(base, "ok")
    async with HttpInvoker(limit=2, client="aiohttp") as invoker:
        outcomes = await asyncio.gather(
            *(invoker.invoke(make_request(tgt, offset=i)) for i in range(20))
        )
    assert all(o.kind is OutcomeKind.ACK for o in outcomes)
    assert len(handler.seen) == 20
    assert queued == []


# --- lifecycle ------------------------------------------------------------------------------


async def test_state_and_use_after_close(
    served: tuple[Handler, str], http_client: ClientName
) -> None:
    _, base = served
    invoker = HttpInvoker(client=http_client)
    states = [invoker.state]
    assert (await invoker.invoke(make_request(make_target(base, "ok")))).kind is OutcomeKind.ACK
    states.append(invoker.state)
    await invoker.aclose()
    await invoker.aclose()
    states.append(invoker.state)
    assert states == [HttpInvokerState.UNOPENED, HttpInvokerState.OPENED, HttpInvokerState.CLOSED]
    with pytest.raises(RuntimeError, match="closed"):
        await invoker.invoke(make_request(make_target(base, "ok")))


async def test_close_without_use_is_fine(http_client: ClientName) -> None:
    invoker = HttpInvoker(client=http_client)
    await invoker.aclose()
    assert invoker.state is HttpInvokerState.CLOSED
    assert "closed" in repr(invoker)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"timeout_s": -1},
        {"connect_timeout_s": 0},
        {"keepalive_timeout_s": -1},
        {"limit": -1},
    ],
)
def test_invalid_settings_are_rejected_up_front(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        HttpInvoker(**kwargs)  # type: ignore[arg-type]


def test_an_unknown_client_is_rejected_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="must be one of auto, aiohttp, pyreqwest, got 'curl'"):
        HttpInvoker(client="curl")  # type: ignore[arg-type]


def test_auto_picks_pyreqwest_when_the_extra_is_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The dev environment installs kafka-ingress[fast-http]; without it "auto" is aiohttp
    # (tests/e2e/test_wheel.py checks the default install).
    with caplog.at_level("INFO", logger="adapter.invokers.http"):
        invoker = HttpInvoker()
    assert invoker.client == "pyreqwest"
    assert "HTTP invoker client: pyreqwest (asked for auto)" in caplog.text
    assert HttpInvoker(client="aiohttp").client == "aiohttp"
