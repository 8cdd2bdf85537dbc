"""The handler SDK: declarations, manifest, error mapping, context, and the ASGI app."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import httpx
import pytest
from pydantic import BaseModel

from adapter.engine import mapping
from adapter.model import Deployment, HandlerType, InputKind, ServiceType, Target
from adapter.sdk import (
    Context,
    Endpoint,
    RetryableError,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
)
from adapter.sdk import protocol as sdk_protocol


class Order(BaseModel):
    sku: str
    quantity: int


@dataclass
class Point:
    x: int
    y: int


svc = Service("Shop")
seen: list[Context] = []


@svc.handler()
async def place(ctx: Context, order: Order) -> dict[str, object]:
    seen.append(ctx)
    if order.quantity > 100:
        raise TerminalError("too many", status_code=422)
    if order.quantity == 0:
        raise RetryableError("stock check unavailable", retry_after=2.5)
    if order.quantity < 0:
        raise ValueError("negative")
    return {"sku": order.sku, "ok": True}


@svc.handler()
def blob(ctx: Context, data: bytes) -> bytes:
    return data[::-1]


@svc.handler()
def nothing(ctx: Context) -> None:
    seen.append(ctx)


@svc.handler()
def point(ctx: Context, p: Point | None) -> Point | None:
    return p


obj = VirtualObject("Cart")


@obj.handler()
async def add(ctx: Context, item: dict[str, int]) -> int:
    return sum(item.values())


@obj.handler(kind="shared")
def view(ctx: Context) -> str:
    return f"cart {ctx.key}"


wf = Workflow("Onboard")


@wf.main()
async def run(ctx: Context, req: dict[str, str]) -> str:
    return ctx.key or ""


@wf.handler()
def progress(ctx: Context) -> str:
    return "done"


endpoint = Endpoint([svc, obj, wf], identity_keys=[])


def test_manifest_has_restate_shaped_types_and_input_kinds() -> None:
    manifest = endpoint.manifest()
    assert manifest["protocol_version"] == 1
    by_name = {s["name"]: s for s in manifest["services"]}
    assert by_name["Shop"]["ty"] == "SERVICE"
    assert by_name["Cart"]["ty"] == "VIRTUAL_OBJECT"
    assert by_name["Onboard"]["ty"] == "WORKFLOW"
    shop = {h["name"]: h for h in by_name["Shop"]["handlers"]}
    assert shop["place"] == {"name": "place", "ty": None, "input": "JSON"}
    assert shop["blob"]["input"] == "RAW"
    assert shop["nothing"]["input"] == "JSON"
    cart = {h["name"]: h["ty"] for h in by_name["Cart"]["handlers"]}
    assert cart == {"add": "EXCLUSIVE", "view": "SHARED"}
    onboard = {h["name"]: h["ty"] for h in by_name["Onboard"]["handlers"]}
    assert onboard == {"run": "WORKFLOW", "progress": "SHARED"}


def test_declaration_errors_are_caught_early() -> None:
    s = Service("X")
    with pytest.raises(TypeError, match="context"):
        s.handler()(lambda: None)
    with pytest.raises(TypeError, match="parameters"):

        @s.handler()
        def three(ctx: Context, a: int, b: int) -> None: ...

    @s.handler()
    def one(ctx: Context) -> None: ...

    with pytest.raises(ValueError, match="already has"):
        s.handler("one")(one)
    w = Workflow("W")
    w.main()(run)
    with pytest.raises(ValueError, match="main handler"):
        w.main("again")(run)
    with pytest.raises(ValueError, match="4xx"):
        TerminalError("x", status_code=500)
    with pytest.raises(ValueError, match="4xx"):
        TerminalError("x", status_code=429)
    with pytest.raises(ValueError, match="declared twice"):
        Endpoint([s, s])
    with pytest.raises(ValueError, match="kafka_target"):
        Endpoint([s], kafka_target="X/missing")


async def test_outcomes_map_to_the_protocol_status_codes() -> None:
    ok = await endpoint.invoke("Shop", "place", b'{"sku": "a", "quantity": 1}')
    assert ok.status == 200
    assert json.loads(ok.body) == {"sku": "a", "ok": True}
    assert ok.headers["content-type"] == "application/json"

    terminal = await endpoint.invoke("Shop", "place", b'{"sku": "a", "quantity": 101}')
    assert terminal.status == 422
    assert json.loads(terminal.body) == {"message": "too many"}

    retry = await endpoint.invoke("Shop", "place", b'{"sku": "a", "quantity": 0}')
    assert retry.status == 503
    assert retry.headers["retry-after"] == "3"

    crash = await endpoint.invoke("Shop", "place", b'{"sku": "a", "quantity": -1}')
    assert crash.status == 500
    assert json.loads(crash.body)["message"] == "ValueError: negative"

    invalid = await endpoint.invoke("Shop", "place", b'{"sku": "a"}')
    assert invalid.status == 400
    assert "quantity" in json.loads(invalid.body)["message"]
    assert (await endpoint.invoke("Shop", "place", b"{nope")).status == 400
    assert (await endpoint.invoke("Shop", "place", b"")).status == 400  # null is not an Order

    assert (await endpoint.invoke("Nope", "place")).status == 404
    assert (await endpoint.invoke("Shop", "nope")).status == 404
    assert (await endpoint.invoke("Cart", "add", b"{}")).status == 404  # keyed, no key
    assert (await endpoint.invoke("Shop", "nothing", key="k")).status == 404


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (200, "ack"),
        (400, "terminal"),
        (404, "terminal"),
        (409, "terminal"),
        (422, "terminal"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_sdk_statuses_mean_what_the_poller_reads(response: int, kind: str) -> None:
    assert mapping.outcome_from_http(response, {}, b"").kind.value == kind


async def test_raw_optional_and_no_input_handlers() -> None:
    raw = await endpoint.invoke("Shop", "blob", bytes([0, 255, 1]))
    assert raw.body == bytes([1, 255, 0])
    assert raw.headers["content-type"] == "application/octet-stream"
    empty = await endpoint.invoke("Shop", "point", b"")
    assert empty.status == 200
    assert empty.body == b""
    pt = await endpoint.invoke("Shop", "point", b'{"x": 1, "y": 2}')
    assert json.loads(pt.body) == {"x": 1, "y": 2}
    assert (await endpoint.invoke("Shop", "nothing", b"ignored {")).status == 200
    assert (await endpoint.invoke("Cart", "add", b'{"a": 2, "b": 3}', key="c1")).body == b"5"
    assert (await endpoint.invoke("Onboard", "run", b"{}", key="u/1")).body == b'"u/1"'


async def test_context_carries_kafka_metadata_and_exact_record_headers() -> None:
    seen.clear()
    headers = {
        "restate.subscription.id": "sub_1",
        "kafka.topic": "orders",
        "kafka.partition": "3",
        "kafka.offset": "42",
        "kafka.timestamp": "1700000000123",
        "kafka.key": "customer%207",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-request-id": "req-1",
    }
    await endpoint.invoke("Shop", "nothing", headers=headers, invocation_id="inv_x", attempt=2)
    ctx = seen[-1]
    assert ctx.invocation_id == "inv_x"
    assert ctx.attempt == 2
    assert ctx.kafka is not None
    assert (ctx.kafka.topic, ctx.kafka.partition, ctx.kafka.offset) == ("orders", 3, 42)
    assert ctx.kafka.timestamp_ms == 1700000000123
    assert ctx.kafka.key == "customer 7"
    assert ctx.kafka.subscription_id == "sub_1"
    assert ctx.record_headers == (("x-request-id", b"req-1"),)
    assert ctx.header("X-Request-Id") == "req-1"
    assert ctx.traceparent == headers["traceparent"]

    exact = mapping.encode_kafka_headers((("bin", b"\x00\xff"), ("bin", b"\x01"), ("A", b"x")))
    await endpoint.invoke("Shop", "nothing", headers={**headers, "x-kafka-headers": exact})
    ctx = seen[-1]
    assert ctx.record_headers == (("bin", b"\x00\xff"), ("bin", b"\x01"), ("A", b"x"))
    assert ctx.record_header("BIN") == b"\x01"


def test_protocol_names_match_the_poller() -> None:
    assert sdk_protocol.HEADER_SUBSCRIPTION_ID == mapping.HEADER_SUBSCRIPTION_ID
    assert sdk_protocol.HEADER_KAFKA_TOPIC == mapping.HEADER_KAFKA_TOPIC
    assert sdk_protocol.HEADER_KAFKA_PARTITION == mapping.HEADER_KAFKA_PARTITION
    assert sdk_protocol.HEADER_KAFKA_OFFSET == mapping.HEADER_KAFKA_OFFSET
    assert sdk_protocol.HEADER_KAFKA_TIMESTAMP == mapping.HEADER_KAFKA_TIMESTAMP
    assert sdk_protocol.HEADER_KAFKA_KEY == mapping.HEADER_KAFKA_KEY
    assert sdk_protocol.HEADER_IDEMPOTENCY_KEY == mapping.HEADER_IDEMPOTENCY_KEY
    assert sdk_protocol.HEADER_INVOCATION_ID == mapping.HEADER_INVOCATION_ID
    assert sdk_protocol.HEADER_ATTEMPT == mapping.HEADER_ATTEMPT
    assert sdk_protocol.HEADER_KAFKA_HEADERS == mapping.HEADER_KAFKA_HEADERS
    for key in ["k", "a/b é", ".", "..", "100%", "?x#y"]:
        for svc_name, handler in [("Svc", "h"), ("S p", "h/x")]:
            target = Target(
                svc_name,
                handler,
                ServiceType.VIRTUAL_OBJECT,
                HandlerType.EXCLUSIVE,
                InputKind.JSON,
                Deployment("dp"),
            )
            assert mapping.invoke_url("", target, key) == sdk_protocol.invoke_path(
                svc_name, handler, key
            )


def test_sdk_imports_without_the_pollers_dependencies() -> None:
    code = (
        "import sys, adapter.sdk, handlers.app\n"
        "heavy = ('aiokafka', 'boto3', 'botocore', 'aiohttp', 'orjson', 'jwt', 'cryptography')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "             or (m.startswith('adapter.') and not m.startswith('adapter.sdk')))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


async def _asgi(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://handlers")


async def test_asgi_app_routes_on_the_raw_path() -> None:
    async with await _asgi(endpoint.asgi_app()) as client:
        manifest = await client.get("/discover")
        assert manifest.status_code == 200
        assert manifest.json() == endpoint.manifest()
        ok = await client.post("/invoke/Shop/place", content=b'{"sku":"a","quantity":1}')
        assert ok.status_code == 200
        assert ok.json() == {"sku": "a", "ok": True}
        # A key holding '/', '%', a space and non-ASCII arrives as one segment, decoded once.
        keyed = await client.post("/invoke/Onboard/a%2Fb%20%25%C3%A9/run", content=b"{}")
        assert keyed.json() == "a/b %é"
        dots = await client.post("/invoke/Onboard/%2E%2E/run", content=b"{}")
        assert dots.json() == ".."
        assert (await client.post("/invoke/Shop/place", content=b"{")).status_code == 400
        assert (await client.post("/invoke/Shop", content=b"")).status_code == 404
        assert (await client.post("/invoke/Shop/a/b/c", content=b"")).status_code == 404
        assert (await client.get("/invoke/Shop/place")).status_code == 405
        assert (await client.post("/discover")).status_code == 405
        retry = await client.post("/invoke/Shop/place", content=b'{"sku":"a","quantity":0}')
        assert retry.status_code == 503
        assert retry.headers["retry-after"] == "3"


async def test_asgi_app_under_a_mount_prefix() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/prod/api", app=endpoint.asgi_app())])
    async with await _asgi(outer) as client:
        assert (await client.get("/prod/api/discover")).status_code == 200
        keyed = await client.post("/prod/api/invoke/Cart/c%2F1/view", content=b"")
        assert keyed.json() == "cart c/1"
