"""The example handlers (handlers/), called through the SDK as the ingress would call them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from adapter.sdk import Endpoint
from handlers import accounts, audit, greeter, signup
from handlers.app import app, endpoint, reset_state


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    reset_state()
    yield
    reset_state()


def _pay(pid: str, cents: int, direction: str = "credit", currency: str = "EUR") -> bytes:
    return json.dumps(
        {"payment_id": pid, "amount_cents": cents, "direction": direction, "currency": currency}
    ).encode()


async def test_greeter_greets_in_the_members_language_once_per_invocation() -> None:
    headers = {"kafka.topic": "members.joined", "kafka.partition": "0", "kafka.offset": "3"}
    response = await endpoint.invoke(
        "Greeter", "greet", b'{"name": "Ada", "locale": "fr"}', headers=headers
    )
    assert response.status == 200
    assert json.loads(response.body) == {"greeting": "Bonjour, Ada!"}
    # The same invocation again (a redelivery) does not send a second greeting.
    await endpoint.invoke("Greeter", "greet", b'{"name": "Ada", "locale": "fr"}', headers=headers)
    assert greeter.sent.items() == {
        "inv_test": {"to": "Ada", "text": "Bonjour, Ada!", "topic": "members.joined"}
    }
    assert (await endpoint.invoke("Greeter", "greet", b'{"name": ""}')).status == 400
    assert (
        await endpoint.invoke("Greeter", "greet", b'{"name": "x", "locale": "xx"}')
    ).status == 400


async def test_account_applies_payments_in_order_and_idempotently() -> None:
    async def apply(body: bytes, key: str = "acct-1") -> tuple[int, dict[str, object]]:
        response = await endpoint.invoke("Account", "apply", body, key=key)
        return response.status, json.loads(response.body or b"{}")

    assert await apply(_pay("p1", 1000)) == (200, {"account": "acct-1", "balance_cents": 1000})
    assert (await apply(_pay("p2", 250, "debit")))[1]["balance_cents"] == 750
    status, body = await apply(_pay("p2", 250, "debit"))
    assert (status, body["duplicate"], body["balance_cents"]) == (200, True, 750)

    status, body = await apply(_pay("p3", 10_000, "debit"))
    assert status == 409  # overdraft: terminal, dead-lettered
    assert "overdraw" in str(body["message"])
    status, body = await apply(_pay("p4", 5, currency="USD"))
    assert status == 422  # wrong currency: terminal
    assert "kept in EUR" in str(body["message"])
    assert (await apply(b'{"payment_id": "p5", "amount_cents": -1, "direction": "credit"}'))[
        0
    ] == 400

    accounts.frozen.put("acct-1", True)
    frozen = await endpoint.invoke("Account", "apply", _pay("p6", 1), key="acct-1")
    assert frozen.status == 503  # retried later, after the review
    assert frozen.headers["retry-after"] == "1"
    accounts.frozen.clear()

    balance = await endpoint.invoke("Account", "balance", key="acct-1")
    assert json.loads(balance.body) == {"account": "acct-1", "balance_cents": 750, "payments": 2}
    other = await endpoint.invoke("Account", "balance", key="acct-2")
    assert json.loads(other.body)["balance_cents"] == 0


async def test_signup_workflow_creates_the_user_and_one_welcome_mail() -> None:
    body = b'{"email": "ada@example.com", "name": "Ada"}'
    response = await endpoint.invoke("Signup", "run", body, key="user-1")
    assert json.loads(response.body) == {"user": "user-1", "status": "active"}
    await endpoint.invoke("Signup", "run", body, key="user-1")  # an at-least-once retry
    assert signup.welcome_mails.items() == {"user-1": "Welcome, Ada! (ada@example.com)"}
    status = await endpoint.invoke("Signup", "status", key="user-1")
    assert json.loads(status.body)["status"] == "active"
    unknown = await endpoint.invoke("Signup", "status", key="user-2")
    assert json.loads(unknown.body)["status"] == "unknown"
    bad = await endpoint.invoke("Signup", "run", b'{"email": "nope", "name": "X"}', key="u")
    assert bad.status == 422


async def test_audit_log_takes_any_bytes_with_the_record_headers() -> None:
    data = bytes(range(256))
    headers = {
        "kafka.topic": "payments",
        "kafka.partition": "2",
        "kafka.offset": "9",
        "kafka.key": "acct%201",
        "x-kafka-headers": '[["source","ZGV2"],["bin","AP8="]]',
    }
    response = await endpoint.invoke("AuditLog", "append", data, headers=headers)
    assert json.loads(response.body) == {"sha256": hashlib.sha256(data).hexdigest(), "size": 256}
    entry = audit.entries.get("inv_test")
    assert entry is not None
    assert (entry["topic"], entry["partition"], entry["offset"], entry["key"]) == (
        "payments",
        2,
        9,
        "acct 1",
    )
    assert entry["headers"] == [["source", b"dev".hex()], ["bin", "00ff"]]


def test_every_module_has_a_lambda_entry_point_and_one_service() -> None:
    for module, name in [
        (greeter, "Greeter"),
        (accounts, "Account"),
        (signup, "Signup"),
        (audit, "AuditLog"),
    ]:
        assert isinstance(module.endpoint, Endpoint)
        assert [s["name"] for s in module.endpoint.manifest()["services"]] == [name]
        manifest = module.handler({"protocol": "kafka-ingress/v1", "type": "discover"}, None)
        assert manifest == module.endpoint.manifest()
    kinds = {s["name"]: s["ty"] for s in endpoint.manifest()["services"]}
    assert kinds == {
        "Greeter": "SERVICE",
        "Account": "VIRTUAL_OBJECT",
        "Signup": "WORKFLOW",
        "AuditLog": "SERVICE",
    }


async def test_the_http_app_serves_every_example() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://handlers") as client:
        manifest = (await client.get("/discover")).json()
        assert len(manifest["services"]) == 4
        greet = await client.post("/invoke/Greeter/greet", content=b'{"name": "Grace"}')
        assert greet.json() == {"greeting": "Hello, Grace!"}
        paid = await client.post("/invoke/Account/acct%2F7/apply", content=_pay("p1", 5))
        assert paid.json()["account"] == "acct/7"
