"""Lambda event filtering for Kafka records: AWS's ``FilterCriteria``, compiled once.

A subscription's ``filter.criteria`` option takes exactly the JSON AWS's event source mapping
takes, ``{"Filters": [{"Pattern": "<pattern as a JSON string>"}]}``. Filters are OR'ed: a
record is invoked if any pattern matches it, otherwise it is committed without an invocation.
:func:`parse_filter_criteria` validates everything up front (every error names the filter and
the path inside its pattern); :meth:`FilterCriteria.matches` then costs microseconds.

Patterns follow Lambda's filter rule syntax, EventBridge's event patterns (sources:
docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html, ".../kafka-filtering.html"):

    "f": [ "a", 1, null ]            equals (strings exactly; numbers by their JSON text, so
                                     300, 300.0 and 3.0e2 differ), null = the field is null
    "f": [ "" ]                      empty string
    "f": [ {"equals-ignore-case": "a"} ]
    "f": [ {"prefix": "us-"} ]       also {"prefix": {"equals-ignore-case": "us-"}}
    "f": [ {"suffix": ".png"} ]      also {"suffix": {"equals-ignore-case": ".PNG"}}
    "f": [ {"anything-but": "x"} ]   also a list, a number, {"prefix": …}, {"suffix": …},
                                     {"equals-ignore-case": "x" | [...]}
    "f": [ {"numeric": [">", 0, "<=", 5]} ]   one bound, two bounds, or ["=", n]
    "f": [ {"exists": true|false} ]  leaves only: an object field never "exists"
    "a": {"b": [...]}, "c": [...]    nested fields; fields AND'ed, a list's rules OR'ed
    "$or": [ {...}, {...} ]          alternatives at any level

An array in the record matches if any element does. ``wildcard`` and ``cidr`` are EventBridge
operators that Lambda's documentation does not list; they are refused, not guessed at.

What a pattern sees of a record is the record as AWS's Kafka event carries it: ``topic``,
``partition``, ``offset``, ``timestamp``, ``timestampType``, ``key`` (base64), ``headers``
(``[{name: [byte, ...]}]``) and ``value``. ``value`` is decoded as UTF-8 and, if it is a JSON
object, matched as JSON (an object pattern); otherwise as a plain string (a list pattern). As
AWS's table says, when the record's format and the pattern's format for ``value`` differ — or
the value is not UTF-8 — only the other (metadata) parts of that pattern are evaluated. AWS
documents filtering on ``value`` only for Kafka; the metadata fields are an extension here.

Limits as AWS's: at most 5 filters (AWS's default quota), each pattern at most 4096 characters.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from adapter.errors import ConfigError
from adapter.model import KafkaRecord

__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "FilterCriteria",
    "FilterCriteriaError",
    "parse_filter_criteria",
    "record_document",
]

MAX_FILTERS: Final = 5
MAX_PATTERN_CHARS: Final = 4096
# The whole criteria: five maximal patterns, escaped, with room for the envelope.
_MAX_CRITERIA_CHARS: Final = 2 * MAX_FILTERS * MAX_PATTERN_CHARS + 1024
_MAX_DEPTH: Final = 32
# EventBridge's numeric matching range.
_NUMERIC_LIMIT: Final = 5.0e9


class FilterCriteriaError(ConfigError):
    """The FilterCriteria JSON is invalid; the message names the filter and the path."""


class _Number:
    """A JSON number: its text (for exact matching, as AWS compares numbers) and its value."""

    __slots__ = ("text", "value")

    def __init__(self, text: str) -> None:
        self.text = text
        self.value = float(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Number) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


def _loads(text: str) -> Any:
    """JSON with numbers kept as :class:`_Number` (their text decides exact matches)."""
    return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_refuse)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --------------------------------------------------------------------------------------------
# The record as a pattern sees it


_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class _Doc:
    """The record's fields, ``value`` included when it can be shown.

    ``value_kind`` is ``json`` (a JSON object), ``plain`` (any other UTF-8 text, or null for a
    tombstone) or ``opaque`` (not UTF-8: no pattern for ``value`` is evaluated).
    """

    fields: dict[str, Any]
    value_kind: str


def record_document(record: KafkaRecord, *, headers: bool = True) -> dict[str, Any]:
    """The record's metadata fields as AWS's Kafka event shows them (without ``value``).

    ``headers=False`` leaves out the headers (costly to build, needed only when a pattern
    names them).
    """
    fields: dict[str, Any] = {
        "topic": record.topic,
        "partition": _Number(str(record.partition)),
        "offset": _Number(str(record.offset)),
        "timestamp": _Number(str(record.timestamp_ms)),
        "timestampType": record.timestamp_type,
    }
    if headers:
        fields["headers"] = [
            {name: [_Number(str(b)) for b in value]} if value is not None else {}
            for name, value in record.headers
        ]
    if record.key is not None:
        fields["key"] = base64.b64encode(record.key).decode("ascii")
    return fields


def _document(record: KafkaRecord, *, headers: bool) -> _Doc:
    fields = record_document(record, headers=headers)
    if record.value is None:
        fields["value"] = None
        return _Doc(fields, "plain")
    try:
        text = record.value.decode("utf-8")
    except UnicodeDecodeError:
        return _Doc(fields, "opaque")
    try:
        parsed = _loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        fields["value"] = parsed
        return _Doc(fields, "json")
    fields["value"] = text
    return _Doc(fields, "plain")


# --------------------------------------------------------------------------------------------
# Compiled rules: each is a predicate over the field's value (or _MISSING)

Rule = Callable[[Any], bool]


def _leaves(value: Any) -> list[Any]:
    """The values a rule is tried against: an array's elements, else the value itself."""
    return list(value) if isinstance(value, list) else [value]


def _any_leaf(test: Callable[[Any], bool]) -> Rule:
    def rule(value: Any) -> bool:
        if value is _MISSING:
            return False
        return any(test(v) for v in _leaves(value))

    return rule


def _equals(expected: Any) -> Rule:
    if expected is None:
        return _any_leaf(lambda v: v is None)
    return _any_leaf(lambda v: type(v) is type(expected) and v == expected)


def _string_test(op: str, operand: str, ignore_case: bool) -> Callable[[Any], bool]:
    folded = operand.casefold()
    if op == "prefix":
        if ignore_case:
            return lambda v: isinstance(v, str) and v.casefold().startswith(folded)
        return lambda v: isinstance(v, str) and v.startswith(operand)
    if op == "suffix":
        if ignore_case:
            return lambda v: isinstance(v, str) and v.casefold().endswith(folded)
        return lambda v: isinstance(v, str) and v.endswith(operand)
    return lambda v: isinstance(v, str) and v.casefold() == folded  # equals-ignore-case


_COMPARE: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class _Compiler:
    """Turns one parsed pattern into a matcher, collecting the path for error messages."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> FilterCriteriaError:
        at = f" at {path}" if path else ""
        return FilterCriteriaError(f"{self.where}{at}: {problem}")

    # -- structure

    def pattern(self, node: Any, path: str, depth: int = 0) -> _Pattern:
        if not isinstance(node, dict):
            raise self.fail(path, "a pattern must be a JSON object")
        if depth > _MAX_DEPTH:
            raise self.fail(path, f"nested deeper than {_MAX_DEPTH} levels")
        fields: list[tuple[str, _Pattern | list[Rule]]] = []
        alternatives: list[_Pattern] = []
        for name, sub in node.items():
            where = f"{path}.{name}" if path else name
            if name == "$or":
                if not isinstance(sub, list) or not sub:
                    raise self.fail(where, "$or takes a non-empty list of patterns")
                alternatives.extend(
                    self.pattern(alt, f"{where}[{i}]", depth + 1) for i, alt in enumerate(sub)
                )
            elif isinstance(sub, dict):
                fields.append((name, self.pattern(sub, where, depth + 1)))
            elif isinstance(sub, list):
                if not sub:
                    raise self.fail(where, "an empty list matches nothing; give at least one rule")
                fields.append((name, [self.rule(r, f"{where}[{i}]") for i, r in enumerate(sub)]))
            else:
                raise self.fail(
                    where, "a field takes a list of rules or a nested pattern (an object)"
                )
        if not fields and not alternatives and path:
            raise self.fail(path, "an empty pattern")
        return _Pattern(tuple(fields), tuple(alternatives))

    # -- rules

    def rule(self, node: Any, path: str) -> Rule:
        if node is None or isinstance(node, str | _Number):
            return _equals(node)
        if isinstance(node, bool):
            return _equals(node)
        if not isinstance(node, dict) or len(node) != 1:
            raise self.fail(
                path,
                "a rule is a string, a number, null, true/false or an object with one operator",
            )
        ((op, operand),) = node.items()
        if op in ("prefix", "suffix"):
            text, ignore_case = self.string_operand(op, operand, path)
            return _any_leaf(_string_test(op, text, ignore_case))
        if op == "equals-ignore-case":
            if not isinstance(operand, str):
                raise self.fail(path, "equals-ignore-case takes a string")
            return _any_leaf(_string_test(op, operand, True))
        if op == "anything-but":
            return self.anything_but(operand, path)
        if op == "numeric":
            return self.numeric(operand, path)
        if op == "exists":
            if not isinstance(operand, bool):
                raise self.fail(path, "exists takes true or false")
            return _exists if operand else _absent
        if op in ("wildcard", "cidr"):
            raise self.fail(
                path,
                f"{op!r} is an EventBridge operator that Lambda's event filtering does not "
                "document; use prefix, suffix, equals-ignore-case, anything-but, numeric or "
                "exists",
            )
        raise self.fail(
            path,
            f"unknown operator {op!r}; Lambda's operators are prefix, suffix, "
            "equals-ignore-case, anything-but, numeric, exists",
        )

    def string_operand(self, op: str, operand: Any, path: str) -> tuple[str, bool]:
        if isinstance(operand, str):
            return operand, False
        if (
            isinstance(operand, dict)
            and len(operand) == 1
            and isinstance(operand.get("equals-ignore-case"), str)
        ):
            return operand["equals-ignore-case"], True
        raise self.fail(path, f"{op} takes a string or {{'equals-ignore-case': <string>}}")

    def anything_but(self, operand: Any, path: str) -> Rule:
        if isinstance(operand, dict):
            if len(operand) == 1:
                ((op, inner),) = operand.items()
                if op in ("prefix", "suffix") and isinstance(inner, str):
                    test = _string_test(op, inner, False)
                    return _any_leaf(lambda v: not test(v))
                if op == "equals-ignore-case":
                    values = inner if isinstance(inner, list) else [inner]
                    if values and all(isinstance(s, str) for s in values):
                        tests = [_string_test(op, s, True) for s in values]
                        return _any_leaf(lambda v: not any(t(v) for t in tests))
            raise self.fail(
                path,
                "anything-but takes a string, a number, a list of them, or one of "
                "{'prefix': s}, {'suffix': s}, {'equals-ignore-case': s or [s, ...]}",
            )
        values = operand if isinstance(operand, list) else [operand]
        if not values or not all(isinstance(v, str | _Number) for v in values):
            raise self.fail(path, "anything-but takes strings or numbers (not null, not empty)")
        excluded = set(values)
        return _any_leaf(lambda v: v is not None and not isinstance(v, dict) and v not in excluded)

    def numeric(self, operand: Any, path: str) -> Rule:
        if not isinstance(operand, list) or len(operand) not in (2, 4):
            raise self.fail(path, "numeric takes [op, n] or [op, n, op, n]")
        bounds: list[tuple[str, float]] = []
        for i in range(0, len(operand), 2):
            op, number = operand[i], operand[i + 1]
            if op not in _COMPARE:
                raise self.fail(path, f"numeric operator must be one of = < <= > >=, got {op!r}")
            if not isinstance(number, _Number) or not -_NUMERIC_LIMIT <= number.value <= (
                _NUMERIC_LIMIT
            ):
                raise self.fail(path, "numeric bounds are numbers between -5e9 and 5e9")
            bounds.append((op, number.value))
        if len(bounds) == 2:
            ops = {bounds[0][0], bounds[1][0]}
            lower, upper = ops & {">", ">="}, ops & {"<", "<="}
            if "=" in ops or len(lower) != 1 or len(upper) != 1:
                raise self.fail(path, "a numeric range is one lower (> or >=) and one upper bound")
        checks = [(_COMPARE[op], n) for op, n in bounds]
        return _any_leaf(
            lambda v: (
                isinstance(v, _Number)
                and math.isfinite(v.value)
                and all(check(v.value, n) for check, n in checks)
            )
        )


def _exists(value: Any) -> bool:
    # Leaves only: an object (an intermediate node) does not "exist" for Lambda.
    return value is not _MISSING and not isinstance(value, dict)


def _absent(value: Any) -> bool:
    return value is _MISSING


@dataclass(frozen=True, slots=True)
class _Pattern:
    fields: tuple[tuple[str, _Pattern | list[Rule]], ...]
    alternatives: tuple[_Pattern, ...]

    def matches(self, doc: Any) -> bool:
        for name, sub in self.fields:
            value = doc.get(name, _MISSING) if isinstance(doc, dict) else _MISSING
            if isinstance(sub, _Pattern):
                if not _nested_matches(sub, value):
                    return False
            elif not any(rule(value) for rule in sub):
                return False
        return not self.alternatives or any(alt.matches(doc) for alt in self.alternatives)


def _nested_matches(pattern: _Pattern, value: Any) -> bool:
    # A nested pattern over a list of objects matches if any object matches.
    if isinstance(value, list):
        return any(pattern.matches(item) for item in value if isinstance(item, dict))
    if isinstance(value, dict):
        return pattern.matches(value)
    # A missing field only matches a nested pattern made of "exists": false rules.
    return pattern.matches({})


@dataclass(frozen=True, slots=True)
class _Filter:
    """One pattern, split into its ``value`` part and the rest (metadata)."""

    metadata: _Pattern
    value_json: _Pattern | None  # the pattern for a JSON object value
    value_rules: tuple[Rule, ...] | None  # the rules for a plain string value

    def matches(self, doc: _Doc) -> bool:
        if not self.metadata.matches(doc.fields):
            return False
        if self.value_json is not None and doc.value_kind == "json":
            return _nested_matches(self.value_json, doc.fields["value"])
        if self.value_rules is not None and doc.value_kind == "plain":
            return any(rule(doc.fields["value"]) for rule in self.value_rules)
        # The value's format and the pattern's differ: AWS evaluates the metadata only.
        return True


@dataclass(frozen=True, slots=True, eq=False)
class FilterCriteria:
    """Compiled filters; ``source`` is the JSON as given (shown back to the user)."""

    source: str
    filters: tuple[_Filter, ...]
    uses_headers: bool = False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterCriteria) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"FilterCriteria({len(self.filters)} filter(s))"

    def matches(self, record: KafkaRecord) -> bool:
        """Whether the record is invoked (any filter matches); no filters match everything."""
        if not self.filters:
            return True
        doc = _document(record, headers=self.uses_headers)
        return any(f.matches(doc) for f in self.filters)


# --------------------------------------------------------------------------------------------
# Parsing


def _compile_filter(pattern_text: str, where: str) -> _Filter:
    compiler = _Compiler(where)
    if len(pattern_text) > MAX_PATTERN_CHARS:
        raise compiler.fail("", f"a pattern is at most {MAX_PATTERN_CHARS} characters")
    try:
        parsed = _loads(pattern_text)
    except RecursionError:
        raise compiler.fail("", "the pattern is nested too deeply") from None
    except ValueError as exc:
        raise compiler.fail("", f"not valid JSON ({exc})") from None
    if not isinstance(parsed, dict) or not parsed:
        raise compiler.fail("", "a pattern must be a non-empty JSON object")
    value = parsed.pop("value", _MISSING)
    metadata = compiler.pattern(parsed, "")
    value_json: _Pattern | None = None
    value_rules: tuple[Rule, ...] | None = None
    if isinstance(value, dict):
        value_json = compiler.pattern(value, "value", 1)
    elif isinstance(value, list):
        if not value:
            raise compiler.fail("value", "an empty list matches nothing; give at least one rule")
        value_rules = tuple(compiler.rule(r, f"value[{i}]") for i, r in enumerate(value))
    elif value is not _MISSING:
        raise compiler.fail("value", "takes a list of rules or a nested pattern (an object)")
    return _Filter(metadata, value_json, value_rules)


def parse_filter_criteria(text: str) -> FilterCriteria:
    """Parse AWS's ``FilterCriteria`` JSON; ``{}`` or no filters means "invoke every record".

    Raises :class:`FilterCriteriaError` naming the filter and the path of the problem.
    """
    if len(text) > _MAX_CRITERIA_CHARS:
        raise FilterCriteriaError(f"FilterCriteria is longer than {_MAX_CRITERIA_CHARS} characters")
    try:
        doc = json.loads(text)
    except RecursionError:
        raise FilterCriteriaError("FilterCriteria is nested too deeply") from None
    except ValueError as exc:
        raise FilterCriteriaError(f"FilterCriteria is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FilterCriteriaError('FilterCriteria must be an object: {"Filters": [...]}')
    unknown = sorted(set(doc) - {"Filters"})
    if unknown:
        raise FilterCriteriaError(f"FilterCriteria has unknown key(s) {unknown}; only 'Filters'")
    filters = doc.get("Filters")
    if filters is None:
        filters = []
    if not isinstance(filters, list):
        raise FilterCriteriaError("Filters must be a list of {'Pattern': <JSON string>}")
    if len(filters) > MAX_FILTERS:
        raise FilterCriteriaError(
            f"{len(filters)} filters; at most {MAX_FILTERS} (AWS's default quota)"
        )
    compiled = []
    for i, entry in enumerate(filters):
        where = f"Filters[{i}].Pattern"
        if not isinstance(entry, dict) or set(entry) != {"Pattern"}:
            raise FilterCriteriaError(f"Filters[{i}] must be {{'Pattern': <JSON string>}}")
        if not isinstance(entry["Pattern"], str):
            raise FilterCriteriaError(f"{where} must be a string holding the pattern's JSON")
        compiled.append(_compile_filter(entry["Pattern"], where))
    uses_headers = any(_names_headers(f.metadata) for f in compiled)
    return FilterCriteria(source=text, filters=tuple(compiled), uses_headers=uses_headers)


def _names_headers(pattern: _Pattern) -> bool:
    return any(name == "headers" for name, _ in pattern.fields) or any(
        _names_headers(alt) for alt in pattern.alternatives
    )
