"""The admin API in-process (httpx ASGI transport): every route, status code and error body.

The state behind it is real: DynamoDB is the session's moto server over HTTP, deployments are
discovered from real uvicorn servers on loopback. Kafka is not needed here (readiness and
offset resets against a real broker are in tests/e2e/test_admin_socket.py); the poller-side
objects the routes read (supervisor, runners) are small fakes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter import ids
from adapter.api import AdminState, ClusterCatalog, create_app
from adapter.cli import main
from adapter.config import Settings, load_settings
from adapter.engine.lifecycle import InvocationStatus
from adapter.engine.settings import RunnerStats
from adapter.invokers.discovery import Discovery
from adapter.local.lambda_server import LocalLambda, load_serverless_functions
from adapter.model import LedgerEntry, Subscription
from adapter.store.dynamo import FIND_READ_PAGES, DynamoStore
from adapter.store.tables import TableNames
from tests._admin_api import admin_server
from tests._http_fixtures import HandlerServer

pytestmark = pytest.mark.timeout(90)

SECRET = "s3cr3t-Pa55word-never-shown"
TOKEN = "admin-token-0123456789"
CLUSTERS = (
    '[{name="local", brokers=["PLAINTEXT://127.0.0.1:19092"], '
    f'"sasl.password"="{SECRET}", "group.id"="cluster-group"}}, '
    '{name="plain", brokers=["127.0.0.1:19093"]}]'
)


def manifest(*services: Any) -> dict[str, Any]:
    return {
        "protocol_version": 1,
        "services": [
            {
                "name": name,
                "ty": ty,
                "handlers": [{"name": h, "ty": t, "input": i} for h, t, i in handlers],
            }
            for name, ty, handlers in services
        ],
    }


GREETER = ("Greeter", "SERVICE", [("greet", None, "JSON"), ("blob", None, "RAW")])
ORDERS = ("Orders", "VIRTUAL_OBJECT", [("place", "EXCLUSIVE", "JSON"), ("peek", "SHARED", "JSON")])


class Deployment:
    """A handler deployment whose discovery manifest the test can change."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen_headers: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/discover", self._discover)])

    async def _discover(self, request: Request) -> Response:
        self.seen_headers.append(dict(request.headers))
        return JSONResponse(self.document)


@dataclass
class FakeRunner:
    """What the routes read from a SubscriptionRunner."""

    owned: set[str] = field(default_factory=set)
    backing_off: set[str] = field(default_factory=set)
    killed: dict[str, InvocationStatus] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)
    stats: RunnerStats = field(default_factory=RunnerStats)
    in_flight: int = 0

    async def kill(self, inv_id: str, status: InvocationStatus) -> bool:
        if inv_id not in self.owned:
            return False
        self.owned.discard(inv_id)
        self.killed[inv_id] = status
        return True

    def retry_now(self, inv_id: str) -> bool:
        if inv_id not in self.backing_off:
            return False
        self.retried.append(inv_id)
        return True

    def partition_status(self) -> dict[tuple[str, int], dict[str, int | None]]:
        return {
            ("orders", 0): {
                "pending": 2,
                "committed": 10,
                "last_tracked": 14,
                "oldest_unfinished": 10,
            }
        }


@dataclass
class FakeSupervisor:
    runner_by_sub: dict[str, FakeRunner] = field(default_factory=dict)
    wakes: int = 0

    def wake(self) -> None:
        self.wakes += 1

    def runners(self) -> dict[str, FakeRunner]:
        return dict(self.runner_by_sub)

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            sub: {
                "state": "running",
                "last_error": None,
                "in_flight": r.in_flight,
                "stats": r.stats,
            }
            for sub, r in self.runner_by_sub.items()
        }


@dataclass
class Api:
    client: httpx.AsyncClient
    state: AdminState
    store: DynamoStore
    supervisor: FakeSupervisor
    resets: list[tuple[Any, ...]]

    async def call(
        self, method: str, path: str, body: Any = None, status: int | None = None, **kw: Any
    ) -> httpx.Response:
        response = await self.client.request(method, path, json=body, **kw)
        if status is not None:
            assert response.status_code == status, (method, path, response.text)
        if response.status_code >= 400 and response.status_code != 405:
            doc = response.json()
            assert isinstance(doc["message"], str), response.text
            assert doc["message"], response.text
            assert doc.get("restate_code") is None
        assert SECRET not in response.text
        return response


def settings(token: str | None = None) -> Settings:
    env = {"KAFKA_INGRESS_KAFKA_CLUSTERS": CLUSTERS}
    if token:
        env["KAFKA_INGRESS_ADMIN_TOKEN"] = token
    return load_settings(None, env=env)


async def _fake_reset(
    resets: list[tuple[Any, ...]],
) -> Callable[..., Awaitable[dict[tuple[str, int], int]]]:
    async def reset(options: Any, topic: str, to: Any, *, timeout_s: float) -> Any:
        resets.append((options.group_id, topic, to))
        return {(topic, 0): 5, (topic, 1): 0}

    return reset


@pytest.fixture
async def api(store: DynamoStore) -> AsyncIterator[Api]:
    conf = settings()
    supervisor = FakeSupervisor()
    resets: list[tuple[Any, ...]] = []

    async def ready(catalog: ClusterCatalog) -> dict[str, str]:
        return dict.fromkeys(catalog.names(), "ok")

    state = AdminState(
        settings=conf,
        store=store,
        catalog=ClusterCatalog(conf, store),
        supervisor=supervisor,  # type: ignore[arg-type]
        discover=Discovery(timeout_s=5),
        reset_offsets=await _fake_reset(resets),
        check_kafka=ready,
    )
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield Api(client, state, store, supervisor, resets)


async def register(api: Api, handler_server: HandlerServer, *services: Any) -> tuple[str, Any]:
    deployment = Deployment(manifest(*services))
    url = await handler_server(deployment.app)
    response = await api.call("POST", "/deployments", {"uri": url}, 201)
    return response.json()["id"], (deployment, url)


async def subscribe(api: Api, topic: str = "orders", **options: str) -> dict[str, Any]:
    body = {"source": f"kafka://plain/{topic}", "sink": "service://Greeter/greet"}
    if options:
        body["options"] = options  # type: ignore[assignment]
    response = await api.call("POST", "/subscriptions", body, 201)
    return response.json()  # type: ignore[no-any-return]


# -- system -----------------------------------------------------------------------------------


@pytest.mark.promise("p-api-404", "p-api-405")
async def test_version_health_and_version_prefixes(api: Api) -> None:
    version = (await api.call("GET", "/version", status=200)).json()
    assert version["min_admin_api_version"] == 2
    assert version["max_admin_api_version"] == 4
    assert version["features"] == {}
    assert set(version) >= {"version", "min_admin_api_version", "max_admin_api_version"}
    for prefix in ("/v2", "/v3", "/v4"):
        assert (await api.call("GET", f"{prefix}/version", status=200)).json() == version
        await api.call("GET", f"{prefix}/subscriptions", status=200)
    await api.call("GET", "/v9/version", status=404)
    await api.call("GET", "/no-such-route", status=404)
    assert (await api.call("PUT", "/subscriptions", status=405)).json()["message"]
    assert (await api.call("GET", "/health", status=200)).json() == {"status": "ok"}
    ready = (await api.call("GET", "/health/ready", status=200)).json()
    assert ready["status"] == "ready"
    assert ready["checks"] == {"dynamodb": "ok", "kafka:local": "ok", "kafka:plain": "ok"}


async def test_readiness_is_503_when_a_dependency_is_down(api: Api) -> None:
    async def down(catalog: ClusterCatalog) -> dict[str, str]:
        return {"local": "unreachable: connection refused", "plain": "ok"}

    api.state.check_kafka = down
    response = await api.call("GET", "/health/ready", status=503)
    assert response.json()["status"] == "not ready"
    assert "kafka:local" in response.json()["message"]


async def test_a_burst_of_readiness_probes_makes_one_check(api: Api) -> None:
    checks = 0

    async def counted(catalog: ClusterCatalog) -> dict[str, str]:
        nonlocal checks
        checks += 1
        await asyncio.sleep(0.05)  # the brokers take a moment to answer
        return dict.fromkeys(catalog.names(), "ok")

    api.state.check_kafka = counted
    requests = await asyncio.gather(*(api.client.get("/health/ready") for _ in range(50)))
    assert [r.status_code for r in requests] == [200] * 50
    assert checks == 1, f"{checks} checks of every dependency for one burst of probes"


@pytest.mark.promise("p-api-gzip")
async def test_responses_are_plain_json_unless_the_client_asks_for_gzip(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER, ORDERS)
    plain = await api.client.get("/openapi.json", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == "application/json"
    zipped = await api.client.get("/openapi.json", headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == plain.json()


async def test_openapi_describes_every_route_and_body(api: Api) -> None:
    spec = (await api.call("GET", "/openapi.json", status=200)).json()
    assert spec == (await api.call("GET", "/openapi", status=200)).json()
    app = api.client._transport.app  # type: ignore[attr-defined]
    served = {
        (route.path, method.lower())
        for route in app.routes
        for method in route.methods
        # The dashboard's static files (/ui) are pages, not API operations.
        if method != "HEAD" and not (route.path + "/").startswith("/ui/")
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert served - {("/openapi", "get")} == documented
    schemas = spec["components"]["schemas"]
    create = spec["paths"]["/subscriptions"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CreateSubscriptionRequest"
    )
    assert set(schemas["CreateSubscriptionRequest"]["properties"]) == {"source", "sink", "options"}
    assert set(schemas["RegisterDeploymentRequest"]["properties"]) >= {
        "uri",
        "arn",
        "additional_headers",
        "use_http_11",
        "force",
        "dry_run",
    }
    assert spec["paths"]["/health"]["get"]["security"] == []


@pytest.mark.promise("p-api-401", "p-api-auth")
async def test_bearer_token_is_required_everywhere_but_health(
    store: DynamoStore, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    conf = settings(TOKEN)
    state = AdminState(settings=conf, store=store, catalog=ClusterCatalog(conf, store))
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        for path in ("/subscriptions", "/v3/deployments", "/metrics", "/openapi.json"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in refused.json()["message"]
            wrong = await client.get(path, headers={"authorization": "Bearer nope-nope-nope-nope"})
            assert wrong.status_code == 401
            basic = await client.get(path, headers={"authorization": f"Basic {TOKEN}"})
            assert basic.status_code == 401
            ok = await client.get(path, headers={"authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, path
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/v2/health")).status_code == 200
    assert TOKEN not in caplog.text


# -- deployments and services -----------------------------------------------------------------


@pytest.mark.promise("p-api-deployment-register")
async def test_register_deployment_in_restate_shape(
    api: Api, handler_server: HandlerServer
) -> None:
    deployment = Deployment(manifest(GREETER, ORDERS))
    url = await handler_server(deployment.app)
    body = {
        "uri": url,
        "additional_headers": {"Authorization": f"Bearer {SECRET}", "Content-Type": "text/plain"},
    }
    created = await api.call("POST", "/deployments", body, 201)
    doc = created.json()
    dep_id = doc["id"]
    assert dep_id.startswith("dp_")
    assert created.headers["location"] == f"deployments/{dep_id}"
    assert deployment.seen_headers[-1]["authorization"] == f"Bearer {SECRET}"
    assert doc["min_protocol_version"] == doc["max_protocol_version"] == 1
    services = {s["name"]: s for s in doc["services"]}
    assert services["Greeter"]["ty"] == "Service"
    assert services["Orders"]["ty"] == "VirtualObject"
    handlers = {h["name"]: h for h in services["Orders"]["handlers"]}
    assert handlers["place"]["ty"] == "Exclusive"
    assert handlers["peek"]["ty"] == "Shared"
    greeter = {h["name"]: h for h in services["Greeter"]["handlers"]}
    assert greeter["blob"]["input"] == "RAW"
    assert greeter["greet"]["input"] == "JSON"
    for svc in doc["services"]:
        assert svc["deployment_id"] == dep_id
        assert svc["revision"] == 1
        assert {"name", "ty", "handlers", "deployment_id", "revision"} <= set(svc)
        for handler in svc["handlers"]:
            assert {"name", "ty", "input_description", "output_description"} <= set(handler)

    listed = (await api.call("GET", "/deployments", status=200)).json()["deployments"]
    assert len(listed) == 1
    item = listed[0]
    assert item["uri"] == url
    assert item["protocol_type"] == "RequestResponse"
    assert item["http_version"] == "HTTP/1.1"
    assert item["created_at"].endswith("Z")
    assert "T" in item["created_at"]
    assert item["additional_headers"] == {"Authorization": "***", "Content-Type": "text/plain"}
    assert sorted((s["name"], s["revision"]) for s in item["services"]) == [
        ("Greeter", 1),
        ("Orders", 1),
    ]
    detailed = (await api.call("GET", f"/deployments/{dep_id}", status=200)).json()
    assert {s["name"] for s in detailed["services"]} == {"Greeter", "Orders"}
    assert detailed["services"][0]["handlers"]

    # Unchanged: 200, same ID, nothing new.
    again = await api.call("POST", "/deployments", body, 200)
    assert again.json()["id"] == dep_id
    # Changed without force: 409; with force: overwritten (200), revisions bumped.
    deployment.document = manifest(GREETER)
    conflict = await api.call("POST", "/deployments", body, 409)
    assert "force" in conflict.json()["message"]
    forced = await api.call("POST", "/deployments", {**body, "force": True}, 200)
    assert forced.json()["id"] == dep_id
    assert [s["revision"] for s in forced.json()["services"]] == [2]
    await api.call("GET", "/services/Orders", status=404)
    assert (await api.call("GET", "/services/Greeter", status=200)).json()["revision"] == 2


async def test_dry_run_and_admin_api_v2_defaults(api: Api, handler_server: HandlerServer) -> None:
    deployment = Deployment(manifest(GREETER))
    url = await handler_server(deployment.app)
    dry = await api.call("POST", "/deployments", {"uri": url, "dry_run": True}, 201)
    assert [s["name"] for s in dry.json()["services"]] == ["Greeter"]
    assert (await api.call("GET", "/deployments", status=200)).json()["deployments"] == []
    await api.call("GET", "/services/Greeter", status=404)

    dep_id = (await api.call("POST", "/v2/deployments", {"uri": url}, 201)).json()["id"]
    # v2: re-registering the same deployment is a conflict, force defaults to true and an
    # overwrite answers 201 (Restate's admin API v2).
    await api.call("POST", "/v2/deployments", {"uri": url}, 409)
    deployment.document = manifest(GREETER, ORDERS)
    overwritten = await api.call("POST", "/v2/deployments", {"uri": url}, 201)
    assert overwritten.json()["id"] == dep_id
    await api.call("POST", "/v3/deployments", {"uri": url, "dry_run": True}, 200)


@pytest.mark.promise("p-api-deployment-discovery", "p-api-additional-headers")
async def test_register_deployment_validation_and_discovery_errors(
    api: Api, handler_server: HandlerServer, refused_port: int
) -> None:
    async def broken(request: Request) -> Response:
        return JSONResponse({"message": "nope"}, status_code=404)

    missing = await handler_server(Starlette(routes=[Route("/discover", broken)]))
    bad_doc = Deployment({"services": [{"name": "X", "ty": "ACTOR", "handlers": []}]})
    bad_url = await handler_server(bad_doc.app)
    bad_handler = Deployment(manifest(("X", "SERVICE", [("h", "EXCLUSIVE", "JSON")])))
    bad_handler_url = await handler_server(bad_handler.app)
    cases: list[tuple[Any, str]] = [
        ({}, "exactly one of 'uri'"),
        ({"uri": "http://a", "arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}, "one"),
        ({"uri": "ftp://host/x"}, "http(s) URL"),
        ({"arn": "arn:aws:s3:::bucket"}, "not a Lambda function ARN"),
        ({"uri": missing}, "HTTP 404"),
        ({"uri": f"http://127.0.0.1:{refused_port}"}, "cannot reach"),
        ({"uri": bad_url}, "services[0].ty"),
        ({"uri": bad_handler_url}, "services[0].handlers[0].ty"),
        ({"uri": missing, "additional_headers": {"X-A": "a\r\nX-Injected: 1"}}, "control"),
        ({"uri": missing, "additional_headers": {"bad name": "x"}}, "not a valid header name"),
        ({"uri": missing, "unknown": 1}, "unknown field"),
        ({"uri": 5}, "uri"),
    ]
    for body, message in cases:
        response = await api.call("POST", "/deployments", body, 400)
        assert message in response.json()["message"], (body, response.text)
    invalid = await api.client.post("/deployments", content=b"{not json")
    assert invalid.status_code == 400
    assert "not valid JSON" in invalid.json()["message"]
    empty = await api.client.post("/deployments", content=b"")
    assert empty.status_code == 400
    assert "required" in empty.json()["message"]


@pytest.mark.promise("p-api-deployment-register")
async def test_service_type_change_needs_force(api: Api, handler_server: HandlerServer) -> None:
    await register(api, handler_server, GREETER)
    other = Deployment(manifest(("Greeter", "VIRTUAL_OBJECT", [("greet", "EXCLUSIVE", "JSON")])))
    url = await handler_server(other.app)
    conflict = await api.call("POST", "/deployments", {"uri": url}, 409)
    assert "type" in conflict.json()["message"]
    moved = await api.call("POST", "/deployments", {"uri": url, "breaking": True}, 201)
    svc = (await api.call("GET", "/services/Greeter", status=200)).json()
    assert svc["deployment_id"] == moved.json()["id"]
    assert svc["revision"] == 2


async def test_deployment_and_service_lookups(api: Api, handler_server: HandlerServer) -> None:
    dep_id, _ = await register(api, handler_server, GREETER, ORDERS)
    services = (await api.call("GET", "/services", status=200)).json()["services"]
    assert [s["name"] for s in services] == ["Greeter", "Orders"]
    orders = (await api.call("GET", "/services/Orders", status=200)).json()
    assert orders["ty"] == "VirtualObject"
    assert orders["public"] is True
    assert orders["idempotency_retention"] == "7days"
    handlers = (await api.call("GET", "/services/Orders/handlers", status=200)).json()
    assert [h["name"] for h in handlers["handlers"]] == ["place", "peek"]
    place = (await api.call("GET", "/services/Orders/handlers/place", status=200)).json()
    assert place["ty"] == "Exclusive"
    await api.call("GET", "/services/Orders/handlers/nope", status=404)
    await api.call("GET", "/services/Nope", status=404)
    await api.call("GET", "/services/Nope/handlers", status=404)
    await api.call("GET", f"/deployments/{ids.deployment_id()}", status=404)
    await api.call("GET", "/deployments/not-an-id", status=400)
    await api.call("DELETE", "/deployments/not-an-id", status=400)

    sub = await subscribe(api)
    in_use = await api.call("DELETE", f"/deployments/{dep_id}", status=409)
    assert sub["id"] in in_use.json()["message"]
    await api.call("DELETE", f"/deployments/{dep_id}", params={"force": "true"}, status=202)
    await api.call("GET", f"/deployments/{dep_id}", status=404)
    await api.call("GET", "/services/Greeter", status=404)
    await api.call("DELETE", f"/deployments/{dep_id}", status=404)


# -- subscriptions ----------------------------------------------------------------------------


@pytest.mark.promise("p-api-subscription-create")
async def test_create_subscription_restate_shape_group_and_masking(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    body: dict[str, Any] = {
        "source": "kafka://plain/orders",
        "sink": "service://Greeter/greet",
        "options": {
            "auto.offset.reset": "earliest",
            "max.in.flight": 8,
            "check.crcs": True,
            "sasl.password": SECRET,
        },
    }
    created = await api.call("POST", "/subscriptions", body, 201)
    doc = created.json()
    assert created.headers["location"] == f"subscriptions/{doc['id']}"
    assert doc["id"].startswith("sub_")
    assert doc["source"] == "kafka://plain/orders"
    assert doc["sink"] == "service://Greeter/greet"
    # The effective consumer group (no option, no cluster group: the subscription ID).
    assert doc["options"] == {
        "auto.offset.reset": "earliest",
        "max.in.flight": "8",
        "check.crcs": "true",
        "sasl.password": "***",
        "group.id": doc["id"],
    }
    stored = await api.store.get_subscription(doc["id"])
    assert stored is not None
    assert stored.options["sasl.password"] == SECRET
    assert api.supervisor.wakes >= 1

    # The same source + sink + group again: the existing subscription, not a second consumer.
    again = await api.call("POST", "/subscriptions", body, 200)
    assert again.json()["id"] == doc["id"]
    other = {**body, "options": {**body["options"], "max.in.flight": 9}}
    conflict = await api.call("POST", "/subscriptions", other, 409)
    assert "PATCH" in conflict.json()["message"]
    # Another group is another consumer.
    grouped = {**body, "options": {"group.id": "team-a"}}
    team = (await api.call("POST", "/subscriptions", grouped, 201)).json()
    assert team["options"]["group.id"] == "team-a"
    assert team["id"] != doc["id"]
    # A cluster's group.id comes before the subscription ID.
    on_local = {"source": "kafka://local/orders", "sink": "service://Greeter/greet"}
    local = (await api.call("POST", "/subscriptions", on_local, 201)).json()
    assert local["options"]["group.id"] == "cluster-group"

    listed = (await api.call("GET", "/subscriptions", status=200)).json()["subscriptions"]
    assert sorted(s["id"] for s in listed) == sorted([doc["id"], team["id"], local["id"]])
    # Oldest first: by the creation time in the IDs (Restate's ID strings do not sort by it).
    assert [s["id"] for s in listed] == [doc["id"], team["id"], local["id"]]
    by_source = await api.call("GET", "/subscriptions", params={"source": "kafka://local/orders"})
    assert [s["id"] for s in by_source.json()["subscriptions"]] == [local["id"]]
    by_sink = await api.call("GET", "/subscriptions", params={"sink": "service://Greeter/blob"})
    assert by_sink.json()["subscriptions"] == []
    got = (await api.call("GET", f"/subscriptions/{doc['id']}", status=200)).json()
    assert got["options"]["sasl.password"] == "***"
    assert got["runtime"] is None


@pytest.mark.promise("p-api-400")
async def test_subscription_validation_errors_name_the_problem(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sink = "service://Greeter/greet"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"source": "http://plain/orders", "sink": sink}, "scheme 'http'"),
        ({"source": "kafka://nope/orders", "sink": sink}, "known clusters: local, plain"),
        ({"source": "kafka://plain", "sink": sink}, "no topic"),
        ({"source": "kafka://plain/", "sink": sink}, "no topic"),
        ({"source": "kafka://plain/bad topic!", "sink": sink}, "not a Kafka topic name"),
        (
            {"source": "kafka://plain/o", "sink": "lambda://Greeter/greet"},
            "'Greeter/greet' is not a Lambda function ARN",
        ),
        ({"source": "kafka://plain/o", "sink": "sqs://Greeter/greet"}, "scheme 'sqs'"),
        ({"source": "kafka://plain/o", "sink": "service://Greeter"}, "both names"),
        ({"source": "kafka://plain/o", "sink": "service://Nope/greet"}, "unknown service 'Nope'"),
        ({"source": "kafka://plain/o", "sink": "service://Greeter/nope"}, "handlers: greet, blob"),
        (
            {"source": "kafka://plain/o", "sink": sink, "options": {"max.poll.recordz": "1"}},
            "unknown option 'max.poll.recordz'",
        ),
        (
            {"source": "kafka://plain/o", "sink": sink, "options": {"enable.auto.commit": "true"}},
            "not allowed",
        ),
        (
            {"source": "kafka://plain/o", "sink": sink, "options": {"session.timeout.ms": "x"}},
            "session.timeout.ms",
        ),
        (
            {
                "source": "kafka://plain/o",
                "sink": sink,
                "options": {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},
            },
            "needs sasl.username",
        ),
        (
            {
                "source": "kafka://plain/o",
                "sink": sink,
                "options": {
                    "filter.criteria": json.dumps(
                        {"Filters": [{"Pattern": '{"value": {"a": [{"prefx": "x"}]}}'}]}
                    )
                },
            },
            "'filter.criteria': expected AWS Lambda's FilterCriteria JSON",
        ),
        (
            {
                "source": "kafka://plain/o",
                "sink": sink,
                "options": {"filter.criteria": '{"Filters": [{"Pattern": "{\\"a\\": [[]]}"}]}'},
            },
            "Filters[0].Pattern at a[0]: a rule is",
        ),
        ({"source": "kafka://plain/o"}, "sink: Field required"),
        ({"source": "kafka://plain/o", "sink": sink, "option": {}}, "unknown field"),
        ({"source": "kafka://plain/o", "sink": sink, "options": {"a": [1]}}, "options.a"),
    ]
    for body, message in cases:
        response = await api.call("POST", "/subscriptions", body, 400)
        assert message in response.json()["message"], (body, response.text)
    secret = {"sasl.password": SECRET, "session.timeout.ms": "nan"}
    leak = await api.call(
        "POST", "/subscriptions", {"source": "kafka://plain/o", "sink": sink, "options": secret}
    )
    assert leak.status_code == 400
    assert await api.store.list_subscriptions() == []


@pytest.mark.promise("p-api-404", "p-api-subscription-get-delete")
async def test_get_delete_and_unknown_subscriptions(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sub = await subscribe(api)
    unknown = ids.subscription_id()
    missing = await api.call("GET", f"/subscriptions/{unknown}", status=404)
    assert unknown in missing.json()["message"]
    await api.call("GET", "/subscriptions/sub_nope", status=400)
    await api.call("DELETE", f"/subscriptions/{unknown}", status=404)
    deleted = await api.call("DELETE", f"/subscriptions/{sub['id']}", status=202)
    assert deleted.content == b""
    await api.call("GET", f"/subscriptions/{sub['id']}", status=404)
    await api.call("DELETE", f"/subscriptions/{sub['id']}", status=404)


async def test_subscription_runtime_status_from_this_poller(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sub = await subscribe(api)
    api.supervisor.runner_by_sub[sub["id"]] = FakeRunner(in_flight=3)
    runtime = (await api.call("GET", f"/subscriptions/{sub['id']}", status=200)).json()["runtime"]
    assert runtime["state"] == "running"
    assert runtime["in_flight"] == 3
    assert runtime["partitions"] == [
        {"topic": "orders", "partition": 0, "committed": 10, "pending": 2, "oldest_unfinished": 10}
    ]


@pytest.mark.promise("p-api-subscription-patch")
async def test_patch_keeps_the_group_bumps_the_revision_and_pauses(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sub = await subscribe(api, **{"max.in.flight": "4", "check.crcs": "false"})
    path = f"/subscriptions/{sub['id']}"
    patched = await api.call(
        "PATCH", path, {"options": {"max.in.flight": 16, "check.crcs": None}}, 200
    )
    doc = patched.json()
    assert doc["options"] == {"max.in.flight": "16", "group.id": sub["id"]}
    assert doc["revision"] == sub["revision"] + 1
    same = await api.call("PATCH", path, {"options": {"max.in.flight": "16"}}, 200)
    assert same.json()["revision"] == doc["revision"]
    paused = (await api.call("PATCH", path, {"paused": True}, 200)).json()
    assert paused["paused"] is True
    resumed = (await api.call("PATCH", path, {"paused": False}, 200)).json()
    assert resumed["paused"] is False
    assert resumed["options"]["group.id"] == sub["id"]
    removed = await api.call("PATCH", path, {"options": {"group.id": None}}, 400)
    assert "group.id cannot be removed" in removed.json()["message"]
    await api.call("PATCH", path, {"options": {"nope.option": "1"}}, 400)
    await api.call("PATCH", path, {"paused": "yes"}, 400)
    await api.call("PATCH", f"/subscriptions/{ids.subscription_id()}", {"paused": True}, 404)


@pytest.mark.promise("p-api-subscription-reset")
async def test_reset_pauses_resets_forgets_ledger_rows_and_resumes(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sub = await subscribe(api)
    rows = [_entry(sub["id"], p, o, "SUCCEEDED") for p, o in ((0, 3), (0, 5), (0, 6), (1, 0))]
    await api.store.write_entries(rows)
    path = f"/subscriptions/{sub['id']}/reset"
    reset = await api.call("POST", path, {"to": "earliest"}, 200)
    doc = reset.json()
    assert doc["group_id"] == sub["id"]
    assert doc["offsets"] == [
        {"topic": "orders", "partition": 0, "offset": 5},
        {"topic": "orders", "partition": 1, "offset": 0},
    ]
    assert doc["ledger_rows_deleted"] == 3
    assert api.resets == [(sub["id"], "orders", "earliest")]
    remaining = [e.offset for e in (await api.store.find_entries())[0]]
    assert remaining == [3]
    after = (await api.call("GET", f"/subscriptions/{sub['id']}", status=200)).json()
    assert after["paused"] is False

    await api.call("POST", path, {"to": "2026-01-02T03:04:05Z"}, 200)
    await api.call("POST", path, {"to": 1700000000000}, 200)
    assert api.resets[-2][2] == 1767323045000
    assert api.resets[-1][2] == 1700000000000
    bad = await api.call("POST", path, {"to": "yesterday"}, 400)
    assert "RFC 3339" in bad.json()["message"]
    await api.call("POST", path, {"to": "2026-01-02T03:04:05"}, 400)
    await api.call("POST", path, {}, 400)
    await api.call("POST", f"/subscriptions/{ids.subscription_id()}/reset", {"to": "latest"}, 404)
    # A paused subscription stays paused after the reset.
    await api.call("PATCH", f"/subscriptions/{sub['id']}", {"paused": True}, 200)
    await api.call("POST", path, {"to": "latest"}, 200)
    assert (await api.store.get_subscription(sub["id"])).paused  # type: ignore[union-attr]


# -- invocations ------------------------------------------------------------------------------


def _entry(sub_id: str, partition: int, offset: int, status: str, key: str = "k") -> LedgerEntry:
    return LedgerEntry(
        id=ids.invocation_id(sub_id, "orders", partition, offset),
        subscription_id=sub_id,
        topic="orders",
        partition=partition,
        offset=offset,
        key=key,
        target="service://Greeter/greet",
        status=status,
        attempts=2,
        last_error="boom" if status != "SUCCEEDED" else None,
        created_at_ms=1_700_000_000_000,
        updated_at_ms=1_700_000_000_500,
        completed_at_ms=1_700_000_000_500 if status != "BACKING_OFF" else None,
        next_retry_at_ms=1_700_000_009_000 if status == "BACKING_OFF" else None,
    )


async def test_invocation_listing_filters_and_pages(api: Api) -> None:
    sub_a, sub_b = ids.subscription_id(), ids.subscription_id()
    rows = [_entry(sub_a, 0, o, "SUCCEEDED", key=f"k{o % 2}") for o in range(7)]
    rows += [_entry(sub_a, 1, 0, "BACKING_OFF"), _entry(sub_b, 0, 0, "FAILED")]
    await api.store.write_entries(rows)
    for sub_id in (sub_a, sub_b):  # the listing without a filter reads each subscription's
        await api.store.put_subscription(
            Subscription(sub_id, "plain", "orders", "Greeter", "greet", {})
        )

    everything = (await api.call("GET", "/invocations", status=200)).json()
    assert len(everything["invocations"]) == 9
    assert everything["next_page_token"] is None
    one = next(i for i in everything["invocations"] if i["status"] == "BACKING_OFF")
    assert one["attempts"] == 2
    assert one["last_error"] == "boom"
    assert one["next_retry_at"] == "2023-11-14T22:13:29Z"
    assert one["created_at"] == "2023-11-14T22:13:20Z"
    assert one["completed_at"] is None

    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"subscription": sub_a, "limit": 3}
        if token:
            params["page_token"] = token
        page = (await api.call("GET", "/invocations", params=params, status=200)).json()
        seen += [f"{i['partition']}@{i['offset']}" for i in page["invocations"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [f"0@{o}" for o in range(7)] + ["1@0"]  # partition, offset order

    def count(**params: Any) -> Awaitable[httpx.Response]:
        return api.call("GET", "/invocations", params=params, status=200)

    assert len((await count(status="backing_off,FAILED")).json()["invocations"]) == 2
    assert len((await count(subscription=sub_a, key="k1")).json()["invocations"]) == 3
    assert len((await count(handler="Greeter/greet")).json()["invocations"]) == 9
    assert (await count(handler="service://Greeter/other")).json()["invocations"] == []
    scanned = (await count(limit=4)).json()
    rest = (await count(limit=10, page_token=scanned["next_page_token"])).json()
    assert len(scanned["invocations"]) + len(rest["invocations"]) == 9

    errors: list[tuple[dict[str, Any], str]] = [
        ({"status": "DONE"}, "unknown status"),
        ({"subscription": "x"}, "subscription ID"),
        ({"limit": 0}, "between 1 and 1000"),
        ({"limit": "many"}, "integer"),
        ({"page_token": "garbage!"}, "page_token"),
        ({"page_token": scanned["next_page_token"], "subscription": sub_a}, "another"),
        ({"handler": "Greeter"}, "both names"),
        ({"handler": "["}, "Invalid IPv6 URL"),
    ]
    for params, message in errors:
        bad = await api.call("GET", "/invocations", params=params, status=400)
        assert message in bad.json()["message"], params


async def test_a_subscriptions_listing_includes_its_paged_successes(
    api: Api, dynamo_client: Any, table_names: TableNames
) -> None:
    sub = Subscription(ids.subscription_id(), "c1", "orders", "Greeter", "greet", {})
    await api.store.put_subscription(sub)
    paging = DynamoStore(dynamo_client, table_names, success_pages=True)
    try:
        for first in range(0, 120, 40):  # three batches: three pages per partition
            batch = [
                replace(_entry(sub.id, p, o, "SUCCEEDED"), attempts=1)
                for p in (0, 1)
                for o in range(first, first + 40)
                if (p, o) not in {(0, 5), (1, 77)}
            ]
            await paging.write_entries(batch)
        await paging.write_entries(
            [_entry(sub.id, 0, 5, "DEAD_LETTERED"), _entry(sub.id, 1, 77, "BACKING_OFF")]
        )
    finally:
        await paging.aclose()

    listed: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"subscription": sub.id, "limit": 17}
        if token:
            params["page_token"] = token
        page = (await api.call("GET", "/invocations", params=params, status=200)).json()
        assert len(page["invocations"]) <= 17
        listed += page["invocations"]
        token = page["next_page_token"]
        if token is None:
            break
    positions = [(i["partition"], i["offset"]) for i in listed]
    assert positions == [(p, o) for p in (0, 1) for o in range(120)]  # each once, in order
    paged = next(i for i in listed if (i["partition"], i["offset"]) == (1, 3))
    assert paged["id"] == ids.invocation_id(sub.id, "orders", 1, 3)
    assert paged["status"] == "SUCCEEDED"
    assert paged["attempts"] == 1
    assert paged["target"] == "service://Greeter/greet"
    assert paged["key"] is None  # a page keeps offsets, not keys
    assert paged["completed_at"] is not None
    by_position = {(i["partition"], i["offset"]): i["status"] for i in listed}
    assert by_position[(0, 5)] == "DEAD_LETTERED"
    assert by_position[(1, 77)] == "BACKING_OFF"

    def listing(**params: Any) -> Awaitable[httpx.Response]:
        return api.call("GET", "/invocations", params={"subscription": sub.id, **params})

    succeeded = (await listing(status="SUCCEEDED", limit=1000)).json()["invocations"]
    assert len(succeeded) == 238
    failed = (await listing(status="DEAD_LETTERED,BACKING_OFF")).json()["invocations"]
    assert [i["offset"] for i in failed] == [5, 77]
    assert len((await listing(key="k", limit=1000)).json()["invocations"]) == 2  # rows only
    # A paged success has no row of its own: its ID resolves once the topic reference is
    # recorded (a poller does that when it is first assigned a partition of the topic).
    await api.call("GET", f"/invocations/{paged['id']}", status=404)
    await api.store.remember_topic(sub.id, "orders")
    await api.store.remember_topic(sub.id, "orders")  # a second poller: no error, same fact
    found = (await api.call("GET", f"/invocations/{paged['id']}", status=200)).json()
    assert found == paged
    row = (await api.call("GET", f"/invocations/{failed[0]['id']}", status=200)).json()
    assert row == failed[0]  # a row is read by its ID first
    unpaged = ids.invocation_id(sub.id, "orders", 0, 500)  # resolvable, but never recorded
    await api.call("GET", f"/invocations/{unpaged}", status=404)
    forged = ids.invocation_id(ids.subscription_id(), "orders", 1, 3)  # an unknown reference
    assert (
        "not in the ledger"
        in (await api.call("GET", f"/invocations/{forged}", status=404)).json()["message"]
    )
    malformed = paged["id"][:-1] + ("x" if paged["id"][-1] != "x" else "y")
    bad = await api.call("GET", f"/invocations/{malformed}", status=400)
    assert malformed in bad.json()["message"]
    first = (await listing(limit=5)).json()["next_page_token"]
    other = ids.subscription_id()
    wrong = await api.call(
        "GET", "/invocations", params={"subscription": other, "page_token": first}, status=400
    )
    assert "another" in wrong.json()["message"]
    await api.call("GET", "/invocations", params={"page_token": first}, status=400)


async def test_the_unfiltered_listing_is_every_subscriptions_newest_first_with_successes(
    api: Api, dynamo_client: Any, table_names: TableNames
) -> None:
    sub_a = Subscription(ids.subscription_id(), "plain", "orders", "Greeter", "greet", {})
    sub_b = Subscription(ids.subscription_id(), "plain", "orders", "Orders", "place", {})
    for sub in (sub_a, sub_b):
        await api.store.put_subscription(sub)
    base = 1_700_000_000_000

    def at(entry: LedgerEntry, created: int, **changes: Any) -> LedgerEntry:
        return replace(entry, created_at_ms=base + created, **changes)

    # A's first-attempt successes in pages (three batches, each one page per partition: every
    # success of a page is listed at the page's earliest admission), B's and A's other
    # outcomes in rows, interleaved in time.
    paging = DynamoStore(dynamo_client, table_names, success_pages=True)
    try:
        for batch, created in enumerate((1_000, 2_000, 3_000)):
            await paging.write_entries(
                [
                    at(_entry(sub_a.id, p, o, "SUCCEEDED"), created + o, attempts=1)
                    for p in (0, 1)
                    for o in range(batch * 10, batch * 10 + 10)
                ]
            )
        rows = [
            at(_entry(sub_b.id, 0, 0, "SUCCEEDED"), 1_500),  # attempts 2: a row
            at(_entry(sub_b.id, 0, 1, "FAILED"), 2_500),
            at(_entry(sub_b.id, 0, 2, "BACKING_OFF"), 3_500),
            at(_entry(sub_a.id, 2, 0, "DEAD_LETTERED"), 2_200),
            at(_entry(sub_a.id, 2, 1, "FAILED"), 500),
        ]
        await paging.write_entries(rows)
    finally:
        await paging.aclose()
    page_created = {0: 1_000, 1: 2_010, 2: 3_020}  # earliest admission of each batch
    expected = [
        (base + page_created[o // 10], ids.invocation_id(sub_a.id, "orders", p, o), "SUCCEEDED")
        for p in (0, 1)
        for o in range(30)
    ] + [(e.created_at_ms, e.id, e.status) for e in rows]
    expected.sort(reverse=True)

    async def listing(limit: int, **params: Any) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = []
        token = None
        while True:
            query = {"limit": limit, **params, **({"page_token": token} if token else {})}
            page = (await api.call("GET", "/invocations", params=query, status=200)).json()
            assert len(page["invocations"]) <= limit
            listed += page["invocations"]
            token = page["next_page_token"]
            if token is None:
                return listed

    everything = await listing(7)
    assert [(i["id"], i["status"]) for i in everything] == [(i, s) for _, i, s in expected]
    assert everything[0]["id"] == rows[2].id  # the newest: B's backing-off row
    paged = everything[1]  # then A's newest page: 20 successes admitted at 3.020 s
    assert paged["offset"] >= 20
    assert paged["id"] == ids.invocation_id(sub_a.id, "orders", paged["partition"], paged["offset"])
    assert paged["target"] == "service://Greeter/greet"
    assert paged["attempts"] == 1
    assert paged["subscription_id"] == sub_a.id
    assert next(i for i in everything if i["id"] == rows[2].id)["target"] == rows[2].target
    assert [i["id"] for i in await listing(1000)] == [i for _, i, _ in expected]

    failed = await listing(1, status="FAILED,DEAD_LETTERED")
    assert [i["id"] for i in failed] == [rows[1].id, rows[3].id, rows[4].id]  # newest first
    succeeded = await listing(9, status="SUCCEEDED")
    assert [i["id"] for i in succeeded] == [i for _, i, s in expected if s == "SUCCEEDED"]
    assert rows[0].id in {i["id"] for i in succeeded}  # a SUCCEEDED row as well as pages
    only_b = await listing(5, handler="Orders/place")
    assert [i["id"] for i in only_b] == [rows[2].id, rows[1].id, rows[0].id]


@dataclass
class Needles:
    """A ledger where a filter matches little: see :func:`seed_needles`."""

    sub: Subscription
    expected: list[tuple[int, int]]  # (partition, offset) of the DEAD_LETTERED rows keyed "needle"
    successes: list[tuple[int, int]]  # paged successes, all after the rows


async def seed_needles(api: Api, dynamo_client: Any, table_names: TableNames) -> Needles:
    """Three rows matching ``key=needle`` (and ``status=DEAD_LETTERED``), each after more
    DynamoDB pages of rows that match neither than one request may read (a filtered read
    reads at least 100 rows a page), then ten first-attempt successes recorded in pages."""
    sub = Subscription(ids.subscription_id(), "plain", "orders", "Greeter", "greet", {})
    await api.store.put_subscription(sub)
    gap = (FIND_READ_PAGES + 1) * 100
    needles = [3, 3 + gap, 3 + 2 * gap]
    rows = [
        _entry(sub.id, 0, o, "DEAD_LETTERED", key="needle")
        if o in needles
        else _entry(sub.id, 0, o, "BACKING_OFF", key=f"hay{o}")
        for o in range(needles[-1] + 1)
    ]
    successes = [(0, o) for o in range(needles[-1] + 1, needles[-1] + 6)]
    successes += [(1, o) for o in range(5)]
    paging = DynamoStore(dynamo_client, table_names, success_pages=True)
    try:
        await paging.write_entries(rows)
        await paging.write_entries(
            [replace(_entry(sub.id, p, o, "SUCCEEDED"), attempts=1) for p, o in successes]
        )
    finally:
        await paging.aclose()
    return Needles(sub, [(0, o) for o in needles], successes)


@pytest.mark.promise("p-api-invocations-bounded")
async def test_a_filtered_listing_reads_a_bounded_part_of_the_ledger_per_request(
    api: Api, dynamo_client: Any, table_names: TableNames
) -> None:
    seeded = await seed_needles(api, dynamo_client, table_names)
    sub, expected = seeded.sub, seeded.expected
    reads: list[str] = []  # the filtered ledger reads (Query or Scan) of the current request

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        if "FilterExpression" in params:
            reads.append(model.name)

    async def follow(**params: Any) -> tuple[list[tuple[int, int]], list[int], int]:
        """Every page of a listing: what it listed, the reads of each request, and how many
        pages came back with fewer rows than asked while more followed."""
        listed: list[tuple[int, int]] = []
        per_request: list[int] = []
        short = 0
        token = None
        for _ in range(100):
            reads.clear()
            query = {**params, "limit": 2, **({"page_token": token} if token else {})}
            page = (await api.call("GET", "/invocations", params=query, status=200)).json()
            per_request.append(len(reads))
            listed += [(i["partition"], i["offset"]) for i in page["invocations"]]
            token = page["next_page_token"]
            if token is None:
                return listed, per_request, short
            short += len(page["invocations"]) < 2
        raise AssertionError(f"no end after 100 pages of {params}")

    events = [f"before-parameter-build.dynamodb.{op}" for op in ("Query", "Scan")]
    for event in events:
        dynamo_client.meta.events.register(event, count)
    try:
        for params in (
            {"subscription": sub.id, "key": "needle"},
            {"subscription": sub.id, "status": "DEAD_LETTERED"},
            {"key": "needle"},  # no subscription: a Scan, in no particular order
        ):
            listed, per_request, short = await follow(**params)
            assert max(per_request) <= FIND_READ_PAGES, (params, per_request)
            assert short > 0, params  # the budget ran out before the page was full
            assert sorted(listed) == expected, params  # each once
            if "subscription" in params:
                assert listed == expected, params  # in (topic, partition, offset) order
        # With paged successes merged in: rows that a request has not reached yet hold back
        # the successes that sort after them, so the order stays (partition, offset).
        listed, per_request, short = await follow(
            subscription=sub.id, status="SUCCEEDED,DEAD_LETTERED"
        )
        assert listed == expected + seeded.successes
        assert max(per_request) <= FIND_READ_PAGES, per_request
        assert short > 0
    finally:
        for event in events:
            dynamo_client.meta.events.unregister(event, count)


@pytest.mark.promise("p-api-invocations-bounded")
async def test_the_cli_follows_page_tokens_past_pages_that_list_nothing(
    api: Api, dynamo_client: Any, table_names: TableNames, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = await seed_needles(api, dynamo_client, table_names)
    async with admin_server(api.store, TOKEN) as server:
        base = ["invocations", "list", "--admin-url", server.url, "--token", TOKEN, "--json"]
        capsys.readouterr()
        # 1500: more than the API's largest page (1000), asked for in pages it accepts.
        cases = (([], 100, 3), (["--subscription", seeded.sub.id], 2, 2), ([], 1500, 3))
        for more, limit, count in cases:
            argv = [*base, "--key", "needle", "--limit", str(limit), *more]
            assert await asyncio.to_thread(main, argv) == 0
            doc = json.loads(capsys.readouterr().out)
            listed = [(i["partition"], i["offset"]) for i in doc["invocations"]]
            assert sorted(listed) == seeded.expected[:count]
            # Stopped at --limit, with the token to go on with; or at the end, without one.
            assert (doc["next_page_token"] is None) == (count == 3)


async def test_invocation_actions_follow_restates_rules(api: Api) -> None:
    sub = ids.subscription_id()
    done = _entry(sub, 0, 1, "SUCCEEDED")
    waiting = _entry(sub, 0, 2, "BACKING_OFF")
    elsewhere = _entry(sub, 0, 3, "BACKING_OFF")
    await api.store.write_entries([done, waiting, elsewhere])
    runner = FakeRunner(owned={waiting.id}, backing_off={waiting.id})
    api.supervisor.runner_by_sub[sub] = runner

    got = (await api.call("GET", f"/invocations/{done.id}", status=200)).json()
    assert got["status"] == "SUCCEEDED"
    assert got["offset"] == 1
    assert got["topic"] == "orders"
    await api.call("GET", "/invocations/inv_bad", status=400)
    unknown = ids.invocation_id(sub, "orders", 0, 99)  # its topic reference was never recorded
    await api.call("GET", f"/invocations/{unknown}", status=404)
    for action in ("cancel", "kill", "purge", "retry", "resume"):
        await api.call("PATCH", f"/invocations/{unknown}/{action}", status=404)
        await api.call("PATCH", f"/invocations/inv_bad/{action}", status=400)

    # Completed: only purge.
    for action in ("cancel", "kill", "retry", "resume"):
        conflict = await api.call("PATCH", f"/invocations/{done.id}/{action}", status=409)
        assert "SUCCEEDED" in conflict.json()["message"]
    # Backing off: no purge; retry and kill act on the runner that holds it.
    await api.call("PATCH", f"/invocations/{waiting.id}/purge", status=409)
    retried = (await api.call("PATCH", f"/invocations/{waiting.id}/retry", status=200)).json()
    assert retried == {"id": waiting.id, "action": "retry", "status": "PENDING", "command": None}
    await api.call("PATCH", f"/invocations/{waiting.id}/resume", status=200)
    assert runner.retried == [waiting.id, waiting.id]
    killed = (await api.call("PATCH", f"/invocations/{waiting.id}/kill", status=200)).json()
    assert killed["status"] == "KILLED"
    assert runner.killed == {waiting.id: InvocationStatus.KILLED}
    # Held by another poller: queued for it (202), one pending command per invocation.
    await api.call("GET", f"/invocations/{elsewhere.id}/command", status=404)
    queued = (await api.call("PATCH", f"/invocations/{elsewhere.id}/cancel", status=202)).json()
    assert queued["status"] is None
    assert queued["command"]["action"] == "cancel"
    assert queued["command"]["state"] == "pending"
    again = await api.call("PATCH", f"/invocations/{elsewhere.id}/cancel", status=202)
    assert again.json()["command"] == queued["command"]  # the same pending command
    other = await api.call("PATCH", f"/invocations/{elsewhere.id}/retry", status=409)
    assert "cancel command pending" in other.json()["message"]
    shown = (await api.call("GET", f"/invocations/{elsewhere.id}/command", status=200)).json()
    assert shown == queued["command"]
    [pending] = await api.store.pending_commands(0)
    assert (pending.invocation_id, pending.subscription_id) == (elsewhere.id, sub)
    assert await api.store.finish_command(pending, "CANCELLED", 1_700_000_000_000)
    assert not await api.store.finish_command(pending, "CANCELLED", 1_700_000_000_000)
    assert await api.store.pending_commands(0) == []
    done_command = (await api.call("GET", f"/invocations/{elsewhere.id}/command")).json()
    assert (done_command["state"], done_command["outcome"]) == ("done", "CANCELLED")
    # A finished command makes room for the next one.
    await api.call("PATCH", f"/invocations/{elsewhere.id}/retry", status=202)
    # Not in the ledger yet, but running here: cancel reaches it.
    fresh = ids.invocation_id(sub, "orders", 0, 4)
    runner.owned.add(fresh)
    cancelled = (await api.call("PATCH", f"/invocations/{fresh}/cancel", status=200)).json()
    assert cancelled["status"] == "CANCELLED"
    # Purge deletes the row.
    purged = (await api.call("PATCH", f"/invocations/{done.id}/purge", status=200)).json()
    assert purged == {"id": done.id, "action": "purge", "status": None, "command": None}
    await api.call("GET", f"/invocations/{done.id}", status=404)
    # Restate's older DELETE form.
    await api.store.write_entries([done])
    await api.call("DELETE", f"/invocations/{done.id}", params={"mode": "purge"}, status=202)
    await api.call("DELETE", f"/invocations/{done.id}", params={"mode": "explode"}, status=400)


# -- Kafka clusters ---------------------------------------------------------------------------


@pytest.mark.promise("p-api-cluster-create", "p-api-cluster-validated")
async def test_kafka_clusters_static_and_dynamic(api: Api, handler_server: HandlerServer) -> None:
    listed = (await api.call("GET", "/kafka-clusters", status=200)).json()["clusters"]
    local = next(c for c in listed if c["name"] == "local")
    assert local == {
        "name": "local",
        "properties": {
            "sasl.password": "***",
            "group.id": "cluster-group",
            "metadata.broker.list": "PLAINTEXT://127.0.0.1:19092",
        },
        "created_at": "1970-01-01T00:00:00Z",
        "origin": "config",
    }
    body = {
        "name": "dyn",
        "properties": {"bootstrap.servers": "127.0.0.1:19094", "sasl.password": SECRET},
    }
    created = await api.call("POST", "/kafka-clusters", body, 201)
    assert created.headers["location"] == "kafka-clusters/dyn"
    assert created.json()["properties"]["sasl.password"] == "***"
    assert created.json()["origin"] == "api"
    assert created.json()["created_at"].endswith("Z")
    await api.call("POST", "/kafka-clusters", body, 409)
    await api.call("POST", "/kafka-clusters", {**body, "name": "local"}, 409)
    for bad, message in (
        ({"name": "x", "properties": {"client.id": "a"}}, "bootstrap.servers"),
        ({"name": "x", "properties": {"bootstrap.servers": "h:1", "nope": "1"}}, "unknown"),
        ({"name": "-bad", "properties": {"bootstrap.servers": "h:1"}}, "cluster name"),
        ({"name": "x"}, "properties"),
    ):
        response = await api.call("POST", "/kafka-clusters", bad, 400)
        assert message in response.json()["message"], bad

    await register(api, handler_server, GREETER)
    sub = (
        await api.call(
            "POST",
            "/subscriptions",
            {"source": "kafka://dyn/orders", "sink": "service://Greeter/greet"},
            201,
        )
    ).json()
    detail = await api.call(
        "GET", "/kafka-clusters/dyn", params={"include_subscriptions": "true"}, status=200
    )
    assert [s["id"] for s in detail.json()["subscriptions"]] == [sub["id"]]
    plain = (await api.call("GET", "/kafka-clusters/dyn", status=200)).json()
    assert plain["subscriptions"] == []
    await api.call("GET", "/kafka-clusters/nope", status=404)
    await api.call("GET", "/kafka-clusters/-x", status=400)

    update = {"properties": {"bootstrap.servers": "127.0.0.1:19095"}}
    updated = (await api.call("PATCH", "/kafka-clusters/dyn", update, 200)).json()
    assert updated["properties"] == {"bootstrap.servers": "127.0.0.1:19095"}
    bumped = await api.store.get_subscription(sub["id"])
    assert bumped is not None
    assert bumped.revision == sub["revision"] + 1
    await api.call("PATCH", "/kafka-clusters/local", update, 409)
    await api.call("PATCH", "/kafka-clusters/nope", update, 404)
    await api.call("PATCH", "/kafka-clusters/dyn", {"properties": {}}, 400)

    in_use = await api.call("DELETE", "/kafka-clusters/dyn", status=409)
    assert sub["id"] in in_use.json()["message"]
    await api.call("DELETE", "/kafka-clusters/local", status=409)
    await api.call("DELETE", "/kafka-clusters/dyn", params={"force": "true"}, status=202)
    await api.call("DELETE", "/kafka-clusters/dyn", status=404)
    names = [c["name"] for c in (await api.call("GET", "/kafka-clusters")).json()["clusters"]]
    assert names == ["local", "plain"]


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_expose_runner_numbers(api: Api) -> None:
    sub = ids.subscription_id()
    stats = RunnerStats(consumed=12, succeeded=9, failed=1, dead_lettered=2, retries=4)
    api.supervisor.runner_by_sub[sub] = FakeRunner(stats=stats, in_flight=3)
    text = (await api.call("GET", "/metrics", status=200)).text
    assert f'kafka_ingress_records_consumed_total{{subscription="{sub}"}} 12' in text
    assert f'kafka_ingress_invocations_total{{outcome="succeeded",subscription="{sub}"}} 9' in text
    assert f'kafka_ingress_dead_letters_total{{subscription="{sub}"}} 2' in text
    assert f'kafka_ingress_retries_total{{subscription="{sub}"}} 4' in text
    assert f'kafka_ingress_in_flight{{subscription="{sub}"}} 3' in text
    labels = f'partition="0",subscription="{sub}",topic="orders"'
    assert f"kafka_ingress_commit_lag_records{{{labels}}} 5" in text
    assert f"kafka_ingress_oldest_unfinished_age_seconds{{{labels}}} 0" in text
    assert "# TYPE kafka_ingress_records_consumed_total counter" in text


def capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything of ours down to DEBUG, dependencies from INFO (botocore's DEBUG wire dumps
    contain every request body by design)."""
    caplog.set_level(logging.INFO)
    for name in ("adapter", "kafka_ingress", "uvicorn", "aiokafka"):
        caplog.set_level(logging.DEBUG, logger=name)


@pytest.mark.promise("p-api-secrets")
async def test_no_secret_reaches_a_response_or_a_log_line(
    api: Api, handler_server: HandlerServer, caplog: pytest.LogCaptureFixture
) -> None:
    capture_logs(caplog)
    deployment = Deployment(manifest(GREETER))
    url = await handler_server(deployment.app)
    await api.call(
        "POST",
        "/deployments",
        {"uri": url, "additional_headers": {"x-api-key": SECRET}},
        201,
    )
    secret_options = {
        "sasl.password": SECRET,
        "sasl.username": SECRET,
        "sasl.oauthbearer.client.secret": SECRET,
        "ssl.key.password": SECRET,
    }
    body = {
        "source": "kafka://plain/t",
        "sink": "service://Greeter/greet",
        "options": secret_options,
    }
    created = (await api.call("POST", "/subscriptions", body, 201)).json()
    assert {created["options"][k] for k in secret_options} == {"***"}
    await api.call(
        "PATCH", f"/subscriptions/{created['id']}", {"options": {"sasl.password": SECRET + "2"}}
    )
    bad = {**body, "options": {**secret_options, "ssl.key.password": ""}}
    await api.call("POST", "/subscriptions", bad)
    await api.call(
        "POST",
        "/kafka-clusters",
        {"name": "sec", "properties": {"bootstrap.servers": "h:1", "sasl.jaas.config": SECRET}},
        400,
    )
    for path in (
        "/subscriptions",
        "/deployments",
        "/kafka-clusters",
        f"/subscriptions/{created['id']}",
    ):
        await api.call("GET", path, status=200)
    assert SECRET not in caplog.text


async def test_register_a_lambda_function_by_arn(api: Api, handler_server: HandlerServer) -> None:
    local = LocalLambda(load_serverless_functions(), region="us-east-1")
    try:
        endpoint = await handler_server(local.app)
        api.state.discover = Discovery(lambda_endpoint_url=endpoint, lambda_region="us-east-1")
        arn = local.arn("greeter")
        created = await api.call("POST", "/deployments", {"arn": arn}, 201)
        doc = created.json()
        assert doc["services"]
        listed = (await api.call("GET", "/deployments", status=200)).json()["deployments"]
        assert listed[0]["arn"] == f"{arn}:$LATEST"  # Restate shows qualified ARNs only
        assert "uri" not in listed[0]
        detailed = (await api.call("GET", f"/deployments/{doc['id']}", status=200)).json()
        assert detailed["arn"] == f"{arn}:$LATEST"
        assert {s["name"] for s in detailed["services"]} == {s["name"] for s in doc["services"]}
        await api.call("POST", "/deployments", {"arn": arn}, 200)
        missing = await api.call("POST", "/deployments", {"arn": local.arn("nope")}, 400)
        assert "nope" in missing.json()["message"]
    finally:
        local.close()


async def test_credentials_in_a_reference_never_come_back_in_its_400(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sink, password = "service://Greeter/greet", "SRCPASSWORD1"
    for body, message in (
        ({"source": f"kafka://user:{password}@local/t", "sink": sink}, "credentials"),
        ({"source": f"kafka://user:{password}/t", "sink": sink}, "names a cluster"),
        (
            {"source": "kafka://plain/t", "sink": f"service://user:{password}@Greeter/greet"},
            "credentials",
        ),
        (
            {"source": "kafka://plain/t", "sink": f"lambda://user:{password}@arn:aws:lambda"},
            "not a Lambda function ARN",
        ),
    ):
        refused = await api.call("POST", "/subscriptions", body, 400)
        assert message in refused.json()["message"], refused.text
        assert password not in refused.text
    assert await api.store.list_subscriptions() == []


async def test_a_reset_beyond_int64_is_refused_before_kafka_is_asked(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    sub = await subscribe(api)
    path = f"/subscriptions/{sub['id']}/reset"
    for to in (10**30, 2**63, str(10**30)):
        refused = await api.call("POST", path, {"to": to}, 400)
        assert "too large" in refused.json()["message"], refused.text
    assert api.resets == []
