"""Success pages against the moto server: what is written, and every read that must see it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from adapter.model import LedgerEntry
from adapter.store.dynamo import DynamoStore
from adapter.store.tables import TableNames


def _entry(offset: int, partition: int = 0, **changes: Any) -> LedgerEntry:
    entry = LedgerEntry(
        id=f"inv_p{partition}o{offset:05d}",
        subscription_id="sub_1",
        topic="orders",
        partition=partition,
        offset=offset,
        key=f"k{offset % 7}",
        target="service://Orders/handle",
        status="SUCCEEDED",
        attempts=1,
        created_at_ms=1_700_000_000_000 + offset,
        updated_at_ms=1_700_000_000_500 + offset,
        completed_at_ms=1_700_000_000_500 + offset,
    )
    return replace(entry, **changes)


@pytest.fixture
async def paging(
    store: DynamoStore, dynamo_client: Any, table_names: TableNames
) -> AsyncIterator[DynamoStore]:
    """A second store on the same tables, recording successes in pages."""
    s = DynamoStore(dynamo_client, table_names, success_pages=True)
    yield s
    await s.aclose()


async def test_successes_go_to_pages_and_everything_else_to_rows(
    paging: DynamoStore, store: DynamoStore
) -> None:
    successes = [_entry(o, o % 2) for o in range(200)]
    failed = _entry(200, 0, status="DEAD_LETTERED", last_error="bad", dead_letter_topic="dlq")
    retried = _entry(201, 1, attempts=3)
    before = paging.requests

    await paging.write_entries([*successes, failed, retried])

    # 200 successes of 2 partitions: two page items and two rows, one BatchWriteItem.
    assert paging.requests - before == 1
    assert await store.get_statuses(e.id for e in [*successes, failed, retried]) == {
        failed.id: "DEAD_LETTERED",
        retried.id: "SUCCEEDED",
    }
    assert await store.get_entry(failed.id) == failed
    assert await store.paged_offsets("sub_1", "orders", 0, 0, 1_000) == set(range(0, 200, 2))
    assert await store.paged_offsets("sub_1", "orders", 1, 51, 99) == set(range(51, 100, 2))
    assert await store.paged_offsets("sub_1", "orders", 1, 300, 400) == set()
    assert await store.paged_offsets("sub_2", "orders", 1, 0, 400) == set()


async def test_a_retried_write_puts_the_same_page_again_not_a_second_one(
    paging: DynamoStore, store: DynamoStore
) -> None:
    batch = [_entry(o) for o in range(5)]
    await paging.write_entries(batch)
    await paging.write_entries(batch)  # the writer retries a batch whose answer was lost

    assert await store.delete_entries_from("sub_1", "orders", 0, 0) == 5


async def test_a_success_replacing_an_earlier_owners_row_is_written_as_a_row(
    paging: DynamoStore, store: DynamoStore
) -> None:
    backing_off = _entry(7, status="BACKING_OFF", attempts=1, last_error="503")
    await store.write_entries([backing_off])
    success = replace(_entry(7), replaces_row=True)

    await paging.write_entries([success])

    assert await store.get_statuses([success.id]) == {success.id: "SUCCEEDED"}
    assert await store.paged_offsets("sub_1", "orders", 0, 0, 100) == set()


async def test_the_fence_counts_pages_and_listings_never_show_them(
    paging: DynamoStore, store: DynamoStore
) -> None:
    await paging.write_entries(
        [_entry(o) for o in range(10)] + [_entry(3, 1, status="FAILED", attempts=2)]
    )

    assert await store.highest_recorded_offset("sub_1", "orders", 0) == 9
    assert await store.highest_recorded_offset("sub_1", "orders", 1) == 3
    listed, _ = await store.find_entries(subscription_id="sub_1")
    scanned, _ = await store.find_entries()
    assert [e.id for e in listed] == [e.id for e in scanned] == ["inv_p1o00003"]
    assert [e.id for e in await store.scan_entries()] == ["inv_p1o00003"]


async def test_resetting_offsets_drops_paged_successes_at_and_above_the_offset(
    paging: DynamoStore, store: DynamoStore
) -> None:
    await paging.write_entries([_entry(o) for o in range(10)])
    await paging.write_entries([_entry(o) for o in range(10, 20)])
    await paging.write_entries([_entry(o) for o in range(20, 30)])
    failed = [_entry(o, status="FAILED", attempts=2) for o in (12, 30, 31)]
    await paging.write_entries(failed)

    assert await store.delete_entries_from("sub_1", "orders", 0, 15) == 15 + 2

    assert await store.paged_offsets("sub_1", "orders", 0, 0, 100) == set(range(15))
    assert await store.highest_recorded_offset("sub_1", "orders", 0) == 14
    assert await store.get_statuses(e.id for e in failed) == {failed[0].id: "FAILED"}


async def test_listing_merges_pages_at_one_position_and_its_cursor_stays_exact(
    paging: DynamoStore,
) -> None:
    # Two pollers paging overlapping offsets within the index's lag: two pages, one position.
    await paging.write_entries([_entry(o) for o in (1, 5, 10)])
    await paging.write_entries([_entry(o) for o in (1, 3, 10)])
    await paging.write_entries([_entry(o) for o in (11, 12)])

    listed: list[int] = []
    after = None
    for _ in range(10):
        found, more = await paging.paged_successes(
            "sub_1", target="service://Orders/handle", after=after, limit=2
        )
        listed += [entry.offset for entry, _ in found]
        if not more:
            break
        entry, page_position = found[-1]
        after = (page_position, entry.offset)
    assert listed == [1, 3, 5, 10, 11, 12]
    found, more = await paging.paged_successes("sub_1", target="t", limit=100)
    assert not more
    assert found[0][0].id != found[1][0].id
