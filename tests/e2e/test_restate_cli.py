"""Restate's own CLI (``@restatedev/restate@1.7`` from npm) against a running poller.

The CLI is installed once into ``.cache/restate-cli`` by ``make restate-cli`` (a prerequisite
of ``make test``); this test fails, never skips, when it is missing. It runs without a terminal,
in a temporary home (no config file of the machine is read), pointed at our admin API with
``RESTATE_ADMIN_URL`` and our token in ``RESTATE_AUTH_TOKEN``. Each command must exit 0 and
show our data: Restate's CLI parses every ID and field it prints, so a shape it rejects fails
here with its own error message.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter import ids
from adapter.local.moto import MotoServer
from adapter.model import Subscription
from adapter.poller import Poller
from adapter.store.dynamo import DynamoStore
from tests._earlier_ids import earlier_resource_id
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".cache" / "restate-cli" / "node_modules" / ".bin" / "restate"
TOKEN = "restate-cli-admin-token-0123456789"
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
# What the CLI prints is a table for people: colours are off without a terminal, but strip
# any escape sequence anyway so the assertions read the text.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Cli:
    env: dict[str, str]

    async def __call__(self, *argv: str) -> str:
        """Run ``restate ARGV``; the output (stdout and stderr) once it exited 0."""
        process = await asyncio.create_subprocess_exec(
            str(CLI),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        text = ANSI.sub("", out.decode())
        assert process.returncode == 0, (
            f"restate {' '.join(argv)} exited {process.returncode}:\n{text}"
        )
        return text


@dataclass
class Stack:
    poller: Poller
    api: httpx.AsyncClient
    url: str
    bootstrap: str
    store: DynamoStore


@pytest.fixture
async def stack(
    kafka_bootstrap: str, store: DynamoStore, moto_server: MotoServer
) -> AsyncIterator[Stack]:
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    settings = harness.build_settings()
    admin = settings.admin.model_copy(update={"bind_address": "127.0.0.1:0", "token": TOKEN})
    poller = Poller(settings.model_copy(update={"admin": admin}), store)
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(poller.started(), 30)
    url = f"http://{poller.admin_address}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as api:
            yield Stack(poller, api, url, kafka_bootstrap, store)
    finally:
        poller.stop()
        await asyncio.wait_for(task, 60)


@pytest.fixture
def restate(stack: Stack, tmp_path: Path) -> Cli:
    assert CLI.exists(), f"Restate's CLI is not installed at {CLI}: run `make restate-cli`"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "RESTATE_CLI_CONFIG_HOME": str(home / ".config" / "restate"),
        "RESTATE_ADMIN_URL": stack.url,
        "RESTATE_AUTH_TOKEN": TOKEN,
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    return Cli(env)


async def test_restates_cli_lists_describes_creates_and_deletes_our_resources(
    stack: Stack,
    restate: Cli,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
) -> None:
    handler = RecordingHandler()

    async def discover(request: Request) -> Response:
        return JSONResponse(MANIFEST)

    handler_url = await handler_server(
        Starlette(routes=[*handler.app.routes, Route("/discover", discover)])
    )
    out = await restate("dp", "register", "--yes", handler_url)
    deployments = (await stack.api.get("/deployments")).json()["deployments"]
    assert [d["uri"].rstrip("/") for d in deployments] == [handler_url]
    dep_id = deployments[0]["id"]
    assert dep_id in out
    topic = await topic_factory(partitions=1)
    # A subscription created before IDs took Restate's form, kept under its earlier key.
    earlier = earlier_resource_id("sub_", 1_767_225_600_000, 0x0123_4567_89AB_CDEF_0123)
    await stack.store.put_subscription(
        Subscription(
            id=earlier,
            cluster="local",
            topic=topic,
            service="Account",
            handler="apply",
            options={"group.id": earlier},
            paused=True,
        )
    )

    out = await restate("whoami")
    assert stack.url in out

    out = await restate("kc", "list")
    assert "local" in out
    assert stack.bootstrap in out
    out = await restate("kc", "describe", "local")
    assert stack.bootstrap in out

    out = await restate("dp", "list")
    assert dep_id in out
    assert handler_url in out

    out = await restate("dp", "describe", dep_id)
    assert dep_id in out
    assert "Greeter" in out

    out = await restate("svc", "list")
    assert "Greeter" in out
    assert "Account" in out

    out = await restate("svc", "describe", "Greeter")
    assert "greet" in out
    assert dep_id in out

    out = await restate(
        "sub",
        "create",
        "--yes",
        f"kafka://local/{topic}",
        "service://Greeter/greet",
        "auto.offset.reset=earliest",
        "max.in.flight=4",
    )
    listed = (await stack.api.get("/subscriptions")).json()["subscriptions"]
    assert listed[0]["id"] == ids.restate_form(earlier)
    assert len(listed) == 2
    sub = listed[1]
    assert sub["id"] in out
    assert sub["options"]["auto.offset.reset"] == "earliest"
    assert sub["options"]["max.in.flight"] == "4"
    await produce(stack.bootstrap, topic, [(None, b"{}")])
    await eventually(lambda: len(handler.acked()) == 1, timeout=30, message="not consuming")

    out = await restate("sub", "list")
    assert sub["id"] in out
    assert f"kafka://local/{topic}" in out
    assert "service://Greeter/greet" in out
    assert ids.restate_form(earlier) in out

    out = await restate("sub", "describe", ids.restate_form(earlier))
    assert ids.restate_form(earlier) in out
    assert earlier in out  # its consumer group, unchanged

    out = await restate("sub", "describe", sub["id"])
    assert sub["id"] in out
    assert "max.in.flight" in out

    out = await restate("sub", "delete", "--yes", sub["id"])
    assert sub["id"] in out
    gone = await stack.api.get(f"/subscriptions/{sub['id']}")
    assert gone.status_code == 404


@pytest.mark.promise("p-function-sink-cleanup")
async def test_restates_cli_shows_and_manages_a_lambda_function_sink(
    stack: Stack, restate: Cli, topic_factory: TopicFactory
) -> None:
    function = "arn:aws:lambda:us-east-1:123456789012:function:orders-consumer"
    topic = await topic_factory(partitions=1)
    body = {"source": f"kafka://local/{topic}", "sink": f"lambda://{function}"}
    created = await stack.api.post("/subscriptions", json=body)
    assert created.status_code == 201, created.text
    (sub,) = (await stack.api.get("/subscriptions")).json()["subscriptions"]
    assert sub["sink"] == f"lambda://{function}"
    assert sub["options"]["event.format"] == "msk"

    out = await restate("sub", "list")
    assert f"lambda://{function}" in out
    out = await restate("sub", "describe", sub["id"])
    assert f"lambda://{function}" in out
    # The implicit registration reads like any Lambda deployment and service.
    (dep,) = (await stack.api.get("/deployments")).json()["deployments"]
    out = await restate("dp", "list")
    assert dep["id"] in out
    out = await restate("dp", "describe", dep["id"])
    assert function in out
    out = await restate("svc", "list")
    assert function in out

    await restate("sub", "delete", "--yes", sub["id"])
    assert (await stack.api.get("/deployments")).json()["deployments"] == []
    assert (await stack.api.get("/services")).json()["services"] == []
