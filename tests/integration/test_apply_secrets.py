"""A plan never shows a secret: ``POST /apply`` and ``kafka-ingress apply`` (real server, moto).

The plan compares the document with what is stored, and stored rows are decrypted for that:
secret-named options, credentials in URLs and deployment header values (any header may carry
a credential) must not reach the plan's text, whether they are stored or new in the document.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.api.client import AdminClient
from adapter.api.server import AdminServer
from adapter.cli_apply import run_apply
from adapter.store.dynamo import DynamoStore
from tests._admin_api import admin_server
from tests._http_fixtures import HandlerServer

TOKEN = "apply-secrets-token-0123456789"
STORED_BEARER = "STORED-HANDLER-TOKEN-123"
STORED_API_KEY = "STORED-API-KEY-456"
STORED_URL_PASSWORD = "URLPASSWORD-000"
STORED_PASSWORD = "stored-sasl-pw-Qa71"
NEW_BEARER = "NEW-HANDLER-TOKEN-789"
NEW_API_KEY = "NEW-API-KEY-012"
NEW_URL_PASSWORD = "URLPASSWORD-111"
NEW_CLUSTER_URL_PASSWORD = "URLPASSWORD-222"
NEW_OPTION_URL_PASSWORD = "URLPASSWORD-333"
NEW_PASSWORD = "new-sasl-pw-Zk93"
PLANTED = (
    STORED_BEARER,
    STORED_API_KEY,
    STORED_URL_PASSWORD,
    STORED_PASSWORD,
    NEW_BEARER,
    NEW_API_KEY,
    NEW_URL_PASSWORD,
    NEW_CLUSTER_URL_PASSWORD,
    NEW_OPTION_URL_PASSWORD,
    NEW_PASSWORD,
)


def _oidc(url_password: str, password: str) -> dict[str, str]:
    return {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "ingress",
        "sasl.oauthbearer.client.secret": password,
        "sasl.oauthbearer.token.endpoint.url": f"https://svc:{url_password}@idp.example/token",
    }


@pytest.fixture
async def server(store: DynamoStore) -> AsyncIterator[AdminServer]:
    async with admin_server(store, TOKEN) as admin:
        yield admin


async def _stored(server: AdminServer, handler_server: HandlerServer) -> dict[str, Any]:
    """Store a cluster and a deployment with secrets; the document that changes them all."""

    async def discover(request: Request) -> Response:
        return JSONResponse({"services": [{"name": "S", "ty": "SERVICE", "handlers": []}]})

    url = await handler_server(Starlette(routes=[Route("/discover", discover)]))
    headers = {"Authorization": f"Bearer {STORED_BEARER}", "X-Api-Key": STORED_API_KEY}
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as api:
        cluster = {"name": "c1", "properties": _oidc(STORED_URL_PASSWORD, STORED_PASSWORD)}
        created = await api.post("/kafka-clusters", json=cluster)
        assert created.status_code == 201, created.text[:300]
        registered = await api.post(
            "/deployments", json={"uri": url, "additional_headers": headers}
        )
        assert registered.status_code == 201, registered.text[:300]
    new_option_url = f"https://opt:{NEW_OPTION_URL_PASSWORD}@idp.example/token"
    return {
        "clusters": [
            {"name": "c1", "properties": _oidc(NEW_URL_PASSWORD, NEW_PASSWORD)},
            {"name": "c2", "properties": _oidc(NEW_CLUSTER_URL_PASSWORD, NEW_PASSWORD)},
        ],
        "deployments": [
            {
                "uri": url,
                "headers": {"Authorization": f"Bearer {NEW_BEARER}", "X-Api-Key": NEW_API_KEY},
            }
        ],
        "subscriptions": [
            {
                "name": "orders",
                "source": "kafka://c1/orders",
                "sink": "service://S/h",
                "options": {"sasl.oauthbearer.token.endpoint.url": new_option_url},
            }
        ],
    }


def _leaks(text: str) -> list[str]:
    return [secret for secret in PLANTED if secret in text]


@pytest.mark.promise("p-sec-plan-hides")
async def test_a_dry_run_plan_shows_no_stored_or_new_secret(
    server: AdminServer, handler_server: HandlerServer
) -> None:
    document = await _stored(server, handler_server)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as api:
        response = await api.post("/apply", json={"document": document, "dry_run": True})
    assert response.status_code == 200, response.text[:500]
    assert _leaks(response.text) == []
    changes = [c for a in response.json()["actions"] for c in a["changes"]]
    # What changed is still said, without the values.
    assert "headers.authorization: changed (value not shown)" in changes
    assert "headers.x-api-key: changed (value not shown)" in changes
    assert "sasl.oauthbearer.client.secret: changed (secret)" in changes
    assert "sasl.oauthbearer.token.endpoint.url: changed (secret)" in changes
    assert (
        "options.sasl.oauthbearer.token.endpoint.url: set to 'https://***@idp.example/token'"
        in changes
    )


@pytest.mark.promise("p-sec-plan-hides")
async def test_the_cli_prints_a_plan_without_secrets(
    server: AdminServer,
    handler_server: HandlerServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = await _stored(server, handler_server)
    path = tmp_path / "ingress.yaml"
    path.write_text(yaml.safe_dump(document))
    args = argparse.Namespace(
        file=str(path), serverless=None, prune=False, force=False, dry_run=True, json=False
    )
    client = AdminClient(server.url, token=TOKEN)
    await asyncio.to_thread(run_apply, client, args)
    out, err = capsys.readouterr()
    assert "~ deployment" in out
    assert _leaks(out + err) == []
