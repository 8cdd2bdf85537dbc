"""Success pages: grouping, splitting and the position ranges that find them again."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.engine.ledger import with_paged_successes
from adapter.model import LedgerEntry
from adapter.store.pages import (
    MAX_OFFSETS,
    MAX_SPAN,
    build_pages,
    is_pageable,
    page_id,
    page_position,
    parse_page_position,
    range_bounds,
)


def _entry(offset: int, partition: int = 0, **changes: object) -> LedgerEntry:
    entry = LedgerEntry(
        id=f"inv_{partition}_{offset}",
        subscription_id="sub_1",
        topic="orders",
        partition=partition,
        offset=offset,
        key="k",
        target="service://Orders/handle",
        status="SUCCEEDED",
        attempts=1,
        created_at_ms=1_000 + offset,
        updated_at_ms=2_000 + offset,
        completed_at_ms=2_000 + offset,
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


def test_only_first_attempt_successes_without_error_are_pageable() -> None:
    assert is_pageable(_entry(1))
    assert not is_pageable(_entry(1, attempts=2))
    assert not is_pageable(_entry(1, status="DEAD_LETTERED"))
    assert not is_pageable(_entry(1, status="BACKING_OFF"))
    assert not is_pageable(_entry(1, last_error="flaky"))
    assert not is_pageable(_entry(1, replaces_row=True))


def test_a_page_id_is_derived_from_its_partition_and_exact_offsets() -> None:
    (page,) = build_pages([_entry(1), _entry(2)])
    (same,) = build_pages([_entry(2), _entry(1)])
    (other,) = build_pages([_entry(1), _entry(3)])
    (elsewhere,) = build_pages([_entry(1, partition=1), _entry(2, partition=1)])

    assert page_id(page) == page_id(same)
    assert len({page_id(page), page_id(other), page_id(elsewhere)}) == 3
    assert page_id(page).startswith("pg_")


def test_pages_group_by_partition_sorted_with_their_time_range() -> None:
    pages = build_pages([_entry(7), _entry(3, partition=1), _entry(5), _entry(5)])

    assert {(p.partition, p.offsets) for p in pages} == {(0, (5, 7)), (1, (3,))}
    page = next(p for p in pages if p.partition == 0)
    assert (page.created_at_ms, page.completed_at_ms) == (1_005, 2_007)


def test_a_page_never_spans_more_than_max_span_nor_holds_more_than_max_offsets() -> None:
    far = build_pages([_entry(0), _entry(MAX_SPAN), _entry(MAX_SPAN + 1)])
    assert [p.offsets for p in far] == [(0, MAX_SPAN), (MAX_SPAN + 1,)]

    many = build_pages(_entry(o) for o in range(MAX_OFFSETS + 5))
    assert [len(p.offsets) for p in many] == [MAX_OFFSETS, 5]


@given(
    offsets=st.sets(st.integers(0, 3 * MAX_SPAN), min_size=1, max_size=60),
    lo=st.integers(0, 3 * MAX_SPAN),
    width=st.integers(0, MAX_SPAN),
)
def test_range_bounds_select_every_page_that_holds_an_offset_in_the_range(
    offsets: set[int], lo: int, width: int
) -> None:
    hi = lo + width
    low, high = range_bounds("orders", 0, lo, hi)
    found: set[int] = set()
    for page in build_pages(_entry(o) for o in offsets):
        position = page_position(page)
        assert parse_page_position(position) == (page.first, page.last)
        if low <= position <= high and page.first <= hi:
            found.update(o for o in page.offsets if lo <= o <= hi)
    assert found == {o for o in offsets if lo <= o <= hi}


def test_positions_of_other_partitions_and_topics_fall_outside_the_bounds() -> None:
    low, high = range_bounds("orders", 1, 0, 10)
    for page in build_pages(
        [_entry(5, partition=0), _entry(5, partition=2), replace(_entry(5), topic="orders2")]
    ):
        assert not low <= page_position(page) <= high


@pytest.mark.promise("p-ops-progress-never-overwrites")
def test_paged_successes_complete_unknown_and_progress_rows_but_never_replace_final_ones() -> None:
    merged = with_paged_successes(
        {"a": "BACKING_OFF", "b": "DEAD_LETTERED"},
        {"a": 1, "b": 2, "c": 3, "d": 4},
        {1, 2, 3},
    )
    assert merged == {"a": "SUCCEEDED", "b": "DEAD_LETTERED", "c": "SUCCEEDED"}
