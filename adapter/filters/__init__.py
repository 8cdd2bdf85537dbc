"""Lambda event filtering (``filter.criteria``): AWS's ``FilterCriteria`` over Kafka records.

:mod:`adapter.filters.patterns` is EventBridge's pattern language; :mod:`adapter.filters.criteria`
applies it to records as AWS's Kafka event shows them.
"""

from adapter.filters.criteria import (
    MAX_FILTERS,
    MAX_PATTERN_CHARS,
    FilterCriteria,
    FilterCriteriaError,
    parse_filter_criteria,
    record_document,
)

__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "FilterCriteria",
    "FilterCriteriaError",
    "parse_filter_criteria",
    "record_document",
]
