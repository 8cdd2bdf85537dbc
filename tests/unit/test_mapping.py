"""The record → request and response → outcome mapping (pure; no sockets)."""

from __future__ import annotations

import base64
import json
import re
from email.utils import formatdate
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from adapter.engine.mapping import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_RAW,
    HEADER_ATTEMPT,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INVOCATION_ID,
    HEADER_KAFKA_HEADERS,
    HEADER_KAFKA_KEY,
    HEADER_KAFKA_OFFSET,
    HEADER_KAFKA_PARTITION,
    HEADER_KAFKA_TIMESTAMP,
    HEADER_KAFKA_TOPIC,
    HEADER_SUBSCRIPTION_ID,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
    build_request,
    decode_kafka_headers,
    derive_trace_id,
    discover_url,
    encode_kafka_headers,
    fresh_traceparent,
    invoke_url,
    is_valid_traceparent,
    outcome_from_http,
    parse_retry_after,
    with_attempt,
)
from adapter.errors import TerminalInvokeError
from adapter.ids import invocation_id
from adapter.invokers.base import InvocationRequest, OutcomeKind
from adapter.model import Deployment, HandlerType, InputKind, KafkaRecord, ServiceType, Target

SUB = "sub_0000000000aaaaaaaaaaaaaaaa"
DEPLOYMENT = Deployment(id="dp_test", uri="http://handlers.local:9080")
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_OURS = {
    "content-type",
    HEADER_SUBSCRIPTION_ID,
    HEADER_KAFKA_TOPIC,
    HEADER_KAFKA_PARTITION,
    HEADER_KAFKA_OFFSET,
    HEADER_KAFKA_TIMESTAMP,
    HEADER_KAFKA_KEY,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INVOCATION_ID,
    HEADER_ATTEMPT,
    HEADER_TRACEPARENT,
    HEADER_KAFKA_HEADERS,
}


def target(
    service_type: ServiceType = ServiceType.SERVICE,
    handler_type: HandlerType = HandlerType.SERVICE,
    input_kind: InputKind = InputKind.JSON,
) -> Target:
    return Target(
        service="Orders",
        handler="place",
        service_type=service_type,
        handler_type=handler_type,
        input_kind=input_kind,
        deployment=DEPLOYMENT,
    )


SERVICE_JSON = target()
SERVICE_RAW = target(input_kind=InputKind.RAW)
OBJECT = target(ServiceType.VIRTUAL_OBJECT, HandlerType.EXCLUSIVE)
OBJECT_SHARED = target(ServiceType.VIRTUAL_OBJECT, HandlerType.SHARED)
WORKFLOW = target(ServiceType.WORKFLOW, HandlerType.WORKFLOW)
ALL_TARGETS = [
    SERVICE_JSON,
    SERVICE_RAW,
    OBJECT,
    OBJECT_SHARED,
    WORKFLOW,
    target(ServiceType.VIRTUAL_OBJECT, HandlerType.EXCLUSIVE, InputKind.RAW),
]


def record(
    value: bytes | None = b'{"id": 1}',
    key: bytes | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
    *,
    offset: int = 42,
) -> KafkaRecord:
    return KafkaRecord(
        topic="orders",
        partition=3,
        offset=offset,
        key=key,
        value=value,
        timestamp_ms=1_700_000_000_123,
        headers=headers,
    )


def build(
    rec: KafkaRecord, tgt: Target = SERVICE_JSON, *, max_body_bytes: int = 1 << 20, attempt: int = 1
) -> InvocationRequest:
    return build_request(
        subscription_id=SUB, record=rec, target=tgt, max_body_bytes=max_body_bytes, attempt=attempt
    )


def record_headers_of(request: InvocationRequest) -> dict[str, str]:
    """Request headers other than the ones the mapping itself owns."""
    return {k: v for k, v in request.headers.items() if k.lower() not in _OURS}


# --- metadata headers ------------------------------------------------------------------------


@pytest.mark.promise("p-proto-headers")
def test_every_documented_header_with_exact_values() -> None:
    req = build(record(key=b"customer-7"), attempt=3)
    inv = invocation_id(SUB, "orders", 3, 42)
    assert req.invocation_id == inv
    trace = req.headers.pop(HEADER_TRACEPARENT)
    assert req.headers == {
        "content-type": "application/json",
        "restate.subscription.id": SUB,
        "kafka.topic": "orders",
        "kafka.partition": "3",
        "kafka.offset": "42",
        "kafka.timestamp": "1700000000123",
        "kafka.key": "customer-7",
        "idempotency-key": inv,
        "x-kafka-ingress-invocation-id": inv,
        "x-kafka-ingress-attempt": "3",
    }
    assert is_valid_traceparent(trace)
    assert req.attempt == 3
    assert req.key == "customer-7"
    assert req.target is SERVICE_JSON


@pytest.mark.promise("p-ops-invocation-id-stable")
def test_invocation_id_is_stable_per_record_and_differs_across_offsets() -> None:
    first = build(record(offset=7))
    again = build(record(offset=7), attempt=2)
    other = build(record(offset=8))
    assert first.invocation_id == again.invocation_id
    assert first.headers[HEADER_IDEMPOTENCY_KEY] == again.headers[HEADER_IDEMPOTENCY_KEY]
    assert first.invocation_id != other.invocation_id


@pytest.mark.promise("p-ops-retry-same-id")
def test_with_attempt_makes_a_later_attempt_of_the_same_invocation() -> None:
    first = build(record())
    original_headers = dict(first.headers)
    third = with_attempt(first, 3)
    assert third.attempt == 3
    assert third.headers[HEADER_ATTEMPT] == "3"
    assert third.invocation_id == first.invocation_id
    assert third.body is first.body
    # A trace started here gets a new span per attempt, in the same trace.
    old_tp, new_tp = first.headers[HEADER_TRACEPARENT], third.headers[HEADER_TRACEPARENT]
    assert old_tp.split("-")[1] == new_tp.split("-")[1]
    assert old_tp.split("-")[2] != new_tp.split("-")[2]
    assert {
        k: v for k, v in third.headers.items() if k not in (HEADER_ATTEMPT, HEADER_TRACEPARENT)
    } == {
        k: v for k, v in original_headers.items() if k not in (HEADER_ATTEMPT, HEADER_TRACEPARENT)
    }
    assert first.headers == original_headers  # the first attempt is left alone


def test_with_attempt_keeps_a_propagated_traceparent() -> None:
    first = build(record(headers=(("traceparent", TP.encode()),)))
    assert with_attempt(first, 2).headers[HEADER_TRACEPARENT] == TP
    with pytest.raises(ValueError, match="attempt"):
        with_attempt(first, 0)


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempt"):
        build(record(), attempt=0)


def test_null_key_on_service_omits_kafka_key() -> None:
    req = build(record(key=None))
    assert HEADER_KAFKA_KEY not in req.headers
    assert req.key is None


@pytest.mark.promise("p-proto-kafka-key")
def test_non_utf8_key_on_service_is_accepted_and_omitted() -> None:
    req = build(record(key=b"\xff\xfe"))
    assert HEADER_KAFKA_KEY not in req.headers
    assert req.key is None


@pytest.mark.promise("p-proto-kafka-key")
def test_empty_key_on_service_is_an_empty_header() -> None:
    req = build(record(key=b""))
    assert req.headers[HEADER_KAFKA_KEY] == ""
    assert req.key == ""


@pytest.mark.parametrize(
    ("key", "header"),
    [
        ("customer-7", "customer-7"),
        ("a/b:c@d.e~f_g", "a/b:c@d.e~f_g"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("héllo", "h%C3%A9llo"),
        ("line\nbreak", "line%0Abreak"),
        (" padded ", "%20padded%20"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
    ],
)
@pytest.mark.promise("p-proto-kafka-key")
def test_kafka_key_header_is_percent_encoded_only_where_needed(key: str, header: str) -> None:
    req = build(record(key=key.encode()), OBJECT)
    assert req.headers[HEADER_KAFKA_KEY] == header
    assert unquote(header) == key
    assert req.key == key


# --- keys for keyed targets ------------------------------------------------------------------


@pytest.mark.parametrize("tgt", [OBJECT, OBJECT_SHARED, WORKFLOW])
@pytest.mark.promise("p-proto-bad-key")
def test_keyed_target_without_key_is_terminal(tgt: Target) -> None:
    with pytest.raises(TerminalInvokeError, match=r"partition=3 offset=42 has no key"):
        build(record(key=None), tgt)


@pytest.mark.parametrize("tgt", [OBJECT, WORKFLOW])
@pytest.mark.promise("p-proto-bad-key")
def test_keyed_target_with_empty_key_is_terminal(tgt: Target) -> None:
    with pytest.raises(TerminalInvokeError, match="an empty key"):
        build(record(key=b""), tgt)


@pytest.mark.promise("p-proto-bad-key")
def test_keyed_target_with_non_utf8_key_is_terminal() -> None:
    with pytest.raises(TerminalInvokeError, match=r"offset=42 has a key that is not valid UTF-8"):
        build(record(key=b"\xc3\x28"), OBJECT)


def test_terminal_key_error_names_the_kind_of_key() -> None:
    with pytest.raises(TerminalInvokeError, match="workflow ID"):
        build(record(key=None), WORKFLOW)
    with pytest.raises(TerminalInvokeError, match="object key"):
        build(record(key=None), OBJECT)


def test_surrogate_encoded_key_is_not_utf8() -> None:
    with pytest.raises(TerminalInvokeError, match="not valid UTF-8"):
        build(record(key=b"\xed\xa0\x80"), OBJECT)


# --- body -----------------------------------------------------------------------------------


def test_json_body_is_the_original_bytes() -> None:
    original = b' { "b" : 1.50 ,"a":[ 1e0 ] , "u":"\\u00e9" } \n'
    req = build(record(value=original))
    assert req.body is original or req.body == original
    assert req.headers["content-type"] == CONTENT_TYPE_JSON


@pytest.mark.parametrize("value", [None, b""])
def test_null_or_empty_value_is_an_empty_body(value: bytes | None) -> None:
    for tgt in (SERVICE_JSON, SERVICE_RAW):
        assert build(record(value=value), tgt).body == b""


@pytest.mark.parametrize(
    "value", [b"{", b"not json", b'{"a": NaN}', b"\xff", b'{"a":1} trailing', b"[" * 2000]
)
@pytest.mark.promise("p-proto-bad-json")
def test_invalid_json_is_terminal(value: bytes) -> None:
    with pytest.raises(TerminalInvokeError, match=r"offset=42 value is not valid JSON"):
        build(record(value=value))


@pytest.mark.parametrize("value", [b"not json", b"\x00\xff\xfe", bytes(range(256))])
def test_raw_input_is_sent_as_is(value: bytes) -> None:
    req = build(record(value=value), SERVICE_RAW)
    assert req.body == value
    assert req.headers["content-type"] == CONTENT_TYPE_RAW


@pytest.mark.promise("p-proto-record-size", "p-config-max-record-bytes")
def test_record_at_the_size_limit_is_accepted_and_one_byte_more_is_terminal() -> None:
    rec = record(value=b'"' + b"x" * 96 + b'"', key=b"k", headers=(("h", b"v"),))
    assert rec.size == 101
    build(rec, max_body_bytes=101)
    with pytest.raises(TerminalInvokeError, match=r"is 101 bytes .* limit of 100 bytes"):
        build(rec, max_body_bytes=100)


def test_size_is_checked_before_json_is_parsed() -> None:
    with pytest.raises(TerminalInvokeError, match="max_body_bytes"):
        build(record(value=b"{" * 100), max_body_bytes=10)


# --- traceparent ----------------------------------------------------------------------------


def test_fresh_traceparent_shares_the_trace_across_attempts() -> None:
    one = build(record(), attempt=1).headers[HEADER_TRACEPARENT]
    two = build(record(), attempt=2).headers[HEADER_TRACEPARENT]
    inv = invocation_id(SUB, "orders", 3, 42)
    for value in (one, two):
        assert is_valid_traceparent(value)
        version, trace_id, _span_id, flags = value.split("-")
        assert (version, trace_id, flags) == ("00", derive_trace_id(inv), "01")
    assert one.split("-")[2] != two.split("-")[2]


def test_trace_id_differs_per_invocation() -> None:
    assert derive_trace_id("inv_a") != derive_trace_id("inv_b")
    assert fresh_traceparent("inv_a").split("-")[1] == derive_trace_id("inv_a")


def test_trace_id_derivation_is_pinned() -> None:
    """A record's trace ID must stay the same across versions (a retry after an upgrade
    joins the same trace): the derivation's hash, person and size are fixed."""
    assert derive_trace_id("inv_a") == "e8fe7b2403b4a15b39e28de6f4399d02"


@pytest.mark.promise("p-proto-trace-headers", "p-proto-x-kafka-headers")
def test_valid_record_traceparent_is_propagated_verbatim() -> None:
    req = build(record(headers=(("traceparent", TP.encode()), ("tracestate", b"vendor=abc"))))
    assert req.headers[HEADER_TRACEPARENT] == TP
    assert req.headers[HEADER_TRACESTATE] == "vendor=abc"
    assert HEADER_KAFKA_HEADERS not in req.headers


def test_traceparent_name_is_matched_case_insensitively() -> None:
    req = build(record(headers=(("TraceParent", TP.encode()),)))
    assert req.headers[HEADER_TRACEPARENT] == TP
    assert "TraceParent" not in req.headers


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage",
        TP.upper().encode(),
        b"ff" + TP[2:].encode(),
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",
        TP.encode() + b"-extra",
        b" " + TP.encode(),
        TP.encode()[:-1],
        b"\xff" * 55,
    ],
)
@pytest.mark.promise("p-proto-x-kafka-headers")
def test_invalid_record_traceparent_is_replaced_and_recorded(bad: bytes) -> None:
    headers = (("traceparent", bad), ("tracestate", b"vendor=abc"), ("tenant", b"acme"))
    req = build(record(headers=headers))
    inv = invocation_id(SUB, "orders", 3, 42)
    assert req.headers[HEADER_TRACEPARENT].split("-")[1] == derive_trace_id(inv)
    # tracestate describes the record's trace, not the fresh one.
    assert HEADER_TRACESTATE not in req.headers
    assert req.headers["tenant"] == "acme"
    assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)


@pytest.mark.promise("p-proto-x-kafka-headers")
def test_duplicate_traceparent_is_ambiguous() -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-00"
    headers = (("traceparent", TP.encode()), ("traceparent", other.encode()))
    req = build(record(headers=headers))
    assert req.headers[HEADER_TRACEPARENT] not in (TP, other)
    assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)


@pytest.mark.promise("p-proto-trace-headers", "p-proto-x-kafka-headers")
def test_tracestate_without_traceparent_is_not_passed_through() -> None:
    req = build(record(headers=(("tracestate", b"vendor=abc"),)))
    assert HEADER_TRACESTATE not in req.headers
    assert HEADER_KAFKA_HEADERS in req.headers


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TP, True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01future", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", False),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        ("", False),
    ],
)
def test_is_valid_traceparent(value: str, valid: bool) -> None:
    assert is_valid_traceparent(value) is valid


# --- record header pass-through -------------------------------------------------------------


@pytest.mark.promise("p-proto-pass-through")
def test_plain_record_headers_pass_through_with_their_case() -> None:
    headers = (("X-Request-Id", b"r-1"), ("tenant", b"acme corp"), ("authorization", b"Bearer t"))
    req = build(record(headers=headers))
    assert record_headers_of(req) == {
        "X-Request-Id": "r-1",
        "tenant": "acme corp",
        "authorization": "Bearer t",
    }
    assert HEADER_KAFKA_HEADERS not in req.headers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # not an RFC 9110 token
        ("bad name", b"v"),
        ("colon:name", b"v"),
        ("ünï", b"v"),
        ("", b"v"),
        # reserved: hop-by-hop, framing, response decoding, ours
        ("Content-Type", b"text/plain"),
        ("content-length", b"3"),
        ("Content-Encoding", b"gzip"),
        ("host", b"evil.example"),
        ("Connection", b"close"),
        ("keep-alive", b"timeout=5"),
        ("transfer-encoding", b"chunked"),
        ("te", b"trailers"),
        ("trailer", b"x"),
        ("upgrade", b"h2c"),
        ("expect", b"100-continue"),
        ("accept-encoding", b"br"),
        ("proxy-authorization", b"Basic x"),
        ("Proxy-Connection", b"keep-alive"),
        ("kafka.offset", b"0"),
        ("kafka.key", b"forged"),
        ("restate.subscription.id", b"sub_forged"),
        ("Idempotency-Key", b"forged"),
        ("x-kafka-ingress-invocation-id", b"forged"),
        ("x-kafka-ingress-anything", b"v"),
        ("x-kafka-headers", b"[]"),
        # values that would not survive HTTP unchanged
        ("tenant", b""),
        ("tenant", b" leading"),
        ("tenant", b"trailing "),
        ("tenant", b"tab\tinside"),
        ("tenant", b"x\r\nInjected: 1"),
        ("tenant", b"nl\n"),
        ("tenant", "é".encode()),
        ("tenant", b"\x00"),
        ("tenant", b"\x7f"),
    ],
)
@pytest.mark.promise("p-proto-pass-through", "p-proto-x-kafka-headers")
def test_unpassable_header_goes_to_x_kafka_headers_only(name: str, value: bytes) -> None:
    headers = (("before", b"1"), (name, value), ("after", b"2"))
    req = build(record(headers=headers))
    assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)
    # The passable neighbours still arrive as plain headers.
    assert req.headers["before"] == "1"
    assert req.headers["after"] == "2"
    # Nothing of ours was overridden and the bad header itself is not sent plainly.
    assert req.headers["content-type"] == CONTENT_TYPE_JSON
    assert req.headers[HEADER_KAFKA_OFFSET] == "42"
    assert HEADER_KAFKA_KEY not in req.headers
    assert req.headers[HEADER_IDEMPOTENCY_KEY] == req.invocation_id
    assert set(record_headers_of(req)) == {"before", "after"}


@pytest.mark.parametrize(
    "headers",
    [
        (("tenant", b"a"), ("tenant", b"b")),
        (("Tenant", b"a"), ("tenant", b"a")),
        (("tenant", b"a"), ("other", b"x"), ("TENANT", b"a")),
    ],
)
@pytest.mark.promise("p-proto-duplicate-headers")
def test_duplicate_names_are_never_passed_plainly(headers: tuple[tuple[str, bytes], ...]) -> None:
    req = build(record(headers=headers))
    assert not any(k.lower() == "tenant" for k in req.headers)
    assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)


def test_case_folding_is_ascii_only() -> None:
    # "\u212a" (Kelvin sign) lower()s to "k"; it must not make "key" look duplicated.
    headers = (("\u212aey", b"x"), ("key", b"v"))
    req = build(record(headers=headers))
    assert req.headers["key"] == "v"
    assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)


@pytest.mark.promise("p-proto-x-kafka-headers-format")
def test_x_kafka_headers_is_compact_ascii_json_of_base64_values() -> None:
    headers = (("ünï", b"\x00\xff"), ("plain", b"v"))
    value = encode_kafka_headers(headers)
    assert value == '[["\\u00fcn\\u00ef","AP8="],["plain","dg=="]]'
    assert _SAFE.fullmatch(value)
    assert json.loads(value) == [["ünï", base64.b64encode(b"\x00\xff").decode()], ["plain", "dg=="]]


@pytest.mark.promise("p-proto-x-kafka-headers-format")
def test_x_kafka_headers_escapes_lone_surrogates_in_names() -> None:
    headers = (("bad\udcff", b"v"),)
    req = build(record(headers=headers))
    assert req.headers[HEADER_KAFKA_HEADERS].isascii()
    assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)


# --- properties -----------------------------------------------------------------------------

header_names = st.one_of(
    st.text(min_size=0, max_size=12),
    st.text(alphabet="abcXYZ-_.!~", min_size=1, max_size=6),
    st.sampled_from(
        ["traceparent", "tracestate", "Content-Type", "kafka.key", "x-kafka-headers", "host"]
    ),
)
header_values = st.one_of(
    st.binary(max_size=24),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24).map(
        str.encode
    ),
    st.just(TP.encode()),
)
records = st.builds(
    KafkaRecord,
    topic=st.just("orders"),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**63 - 1),
    key=st.one_of(st.none(), st.binary(max_size=24), st.text(max_size=12).map(str.encode)),
    value=st.one_of(
        st.none(),
        st.binary(max_size=64),
        st.just(b'{"a": [1, 2.5, null]}'),
        st.text(max_size=16).map(lambda s: json.dumps(s).encode()),
    ),
    timestamp_ms=st.integers(-1, 2**48),
    headers=st.lists(st.tuples(header_names, header_values), max_size=6).map(tuple),
)


@given(rec=records, tgt=st.sampled_from(ALL_TARGETS), attempt=st.integers(1, 100))
def test_any_record_maps_or_fails_terminally_and_headers_are_wire_safe(
    rec: KafkaRecord, tgt: Target, attempt: int
) -> None:
    try:
        req = build(rec, tgt, max_body_bytes=200, attempt=attempt)
    except TerminalInvokeError:
        return
    assert req.body == (rec.value or b"")
    names_lower = [name.lower() for name in req.headers]
    assert len(names_lower) == len(set(names_lower))
    for name, value in req.headers.items():
        assert _TOKEN.fullmatch(name), name
        if name == HEADER_KAFKA_KEY and rec.key == b"":
            assert value == ""  # an empty key is the one legitimately empty value
        else:
            assert _SAFE.fullmatch(value), (name, value)
    assert is_valid_traceparent(req.headers[HEADER_TRACEPARENT])
    assert req.headers[HEADER_IDEMPOTENCY_KEY] == req.invocation_id


@given(headers=st.lists(st.tuples(header_names, header_values), max_size=8).map(tuple))
@pytest.mark.promise("p-proto-x-kafka-headers")
def test_record_headers_are_never_lost(headers: tuple[tuple[str, bytes], ...]) -> None:
    req = build(record(headers=headers))
    if HEADER_KAFKA_HEADERS in req.headers:
        assert decode_kafka_headers(req.headers[HEADER_KAFKA_HEADERS]) == list(headers)
        return
    # Absent ⇒ every record header arrived as its own header, value untouched.
    sent = CIMultiDict(req.headers)
    for name, value in headers:
        assert sent[name].encode("ascii") == value
    if headers:
        extra = {k for k in record_headers_of(req) if k.lower() != HEADER_TRACESTATE}
        assert {k.lower() for k in extra} <= {n.lower() for n, _ in headers}


@given(rec=records, tgt=st.sampled_from(ALL_TARGETS))
def test_valid_keys_roundtrip_through_url_and_header(rec: KafkaRecord, tgt: Target) -> None:
    try:
        req = build(rec, tgt, max_body_bytes=1 << 20)
    except TerminalInvokeError:
        return
    if req.key is None:
        return
    assert unquote(req.headers[HEADER_KAFKA_KEY]) == req.key
    url = invoke_url("http://h/p/", tgt, req.key)
    if tgt.keyed:
        segment = url.split("/")[-2]
        assert "/" not in segment
        assert segment not in (".", "..")
        assert unquote(segment) == req.key


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    ["http://h:9080", "http://h:9080/", "http://h:9080//", "http://h:9080/prefix/"],
)
def test_service_url_ignores_trailing_slashes_and_keeps_prefix(base: str) -> None:
    prefix = "/prefix" if "prefix" in base else ""
    assert invoke_url(base, SERVICE_JSON, None) == f"http://h:9080{prefix}/invoke/Orders/place"
    assert invoke_url(base, SERVICE_JSON, "ignored") == f"http://h:9080{prefix}/invoke/Orders/place"
    assert discover_url(base) == f"http://h:9080{prefix}/discover"


@pytest.mark.parametrize(
    ("key", "segment"),
    [
        ("customer-7", "customer-7"),
        ("a/b", "a%2Fb"),
        ("a b?c#d", "a%20b%3Fc%23d"),
        ("é", "%C3%A9"),
        ("100%", "100%25"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("...", "..."),
    ],
)
def test_keyed_url_percent_encodes_the_key(key: str, segment: str) -> None:
    url = invoke_url("http://h/base/", OBJECT, key)
    assert url == f"http://h/base/invoke/Orders/{segment}/place"


@pytest.mark.parametrize("key", [None, ""])
def test_keyed_url_without_key_is_terminal(key: str | None) -> None:
    with pytest.raises(TerminalInvokeError, match="keyed"):
        invoke_url("http://h", WORKFLOW, key)


# --- responses ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_ack_with_the_response_body(status: int) -> None:
    outcome = outcome_from_http(status, {}, b'{"ok":true}')
    assert outcome.kind is OutcomeKind.ACK
    assert outcome.response == b'{"ok":true}'


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 499])
@pytest.mark.promise("p-proto-4xx-terminal")
def test_4xx_is_terminal_with_status_and_body(status: int) -> None:
    outcome = outcome_from_http(status, {"retry-after": "5"}, b"order rejected")
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error is not None
    assert f"HTTP {status}" in outcome.error
    assert "order rejected" in outcome.error
    assert outcome.retry_after is None


@pytest.mark.promise("p-proto-4xx-terminal")
def test_error_text_prefers_json_message() -> None:
    body = b'{"message": "amount must be positive", "code": 400}'
    outcome = outcome_from_http(400, {}, body)
    assert outcome.error == "handler returned HTTP 400 Bad Request: amount must be positive"


@pytest.mark.parametrize("body", [b'{"message": 5}', b'{"msg": "x"}', b"{not json", b"[1]"])
def test_error_text_falls_back_to_the_body(body: bytes) -> None:
    outcome = outcome_from_http(400, {}, body)
    assert outcome.error == f"handler returned HTTP 400 Bad Request: {body.decode()}"


@pytest.mark.promise("p-proto-4xx-terminal")
def test_error_text_is_truncated_and_decoded_leniently() -> None:
    outcome = outcome_from_http(400, {}, b"\xff" + b"x" * 2000)
    assert outcome.error is not None
    text = outcome.error.removeprefix("handler returned HTTP 400 Bad Request: ")
    assert text == "\ufffd" + "x" * 499 + "…"
    long_message = json.dumps({"message": "m" * 600}).encode()
    assert outcome_from_http(422, {}, long_message).error == (
        "handler returned HTTP 422 Unprocessable Entity: " + "m" * 500 + "…"
    )


def test_empty_error_body_is_said_so() -> None:
    assert (
        outcome_from_http(404, {}, b"").error == "handler returned HTTP 404 Not Found: (empty body)"
    )


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_408_429_5xx_are_retryable(status: int) -> None:
    outcome = outcome_from_http(status, {}, b"busy")
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert f"HTTP {status}" in outcome.error
    assert "busy" in outcome.error
    assert outcome.retry_after is None


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "2"}, {"Retry-After": "2"}, CIMultiDict({"RETRY-AFTER": "2"})],
)
def test_retry_after_header_is_found_case_insensitively(headers: dict[str, str]) -> None:
    assert outcome_from_http(503, headers, b"").retry_after == 2.0
    assert outcome_from_http(429, headers, b"").retry_after == 2.0


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("2", 2.0),
        (" 120 ", 120.0),
        ("1.5", None),
        ("-1", None),
        ("+3", None),
        ("²", None),
        ("soon", None),
        ("", None),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        (formatdate(NOW + 30).replace("+0000", "-0000"), 30.0),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
    ],
)
@pytest.mark.promise("p-proto-retry-after")
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.promise("p-proto-retry-after")
def test_invalid_retry_after_is_ignored_not_fatal() -> None:
    outcome = outcome_from_http(503, {"retry-after": "later"}, b"")
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after is None


@pytest.mark.promise("p-proto-retry-after")
def test_http_date_retry_after_in_outcome() -> None:
    headers = {"retry-after": formatdate(NOW + 10, usegmt=True)}
    assert outcome_from_http(503, headers, b"", now=NOW).retry_after == 10.0


@pytest.mark.parametrize("status", [100, 101, 199, 300, 301, 304, 399, 600, 99])
@pytest.mark.promise("p-proto-other-terminal")
def test_other_statuses_are_terminal(status: int) -> None:
    outcome = outcome_from_http(status, {}, b"")
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error is not None
    assert f"unexpected HTTP {status}" in outcome.error


def test_redirect_error_names_the_location() -> None:
    outcome = outcome_from_http(302, {"Location": "https://elsewhere/x"}, b"")
    assert outcome.error == (
        "handler returned unexpected HTTP 302 Found: redirects are not followed; point the "
        "deployment at the final URL (Location: https://elsewhere/x)"
    )


@given(
    status=st.integers(0, 1000),
    retry_after=st.one_of(st.none(), st.text(max_size=40)),
    body=st.binary(max_size=200),
)
def test_outcome_from_http_is_total(status: int, retry_after: str | None, body: bytes) -> None:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    outcome = outcome_from_http(status, headers, body, now=NOW)
    assert outcome.retry_after is None or outcome.retry_after >= 0
    if outcome.kind is not OutcomeKind.ACK:
        assert outcome.error


def test_key_header_fast_path_matches_percent_encoding_for_every_ascii_character() -> None:
    """The per-record shortcut returns what quote() would, for each ASCII character alone
    and inside a key (and for a few non-ASCII ones)."""
    from urllib.parse import quote

    from adapter.engine.mapping import _KEY_HEADER_SAFE, _key_header
    from adapter.sdk.protocol import path_segment

    for char in [chr(c) for c in range(128)] + ["é", "日", "\u00a0", "\u2028"]:
        for key in (char, f"k{char}7", f"{char}{char}"):
            assert _key_header(key) == quote(key, safe=_KEY_HEADER_SAFE), repr(key)
            expected = quote(key, safe="")
            if expected in (".", ".."):
                expected = "%2E" * len(expected)
            assert path_segment(key) == expected, repr(key)
