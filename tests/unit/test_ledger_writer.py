"""The ledger writer's flush: every row submitted before the call, durable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from adapter.engine.ledger import LedgerWriter
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
