"""The admin API's pure parts: references, manifests, registration plans, headers, wire
shapes, metrics exposition, the version/auth middleware and the start-up warning."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from adapter import ids
from adapter.api.headers import mask_headers, restore_masked_headers, validate_headers
from adapter.api.invocations import (
    decode_listing_token,
    decode_page_token,
    encode_listing_token,
    encode_page_token,
)
from adapter.api.ledger_listing import ListingCursor, merge_listing
from adapter.api.manifest import Manifest, parse_manifest, plan_registration
from adapter.api.metrics import OldestAge, Snapshot, metrics_registry
from adapter.api.middleware import AdminMiddleware
from adapter.api.refs import (
    check_cluster_name,
    check_invocation_id,
    parse_sink,
    parse_source,
    sink_options,
)
from adapter.api.server import open_admin_warning
from adapter.api.wire import humantime, parse_timestamp, rfc3339
from adapter.engine.settings import RunnerStats
from adapter.engine.timings import AGE_BUCKETS, DURATION_BUCKETS, AttemptTimings, Timings
from adapter.errors import ConflictError, ValidationError
from adapter.invokers.base import OutcomeKind
from adapter.model import (
    HandlerType,
    InputKind,
    LedgerEntry,
    ServiceInfo,
    ServiceType,
    Subscription,
    sink_uri,
    topic_key,
)

# -- references -------------------------------------------------------------------------------


def test_sources_and_sinks_parse_or_say_what_is_wrong() -> None:
    source = parse_source("kafka://my-cluster/orders.v1")
    assert (source.cluster, source.topic) == ("my-cluster", "orders.v1")
    sink = parse_sink("service://Counter/count")
    assert (sink.service, sink.handler) == ("Counter", "count")
    for bad, message in (
        ("orders", "no scheme"),
        ("http://c/t", "scheme 'http'"),
        ("kafka:///t", "no cluster"),
        ("kafka://c", "no topic"),
        ("kafka://c/a/b", "not a Kafka topic name"),
        ("kafka://c/..", "not a Kafka topic name"),
        ("kafka://c/t?x=1", "query"),
        ("kafka://[/t", "Invalid IPv6 URL"),
    ):
        with pytest.raises(ValidationError, match=message):
            parse_source(bad)
    for bad, message in (
        ("Counter/count", "no scheme"),
        ("lambda://C/c", "'C/c' is not a Lambda function ARN"),
        ("lambda://arn:aws:lambda:us-east-1:12345:function:f", "not a Lambda function ARN"),
        ("lambda://arn:aws:s3:::bucket", "not a Lambda function ARN"),
        ("sqs://q", "scheme 'sqs'"),
        (f"service://{FUNCTION}/handler", f"subscribed as lambda://{FUNCTION}"),
        ("service://Counter", "both names"),
        ("service://Counter/a/b", "both names"),
        ("service://[/h", "Invalid IPv6 URL"),
    ):
        with pytest.raises(ValidationError, match=message):
            parse_sink(bad)


FUNCTION = "arn:aws:lambda:eu-west-1:123456789012:function:orders-consumer"


@pytest.mark.promise("p-function-sink")
def test_a_lambda_sink_names_a_function_and_implies_the_aws_event() -> None:
    for arn in (FUNCTION, f"{FUNCTION}:live", f"{FUNCTION}:7", f"{FUNCTION}:$LATEST"):
        sink = parse_sink(f"lambda://{arn}")
        assert (sink.service, sink.handler, sink.function_arn) == (arn, "handler", arn)
        assert sink_uri(sink.service, sink.handler) == f"lambda://{arn}"
    assert parse_sink("service://Counter/count").function_arn is None
    sink = parse_sink(f"lambda://{FUNCTION}")
    assert sink_options(sink, {}) == {"event.format": "msk"}
    assert sink_options(sink, {"event.format": "MSK", "batch.size": "10"}) == {
        "event.format": "msk",
        "batch.size": "10",
    }
    with pytest.raises(ValidationError, match=r"event\.format=.ingress. does not apply"):
        sink_options(sink, {"event.format": "ingress"})
    plain = parse_sink("service://Counter/count")
    assert sink_options(plain, {"event.format": "ingress"}) == {"event.format": "ingress"}


def test_a_discovered_service_cannot_take_a_function_sink_name() -> None:
    manifest = {
        "protocol_version": 1,
        "services": [{"name": FUNCTION, "ty": "SERVICE", "handlers": [{"name": "handler"}]}],
    }
    with pytest.raises(ValidationError, match="names a lambda:// sink"):
        parse_manifest(manifest, "http://h")


def test_ids_and_names_are_checked_before_any_lookup() -> None:
    assert check_invocation_id(ids.invocation_id("s", "t", 0, 1)).startswith("inv_")
    for check, bad in (
        (check_invocation_id, "inv_"),
        (check_cluster_name, "-x"),
        (check_cluster_name, "a" * 256),
        (check_cluster_name, ""),
    ):
        with pytest.raises(ValidationError):
            check(bad)


# -- manifests and registration plans ---------------------------------------------------------


def _doc(*services: dict[str, Any]) -> dict[str, Any]:
    return {"protocol_version": 1, "services": list(services)}


def test_manifest_types_defaults_and_input_kinds() -> None:
    manifest = parse_manifest(
        _doc(
            {"name": "S", "ty": "SERVICE", "handlers": [{"name": "a", "ty": None}]},
            {
                "name": "O",
                "ty": "VIRTUAL_OBJECT",
                "handlers": [
                    {"name": "x"},
                    {"name": "y", "ty": "SHARED", "input": "RAW"},
                    {"name": "z", "input": {"contentType": "application/octet-stream"}},
                ],
            },
            {"name": "W", "ty": "WORKFLOW", "handlers": [{"name": "run", "ty": "WORKFLOW"}]},
        ),
        "http://h",
    )
    by_name = {s.name: s for s in manifest.services}
    assert by_name["S"].handlers[0].handler_type is HandlerType.SERVICE
    o = by_name["O"]
    assert [(h.name, h.handler_type, h.input_kind) for h in o.handlers] == [
        ("x", HandlerType.EXCLUSIVE, InputKind.JSON),
        ("y", HandlerType.SHARED, InputKind.RAW),
        ("z", HandlerType.EXCLUSIVE, InputKind.RAW),
    ]
    assert by_name["W"].service_type is ServiceType.WORKFLOW
    camel = parse_manifest({"services": [], "minProtocolVersion": 1, "maxProtocolVersion": 3}, "u")
    assert (camel.min_protocol_version, camel.max_protocol_version) == (1, 3)


@pytest.mark.parametrize(
    ("doc", "place"),
    [
        ([], "(document)"),
        ({"services": {}}, "services"),
        (_doc({"ty": "SERVICE", "handlers": []}), "services[0].name"),
        (_doc({"name": "a/b", "ty": "SERVICE", "handlers": []}), "services[0].name"),
        (_doc({"name": "A", "ty": "ACTOR", "handlers": []}), "services[0].ty"),
        (_doc({"name": "A", "ty": "SERVICE"}), "services[0].handlers"),
        (_doc({"name": "A", "ty": "SERVICE", "handlers": [{"name": "h", "ty": "SHARED"}]}), "ty"),
        (
            _doc({"name": "A", "ty": "WORKFLOW", "handlers": [{"name": "h", "ty": "EXCLUSIVE"}]}),
            "ty",
        ),
        (
            _doc({"name": "A", "ty": "SERVICE", "handlers": [{"name": "h", "input": "XML"}]}),
            "input",
        ),
        (_doc({"name": "A", "ty": "SERVICE", "handlers": [{"name": "h"}, {"name": "h"}]}), "twice"),
        (
            _doc(
                {"name": "A", "ty": "SERVICE", "handlers": []},
                {"name": "A", "ty": "SERVICE", "handlers": []},
            ),
            "twice",
        ),
    ],
)
def test_bad_manifests_name_the_place(doc: Any, place: str) -> None:
    with pytest.raises(ValidationError, match="discovery manifest of http://h") as info:
        parse_manifest(doc, "http://h")
    assert place in str(info.value)


def _svc(name: str, ty: ServiceType, *handlers: str, dep: str = "", rev: int = 1) -> ServiceInfo:
    kind = HandlerType.SERVICE if ty is ServiceType.SERVICE else HandlerType.EXCLUSIVE
    from adapter.model import HandlerInfo

    return ServiceInfo(name, ty, dep, tuple(HandlerInfo(h, kind) for h in handlers), rev)


def _sub(service: str, handler: str) -> Subscription:
    return Subscription(ids.subscription_id(), "c", "t", service, handler)


def test_registration_plan_follows_restates_rules() -> None:
    manifest = Manifest((_svc("S", ServiceType.SERVICE, "a", "b"),))
    created = plan_registration(
        new_id="dp_new",
        existing=None,
        existing_digest_matches=False,
        manifest=manifest,
        registry={},
        subscriptions=[],
        overwrite=False,
        allow_breaking=False,
    )
    assert created.outcome == "created"
    assert [(s.deployment_id, s.revision) for s in created.services] == [("dp_new", 1)]

    stored = {"S": _svc("S", ServiceType.SERVICE, "a", "b", dep="dp_old", rev=3)}
    unchanged = plan_registration(
        new_id="dp_x",
        existing={"id": "dp_old"},
        existing_digest_matches=True,
        manifest=manifest,
        registry=stored,
        subscriptions=[],
        overwrite=False,
        allow_breaking=False,
    )
    assert unchanged.outcome == "unchanged"
    assert unchanged.deployment_id == "dp_old"
    with pytest.raises(ConflictError, match="force"):
        plan_registration(
            new_id="dp_x",
            existing={"id": "dp_old"},
            existing_digest_matches=False,
            manifest=manifest,
            registry=stored,
            subscriptions=[],
            overwrite=False,
            allow_breaking=False,
        )
    smaller = Manifest((_svc("S", ServiceType.SERVICE, "a"),))
    stored["T"] = _svc("T", ServiceType.SERVICE, "t", dep="dp_old")
    with pytest.raises(ConflictError, match="lose handler"):
        plan_registration(
            new_id="dp_new",
            existing=None,
            existing_digest_matches=False,
            manifest=smaller,
            registry=stored,
            subscriptions=[_sub("S", "b")],
            overwrite=False,
            allow_breaking=False,
        )
    overwritten = plan_registration(
        new_id="dp_x",
        existing={"id": "dp_old"},
        existing_digest_matches=False,
        manifest=smaller,
        registry=stored,
        subscriptions=[_sub("S", "b")],
        overwrite=True,
        allow_breaking=True,
    )
    assert overwritten.outcome == "overwritten"
    assert overwritten.services[0].revision == 4
    assert overwritten.remove_services == ("T",)
    retyped = Manifest((_svc("S", ServiceType.VIRTUAL_OBJECT, "a", "b"),))
    with pytest.raises(ConflictError, match="type"):
        plan_registration(
            new_id="dp_new",
            existing=None,
            existing_digest_matches=False,
            manifest=retyped,
            registry=stored,
            subscriptions=[],
            overwrite=False,
            allow_breaking=False,
        )


def test_manifest_digest_sees_what_registration_stores() -> None:
    one = Manifest((_svc("S", ServiceType.SERVICE, "a", "b"),))
    reordered = Manifest((_svc("S", ServiceType.SERVICE, "b", "a"),))
    assert one.digest({}, {}) == reordered.digest({}, {})
    assert one.digest({"a": "1"}, {}) != one.digest({"a": "2"}, {})
    assert one.digest({}, {"use_http_11": True}) != one.digest({}, {"use_http_11": False})
    assert one.digest({}, {}) != Manifest((_svc("S", ServiceType.SERVICE, "a"),)).digest({}, {})


# -- headers ----------------------------------------------------------------------------------


def test_additional_headers_are_validated_and_credentials_masked() -> None:
    assert validate_headers({"X-Env": "prod", "Authorization": "Bearer x"}) == {
        "X-Env": "prod",
        "Authorization": "Bearer x",
    }
    for bad in (
        {"X-A": "a\r\nX-B: b"},
        {"X-A": "a\nb"},
        {"X-A": "\x00"},
        {"X-A": "é"},
        {"bad name": "x"},
        {"": "x"},
        {"X-A": "1", "x-a": "2"},
        {"Host": "evil.example"},
        {"content-length": "0"},
        {"Transfer-Encoding": "chunked"},
    ):
        with pytest.raises(ValidationError, match="additional_headers"):
            validate_headers(bad)
    masked = mask_headers(
        {
            "Authorization": "a",
            "X-Api-Key": "b",
            "X-Shared-Pw": "c",
            "X-Env": "e",
            "Content-Type": "application/json",
            "traceparent": "00-1-2-01",
        }
    )
    # Only headers on the harmless list show their values.
    assert masked == {
        "Authorization": "***",
        "X-Api-Key": "***",
        "X-Shared-Pw": "***",
        "X-Env": "***",
        "Content-Type": "application/json",
        "traceparent": "00-1-2-01",
    }


def test_masked_headers_written_back_keep_the_stored_values() -> None:
    stored = {"X-Shared-Pw": "hunter2-pw", "Accept": "application/json"}
    shown = mask_headers(stored)
    assert restore_masked_headers(shown, stored) == stored
    # Names are case-insensitive; a new value replaces the stored one.
    assert restore_masked_headers({"x-shared-pw": "***"}, stored) == {"x-shared-pw": "hunter2-pw"}
    assert restore_masked_headers({"X-Shared-Pw": "new"}, stored) == {"X-Shared-Pw": "new"}
    with pytest.raises(ValidationError, match=r"'X-Other'.*no stored value"):
        restore_masked_headers({"X-Other": "***"}, stored)


def test_a_header_value_never_appears_in_the_error() -> None:
    with pytest.raises(ValidationError) as info:
        validate_headers({"Authorization": "Bearer top-secret\r\n"})
    assert "top-secret" not in str(info.value)


# -- wire shapes ------------------------------------------------------------------------------


def test_timestamps_and_durations() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert rfc3339(None) is None
    assert parse_timestamp("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert parse_timestamp("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    assert parse_timestamp(5) == 5
    assert parse_timestamp("17") == 17
    for bad in ("soon", "2023-11-14T22:13:20", -1, "1960-01-01T00:00:00Z"):
        with pytest.raises(ValidationError):
            parse_timestamp(bad)
    assert humantime(7 * 86400) == "7days"
    assert humantime(3600 * 5) == "5h"
    assert humantime(90) == "90s"
    assert humantime(120) == "2m"


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
@example(1_065_899_603)  # float seconds rounded this one down by a millisecond
def test_rfc3339_round_trips(ms: int) -> None:
    assert parse_timestamp(rfc3339(ms) or "") == ms


# -- page tokens ------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_tokens_of_the_longest_topic_names_round_trip() -> None:
    """Kafka topic names go up to 249 characters; the ledger keys them with their topic ID."""
    topic = topic_key("t" * 249, "A" * 22)
    key = {
        "id": {"S": "inv_x"},
        "subscription_id": {"S": "sub_a"},
        "position": {"S": f"{topic}|000001|00000000000000000007"},
    }
    assert decode_page_token(encode_page_token(key, "sub_a"), "sub_a") == key
    page = (f"{topic}|000001|00000000000000000007|00000000000000000009", 8)
    cursor = ListingCursor(key, False, page, False)
    assert decode_listing_token(encode_listing_token(cursor, "sub_a"), "sub_a") == cursor


def test_page_tokens_round_trip_and_reject_tampering() -> None:
    key = {
        "id": {"S": "inv_x"},
        "subscription_id": {"S": "sub_a"},
        "position": {"S": "t|000001|00000000000000000007"},
    }
    token = encode_page_token(key, "sub_a")
    assert decode_page_token(token, "sub_a") == key
    assert decode_page_token(encode_page_token({"id": {"S": "inv_x"}}, None), None)
    with pytest.raises(ValidationError, match="another subscription"):
        decode_page_token(token, None)
    # Keys DynamoDB would refuse (a 503) are refused here, as a 400.
    wrong = [
        {"id": {"N": "1"}},
        {"id": {"S": ""}},
        {"id": {"S": "inv_x"}, "position": key["position"]},
        {**key, "subscription_id": {"S": "sub_b"}},
        {**key, "position": {"S": ""}},
    ]
    tokens = [encode_page_token(k, "sub_a") for k in wrong]
    deep = _b64(b'{"k":' + b"[" * 5000 + b"]" * 5000 + b',"s":"sub_a"}')
    for bad in ("", "!!", "eyJrIjoxfQ", deep, *tokens):
        with pytest.raises(ValidationError, match="page_token"):
            decode_page_token(bad, "sub_a")


def test_listing_tokens_round_trip_and_reject_what_dynamodb_would_refuse() -> None:
    page = "t|000001|00000000000000000009|00000000000000000002"
    cursor = ListingCursor(None, True, (page, 7), False)
    assert decode_listing_token(encode_listing_token(cursor, "sub_a"), "sub_a") == cursor
    with pytest.raises(ValidationError, match="another subscription"):
        decode_listing_token(encode_listing_token(cursor, "sub_a"), "sub_b")
    bad_cursors = [
        ListingCursor(None, True, ("", 0), False),
        ListingCursor(None, True, ("x" * 2000, 0), False),
        ListingCursor(None, True, (page, -1), False),
        ListingCursor({"id": {"S": "x"}}, False, None, False),
    ]
    deep = _b64(b'{"s":"sub_a","k":' + b"[" * 5000 + b"]" * 5000 + b"}")
    for bad in [encode_listing_token(c, "sub_a") for c in bad_cursors] + [deep, "!!"]:
        with pytest.raises(ValidationError, match="page_token"):
            decode_listing_token(bad, "sub_a")


# -- metrics ----------------------------------------------------------------------------------


def test_oldest_unfinished_age_grows_until_the_offset_moves() -> None:
    now = [100.0]
    ages = OldestAge(clock=lambda: now[0])
    assert ages.age("s", "t", 0, 7) == 0
    now[0] = 112.5
    assert ages.age("s", "t", 0, 7) == 12.5
    assert ages.age("s", "t", 0, 8) == 0
    now[0] = 120
    assert ages.age("s", "t", 0, 8) == 7.5
    assert ages.age("s", "t", 0, None) == 0
    assert ages.age("s", "t", 0, 8) == 0


def test_oldest_unfinished_ages_of_partitions_gone_from_the_status_are_dropped() -> None:
    """A partition (or a whole subscription) missing from a scrape's status is forgotten: it
    holds no memory, and if it comes back its age is measured afresh."""
    now = [100.0]
    ages = OldestAge(clock=lambda: now[0])

    def scrape(partitions: dict[str, dict[tuple[str, int], dict[str, int | None]]]) -> str:
        status = {sub: {"state": "running"} for sub in partitions}
        snapshot = Snapshot(status=status, partitions=partitions)
        return generate_latest(metrics_registry(lambda: snapshot, ages)).decode()

    both = {"oldest_unfinished": 5, "pending": 1}
    scrape({"sub_a": {("t", 0): both, ("t", 1): both}, "sub_b": {("t", 0): both}})
    now[0] = 110.0
    scrape({"sub_a": {("t", 0): both}})
    now[0] = 120.0
    text = scrape({"sub_a": {("t", 0): both, ("t", 1): both}, "sub_b": {("t", 0): both}})
    age = "kafka_ingress_oldest_unfinished_age_seconds"
    assert f'{age}{{partition="0",subscription="sub_a",topic="t"}} 20.0' in text
    assert f'{age}{{partition="1",subscription="sub_a",topic="t"}} 0.0' in text
    assert f'{age}{{partition="0",subscription="sub_b",topic="t"}} 0.0' in text


def test_collect_reports_lag_per_partition() -> None:
    stats = RunnerStats(consumed=4, succeeded=3, duplicates=1, commits=2, rebalances=1)
    status = {"sub_a": {"state": "running", "in_flight": 1, "stats": stats}}
    partitions = {
        "sub_a": {
            ("t", 0): {"pending": 2, "committed": 3, "last_tracked": 6, "oldest_unfinished": 4},
            ("t", 1): {"pending": 1, "committed": None, "last_tracked": 0, "oldest_unfinished": 0},
            ("t", 2): {"pending": 0, "committed": None, "last_tracked": None},
        }
    }
    snapshot = Snapshot(status=status, partitions=partitions, store_requests=9)
    registry = metrics_registry(lambda: snapshot, OldestAge())
    text = generate_latest(registry).decode()
    assert (
        'kafka_ingress_commit_lag_records{partition="0",subscription="sub_a",topic="t"} 4' in text
    )
    assert (
        'kafka_ingress_commit_lag_records{partition="1",subscription="sub_a",topic="t"} 1' in text
    )
    assert (
        'kafka_ingress_commit_lag_records{partition="2",subscription="sub_a",topic="t"} 0' in text
    )
    assert 'kafka_ingress_invocations_total{outcome="duplicate",subscription="sub_a"} 1' in text
    assert 'kafka_ingress_subscription_up{state="running",subscription="sub_a"} 1' in text
    assert "kafka_ingress_dynamodb_requests_total 9.0" in text
    # The standard collectors ride along on the private registry.
    assert registry.get_sample_value("process_resident_memory_bytes", {}) > 0
    assert registry.get_sample_value("process_open_fds", {}) > 0
    assert "python_info{" in text
    assert "python_gc_objects_collected_total{" in text
    # Bounded labels: only these names ever label a kafka_ingress_* sample.
    allowed = {"subscription", "topic", "partition", "state", "outcome", "le"}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.startswith("kafka_ingress_"):
                assert set(sample.labels) <= allowed, sample


def test_attempt_timings_count_each_attempt_and_the_age_at_ack() -> None:
    registry = metrics_registry(Snapshot, OldestAge())
    sub = "sub_timings_unit"
    timings = AttemptTimings(sub, wall_clock=lambda: 1000.0)
    timings.attempt(OutcomeKind.RETRY, 0.2)
    timings.attempt(OutcomeKind.ACK, 0.03)
    timings.acked(997_500)  # 2.5 s old
    timings.acked(1_001_000)  # producer clock ahead: counted as 0
    timings.acked(-1)  # no timestamp: not counted

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"subscription": sub, **labels})

    duration = "kafka_ingress_invocation_duration_seconds"
    assert value(f"{duration}_count", outcome="retry") == 1
    assert value(f"{duration}_count", outcome="ack") == 1
    assert value(f"{duration}_sum", outcome="ack") == pytest.approx(0.03)
    assert value(f"{duration}_count", outcome="terminal") == 0
    age = "kafka_ingress_record_age_at_ack_seconds"
    assert value(f"{age}_count") == 2
    assert value(f"{age}_sum") == pytest.approx(2.5)
    assert value(f"{age}_bucket", le="0.01") == 1


def test_forgotten_subscription_timings_leave_the_exposition_for_good() -> None:
    timings = Timings()
    registry = CollectorRegistry()
    registry.register(timings)
    gone = AttemptTimings("sub_gone", wall_clock=lambda: 1000.0, timings=timings)
    kept = AttemptTimings("sub_kept", wall_clock=lambda: 1000.0, timings=timings)
    for series in (gone, kept):
        series.attempt(OutcomeKind.ACK, 0.1)
        series.acked(999_000)
    timings.forget("sub_gone")
    # A stopped runner's late observations land in series no longer collected.
    gone.attempt(OutcomeKind.ACK, 0.1)
    gone.acked(999_000)
    text = generate_latest(registry).decode()
    assert 'subscription="sub_gone"' not in text
    duration = "kafka_ingress_invocation_duration_seconds_count"
    assert f'{duration}{{outcome="ack",subscription="sub_kept"}} 1.0' in text
    assert 'kafka_ingress_record_age_at_ack_seconds_count{subscription="sub_kept"} 1.0' in text
    # A subscription that starts again here starts from zero.
    AttemptTimings("sub_gone", timings=timings)
    text = generate_latest(registry).decode()
    assert f'{duration}{{outcome="ack",subscription="sub_gone"}} 0.0' in text


# -- middleware and start-up warning ----------------------------------------------------------


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    version = scope.get("state", {}).get("admin_api_version")
    await JSONResponse({"path": request.url.path, "version": version})(scope, receive, send)


async def test_version_prefixes_are_stripped_and_the_token_checked() -> None:
    app = AdminMiddleware(_echo, token="t" * 16, public_paths=frozenset({"/health"}))
    transport = httpx.ASGITransport(app=app)
    good = {"authorization": "Bearer " + "t" * 16}
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        assert (await client.get("/v3/subscriptions", headers=good)).json() == {
            "path": "/subscriptions",
            "version": 3,
        }
        assert (await client.get("/v2", headers=good)).json()["path"] == "/"
        assert (await client.get("/v5/x", headers=good)).json()["path"] == "/v5/x"
        assert (await client.get("/subscriptions", headers=good)).json()["version"] is None
        assert (await client.get("/v4/health")).status_code == 200
        refused = await client.get("/subscriptions", headers={"authorization": "Bearer t"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
    open_app = AdminMiddleware(_echo, token=None, public_paths=frozenset())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=open_app), base_url="http://x"
    ) as client:
        assert (await client.get("/subscriptions")).status_code == 200


async def test_the_401_message_says_what_to_send_unmasked() -> None:
    app = AdminMiddleware(_echo, token="t" * 16, public_paths=frozenset())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        for headers in ({}, {"authorization": "Bearer wrong-token-value"}):
            refused = await client.get("/subscriptions", headers=headers)
            assert refused.status_code == 401
            assert refused.json() == {
                "message": "missing or wrong bearer token: send Authorization: "
                "Bearer <admin token>",
                "restate_code": None,
            }


def test_an_open_admin_api_is_announced_loudly_unless_dev_on_loopback() -> None:
    assert open_admin_warning("127.0.0.1", token="x" * 16, allow_open=False) is None
    assert open_admin_warning("127.0.0.1", token=None, allow_open=True) is None
    assert open_admin_warning("::1", token=None, allow_open=True) is None
    loud = open_admin_warning("127.0.0.1", token=None, allow_open=False)
    assert loud is not None
    assert "IS OPEN" in loud
    public = open_admin_warning("0.0.0.0", token=None, allow_open=True)
    assert public is not None
    assert "allow-open" in public


# -- a subscription's listing: ledger rows merged with paged successes --------------------


RowsSource = Callable[[dict[str, Any] | None], tuple[list[LedgerEntry], Any]]


def _list_through(
    rows_source: RowsSource, paged_all: list[tuple[int, str]], limit: int, *, rounds: int
) -> list[int]:
    """Every listing page of ``rows_source`` merged with the pages ``paged_all`` (offset, page
    position), as the API pages through them; the offsets listed, in order."""

    def pages_source(after: tuple[str, int] | None) -> tuple[list[tuple[LedgerEntry, str]], bool]:
        rest = [(o, p) for o, p in paged_all if after is None or (p, o) > (after[0], after[1])]
        return [(_listed(o), p) for o, p in rest[:limit]], len(rest) > limit

    cursor: ListingCursor | None = ListingCursor()
    listed: list[int] = []
    for _ in range(rounds):
        assert cursor is not None
        rows, rows_next = ([], None) if cursor.rows_done else rows_source(cursor.rows)
        paged, more = ([], False) if cursor.pages_done else pages_source(cursor.page)
        # Fewer rows than asked with more to come: the read stopped where it says.
        reached = (
            f"t|000000|{int(rows_next['o']['S']):020d}" if rows_next and len(rows) < limit else None
        )
        page, cursor = merge_listing(
            rows,
            rows_next,
            paged,
            more,
            limit,
            cursor,
            lambda e: {"o": {"S": str(e.offset)}},
            reached,
        )
        assert len(page) <= limit
        listed += [e.offset for e in page]
        if cursor is None:
            return listed
    raise AssertionError(f"the listing did not end within {rounds} pages")


def _listed(offset: int, status: str = "SUCCEEDED") -> LedgerEntry:
    return LedgerEntry(
        id=f"inv_{offset}",
        subscription_id="sub_1",
        topic="t",
        partition=0,
        offset=offset,
        key=None,
        target="service://S/h",
        status=status,
    )


@given(
    st.sets(st.integers(0, 80), max_size=40),
    st.sets(st.integers(0, 80), max_size=40),
    st.integers(1, 9),
)
@example(set(), set(), 1)
@example({1, 2, 3}, set(), 3)
@example(set(), {5, 6, 7}, 3)
def test_a_merged_listing_returns_every_entry_once_in_order(
    row_offsets: set[int], page_offsets: set[int], limit: int
) -> None:
    rows_all = sorted(row_offsets)  # an offset in both: a row beside a page, listed once
    # Pages of ten consecutive offsets, positioned by their last offset, as in the store.
    paged_all = [(o, f"t|000000|{o // 10 * 10 + 9:020d}") for o in sorted(page_offsets)]

    def rows_source(start: dict[str, Any] | None) -> tuple[list[LedgerEntry], Any]:
        after = int(start["o"]["S"]) if start else -1
        rest = [o for o in rows_all if o > after]
        taken = rest[:limit]
        more = len(rest) > limit
        return [_listed(o) for o in taken], {"o": {"S": str(taken[-1])}} if more else None

    listed = _list_through(rows_source, paged_all, limit, rounds=200)
    assert listed == sorted(row_offsets | page_offsets)


def test_a_merged_listing_orders_as_the_ledgers_index_does_across_topic_keys() -> None:
    """Rows of a topic keyed by name and by name@ID (its cluster began to report topic IDs):
    the index orders positions as strings, where '@' sorts before '|'; the merge must too,
    or it lists a success ahead of rows still to come."""
    row = replace(_listed(5), id="inv_r", topic="t@AAAAAAAAAAAAAAAAAAAAAA")
    paged = [(_listed(1), "t|000000|00000000000000000001|00000000000000000001")]
    cursor = ListingCursor()
    page, _ = merge_listing([row], None, paged, False, 10, cursor, lambda e: {})
    assert [e.id for e in page] == ["inv_r", "inv_1"]
    # Its rows read stopped at the name@ID row: the bare name's success is not listed yet.
    stopped = "t@AAAAAAAAAAAAAAAAAAAAAA|000000|00000000000000000005"
    page, _ = merge_listing([row], {"k": 1}, paged, False, 10, cursor, lambda e: {}, stopped)
    assert [e.id for e in page] == ["inv_r"]


@given(
    st.sets(st.integers(0, 80), max_size=40),
    st.sets(st.integers(0, 80), max_size=40),
    st.integers(1, 9),
    st.integers(1, 30),
)
@example(set(), {5, 6, 7}, 3, 1)
@example({70}, set(range(10)), 2, 4)
def test_a_merged_listing_whose_rows_read_stops_early_still_lists_each_once_in_order(
    row_offsets: set[int], page_offsets: set[int], limit: int, budget: int
) -> None:
    """The rows come from a filtered read that examines at most ``budget`` ledger rows (every
    offset 0..80 has one; those in ``row_offsets`` match) and then stops where it is, as
    ``DynamoStore.find_entries`` does when its read budget runs out."""
    paged_all = [(o, f"t|000000|{o // 10 * 10 + 9:020d}") for o in sorted(page_offsets)]

    def rows_source(start: dict[str, Any] | None) -> tuple[list[LedgerEntry], Any]:
        after = int(start["o"]["S"]) if start else -1
        taken: list[int] = []
        for read, offset in enumerate(range(after + 1, 81), 1):
            if offset in row_offsets:
                taken.append(offset)
            if len(taken) == limit or read == budget:
                return [_listed(o) for o in taken], {
                    "o": {"S": str(offset)}
                } if offset < 80 else None
        return [_listed(o) for o in taken], None

    listed = _list_through(rows_source, paged_all, limit, rounds=500)
    assert listed == sorted(row_offsets | page_offsets)


def test_a_row_beside_a_page_lists_the_final_state_once() -> None:
    progress = _listed(1, "BACKING_OFF")
    failed = _listed(2, "FAILED")
    page = "t|000000|00000000000000000002|00000000000000000001"
    listed, cursor = merge_listing(
        [progress, failed],
        None,
        [(_listed(1), page), (_listed(2), page)],
        False,
        10,
        ListingCursor(),
        lambda e: {},
    )
    assert cursor is None
    assert [(e.offset, e.status) for e in listed] == [(1, "SUCCEEDED"), (2, "FAILED")]


@pytest.mark.promise("p-api-500")
async def test_an_unexpected_error_is_a_generic_500_and_its_details_go_to_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.requests import Request

    from adapter.api.app import _wrap
    from adapter.api.endpoint import Endpoint

    async def broken(request: Request, state: Any) -> Any:
        raise RuntimeError("table t-orders exploded at row 42")

    endpoint = Endpoint(
        method="GET",
        path="/broken",
        handler=broken,
        operation_id="broken",
        summary="broken",
        tag="test",
        responses={},
    )
    run = _wrap(endpoint, state=None)  # type: ignore[arg-type]
    scope = {"type": "http", "method": "GET", "path": "/broken", "headers": [], "query_string": b""}
    response = await run(Request(scope))
    assert response.status_code == 500
    assert b"exploded" not in response.body
    assert b"log has the details" in response.body
    assert "exploded at row 42" in caplog.text


def test_attempt_timings_expose_what_prometheus_client_histograms_would() -> None:
    """The timings keep their own bucket counts (observing is on the hot path): for the
    same observations, bounds included, both families read exactly as prometheus_client's
    Histogram writes them (buckets, _count, _sum, _created; only the creation times differ)."""
    durations = [0.0, 0.004, 0.005, 0.0051, 0.01, 0.3, 1.0, 2.5, 899.0, 900.0, 900.5, 1e9]
    timestamps_ms = [
        1_000_000_000,
        999_990_000,
        999_999_990,
        997_500_000,
        1_000_001_000,
        913_600_000,
    ]
    timings = Timings()
    ours = AttemptTimings("s", wall_clock=lambda: 1_000_000.0, timings=timings)
    registry = CollectorRegistry()
    registry.register(timings)
    reference = CollectorRegistry()
    duration = Histogram(
        "kafka_ingress_invocation_duration_seconds",
        "Handler time per invocation attempt, by outcome of the attempt (ack, retry, terminal).",
        ("subscription", "outcome"),
        buckets=DURATION_BUCKETS,
        registry=reference,
    )
    age = Histogram(
        "kafka_ingress_record_age_at_ack_seconds",
        "From the record's Kafka timestamp to the handler's acknowledgement.",
        ("subscription",),
        buckets=AGE_BUCKETS,
        registry=reference,
    )
    for outcome in ("ack", "retry", "terminal"):
        duration.labels("s", outcome)
    for value in durations:
        ours.attempt(OutcomeKind.ACK, value)
        duration.labels("s", "ack").observe(value)
    ours.attempt(OutcomeKind.RETRY, 0.2)
    duration.labels("s", "retry").observe(0.2)
    for timestamp_ms in timestamps_ms:
        ours.acked(timestamp_ms)
        age.labels("s").observe(max(0.0, 1_000_000.0 - timestamp_ms / 1000))

    def text(of: CollectorRegistry) -> str:
        return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(of).decode())

    assert text(registry) == text(reference)
    assert "_created{" in text(registry)


def test_attempt_timings_leave_out_created_samples_as_prometheus_client_is_told_to() -> None:
    script = (
        "from adapter.engine.timings import AttemptTimings, TIMINGS\n"
        "AttemptTimings('s')\n"
        "print(sorted({s.name for m in TIMINGS.collect() for s in m.samples}))\n"
    )
    env = {**os.environ, "PROMETHEUS_DISABLE_CREATED_SERIES": "true"}
    names = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "_bucket" in names
    assert "_created" not in names
