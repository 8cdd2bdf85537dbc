"""An admin API server on loopback over a test's store, with a bearer token, and a client
for it: what the API tests of secrets and write-backs share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from adapter.api.catalog import ClusterCatalog
from adapter.api.server import AdminServer, admin_state
from adapter.config import load_settings
from adapter.model import HandlerInfo, HandlerType, InputKind, ServiceInfo, ServiceType
from adapter.store.dynamo import DynamoStore

__all__ = ["admin_server", "authorised_client", "call", "put_greeter"]


@asynccontextmanager
async def admin_server(store: DynamoStore, token: str) -> AsyncIterator[AdminServer]:
    """The admin API with one cluster, ``local``, and ``token`` required."""
    env = {
        "KAFKA_INGRESS_KAFKA_CLUSTERS": '[{name="local", brokers=["127.0.0.1:19092"]}]',
        "KAFKA_INGRESS_ADMIN_TOKEN": token,
    }
    settings = load_settings(None, env=env)
    server = AdminServer(
        admin_state(settings, store, ClusterCatalog(settings, store)), "127.0.0.1:0"
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def authorised_client(store: DynamoStore, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of :func:`admin_server` sending ``token``."""
    async with (
        admin_server(store, token) as server,
        httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client,
    ):
        yield client


async def call(api: httpx.AsyncClient, method: str, path: str, body: Any, status: int) -> Any:
    """``method path`` with a JSON body; asserts the status and returns the JSON answer."""
    response = await api.request(method, path, json=body)
    assert response.status_code == status, response.text[:300]
    return response.json()


async def put_greeter(store: DynamoStore) -> None:
    """A deployment ``dp_1`` serving the service ``Greeter`` with its handler ``greet``."""
    await store.put_deployment({"id": "dp_1", "uri": "http://127.0.0.1:9", "created_at": 0})
    await store.put_service(
        ServiceInfo(
            "Greeter",
            ServiceType.SERVICE,
            "dp_1",
            (HandlerInfo("greet", HandlerType.SERVICE, InputKind.JSON),),
        )
    )
