"""``lambda://<function ARN>`` sinks through the admin API: subscribed in one request, no
discovery, shown back as written, cleaned up with the last subscription. DynamoDB is the
session's moto server over HTTP; the admin API runs in-process (see test_api_routes.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from adapter import ids
from adapter.model import Subscription
from adapter.store.function_sinks import (
    function_sink_service,
    is_function_sink_deployment,
    release_function_sink,
)
from tests._http_fixtures import HandlerServer
from tests.integration.test_api_routes import GREETER, Api, api, register

__all__ = ["api"]  # the fixture, shared with test_api_routes

pytestmark = pytest.mark.timeout(90)

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:orders-consumer"
SINK = f"lambda://{FUNCTION}"


def _no_discovery(calls: list[Any]) -> Any:
    async def discover(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise AssertionError("a lambda:// sink must never be discovered")

    return discover


async def _create(api: Api, topic: str, status: int = 201, **options: str) -> dict[str, Any]:
    body: dict[str, Any] = {"source": f"kafka://plain/{topic}", "sink": SINK}
    if options:
        body["options"] = options
    response = await api.call("POST", "/subscriptions", body, status)
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.promise("p-function-sink")
async def test_a_plain_function_is_subscribed_in_one_request_without_discovery(api: Api) -> None:
    discoveries: list[Any] = []
    api.state.discover = _no_discovery(discoveries)
    doc = await _create(api, "orders", **{"batch.size": "10"})
    assert doc["sink"] == SINK
    assert doc["options"] == {"batch.size": "10", "event.format": "msk", "group.id": doc["id"]}
    assert discoveries == []
    # Shown back as written: GET, the listing and its sink filter.
    got = (await api.call("GET", f"/subscriptions/{doc['id']}", status=200)).json()
    assert got["sink"] == SINK
    listed = await api.call("GET", "/subscriptions", params={"sink": SINK})
    assert [s["id"] for s in listed.json()["subscriptions"]] == [doc["id"]]
    # The same request again is the same subscription.
    again = await _create(api, "orders", 200, **{"batch.size": "10"})
    assert again["id"] == doc["id"]
    # Registered implicitly: a Lambda deployment with the ARN, one service named by it.
    (dep,) = (await api.call("GET", "/deployments", status=200)).json()["deployments"]
    assert dep["arn"] == f"{FUNCTION}:$LATEST"  # unqualified: invoked, and shown, as $LATEST
    assert dep["id"] == ids.restate_form(ids.derived_deployment_id(FUNCTION))
    assert [s["name"] for s in dep["services"]] == [FUNCTION]
    service = (await api.call("GET", f"/services/{FUNCTION}", status=200)).json()
    assert [h["name"] for h in service["handlers"]] == ["handler"]
    stored = await api.store.get_subscription(doc["id"])
    assert stored is not None
    assert stored.sink == SINK


async def test_bad_function_sinks_are_400s_naming_the_field(api: Api) -> None:
    for sink, fragment in (
        ("lambda://orders-consumer", "is not a Lambda function ARN"),
        ("lambda://arn:aws:lambda:us-east-1:1234:function:f", "12-digit account"),
        ("lambda://arn:aws:sqs:us-east-1:123456789012:q", "is not a Lambda function ARN"),
        (f"service://{FUNCTION}/handler", f"subscribed as {SINK}"),
    ):
        body = {"source": "kafka://plain/orders", "sink": sink}
        message = (await api.call("POST", "/subscriptions", body, 400)).json()["message"]
        assert "sink" in message, message
        assert fragment in message, message
    body = {"source": "kafka://plain/orders", "sink": SINK, "options": {"event.format": "ingress"}}
    message = (await api.call("POST", "/subscriptions", body, 400)).json()["message"]
    assert "event.format" in message
    assert await api.store.list_deployments() == []
    assert await api.store.list_services() == []


async def test_a_function_sink_keeps_its_event_format(api: Api) -> None:
    doc = await _create(api, "orders")
    path = f"/subscriptions/{doc['id']}"
    patched = await api.call("PATCH", path, {"options": {"event.format": None, "batch.size": 5}})
    assert patched.json()["options"]["event.format"] == "msk"
    assert patched.json()["options"]["batch.size"] == "5"
    refused = await api.call("PATCH", path, {"options": {"event.format": "ingress"}}, 400)
    assert "event.format" in refused.json()["message"]


@pytest.mark.promise("p-function-sink-cleanup")
async def test_the_last_subscriptions_deletion_removes_the_implicit_registration(
    api: Api, handler_server: HandlerServer
) -> None:
    await register(api, handler_server, GREETER)
    first = await _create(api, "orders")
    second = await _create(api, "refunds")
    assert len([d for d in await api.store.list_deployments() if d.get("arn")]) == 1
    await api.call("DELETE", f"/subscriptions/{first['id']}", status=202)
    # Still used by the other subscription: kept.
    assert await api.store.get_service(FUNCTION) is not None
    await api.call("DELETE", f"/subscriptions/{second['id']}", status=202)
    assert await api.store.get_service(FUNCTION) is None
    assert await api.store.get_deployment(ids.derived_deployment_id(FUNCTION)) is None
    # What other deployments registered stays.
    assert [s.name for s in await api.store.list_services()] == ["Greeter"]
    # And subscribing again starts from scratch.
    again = await _create(api, "orders")
    assert again["sink"] == SINK
    assert await api.store.get_service(FUNCTION) is not None


async def test_a_discovered_deployment_cannot_claim_a_function_sinks_service(
    api: Api, handler_server: HandlerServer
) -> None:
    await _create(api, "orders")
    hijack = (FUNCTION, "SERVICE", [("handler", None, "RAW")])
    from tests.integration.test_api_routes import Deployment, manifest

    url = await handler_server(Deployment(manifest(hijack)).app)
    refused = await api.call("POST", "/deployments", {"uri": url, "force": True}, 400)
    assert "lambda:// sink" in refused.json()["message"]
    (service,) = await api.store.list_services()
    assert service.deployment_id == ids.derived_deployment_id(FUNCTION)


async def test_apply_declares_function_sinks_and_leaves_their_registration_alone(
    api: Api,
) -> None:
    document = {
        "subscriptions": [
            {"name": "orders-fn", "source": "kafka://plain/orders", "sink": SINK},
        ]
    }
    first = (await api.call("POST", "/apply", {"document": document}, 200)).json()
    assert [(a["verb"], a["kind"]) for a in first["applied"]] == [("create", "subscription")]
    (sub,) = await api.store.list_subscriptions()
    assert (sub.sink, sub.options["event.format"]) == (SINK, "msk")
    # Applied again, pruning: nothing to do; the implicit deployment is not the document's.
    again = (await api.call("POST", "/apply", {"document": document, "prune": True}, 200)).json()
    assert again["actions"] == []
    assert any(is_function_sink_deployment(d) for d in await api.store.list_deployments())


async def test_a_subscription_created_during_the_cleanup_keeps_its_function_registered(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await _create(api, "orders")
    store = api.store
    delete_service = store.delete_service

    async def racing_delete_service(name: str) -> None:
        # Another admin process subscribes the same function right as this one cleans up.
        await delete_service(name)
        await store.create_subscription(
            Subscription(
                id=ids.subscription_id(),
                cluster="plain",
                topic="refunds",
                service=FUNCTION,
                handler="handler",
                options={"event.format": "msk"},
            )
        )

    monkeypatch.setattr(store, "delete_service", racing_delete_service)
    await api.call("DELETE", f"/subscriptions/{first['id']}", status=202)
    assert await store.get_service(FUNCTION) == function_sink_service(FUNCTION)
    assert await store.get_deployment(ids.derived_deployment_id(FUNCTION)) is not None
    assert not await release_function_sink(store, "Greeter")  # not a function sink: untouched
