"""``kafka-ingress apply`` and ``POST /apply`` against a real poller: admin API over HTTP, the
store on a moto server, a discoverable HTTP deployment, a real broker consuming what was
declared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from adapter.cli import main as cli
from adapter.local.moto import MotoServer
from adapter.poller import Poller
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.e2e.test_admin_socket import deployment_app
from tests.harness import Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

TOKEN = "apply-admin-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


class Admin:
    def __init__(self, poller: Poller, client: httpx.AsyncClient, url: str) -> None:
        self.poller, self.client, self.url = poller, client, url

    async def get(self, path: str) -> Any:
        response = await self.client.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    async def subscriptions(self) -> dict[str, dict[str, Any]]:
        listed = (await self.get("/subscriptions"))["subscriptions"]
        return {s["options"]["group.id"]: s for s in listed}


@pytest.fixture
async def admin(
    kafka_bootstrap: str, store: DynamoStore, moto_server: MotoServer
) -> AsyncIterator[Admin]:
    settings = Ingress(kafka_bootstrap, store, moto_server.endpoint_url).build_settings()
    settings = settings.model_copy(
        update={
            "admin": settings.admin.model_copy(
                update={"bind_address": "127.0.0.1:0", "token": TOKEN}
            )
        }
    )
    poller = Poller(settings, store)
    task = asyncio.create_task(poller.run())
    started = asyncio.create_task(poller.started())
    await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert started.done(), "the poller did not start"
    url = f"http://{poller.admin_address}"
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client:
            yield Admin(poller, client, url)
    finally:
        poller.stop()
        await asyncio.wait_for(task, 60)


@pytest.mark.promise("p-apply-plan-then-apply")
@pytest.mark.promise("p-apply-idempotent")
@pytest.mark.promise("p-apply-prune")
@pytest.mark.promise("p-apply-source-refused")
async def test_apply_a_file_idempotently_with_refusals_and_prune(
    admin: Admin,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    kafka_bootstrap: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = RecordingHandler()
    handler_url = await handler_server(deployment_app(handler))
    orders, other = await topic_factory(partitions=1), await topic_factory(partitions=1)
    path = tmp_path / "subscriptions.yaml"

    def write(subscriptions: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> None:
        path.write_text(
            yaml.safe_dump(
                {
                    "clusters": clusters,
                    "deployments": [{"uri": handler_url}],
                    "subscriptions": subscriptions,
                }
            )
        )

    async def apply(*flags: str) -> tuple[int, str, str]:
        capsys.readouterr()
        argv = ["apply", "--admin-url", admin.url, "--token", TOKEN, "-f", str(path), *flags]
        code = await asyncio.to_thread(cli, argv)
        out, err = capsys.readouterr()
        return code, out, err

    greet = {
        "name": "greeters",
        "source": f"kafka://local/{orders}",
        "sink": "service://Greeter/greet",
        "options": {"auto.offset.reset": "earliest"},
    }
    dyn = {"name": "dyn", "properties": {"bootstrap.servers": kafka_bootstrap}}
    accounts = {
        "name": "accounts",
        "source": f"kafka://dyn/{other}",
        "sink": "service://Account/apply",
        "paused": True,
    }
    write([greet, accounts], [dyn])

    code, out, _ = await apply("--dry-run")
    assert code == 0, out
    assert "+ cluster dyn" in out
    assert f"+ deployment {handler_url}" in out
    assert "+ subscription greeters" in out
    assert "3 change(s)" not in out  # four: cluster, deployment, two subscriptions
    assert "4 change(s), 0 unchanged" in out
    assert await admin.subscriptions() == {}, "a dry run changes nothing"

    code, out, err = await apply()
    assert code == 0, out + err
    assert "applied 4 change(s)" in out
    subs = await admin.subscriptions()
    assert set(subs) == {"greeters", "accounts"}
    assert subs["accounts"]["paused"] is True
    assert subs["greeters"]["source"] == f"kafka://local/{orders}"
    await produce(kafka_bootstrap, orders, [(None, b"{}")])
    await eventually(lambda: len(handler.acked()) == 1, timeout=30, message="not consuming")

    code, out, _ = await apply()
    assert code == 0
    assert "no changes (4 unchanged)" in out
    assert await admin.subscriptions() == subs, "applying again changes nothing"

    greet["options"] = {"auto.offset.reset": "earliest", "max.in.flight": 4}
    write([greet, accounts], [dyn])
    code, out, _ = await apply()
    assert code == 0, out
    assert "~ subscription greeters" in out
    assert "options.max.in.flight: set to '4'" in out
    after = await admin.subscriptions()
    assert after["greeters"]["id"] == subs["greeters"]["id"], "updated in place"
    assert after["greeters"]["options"]["max.in.flight"] == "4"

    # Another topic in the same consumer group: refused, then forced.
    moved = {**greet, "source": f"kafka://local/{other}"}
    write([moved, accounts], [dyn])
    code, out, err = await apply()
    assert code == 4, out + err
    assert "REFUSED without --force" in out
    assert "holds positions in" in out
    assert "nothing applied: refused without --force: subscription greeters" in err
    assert (await admin.subscriptions())["greeters"]["source"] == f"kafka://local/{orders}"
    code, out, err = await apply("--force")
    assert code == 0, out + err
    replaced = (await admin.subscriptions())["greeters"]
    assert replaced["source"] == f"kafka://local/{other}"
    assert replaced["id"] != subs["greeters"]["id"]
    assert replaced["options"]["group.id"] == "greeters"

    # Left out: kept and listed; pruned on request, the dynamic cluster with it.
    write([moved], [])
    code, out, _ = await apply()
    assert code == 0
    assert "subscription accounts" in out
    assert "--prune deletes it" in out
    assert "accounts" in await admin.subscriptions()
    code, out, err = await apply("--prune")
    assert code == 0, out + err
    assert "- subscription accounts" in out
    assert "- cluster dyn" in out
    assert set(await admin.subscriptions()) == {"greeters"}
    clusters = (await admin.get("/kafka-clusters"))["clusters"]
    assert [c["name"] for c in clusters] == ["local"]


async def test_post_apply_for_pipelines_answers_plans_and_clear_errors(
    admin: Admin, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    handler_url = await handler_server(deployment_app(RecordingHandler()))
    topic = await topic_factory(partitions=1)
    sub = {"name": "pipe", "source": f"kafka://local/{topic}", "sink": "service://Greeter/greet"}
    document = {"deployments": [{"uri": handler_url}], "subscriptions": [sub]}

    bad = await admin.client.post("/apply", json={"document": {"subscriptions": [{"nam": 1}]}})
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("document: subscriptions.0.")
    unknown = {**sub, "source": "kafka://elsewhere/t"}
    refused = await admin.client.post("/apply", json={"document": {"subscriptions": [unknown]}})
    assert refused.status_code == 400
    assert "unknown cluster 'elsewhere'" in refused.json()["message"]

    shown = (await admin.client.post("/apply", json={"document": document, "dry_run": True})).json()
    stale = await admin.client.post("/apply", json={"document": document, "plan": "0" * 16})
    assert stale.status_code == 409
    assert "changed since the plan" in stale.json()["message"]
    done = await admin.client.post(
        "/apply", json={"document": document, "plan": shown["fingerprint"]}
    )
    assert done.status_code == 200, done.text
    assert [a["kind"] for a in done.json()["applied"]] == ["deployment", "subscription"]
    again = (await admin.client.post("/apply", json={"document": document})).json()
    assert again["actions"] == []
    assert again["applied"] == []


async def test_apply_serverless_yml_dry_run_names_every_function(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "apply", "--admin-url", admin.url, "--token", TOKEN, "--serverless",
        str(ROOT / "serverless.yml"), "--stage", "dev", "--account-id", "000000000000",
        "--dry-run", "--json",
    ]  # fmt: skip
    code = await asyncio.to_thread(cli, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = orjson.loads(out)
    created = [(a["verb"], a["kind"], a["name"]) for a in plan["actions"]]
    assert ("create", "deployment", "arn:aws:lambda:us-east-1:000000000000:function:"
            "kafka-ingress-dev-account") in created  # fmt: skip
    assert ("create", "subscription", "kafka-ingress-dev-account-payments") in created
    assert len(created) == 8
    assert await admin.subscriptions() == {}
