"""The declarative plan: desired document vs what exists -> admin API calls, pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.api.plan import ActualCluster, ApiCall, Plan, parse_document, plan, render
from adapter.api.serverless import document_from_serverless
from adapter.errors import ValidationError
from adapter.model import Deployment, Subscription

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ActualCluster("local", {"bootstrap.servers": "127.0.0.1:9092"}, static=True)
HANDLERS = Deployment(id="dp_1", uri="http://handlers:9080")


def sub(
    sub_id: str, group: str, topic: str = "orders", sink: str = "Orders/place", **kw: Any
) -> Subscription:
    service, handler = sink.split("/")
    options = {"group.id": group, **kw.pop("options", {})}
    return Subscription(
        id=sub_id, cluster=kw.pop("cluster", "local"), topic=topic, service=service,
        handler=handler, options=options, **kw,
    )  # fmt: skip


def doc(*subs: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"deployments": [{"uri": "http://handlers:9080/"}], "subscriptions": list(subs), **more}


def spec(name: str, topic: str = "orders", sink: str = "Orders/place", **kw: Any) -> dict[str, Any]:
    return {"name": name, "source": f"kafka://local/{topic}", "sink": f"service://{sink}", **kw}


def planned(
    document: dict[str, Any],
    subs: list[Subscription] | None = None,
    clusters: list[ActualCluster] | None = None,
    deployments: list[Deployment] | None = None,
    **kw: Any,
) -> Plan:
    return plan(
        parse_document(document),
        clusters=[LOCAL] if clusters is None else clusters,
        deployments=[HANDLERS] if deployments is None else deployments,
        subscriptions=subs or [],
        **kw,
    )


def summary(p: Plan) -> list[tuple[str, str, str]]:
    return [(a.verb, a.kind, a.name) for a in p.actions]


def test_an_empty_service_gets_everything_created_in_order() -> None:
    first = spec("orders-place", options={"auto.offset.reset": "earliest"})
    p = planned(doc(first, spec("audit", paused=True)), deployments=[])
    assert summary(p) == [
        ("create", "deployment", "http://handlers:9080"),
        ("create", "subscription", "orders-place"),
        ("create", "subscription", "audit"),
    ]
    create = p.actions[1].calls[0]
    assert create == ApiCall(
        "POST",
        "/subscriptions",
        {
            "source": "kafka://local/orders",
            "sink": "service://Orders/place",
            "options": {"auto.offset.reset": "earliest", "group.id": "orders-place"},
        },
    )
    # Created paused: the second call pauses what the first created.
    assert p.actions[2].calls[1] == ApiCall("PATCH", "/subscriptions/{created}", {"paused": True})
    assert not p.errors
    assert not p.refusals


@pytest.mark.promise("p-apply-idempotent")
def test_what_matches_is_unchanged_and_the_plan_is_empty() -> None:
    have = [sub("su_1", "orders-place", options={"max.in.flight": "5"})]
    p = planned(doc(spec("orders-place", options={"max.in.flight": 5})), have)
    assert p.actions == ()
    assert p.unchanged == ("deployment http://handlers:9080", "subscription orders-place")
    assert render(p.describe())[-1] == "no changes (2 unchanged)"
    assert (
        p.fingerprint
        == planned(doc(spec("orders-place", options={"max.in.flight": 5})), have).fingerprint
    )


def test_changed_options_and_pause_are_one_patch_in_the_same_group() -> None:
    have = [sub("su_1", "orders-place", options={"max.in.flight": "5", "retry.max.attempts": "3"})]
    p = planned(
        doc(spec("orders-place", options={"max.in.flight": "8", "batch.size": 2}, paused=True)),
        have,
    )
    (action,) = p.actions
    assert (action.verb, action.name) == ("update", "orders-place")
    assert action.calls == (
        ApiCall(
            "PATCH",
            "/subscriptions/su_1",
            {
                "options": {"batch.size": "2", "max.in.flight": "8", "retry.max.attempts": None},
                "paused": True,
            },
        ),
    )
    assert action.changes == (
        "options.batch.size: set to '2'",
        "options.max.in.flight: '5' -> '8'",
        "options.retry.max.attempts: removed",
        "paused",
    )


def test_a_new_sink_replaces_the_subscription_in_the_same_group() -> None:
    have = [sub("su_1", "orders-place")]
    p = planned(doc(spec("orders-place", sink="Orders/placeV2")), have)
    (action,) = p.actions
    assert action.verb == "replace"
    assert action.refused is None  # the group keeps its offsets
    assert action.calls[0] == ApiCall("DELETE", "/subscriptions/su_1")
    assert action.calls[1].body is not None
    assert action.calls[1].body["options"]["group.id"] == "orders-place"


@pytest.mark.promise("p-apply-source-refused")
def test_a_new_source_would_lose_the_groups_position_and_is_refused() -> None:
    have = [sub("su_1", "orders-place", topic="orders")]
    p = planned(doc(spec("orders-place", topic="orders-v2")), have)
    (action,) = p.refusals
    assert action.changes == ("source: kafka://local/orders -> kafka://local/orders-v2",)
    assert "holds positions in kafka://local/orders" in (action.refused or "")
    lines = render(p.describe())
    assert "-/+ subscription orders-place" in lines
    assert any(line.startswith("    REFUSED without --force") for line in lines)


@pytest.mark.promise("p-apply-prune")
def test_what_the_document_leaves_out_is_kept_unless_pruned() -> None:
    have = [sub("su_1", "orders-place"), sub("su_2", "legacy", topic="old")]
    extra = Deployment(id="dp_2", arn="arn:aws:lambda:us-east-1:1:function:old")
    dynamic = ActualCluster("old-cluster", {"bootstrap.servers": "h:1"}, static=False)
    kept = planned(doc(spec("orders-place")), have, [LOCAL, dynamic], [HANDLERS, extra])
    assert kept.actions == ()
    assert kept.kept == (
        "cluster old-cluster",
        "deployment arn:aws:lambda:us-east-1:1:function:old",
        "subscription legacy (su_2: kafka://local/old -> service://Orders/place)",
    )
    pruned = planned(
        doc(spec("orders-place")), have, [LOCAL, dynamic], [HANDLERS, extra], prune=True
    )
    # Subscriptions first, then what they used.
    assert [(a.verb, a.kind) for a in pruned.actions] == [
        ("delete", "subscription"), ("delete", "deployment"), ("delete", "cluster"),
    ]  # fmt: skip
    assert pruned.actions[0].calls == (ApiCall("DELETE", "/subscriptions/su_2"),)
    assert pruned.actions[1].calls == (ApiCall("DELETE", "/deployments/dp_2"),)


@pytest.mark.promise("p-apply-brokers-refused")
def test_dynamic_clusters_are_created_updated_and_moving_brokers_is_refused() -> None:
    secret = "s3cr3t-Value-x"
    cluster = {
        "name": "msk",
        "properties": {"bootstrap.servers": "b-1:9098", "sasl.password": secret},
    }
    created = planned({"clusters": [cluster]}, clusters=[LOCAL], deployments=[])
    (action,) = created.actions
    assert action.calls[0].body == {"name": "msk", "properties": cluster["properties"]}
    assert "sasl.password = (secret)" in action.changes
    have = ActualCluster("msk", {"bootstrap.servers": "b-1:9098", "sasl.password": "old"}, False)
    rotated = planned({"clusters": [cluster]}, clusters=[LOCAL, have], deployments=[])
    assert rotated.actions[0].changes == ("sasl.password: changed (secret)",)
    assert secret not in str(rotated.describe())
    assert "'old'" not in str(rotated.describe())
    moved = {**cluster, "properties": {**cluster["properties"], "bootstrap.servers": "b-9:9098"}}
    users = [sub("su_1", "orders-place", cluster="msk")]
    refused = planned({"clusters": [moved]}, users, [LOCAL, have], [])
    assert "its brokers change while subscriptions orders-place use it" in (
        refused.refusals[0].refused or ""
    )


def test_references_and_read_only_clusters_are_errors() -> None:
    p = planned(
        {
            "clusters": [{"name": "local", "properties": {"bootstrap.servers": "x:1"}}],
            "subscriptions": [
                {"name": "g", "source": "kafka://nowhere/t", "sink": "service://S/h"}
            ],
        },
        deployments=[],
    )
    assert "cluster 'local' is defined in the settings file" in p.errors[0]
    assert "subscription 'g': unknown cluster 'nowhere'" in p.errors[1]
    assert render(p.describe())[0].startswith("error: cluster 'local'")


@pytest.mark.promise("p-sec-plan-hides")
def test_deployment_headers_are_compared_and_reregistered_with_force() -> None:
    stored = {"x-team": "team-a-value", "authorization": "Bearer STORED-HANDLER-TOKEN-123"}
    have = Deployment(id="dp_1", uri="http://handlers:9080", additional_headers=stored)
    wanted = {"X-Team": "team-b-value", "X-Api-Key": "NEW-API-KEY-012"}
    p = planned(
        {"deployments": [{"uri": "http://handlers:9080", "headers": wanted}]},
        deployments=[have],
    )
    (action,) = p.actions
    # Any header may carry a credential: which ones change is shown, never their values.
    assert action.changes == (
        "headers.authorization: removed (value not shown)",
        "headers.x-api-key: set (value not shown)",
        "headers.x-team: changed (value not shown)",
    )
    shown = str(p.describe()) + "\n".join(render(p.describe()))
    for value in ("team-a-value", "team-b-value", "STORED-HANDLER-TOKEN-123", "NEW-API-KEY-012"):
        assert value not in shown
    assert action.calls[0].body == {
        "uri": "http://handlers:9080",
        "additional_headers": wanted,
        "force": True,
    }


@pytest.mark.promise("p-sec-plan-hides")
def test_a_plan_shows_no_credentials_in_urls() -> None:
    def oidc(password: str) -> dict[str, str]:
        url = f"https://svc:{password}@idp.example/token"
        return {"bootstrap.servers": "b-1:9098", "sasl.oauthbearer.token.endpoint.url": url}

    have = ActualCluster("msk", oidc("URLPASSWORD-000"), static=False)
    document = {
        "clusters": [
            {"name": "msk", "properties": {**oidc("URLPASSWORD-111"), "client.id": "new-id"}},
            {"name": "idp", "properties": oidc("URLPASSWORD-222")},
        ],
        "deployments": [{"uri": "http://user:URIPASSWORD-333@handlers:9080"}],
        "subscriptions": [
            spec(
                "orders",
                options={"sasl.oauthbearer.token.endpoint.url": "https://o:URLPASSWORD-444@idp/t"},
            )
        ],
    }
    p = planned(document, clusters=[LOCAL, have], deployments=[])
    shown = str(p.describe()) + "\n".join(render(p.describe()))
    for n in ("000", "111", "222", "444"):
        assert f"URLPASSWORD-{n}" not in shown
    assert "URIPASSWORD-333" not in shown
    changes = {a.describe()["name"]: a.describe()["changes"] for a in p.actions}
    assert changes["msk"] == [
        "client.id: set to 'new-id'",
        "sasl.oauthbearer.token.endpoint.url: changed (secret)",
    ]
    assert (
        "sasl.oauthbearer.token.endpoint.url = 'https://***@idp.example/token'" in (changes["idp"])
    )
    assert (
        "options.sasl.oauthbearer.token.endpoint.url: set to 'https://***@idp/t'"
        in (changes["orders"])
    )
    assert "http://***@handlers:9080" in changes


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"subscription": []}, "subscription: unknown field"),
        ({"subscriptions": [{"name": "a b", "source": "kafka://c/t", "sink": "service://S/h"}]},
         "subscriptions.0.name: String should match pattern"),
        ({"subscriptions": [spec("g", options={"group.id": "other"})]},
         "subscriptions.0: the name is the consumer group"),
        ({"subscriptions": [{"name": "g", "source": "http://c/t", "sink": "service://S/h"}]},
         "the only supported source is kafka://"),
        ({"deployments": [{"uri": "http://a", "arn": "arn:x"}]},
         "deployments.0: give exactly one of uri and arn"),
        ({"subscriptions": [spec("g"), spec("g")]}, "subscription name 'g' appears twice"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)  # fmt: skip
@pytest.mark.promise("p-apply-field-named")
def test_bad_documents_name_the_field(document: Any, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_document(document, source="subs.yaml")
    assert str(caught.value).startswith("subs.yaml: ")
    assert fragment in str(caught.value)


def test_the_projects_serverless_yml_declares_a_subscription_per_event() -> None:
    parsed = yaml.safe_load((ROOT / "serverless.yml").read_text())
    document = document_from_serverless(
        parsed, stage="prod", region="eu-west-1", account_id="123456789012"
    )
    parse_document(document)
    arns = [d["arn"] for d in document["deployments"]]
    assert arns == [
        f"arn:aws:lambda:eu-west-1:123456789012:function:kafka-ingress-prod-{f}"
        for f in ("greeter", "account", "signup", "audit")
    ]
    subs = {s["name"]: s for s in document["subscriptions"]}
    account = subs["kafka-ingress-prod-account-payments"]
    assert account["source"] == "kafka://local/payments"
    assert account["sink"] == "service://Account/apply"
    assert account["options"] == {
        "event.format": "msk",
        "batch.size": 10,
        "auto.offset.reset": "earliest",
        "dead.letter.topic": "payments.dead-letters",
    }
    assert set(subs) == {
        "kafka-ingress-prod-greeter-members.joined",
        "kafka-ingress-prod-account-payments",
        "kafka-ingress-prod-signup-signups",
        "kafka-ingress-prod-audit-payments",
    }
    # Every event names a function that serverless.yml deploys.
    assert {a.rsplit("-", 1)[1] for a in arns} <= set(parsed["functions"])


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"functions": {"nope": [{"topic": "t", "handler": "S/h"}]}}, "no such function"),
        ({"functions": {"account": [{"topic": "t", "handler": "S/h"}]}}, "no cluster"),
        ({"cluster": "c", "functions": {"account": [{"topic": "t", "handler": "S"}]}},
         "functions.account.0.handler"),
        ({"cluster": "c", "functions": {"account": [
            {"topic": "t", "handler": "S/h", "startingPosition": "AT_TIMESTAMP"}]}},
         "startingPosition"),
        ({"cluster": "c", "functions": {"account": [{"topic": "t", "handler": "S/h", "batch": 1}]}},
         "unknown field"),
    ],
)  # fmt: skip
def test_bad_serverless_sections_name_the_field(section: dict[str, Any], fragment: str) -> None:
    parsed = {"service": "svc", "functions": {"account": {"handler": "h.handler"}}}
    parsed["custom"] = {"kafkaIngress": section}
    with pytest.raises(ValidationError, match=r"serverless\.yml: ") as caught:
        document_from_serverless(parsed, stage="dev", region="us-east-1", account_id="1")
    assert fragment in str(caught.value)
