"""EventBridge's event-pattern language, as Lambda's event filtering uses it: compiled once.

A pattern is a JSON object; :class:`PatternCompiler` turns it into a :class:`Pattern` whose
``matches(document)`` is a handful of Python comparisons, and names the path of any error.
The rules (docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html, "Filter rule
syntax"):

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

An array in the document matches if any element does. ``wildcard`` and ``cidr`` are
EventBridge operators that Lambda's documentation does not list; they are refused, not guessed
at. Documents are parsed with :func:`loads_json`, which keeps numbers as :class:`JsonNumber`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from adapter.errors import ConfigError

__all__ = [
    "MISSING",
    "FilterCriteriaError",
    "JsonNumber",
    "Pattern",
    "PatternCompiler",
    "Rule",
    "loads_json",
    "nested_matches",
]

MAX_DEPTH: Final = 32
# EventBridge's numeric matching range.
_NUMERIC_LIMIT: Final = 5.0e9
# A field the document does not have.
MISSING: Final = object()


class FilterCriteriaError(ConfigError):
    """The FilterCriteria JSON is invalid; the message names the filter and the path."""


class JsonNumber:
    """A JSON number: its text (for exact matching, as AWS compares numbers) and its value."""

    __slots__ = ("text", "value")

    def __init__(self, text: str) -> None:
        self.text = text
        self.value = float(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


def loads_json(text: str) -> Any:
    """JSON with numbers kept as :class:`JsonNumber` (their text decides exact matches)."""
    return json.loads(text, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=_refuse)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


Rule = Callable[[Any], bool]


def _leaves(value: Any) -> list[Any]:
    """The values a rule is tried against: an array's elements, else the value itself."""
    return list(value) if isinstance(value, list) else [value]


def _any_leaf(test: Callable[[Any], bool]) -> Rule:
    def rule(value: Any) -> bool:
        if value is MISSING:
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


class PatternCompiler:
    """Turns one parsed pattern into a matcher, collecting the path for error messages."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> FilterCriteriaError:
        at = f" at {path}" if path else ""
        return FilterCriteriaError(f"{self.where}{at}: {problem}")

    # -- structure

    def pattern(self, node: Any, path: str, depth: int = 0) -> Pattern:
        if not isinstance(node, dict):
            raise self.fail(path, "a pattern must be a JSON object")
        if depth > MAX_DEPTH:
            raise self.fail(path, f"nested deeper than {MAX_DEPTH} levels")
        fields: list[tuple[str, Pattern | list[Rule]]] = []
        alternatives: list[Pattern] = []
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
        return Pattern(tuple(fields), tuple(alternatives))

    # -- rules

    def rule(self, node: Any, path: str) -> Rule:
        if node is None or isinstance(node, str | JsonNumber):
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
        if not values or not all(isinstance(v, str | JsonNumber) for v in values):
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
            if not isinstance(number, JsonNumber) or not -_NUMERIC_LIMIT <= number.value <= (
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
                isinstance(v, JsonNumber)
                and math.isfinite(v.value)
                and all(check(v.value, n) for check, n in checks)
            )
        )


def _exists(value: Any) -> bool:
    # Leaves only: an object (an intermediate node) does not "exist" for Lambda.
    return value is not MISSING and not isinstance(value, dict)


def _absent(value: Any) -> bool:
    return value is MISSING


@dataclass(frozen=True, slots=True)
class Pattern:
    fields: tuple[tuple[str, Pattern | list[Rule]], ...]
    alternatives: tuple[Pattern, ...]

    def matches(self, doc: Any) -> bool:
        for name, sub in self.fields:
            value = doc.get(name, MISSING) if isinstance(doc, dict) else MISSING
            if isinstance(sub, Pattern):
                if not nested_matches(sub, value):
                    return False
            elif not any(rule(value) for rule in sub):
                return False
        return not self.alternatives or any(alt.matches(doc) for alt in self.alternatives)


def nested_matches(pattern: Pattern, value: Any) -> bool:
    # A nested pattern over a list of objects matches if any object matches.
    if isinstance(value, list):
        return any(pattern.matches(item) for item in value if isinstance(item, dict))
    if isinstance(value, dict):
        return pattern.matches(value)
    # A missing field only matches a nested pattern made of "exists": false rules.
    return pattern.matches({})
