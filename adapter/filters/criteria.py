"""Lambda event filtering for Kafka records: AWS's ``FilterCriteria``, compiled once.

A subscription's ``filter.criteria`` option takes exactly the JSON AWS's event source mapping
takes, ``{"Filters": [{"Pattern": "<pattern as a JSON string>"}]}``. Filters are OR'ed: a
record is invoked if any pattern matches it, otherwise it is committed without an invocation.
:func:`parse_filter_criteria` validates everything up front (every error names the filter and
the path inside its pattern); :meth:`FilterCriteria.matches` then costs microseconds.

Patterns are EventBridge's, as Lambda uses them (:mod:`adapter.filters.patterns`).

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
from dataclasses import dataclass
from typing import Any, Final

from adapter.filters.patterns import (
    MISSING,
    FilterCriteriaError,
    JsonNumber,
    Pattern,
    PatternCompiler,
    Rule,
    loads_json,
    nested_matches,
)
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
        "partition": JsonNumber(str(record.partition)),
        "offset": JsonNumber(str(record.offset)),
        "timestamp": JsonNumber(str(record.timestamp_ms)),
        "timestampType": record.timestamp_type,
    }
    if headers:
        fields["headers"] = [
            {name: [JsonNumber(str(b)) for b in value]} if value is not None else {}
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
        parsed = loads_json(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        fields["value"] = parsed
        return _Doc(fields, "json")
    fields["value"] = text
    return _Doc(fields, "plain")


@dataclass(frozen=True, slots=True)
class _Filter:
    """One pattern, split into its ``value`` part and the rest (metadata)."""

    metadata: Pattern
    value_json: Pattern | None  # the pattern for a JSON object value
    value_rules: tuple[Rule, ...] | None  # the rules for a plain string value

    def matches(self, doc: _Doc) -> bool:
        if not self.metadata.matches(doc.fields):
            return False
        if self.value_json is not None and doc.value_kind == "json":
            return nested_matches(self.value_json, doc.fields["value"])
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
    compiler = PatternCompiler(where)
    if len(pattern_text) > MAX_PATTERN_CHARS:
        raise compiler.fail("", f"a pattern is at most {MAX_PATTERN_CHARS} characters")
    try:
        parsed = loads_json(pattern_text)
    except RecursionError:
        raise compiler.fail("", "the pattern is nested too deeply") from None
    except ValueError as exc:
        raise compiler.fail("", f"not valid JSON ({exc})") from None
    if not isinstance(parsed, dict) or not parsed:
        raise compiler.fail("", "a pattern must be a non-empty JSON object")
    value = parsed.pop("value", MISSING)
    metadata = compiler.pattern(parsed, "")
    value_json: Pattern | None = None
    value_rules: tuple[Rule, ...] | None = None
    if isinstance(value, dict):
        value_json = compiler.pattern(value, "value", 1)
    elif isinstance(value, list):
        if not value:
            raise compiler.fail("value", "an empty list matches nothing; give at least one rule")
        value_rules = tuple(compiler.rule(r, f"value[{i}]") for i, r in enumerate(value))
    elif value is not MISSING:
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


def _names_headers(pattern: Pattern) -> bool:
    return any(name == "headers" for name, _ in pattern.fields) or any(
        _names_headers(alt) for alt in pattern.alternatives
    )
