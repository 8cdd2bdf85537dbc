"""Lambda event filtering (``filter.criteria``): AWS's documented examples, rules, limits."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.errors import ConfigError
from adapter.filters import (
    MAX_PATTERN_CHARS,
    FilterCriteria,
    FilterCriteriaError,
    parse_filter_criteria,
)
from adapter.kafka.options import resolve_options, validate_options
from adapter.model import KafkaRecord


def criteria(*patterns: Any) -> FilterCriteria:
    """A FilterCriteria in AWS's JSON shape, one filter per pattern."""
    return parse_filter_criteria(
        json.dumps({"Filters": [{"Pattern": json.dumps(p)} for p in patterns]})
    )


def record(value: bytes | None, **fields: Any) -> KafkaRecord:
    base: dict[str, Any] = {
        "topic": "mytopic",
        "partition": 0,
        "offset": 15,
        "key": None,
        "value": value,
        "timestamp_ms": 1545084650987,
    }
    base.update(fields)
    return KafkaRecord(**base)


def jrec(doc: Any) -> KafkaRecord:
    return record(json.dumps(doc).encode())


# --------------------------------------------------------------------------------------------
# AWS's Kafka filtering page (docs.aws.amazon.com/lambda/latest/dg/kafka-filtering.html)


def test_aws_kafka_example_device_id_prefix() -> None:
    # The FilterCriteria exactly as printed on AWS's page.
    c = parse_filter_criteria(
        '{"Filters": [{"Pattern": "{ \\"value\\" : { \\"device_ID\\" : [ { \\"prefix\\": '
        '\\"AB\\" } ] } }"}]}'
    )
    produced = {"device_ID": "AB1234", "session": {"start_time": "x", "duration": 162}}
    assert c.matches(jrec(produced))
    assert not c.matches(jrec({**produced, "device_ID": "XY1234"}))
    assert not c.matches(jrec({"session": {"duration": 162}}))


def test_aws_kafka_example_plain_string_anything_but_error() -> None:
    c = parse_filter_criteria(
        '{"Filters": [{"Pattern": '
        '"{ \\"value\\" : [ { \\"anything-but\\": [ \\"error\\" ] } ] }"}]}'
    )
    assert not c.matches(record(b"error"))
    assert c.matches(record(b"Hello, this is a test."))


# The format table on the same page: the value part of a pattern is evaluated only when the
# record's value and the pattern agree on the format; otherwise only the metadata is.
FORMAT_CASES = [
    # incoming value, value part of the pattern, matches
    (b"plain", ["plain"], True),  # plain / plain: filtered on the value
    (b"other", ["plain"], False),
    (b"plain", None, True),  # plain / no data pattern: metadata only
    (b"plain", {"a": ["x"]}, True),  # plain / JSON pattern: metadata only
    (b'{"a": "y"}', ["plain"], True),  # JSON / plain pattern: metadata only
    (b'{"a": "y"}', None, True),  # JSON / no data pattern: metadata only
    (b'{"a": "x"}', {"a": ["x"]}, True),  # JSON / JSON: filtered on the value
    (b'{"a": "y"}', {"a": ["x"]}, False),
    (b"\xff\xfe", ["plain"], True),  # not UTF-8: metadata only
    (b"\xff\xfe", {"a": ["x"]}, True),
]


@pytest.mark.parametrize(("value", "value_pattern", "expected"), FORMAT_CASES)
def test_aws_format_table(value: bytes, value_pattern: Any, expected: bool) -> None:
    pattern: dict[str, Any] = {"topic": ["mytopic"]}
    if value_pattern is not None:
        pattern["value"] = value_pattern
    assert criteria(pattern).matches(record(value)) is expected
    # The metadata part still decides when the formats differ.
    pattern["topic"] = ["elsewhere"]
    assert criteria(pattern).matches(record(value)) is False


# --------------------------------------------------------------------------------------------
# The operator table (docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html)

OPERATOR_CASES: list[tuple[str, dict[str, Any], list[Any], list[Any]]] = [
    # name, pattern over value, values matching, values not matching
    ("null", {"UserID": [None]}, [{"UserID": None}], [{"UserID": "x"}, {}]),
    ("empty", {"LastName": [""]}, [{"LastName": ""}], [{"LastName": "x"}, {}]),
    ("equals", {"Name": ["Alice"]}, [{"Name": "Alice"}], [{"Name": "alice"}, {"Name": "Alicea"}]),
    (
        "equals-ignore-case",
        {"Name": [{"equals-ignore-case": "alice"}]},
        [{"Name": "Alice"}, {"Name": "ALICE"}],
        [{"Name": "Dalice"}, {"Name": 1}],
    ),
    (
        "and",
        {"Location": ["New York"], "Day": ["Monday"]},
        [{"Location": "New York", "Day": "Monday"}],
        [{"Location": "New York", "Day": "Tuesday"}, {"Location": "New York"}],
    ),
    (
        "or",
        {"PaymentType": ["Credit", "Debit"]},
        [{"PaymentType": "Credit"}, {"PaymentType": "Debit"}],
        [{"PaymentType": "Cash"}],
    ),
    (
        "or (multiple fields)",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        [{"Location": "New York"}, {"Day": "Monday"}, {"Location": "New York", "Day": "Monday"}],
        [{"Location": "Boston", "Day": "Friday"}],
    ),
    (
        "not",
        {"Weather": [{"anything-but": ["Raining"]}]},
        [{"Weather": "Sunny"}],
        [{"Weather": "Raining"}, {}],
    ),
    (
        "numeric equals",
        {"Price": [{"numeric": ["=", 100]}]},
        [{"Price": 100}, {"Price": 100.0}],
        [{"Price": 101}, {"Price": "100"}],
    ),
    (
        "numeric range",
        {"Price": [{"numeric": [">", 10, "<=", 20]}]},
        [{"Price": 11}, {"Price": 20}, {"Price": 10.5}],
        [{"Price": 10}, {"Price": 21}, {}],
    ),
    (
        "exists",
        {"ProductName": [{"exists": True}]},
        [{"ProductName": "x"}, {"ProductName": None}],
        [{}, {"ProductName": {"nested": 1}}],
    ),
    ("does not exist", {"ProductName": [{"exists": False}]}, [{}], [{"ProductName": "x"}]),
    ("begins with", {"Region": [{"prefix": "us-"}]}, [{"Region": "us-east-1"}], [{"Region": "eu"}]),
    (
        "ends with",
        {"FileName": [{"suffix": ".png"}]},
        [{"FileName": "a.png"}],
        [{"FileName": "a.PNG"}, {"FileName": "png"}],
    ),
    # The variants AWS's table cites through EventBridge's syntax.
    (
        "prefix ignoring case",
        {"Region": [{"prefix": {"equals-ignore-case": "US-"}}]},
        [{"Region": "us-east-1"}],
        [{"Region": "eu-us-"}],
    ),
    (
        "suffix ignoring case",
        {"FileName": [{"suffix": {"equals-ignore-case": ".PNG"}}]},
        [{"FileName": "a.png"}],
        [{"FileName": "a.jpg"}],
    ),
    (
        "anything-but prefix",
        {"State": [{"anything-but": {"prefix": "init"}}]},
        [{"State": "running"}],
        [{"State": "initializing"}],
    ),
    (
        "anything-but suffix",
        {"File": [{"anything-but": {"suffix": ".tmp"}}]},
        [{"File": "a.txt"}],
        [{"File": "a.tmp"}],
    ),
    (
        "anything-but equals-ignore-case",
        {"Name": [{"anything-but": {"equals-ignore-case": ["alice", "BOB"]}}]},
        [{"Name": "Carol"}],
        [{"Name": "ALICE"}, {"Name": "bob"}],
    ),
    (
        "anything-but a number",
        {"Code": [{"anything-but": 0}]},
        [{"Code": 1}, {"Code": "0"}],
        [{"Code": 0}],
    ),
    (
        "nested fields",
        {"session": {"duration": [{"numeric": [">=", 100]}]}},
        [{"session": {"duration": 162}}],
        [{"session": {"duration": 99}}, {"session": 5}, {}],
    ),
    (
        "arrays match any element",
        {"tags": ["red"]},
        [{"tags": ["blue", "red"]}],
        [{"tags": ["blue"]}, {"tags": []}],
    ),
    (
        "nested $or",
        {"a": {"$or": [{"b": ["1"]}, {"c": ["2"]}]}},
        [{"a": {"b": "1"}}, {"a": {"c": "2"}}],
        [{"a": {"b": "2"}}],
    ),
    ("booleans", {"ok": [True]}, [{"ok": True}], [{"ok": False}, {"ok": "true"}, {"ok": 1}]),
]


@pytest.mark.parametrize(
    ("name", "pattern", "matching", "non_matching"),
    OPERATOR_CASES,
    ids=[c[0] for c in OPERATOR_CASES],
)
def test_operator(
    name: str, pattern: dict[str, Any], matching: list[Any], non_matching: list[Any]
) -> None:
    c = criteria({"value": pattern})
    for doc in matching:
        assert c.matches(jrec(doc)), doc
    for doc in non_matching:
        assert not c.matches(jrec(doc)), doc


def test_numbers_match_by_their_json_text() -> None:
    # AWS: "300, 300.0, and 3.0e2 are not considered equal" (exact matching).
    c = criteria({"value": {"n": [300]}})
    assert c.matches(record(b'{"n": 300}'))
    assert not c.matches(record(b'{"n": 300.0}'))
    assert not c.matches(record(b'{"n": 3.0e2}'))
    # numeric compares values.
    n = criteria({"value": {"n": [{"numeric": ["=", 300]}]}})
    assert all(n.matches(record(v)) for v in (b'{"n": 300}', b'{"n": 300.0}', b'{"n": 3.0e2}'))


def test_exists_works_on_leaves_only() -> None:
    # AWS's example: "address" is an intermediate node, so it does not "exist".
    person = {"person": {"name": "John Doe", "address": {"city": "Anytown"}}}
    assert not criteria({"value": {"person": {"address": [{"exists": True}]}}}).matches(
        jrec(person)
    )
    assert criteria({"value": {"person": {"name": [{"exists": True}]}}}).matches(jrec(person))


def test_filters_are_ored() -> None:
    c = criteria({"value": {"a": ["1"]}}, {"value": {"b": ["2"]}})
    assert c.matches(jrec({"a": "1"}))
    assert c.matches(jrec({"b": "2"}))
    assert not c.matches(jrec({"a": "2", "b": "1"}))


# --------------------------------------------------------------------------------------------
# Metadata, as AWS's event shows it


def test_metadata_fields() -> None:
    r = record(
        b"x",
        topic="orders",
        partition=3,
        offset=42,
        key=b"acct-1",
        headers=(("type", b"created"), ("trace", None)),
        timestamp_type="LOG_APPEND_TIME",
    )
    assert criteria({"topic": ["orders"], "partition": [3]}).matches(r)
    assert not criteria({"topic": ["orders"], "partition": [4]}).matches(r)
    assert criteria({"offset": [{"numeric": [">=", 40]}]}).matches(r)
    assert criteria({"timestampType": ["LOG_APPEND_TIME"]}).matches(r)
    assert criteria({"key": [base64.b64encode(b"acct-1").decode()]}).matches(r)
    assert criteria({"key": [{"exists": False}]}).matches(record(b"x"))
    # Headers as AWS sends them: [{name: [byte, ...]}], a null value as {}.
    assert criteria({"headers": {"type": [ord("c")]}}).matches(r)
    assert criteria({"headers": {"type": [{"exists": True}]}}).matches(r)
    assert not criteria({"headers": {"trace": [{"exists": True}]}}).matches(r)


def test_tombstones_have_a_null_value() -> None:
    tomb = record(None)
    assert criteria({"value": [None]}).matches(tomb)
    assert not criteria({"value": [None]}).matches(record(b"x"))
    assert not criteria({"value": [{"prefix": "a"}]}).matches(tomb)
    # A JSON pattern does not speak a tombstone's format: metadata only.
    assert criteria({"value": {"a": ["1"]}}).matches(tomb)


def test_value_inside_or_is_matched_as_it_is() -> None:
    c = criteria({"$or": [{"value": {"kind": ["a"]}}, {"topic": ["audit"]}]})
    assert c.matches(jrec({"kind": "a"}))
    assert c.matches(record(b"plain", topic="audit"))
    assert not c.matches(record(b"plain"))


# --------------------------------------------------------------------------------------------
# Parsing, limits, errors


def test_empty_criteria_match_everything() -> None:
    for text in ("{}", '{"Filters": []}', '{"Filters": null}'):
        c = parse_filter_criteria(text)
        assert c.filters == ()
        assert c.matches(record(b"anything"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "must be an object"),
        ("{", "not valid JSON"),
        ('{"Filter": []}', "unknown key(s) ['Filter']"),
        ('{"Filters": {}}', "Filters must be a list"),
        ('{"Filters": [{"pattern": "{}"}]}', "Filters[0] must be"),
        ('{"Filters": [{"Pattern": 1}]}', "Filters[0].Pattern must be a string"),
        ('{"Filters": [{"Pattern": "x"}]}', "Filters[0].Pattern: not valid JSON"),
        ('{"Filters": [{"Pattern": "{}"}]}', "non-empty JSON object"),
        ('{"Filters": [{"Pattern": "[1]"}]}', "non-empty JSON object"),
        ('{"Filters": [{"Pattern": "{\\"a\\": []}"}]}', "at a: an empty list matches nothing"),
        ('{"Filters": [{"Pattern": "{\\"a\\": \\"x\\"}"}]}', "at a: a field takes a list"),
        ('{"Filters": [{"Pattern": "{\\"a\\": [[1]]}"}]}', "at a[0]: a rule is"),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"prefx\\": \\"x\\"}]}"}]}',
            "unknown operator 'prefx'",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"wildcard\\": \\"x*\\"}]}"}]}',
            "'wildcard' is an EventBridge operator",
        ),
        ('{"Filters": [{"Pattern": "{\\"a\\": [{\\"prefix\\": 1}]}"}]}', "prefix takes a string"),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"exists\\": 1}]}"}]}',
            "exists takes true or false",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"numeric\\": [\\"<\\", \\"1\\"]}]}"}]}',
            "numeric bounds",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"numeric\\": [\\"~\\", 1]}]}"}]}',
            "numeric operator",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"numeric\\": [\\">\\", 1, \\">\\", 2]}]}"}]}',
            "one lower",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"numeric\\": [\\">\\", 6e9]}]}"}]}',
            "between -5e9 and 5e9",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"anything-but\\": []}]}"}]}',
            "anything-but takes",
        ),
        (
            '{"Filters": [{"Pattern": "{\\"a\\": [{\\"anything-but\\": {\\"x\\": 1}}]}"}]}',
            "anything-but takes",
        ),
        ('{"Filters": [{"Pattern": "{\\"$or\\": []}"}]}', "$or takes a non-empty list"),
        ('{"Filters": [{"Pattern": "{\\"value\\": []}"}]}', "at value: an empty list"),
        ('{"Filters": [{"Pattern": "{\\"value\\": 3}"}]}', "at value: takes a list"),
        (
            '{"Filters": [{"Pattern": "{\\"value\\": {\\"a\\": [1]}}"}, '
            '{"Pattern": "{\\"b\\": {}}"}]}',
            "Filters[1].Pattern at b: an empty pattern",
        ),
        ('{"Filters": [{"Pattern": "{\\"a\\": [NaN]}"}]}', "not valid JSON"),
    ],
)
def test_errors_name_the_filter_and_the_path(text: str, message: str) -> None:
    with pytest.raises(FilterCriteriaError) as caught:
        parse_filter_criteria(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ConfigError)


def test_limits_are_aws_limits() -> None:
    six = json.dumps({"Filters": [{"Pattern": '{"a": ["1"]}'}] * 6})
    with pytest.raises(FilterCriteriaError, match="6 filters; at most 5"):
        parse_filter_criteria(six)
    parse_filter_criteria(json.dumps({"Filters": [{"Pattern": '{"a": ["1"]}'}] * 5}))
    padding = " " * (MAX_PATTERN_CHARS - len('{"a": ["1"]}'))
    assert parse_filter_criteria(json.dumps({"Filters": [{"Pattern": '{"a": ["1"]}' + padding}]}))
    with pytest.raises(FilterCriteriaError, match="at most 4096 characters"):
        parse_filter_criteria(
            json.dumps({"Filters": [{"Pattern": '{"a": ["1"]}' + padding + " "}]})
        )
    deep = '{"a":' * 40 + '["x"]' + "}" * 40
    with pytest.raises(FilterCriteriaError, match="nested deeper"):
        parse_filter_criteria(json.dumps({"Filters": [{"Pattern": deep}]}))
    with pytest.raises(FilterCriteriaError, match="nested too deeply"):
        parse_filter_criteria(json.dumps({"Filters": [{"Pattern": "[" * 4000}]}))


@given(st.text(max_size=200))
def test_any_text_is_parsed_or_refused_cleanly(text: str) -> None:
    with contextlib.suppress(FilterCriteriaError):
        parse_filter_criteria(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_any_json_pattern_is_compiled_or_refused_cleanly(pattern: Any) -> None:
    text = json.dumps({"Filters": [{"Pattern": json.dumps(pattern)}]})
    try:
        c = parse_filter_criteria(text)
    except FilterCriteriaError:
        return
    c.matches(jrec({"a": 1, "": [None, "x"]}))  # compiled patterns never raise on records


# --------------------------------------------------------------------------------------------
# Properties against Python's own operations

scalars = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=10)


@given(value=scalars, other=scalars)
def test_equals_and_anything_but_are_complements_on_present_scalars(value: Any, other: Any) -> None:
    doc = jrec({"f": value})
    eq = criteria({"value": {"f": [other]}}).matches(doc)
    assert eq == (type(value) is type(other) and value == other)
    if other is not None and not isinstance(other, bool):
        but = criteria({"value": {"f": [{"anything-but": other}]}}).matches(doc)
        assert but == (value is not None and not eq)


@given(text=st.text(max_size=12), prefix=st.text(max_size=4))
def test_prefix_and_suffix_agree_with_python(text: str, prefix: str) -> None:
    doc = jrec({"f": text})
    assert criteria({"value": {"f": [{"prefix": prefix}]}}).matches(doc) == text.startswith(prefix)
    assert criteria({"value": {"f": [{"suffix": prefix}]}}).matches(doc) == text.endswith(prefix)


@given(
    n=st.integers(-1000, 1000) | st.floats(-1000, 1000, allow_nan=False),
    lo=st.integers(-1000, 1000),
    hi=st.integers(-1000, 1000),
)
def test_numeric_ranges_agree_with_python(n: float, lo: int, hi: int) -> None:
    doc = jrec({"f": n})
    assert criteria({"value": {"f": [{"numeric": [">=", lo, "<", hi]}]}}).matches(doc) == (
        lo <= n < hi
    )
    assert criteria({"value": {"f": [{"numeric": ["=", lo]}]}}).matches(doc) == (n == lo)


# --------------------------------------------------------------------------------------------
# The subscription option


def test_filter_criteria_option_is_validated_naming_the_option() -> None:
    good = json.dumps({"Filters": [{"Pattern": '{"value": {"kind": ["a"]}}'}]})
    validate_options({"filter.criteria": good})
    bad = json.dumps({"Filters": [{"Pattern": '{"value": {"kind": [{"prefx": "a"}]}}'}]})
    with pytest.raises(ConfigError) as caught:
        validate_options({"filter.criteria": bad})
    message = str(caught.value)
    assert "'filter.criteria'" in message
    assert "Filters[0].Pattern at value.kind[0]: unknown operator 'prefx'" in message
    assert len(message) < 2000  # the raw value is shown shortened


def test_filter_criteria_option_resolves_to_a_compiled_matcher() -> None:
    good = json.dumps({"Filters": [{"Pattern": '{"value": {"kind": ["a"]}}'}]})
    resolved = resolve_options(
        subscription_id="sub_1",
        bootstrap_servers=["h:9092"],
        cluster_options={"msk.cluster.arn": "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc-1"},
        subscription_options={"filter.criteria": good},
    )
    compiled = resolved.ingress.filter_criteria
    assert compiled is not None
    assert compiled.matches(jrec({"kind": "a"}))
    assert not compiled.matches(jrec({"kind": "b"}))
    assert (
        resolved.ingress.msk_cluster_arn == "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc-1"
    )
    empty = resolve_options(
        subscription_id="sub_1",
        bootstrap_servers=["h:9092"],
        cluster_options={},
        subscription_options={"filter.criteria": "{}"},
    )
    assert empty.ingress.filter_criteria is None


@pytest.mark.parametrize(
    "arn",
    ["arn:aws:kafka:us-east-1:123:cluster/c/x", "arn:aws:sqs:us-east-1:123456789012:q", "x"],
)
def test_msk_cluster_arn_is_checked(arn: str) -> None:
    with pytest.raises(ConfigError, match=r"'msk\.cluster\.arn': expected an MSK cluster ARN"):
        validate_options({"msk.cluster.arn": arn})
