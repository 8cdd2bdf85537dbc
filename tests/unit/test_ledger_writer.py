"""The ledger writer: its flush (every row submitted before the call, durable) and rows the
store refuses (never retried forever, never holding up the rest of their batch)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import pytest

from adapter.engine.ledger import LedgerWriter
from adapter.errors import ItemTooLargeError, StoreError
from adapter.model import LedgerEntry
from adapter.testing import FakeStore


class _SlowStore(FakeStore):
    """Each ledger write takes a while, as DynamoDB's do."""

    async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
        await asyncio.sleep(0.01)
        await super().write_entries(entries)


def _row(n: int) -> LedgerEntry:
    return LedgerEntry(f"inv-{n}", "sub", "t@x", 0, n, None, "t", "SUCCEEDED")


@contextlib.asynccontextmanager
async def _writer(store: FakeStore) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(store, linger_s=0, max_batch=5, concurrency=2)
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_flush_waits_for_the_rows_submitted_before_it_not_after() -> None:
    # A revocation flushes the ledger before it commits; results of other partitions keep
    # coming, so a writer that is never idle must not hold the revocation up.
    store = _SlowStore()
    async with _writer(store) as writer:
        for n in range(20):
            writer.submit(_row(n))
        stop = asyncio.Event()

        async def keep_submitting() -> None:
            n = 1_000
            while not stop.is_set():
                writer.submit(_row(n))
                n += 1
                await asyncio.sleep(0.002)

        feeding = asyncio.create_task(keep_submitting())
        try:
            await asyncio.wait_for(writer.flushed(), 2)
            assert all(f"inv-{n}" in store.rows for n in range(20))
            assert writer.pending > 0, "the writer was idle: this proves nothing"
        finally:
            stop.set()
            await feeding


async def test_a_flush_with_nothing_pending_returns_at_once() -> None:
    async with _writer(FakeStore()) as writer:
        await asyncio.wait_for(writer.flushed(), 0.1)


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_batches_finishing_out_of_order_flush_only_when_all_earlier_are_durable(
    concurrency: int,
) -> None:
    release_first = asyncio.Event()

    class FirstWriteSlow(FakeStore):
        calls = 0

        async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
            FirstWriteSlow.calls += 1
            if FirstWriteSlow.calls == 1:
                await release_first.wait()
            await super().write_entries(entries)

    store = FirstWriteSlow()
    writer = LedgerWriter(store, linger_s=0, max_batch=1, concurrency=concurrency)
    task = asyncio.create_task(writer.run())
    try:
        for n in range(3):
            writer.submit(_row(n))
        flush = asyncio.create_task(writer.flushed())
        await asyncio.sleep(0.05)  # an observation window: later batches may finish
        assert not flush.done(), "flushed before the first row was durable"
        release_first.set()
        await asyncio.wait_for(flush, 1)
        assert len(store.rows) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- rows the store refuses ---------------------------------------------------------------------

_ITEM_LIMIT = 400 * 1024


def _too_large(entry: LedgerEntry) -> bool:
    return entry.key is not None and len(entry.key.encode()) > _ITEM_LIMIT


def _refusal() -> ItemTooLargeError:
    return ItemTooLargeError(
        "write invocation ledger: HTTP 400 ValidationException: "
        "Item size has exceeded the maximum allowed size"
    )


class _ItemLimitStore(FakeStore):
    """Refuses rows as DynamoDB does: one row over the item limit fails its whole
    BatchWriteItem, a progress row's PutItem on its own."""

    async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
        if any(_too_large(e) for e in entries):
            raise _refusal()
        await super().write_entries(entries)

    async def write_progress(self, entry: LedgerEntry) -> bool:
        if _too_large(entry):
            raise _refusal()
        return await super().write_progress(entry)


def _final(n: int, **changes: Any) -> LedgerEntry:
    return replace(_row(n), attempts=1, completed_at_ms=1, **changes)


_HUGE_KEY = "k" * 450_000


@pytest.mark.promise("p-fault-ledger-row-refused")
async def test_a_progress_row_refused_as_too_large_does_not_stop_the_writer() -> None:
    # The reviewer's probe: the refusal killed the batch's task, so row 0's offset never
    # finished and flushed() returned as if it were durable.
    store = _ItemLimitStore()
    store.topics.add(("sub", "t@x"))
    durable: list[int] = []
    async with _writer(store) as writer:
        writer.submit(_final(0), lambda: durable.append(0))
        writer.submit(replace(_row(1), status="BACKING_OFF", attempts=1, key=_HUGE_KEY))
        writer.submit(_final(2), lambda: durable.append(2))
        await asyncio.wait_for(writer.flushed(), 2)
        assert durable == [0, 2]
        writer.submit(_final(3), lambda: durable.append(3))  # the writer still writes
        await asyncio.wait_for(writer.flushed(), 2)
        assert durable == [0, 2, 3]
        assert writer.pending == 0
    progress = store.rows["inv-1"]
    assert progress.status == "BACKING_OFF"
    assert progress.key is not None
    assert len(progress.key) < 1_000  # reduced, marked
    assert progress.key.startswith("kkk")
    assert "cut" in progress.key
    assert (writer.reduced, writer.refused) == (1, 0)


@pytest.mark.promise("p-fault-ledger-row-refused")
async def test_a_final_row_refused_as_too_large_is_written_reduced_and_its_batch_durable() -> None:
    # DynamoDB refuses the whole BatchWriteItem; re-sending it forever wedged all its rows.
    store = _ItemLimitStore()
    store.topics.add(("sub", "t@x"))
    durable: list[int] = []
    async with _writer(store) as writer:
        for n in range(5):
            key = _HUGE_KEY if n == 3 else f"key-{n}"
            writer.submit(
                _final(n, key=key, status="FAILED", last_error="handler said no"),
                partial(durable.append, n),
            )
        await asyncio.wait_for(writer.flushed(), 2)
        assert sorted(durable) == [0, 1, 2, 3, 4]
    assert {n: store.rows[f"inv-{n}"].key for n in (0, 1, 2, 4)} == {
        n: f"key-{n}" for n in (0, 1, 2, 4)
    }
    reduced = store.rows["inv-3"]
    assert reduced.status == "FAILED"
    assert reduced.key is not None
    assert len(reduced.key) < 1_000
    assert reduced.last_error is not None
    assert reduced.last_error.startswith("handler said no")
    assert "ledger row reduced" in reduced.last_error
    assert (writer.reduced, writer.refused) == (1, 0)


@pytest.mark.promise("p-fault-ledger-row-refused")
@pytest.mark.parametrize("error", [_refusal(), RuntimeError("a bug in the store")])
async def test_a_row_refused_in_every_form_keeps_only_its_own_offset_unfinished(
    error: Exception,
) -> None:
    class RefusesRow2(FakeStore):
        async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
            if any(e.id == "inv-2" for e in entries):
                raise error
            await super().write_entries(entries)

    store = RefusesRow2()
    store.topics.add(("sub", "t@x"))
    durable: list[int] = []
    async with _writer(store) as writer:
        for n in range(5):
            writer.submit(_final(n), partial(durable.append, n))
        await asyncio.wait_for(writer.flushed(), 2)
        # Its result is not in the ledger, so its offset must never be committed past.
        assert sorted(durable) == [0, 1, 3, 4]
        writer.submit(_final(5), partial(durable.append, 5))
        await asyncio.wait_for(writer.flushed(), 2)
        assert sorted(durable) == [0, 1, 3, 4, 5]
    assert "inv-2" not in store.rows
    assert writer.refused == 1
    assert writer.pending == 0


async def test_store_errors_are_still_retried_until_the_rows_are_written() -> None:
    class Unreachable(FakeStore):
        left = 2

        async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
            if Unreachable.left:
                Unreachable.left -= 1
                raise StoreError("write invocation ledger: connection refused")
            await super().write_entries(entries)

    store = Unreachable()
    durable: list[int] = []
    async with _writer(store) as writer:
        writer.submit(_final(0), partial(durable.append, 0))
        await asyncio.wait_for(writer.flushed(), 5)
    assert durable == [0]
    assert writer.failures == 2
    assert writer.healthy
    assert writer.reduced == writer.refused == 0


async def test_rows_whose_write_was_cancelled_are_counted_as_abandoned() -> None:
    # A flush then returns although nobody knows whether DynamoDB has them: a revocation
    # must not hand those records over as known.
    writing = asyncio.Event()

    class Stuck(FakeStore):
        async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
            writing.set()
            await asyncio.Event().wait()

    writer = LedgerWriter(Stuck(), linger_s=0, max_batch=5)
    task = asyncio.create_task(writer.run())
    for n in range(3):
        writer.submit(_row(n), lambda: pytest.fail("not durable"))
    flush = asyncio.create_task(writer.flushed())
    await asyncio.wait_for(writing.wait(), 2)
    assert writer.pending == 3
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.wait_for(flush, 1)
    assert writer.abandoned == 3
