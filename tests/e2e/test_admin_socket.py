"""The admin API over a real socket, served by a running poller, with a real Kafka broker.

Everything a user does through the API is checked by its effect: a deployment registered via
the API is discovered from a real handler server; a subscription created via the API starts
consuming within seconds and stops when deleted; offset resets, retry-now and kill act on the
running consumer; the CLI drives the same API. No secret reaches a response or a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.cli import main as cli
from adapter.local.moto import MotoServer
from adapter.poller import Poller
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import (
    Call,
    Ingress,
    RecordingHandler,
    committed_offsets,
    eventually,
    produce,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

TOKEN = "e2e-admin-token-0123456789"
SECRET = "e2e-Secret-Value-9f8e7d"
MANIFEST = {
    "protocol_version": 1,
    "services": [
        {"name": "Greeter", "ty": "SERVICE", "handlers": [{"name": "greet", "input": "JSON"}]},
        {
            "name": "Account",
            "ty": "VIRTUAL_OBJECT",
            "handlers": [{"name": "apply", "ty": "EXCLUSIVE", "input": "JSON"}],
        },
    ],
}


def deployment_app(handler: RecordingHandler) -> Starlette:
    async def discover(request: Request) -> Response:
        return JSONResponse(MANIFEST)

    return Starlette(routes=[*handler.app.routes, Route("/discover", discover)])


@dataclass
class Stack:
    poller: Poller
    client: httpx.AsyncClient
    bootstrap: str
    url: str

    async def call(
        self, method: str, path: str, body: Any = None, status: int | None = None, **kw: Any
    ) -> httpx.Response:
        response = await self.client.request(method, path, json=body, **kw)
        if status is not None:
            assert response.status_code == status, (method, path, response.text)
        assert SECRET not in response.text
        return response

    def running(self, sub_id: str) -> bool:
        info = self.poller.supervisor.status().get(sub_id)
        return info is not None and info["state"] == "running"


@pytest.fixture
async def stack(
    kafka_bootstrap: str, store: DynamoStore, moto_server: MotoServer
) -> AsyncIterator[Stack]:
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    settings = harness.build_settings()
    admin = settings.admin.model_copy(update={"bind_address": "127.0.0.1:0", "token": TOKEN})
    settings = settings.model_copy(update={"admin": admin})
    poller = Poller(settings, store)
    task = asyncio.create_task(poller.run())
    started = asyncio.create_task(poller.started())
    await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert started.done(), "the poller did not start"
    url = f"http://{poller.admin_address}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            yield Stack(poller, client, kafka_bootstrap, url)
    finally:
        poller.stop()
        await asyncio.wait_for(task, 60)


def capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for name in ("adapter", "kafka_ingress", "uvicorn", "aiokafka"):
        caplog.set_level(logging.DEBUG, logger=name)


async def test_subscription_created_over_the_api_consumes_and_deleting_it_stops(
    stack: Stack,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_logs(caplog)
    handler = RecordingHandler()
    handler_url = await handler_server(deployment_app(handler))
    topic = await topic_factory(partitions=1)

    # Over the wire: the token is required, health is not.
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        assert (await anonymous.get("/health")).status_code == 200
        refused = await anonymous.get("/subscriptions")
        assert refused.status_code == 401
        assert refused.json()["message"]

    registered = await stack.call("POST", "/v3/deployments", {"uri": handler_url}, 201)
    assert {s["name"] for s in registered.json()["services"]} == {"Greeter", "Account"}
    await produce(stack.bootstrap, topic, [(None, orjson.dumps({"n": i})) for i in range(5)])
    options = {"auto.offset.reset": "earliest", "sasl.username": SECRET, "sasl.password": SECRET}
    body = {
        "source": f"kafka://local/{topic}",
        "sink": "service://Greeter/greet",
        "options": options,
    }
    created = (await stack.call("POST", "/subscriptions", body, 201)).json()
    sub_id = created["id"]
    assert created["options"]["sasl.password"] == "***"

    # Consuming within seconds of the API call.
    await eventually(lambda: len(handler.acked()) >= 5, timeout=20, message="not consuming")
    assert {c.headers["restate.subscription.id"] for c in handler.calls} == {sub_id}
    described = (await stack.call("GET", f"/subscriptions/{sub_id}", status=200)).json()
    assert described["runtime"]["state"] == "running"

    async def ledger_done() -> bool:
        params = {"subscription": sub_id, "status": "SUCCEEDED"}
        page = (await stack.call("GET", "/invocations", params=params, status=200)).json()
        return len(page["invocations"]) == 5

    await eventually(ledger_done, timeout=20, message="ledger rows not listed")
    metrics = (await stack.call("GET", "/metrics", status=200)).text
    assert f'kafka_ingress_records_consumed_total{{subscription="{sub_id}"}} 5' in metrics
    ready = (await stack.call("GET", "/health/ready", status=200)).json()
    assert ready["checks"] == {"dynamodb": "ok", "kafka:local": "ok"}

    # Deleting stops consumption: records produced afterwards reach a second subscription
    # on the same topic (its own group) but never the deleted one.
    await stack.call("DELETE", f"/subscriptions/{sub_id}", status=202)
    await eventually(
        lambda: sub_id not in stack.poller.supervisor.status(), timeout=30, message="still running"
    )
    await produce(stack.bootstrap, topic, [(None, orjson.dumps({"n": i})) for i in range(5, 8)])
    canary = {**body, "options": {"auto.offset.reset": "earliest", "group.id": "canary"}}
    canary_id = (await stack.call("POST", "/subscriptions", canary, 201)).json()["id"]

    def canary_offsets() -> set[int]:
        return {
            c.offset for c in handler.acked() if c.headers["restate.subscription.id"] == canary_id
        }

    await eventually(lambda: canary_offsets() == set(range(8)), timeout=30, message="canary")
    deleted_calls = [c for c in handler.calls if c.headers["restate.subscription.id"] == sub_id]
    assert sorted(c.offset for c in deleted_calls) == list(range(5))
    assert await committed_offsets(stack.bootstrap, sub_id, topic, 1) == {0: 5}
    assert SECRET not in caplog.text


async def test_reset_offsets_replays_the_topic_on_a_running_poller(
    stack: Stack, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    handler = RecordingHandler()
    handler_url = await handler_server(deployment_app(handler))
    topic = await topic_factory(partitions=2)
    await stack.call("POST", "/deployments", {"uri": handler_url}, 201)
    placed = await produce(stack.bootstrap, topic, [(None, b"{}") for _ in range(6)])
    body = {
        "source": f"kafka://local/{topic}",
        "sink": "service://Greeter/greet",
        "options": {"auto.offset.reset": "earliest"},
    }
    sub_id = (await stack.call("POST", "/subscriptions", body, 201)).json()["id"]
    await eventually(lambda: len(handler.acked()) >= 6, timeout=30, message="first pass")
    ends = {p: max(o for q, o in placed if q == p) + 1 for p in {q for q, _ in placed}}
    expected = {p: ends.get(p, 0) for p in range(2)}

    async def committed() -> bool:
        # A partition without records has no commit, or one at 0 if a rebalance (a slow
        # machine's lapsed session) made the poller hand it over: the same position.
        got = await committed_offsets(stack.bootstrap, sub_id, topic, 2)
        return {p: offset or 0 for p, offset in got.items()} == expected

    await eventually(committed, timeout=30, message="first pass not committed")

    reset = await stack.call(
        "POST", f"/subscriptions/{sub_id}/reset", {"to": "earliest", "timeout_s": 60}, 200
    )
    doc = reset.json()
    assert doc["group_id"] == sub_id
    assert [(o["partition"], o["offset"]) for o in doc["offsets"]] == [(0, 0), (1, 0)]
    assert doc["ledger_rows_deleted"] == 6
    # Resumed on its own, and every record is delivered again.
    await eventually(lambda: len(handler.acked()) >= 12, timeout=60, message="no replay")
    assert sorted((c.partition, c.offset) for c in handler.calls) == sorted(placed * 2)
    assert not (await stack.call("GET", f"/subscriptions/{sub_id}", status=200)).json()["paused"]

    latest = await stack.call("POST", f"/subscriptions/{sub_id}/reset", {"to": "latest"}, 200)
    moved = {(o["partition"], o["offset"]) for o in latest.json()["offsets"]}
    assert moved == {(p, ends.get(p, 0)) for p in range(2)}


async def test_retry_now_and_kill_act_on_the_running_consumer(
    stack: Stack, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    async def unavailable(call: Call) -> Response:
        return JSONResponse({"message": "down"}, status_code=503)

    handler = RecordingHandler(unavailable)
    handler_url = await handler_server(deployment_app(handler))
    topic = await topic_factory(partitions=1)
    await stack.call("POST", "/deployments", {"uri": handler_url}, 201)
    await produce(stack.bootstrap, topic, [(b"acct-1", b"{}")])
    body = {
        "source": f"kafka://local/{topic}",
        "sink": "service://Account/apply",
        # The first retry would only come after ten minutes.
        "options": {
            "auto.offset.reset": "earliest",
            "retry.initial.interval.ms": "600000",
            "retry.max.interval.ms": "600000",
            "retry.jitter": "0",
        },
    }
    sub_id = (await stack.call("POST", "/subscriptions", body, 201)).json()["id"]

    async def backing_off() -> list[dict[str, Any]]:
        params = {"subscription": sub_id, "status": "BACKING_OFF"}
        page = await stack.call("GET", "/invocations", params=params, status=200)
        return page.json()["invocations"]  # type: ignore[no-any-return]

    async def has_backing_off() -> bool:
        return len(await backing_off()) == 1

    await eventually(has_backing_off, timeout=30, message="never backed off")
    inv = (await backing_off())[0]
    assert inv["key"] == "acct-1"
    assert inv["attempts"] == 1
    assert "503" in inv["last_error"]

    retried = await stack.call("PATCH", f"/invocations/{inv['id']}/retry", status=200)
    assert retried.json()["status"] == "PENDING"
    await eventually(lambda: len(handler.calls) >= 2, timeout=20, message="retry-now ignored")
    assert handler.calls[-1].headers["x-kafka-ingress-attempt"] == "2"

    await stack.call("PATCH", f"/invocations/{inv['id']}/purge", status=409)
    killed = await stack.call("PATCH", f"/invocations/{inv['id']}/kill", status=200)
    assert killed.json()["status"] == "KILLED"

    async def recorded_killed() -> bool:
        got = await stack.call("GET", f"/invocations/{inv['id']}", status=200)
        return bool(got.json()["status"] == "KILLED")

    await eventually(recorded_killed, timeout=20, message="kill not recorded")

    # The killed record's offset is finished, so it is committed.
    async def committed() -> bool:
        return await committed_offsets(stack.bootstrap, sub_id, topic, 1) == {0: 1}

    await eventually(committed, timeout=30, message="killed record not committed")
    await stack.call("PATCH", f"/invocations/{inv['id']}/kill", status=409)
    await stack.call("PATCH", f"/invocations/{inv['id']}/purge", status=200)
    await stack.call("GET", f"/invocations/{inv['id']}", status=404)


async def test_cli_drives_the_api_with_tables_json_and_exit_codes(
    stack: Stack,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = RecordingHandler()
    handler_url = await handler_server(deployment_app(handler))
    topic = await topic_factory(partitions=1)
    common = ["--admin-url", stack.url, "--token", TOKEN]

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(cli, [*argv[:2], *common, *argv[2:]])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run("deployments", "register", handler_url)
    assert code == 0
    assert "Greeter" in out
    assert "Account" in out
    code, out, _ = await run("deployments", "list", "--json")
    assert code == 0
    dep_id = orjson.loads(out)["deployments"][0]["id"]
    code, out, _ = await run("services", "list")
    assert code == 0
    assert "VirtualObject" in out

    code, out, _ = await run(
        "subscriptions",
        "create",
        f"kafka://local/{topic}",
        "service://Greeter/greet",
        "-o",
        "auto.offset.reset=earliest",
        "-o",
        f"sasl.password={SECRET}",
        "--json",
    )
    assert code == 0
    sub = orjson.loads(out)
    assert sub["options"]["sasl.password"] == "***"
    await produce(stack.bootstrap, topic, [(None, b"{}")])
    await eventually(lambda: len(handler.acked()) == 1, timeout=20, message="not consuming")

    code, out, _ = await run("subscriptions", "list")
    assert code == 0
    assert sub["id"] in out
    assert f"kafka://local/{topic}" in out
    code, out, _ = await run("subscriptions", "pause", sub["id"])
    assert code == 0
    assert "paused" in out
    await eventually(
        lambda: sub["id"] not in stack.poller.supervisor.status(), timeout=30, message="paused?"
    )
    code, out, _ = await run("subscriptions", "resume", sub["id"])
    assert code == 0
    await eventually(lambda: stack.running(sub["id"]), timeout=30, message="not resumed")
    code, out, _ = await run("subscriptions", "update", sub["id"], "-o", "max.in.flight=4")
    assert code == 0
    code, out, _ = await run("subscriptions", "describe", sub["id"])
    assert code == 0
    assert "max.in.flight" in out
    code, out, _ = await run("invocations", "list", "--subscription", sub["id"])
    assert code == 0

    # Exit codes that mean something.
    code, _, err = await run("subscriptions", "describe", "sub_00000000000000000000000000")
    assert code == 3
    assert "does not exist" in err
    code, _, err = await run("deployments", "remove", dep_id)
    assert code == 4
    assert sub["id"] in err
    code, _, err = await run("subscriptions", "create", "kafka://nope/t", "service://Greeter/greet")
    assert code == 2
    assert "unknown Kafka cluster" in err
    code, _, _ = await run("invocations", "describe", "not-an-id")
    assert code == 2
    refused = await asyncio.to_thread(
        cli, ["subscriptions", "list", "--admin-url", stack.url, "--token", "wrong-token-123456"]
    )
    assert refused == 5
    unreachable = await asyncio.to_thread(
        cli, ["subscriptions", "list", "--admin-url", "http://127.0.0.1:1"]
    )
    assert unreachable == 6
    code, _, _ = await run("subscriptions", "delete", sub["id"])
    assert code == 0
    code, _, _ = await run("deployments", "remove", dep_id)
    assert code == 0
    out = capsys.readouterr().out
    assert SECRET not in out
