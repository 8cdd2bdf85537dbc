"""Batched, asynchronous writes to the invocation ledger, off the hot path.

Invocation results are submitted here together with a callback; the writer groups them into
BatchWriteItem requests and calls each callback only once its row is durably written. The
engine finishes a record's offset from that callback, so the committed offset can never pass a
result that is not in the ledger. While DynamoDB is unreachable or throttling, rows wait here and
are re-sent with capped exponential backoff; the engine sees the growing ``pending`` count and
stops fetching (backpressure) instead of buffering without limit.

Only a :class:`~adapter.errors.StoreError` means "try again". Any other exception from the store
-- an :class:`~adapter.errors.ItemTooLargeError` (DynamoDB refused a row for good), or a bug --
is a refusal of the rows that were sent, and re-sending them cannot help. The writer then finds
the refused rows by halving the batch (rows are idempotent, so writing one again is harmless),
writes the rest, and writes each refused row once more in a *reduced* form: the record's key cut
to a short prefix and its error text shortened, with a note saying so. The record's result stays
in the ledger and its offset finishes. A row refused even then (nothing of the record is left in
it that could be too large: the store is broken) is dropped with an error log and counted in
``refused``; its callback is never called, so its offset stays unfinished and the committed
offset never passes it -- only its own partition stops committing there, and the next owner of
the partition runs the record again. Every other row's callback is called once it is durable.
::

    batch ──write──▶ ok ─────────────────────────────────▶ callbacks
      │ StoreError: back off, send again
      │ refused: halve ─▶ … ─▶ one row refused ─▶ reduced ─▶ ok: its callback
      │                                              └──▶ refused: dropped, ``refused += 1``
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from adapter.engine.lifecycle import TERMINAL_STATUSES
from adapter.errors import IngressError, StoreError
from adapter.model import LedgerEntry
from adapter.store.row_limits import key_sha256

__all__ = ["LedgerStore", "LedgerWriter", "reduced_entry", "with_paged_successes"]

log = logging.getLogger(__name__)

_FINAL = frozenset(status.value for status in TERMINAL_STATUSES)


class LedgerStore(Protocol):
    async def write_entries(self, entries: Sequence[LedgerEntry]) -> None: ...

    async def write_progress(self, entry: LedgerEntry) -> bool: ...


def with_paged_successes(
    statuses: dict[str, str], offsets: dict[str, int], paged: set[int]
) -> dict[str, str]:
    """Row statuses with the successes found in pages added; a final status wins over a
    progress row (a revoked poller's late BACKING_OFF next to another poller's success)."""
    merged = dict(statuses)
    for inv_id, offset in offsets.items():
        if offset in paged and merged.get(inv_id) not in _FINAL:
            merged[inv_id] = "SUCCEEDED"
    return merged


def _is_final(entry: LedgerEntry) -> bool:
    return entry.status in _FINAL


_REDUCED_KEY_CHARS = 100
_REDUCED_ERROR_CHARS = 500


def reduced_entry(entry: LedgerEntry, reason: str) -> LedgerEntry:
    """``entry`` with what its record and handler put into it cut short: the key to a marked
    prefix, the error text to its start, followed by a note that the store refused the row
    (``reason``). Everything else -- status, attempts, position, times -- is kept."""
    key, digest = entry.key, entry.key_sha256
    if key is not None and len(key) > _REDUCED_KEY_CHARS:
        # The whole key's hash stays: a lookup by key still finds the row (row_limits).
        key, digest = f"{key[:_REDUCED_KEY_CHARS]}…[cut: {len(key)} characters]", key_sha256(key)
    note = f"[ledger row reduced, the store refused it: {reason[:200]}]"
    error = (
        note if entry.last_error is None else f"{entry.last_error[:_REDUCED_ERROR_CHARS]} {note}"
    )
    return replace(entry, key=key, key_sha256=digest, last_error=error)


OnDurable = Callable[[], None]


class LedgerWriter:
    """Collects ledger rows and writes them in batches from one background task."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        max_batch: int = 250,
        linger_s: float = 0.01,
        concurrency: int = 4,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._max_backoff_s = max_backoff_s
        self._queue: deque[tuple[LedgerEntry, OnDurable | None]] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_progress = 0
        # Rows are numbered in submission order: rows [0, _taken) went into batches, the
        # rest wait in the queue; a batch in flight is known by its first number. So every
        # row below the lowest of those is durable, which is what flushed() waits for.
        self._submitted = 0
        self._taken = 0
        self._in_flight: set[int] = set()
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closing = False
        self.last_error: str | None = None
        self.failures = 0
        self.written = 0
        self.reduced = 0
        """Rows the store refused, written in reduced form (:func:`reduced_entry`)."""
        self.refused = 0
        """Rows the store refused even reduced: dropped, their offsets left unfinished."""
        self.abandoned = 0
        """Rows whose write was cancelled (the writer stopping): DynamoDB may have them or
        not, and no callback told anyone, yet :meth:`flushed` counts them as done."""

    @property
    def pending(self) -> int:
        """Rows submitted but not yet durable."""
        return len(self._queue) + self._in_progress

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    def submit(self, entry: LedgerEntry, on_durable: OnDurable | None = None) -> None:
        if self._closing:
            raise RuntimeError("ledger writer is closed")
        self._queue.append((entry, on_durable))
        self._submitted += 1
        self._wakeup.set()

    async def flushed(self) -> None:
        """Wait until every row submitted so far is durable (not for rows submitted after
        the call: with results still flowing, the writer may never be idle)."""
        target = self._submitted
        if self._durable_through() >= target:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, waiter))
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            self._flush_waiters = [w for w in self._flush_waiters if w[1] is not waiter]

    def _durable_through(self) -> int:
        """Every row numbered below this is durable."""
        lowest = min(self._in_flight, default=self._submitted)
        return min(lowest, self._taken) if self._queue else lowest

    def _wake_flush_waiters(self) -> None:
        through = self._durable_through()
        for target, waiter in self._flush_waiters:
            if target <= through and not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """The writer loop; runs until cancelled. Owned by the engine's task group."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    if self._linger_s and len(self._queue) < self._max_batch:
                        # A short linger turns a trickle of results into full batches. Only the
                        # offset commit waits for the ledger, never an invocation.
                        await asyncio.sleep(self._linger_s)
                await self._slots.acquire()
                batch = [
                    self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))
                ]
                if not batch:
                    self._slots.release()
                    continue
                self._in_progress += len(batch)
                first = self._taken
                self._taken += len(batch)
                self._in_flight.add(first)
                task = asyncio.create_task(self._write(batch, first))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async def _write(self, batch: list[tuple[LedgerEntry, OnDurable | None]], first: int) -> None:
        written = False
        try:
            dropped = await self._write_rows([entry for entry, _ in batch])
            written = True
            self.written += sum(1 for entry, _ in batch if entry.id not in dropped)
            for entry, on_durable in batch:
                if on_durable is None or entry.id in dropped:
                    continue
                try:
                    on_durable()
                except Exception:
                    # A bug in one callback must not leave the rest of the batch
                    # unfinished (their offsets would never commit).
                    log.exception("ledger: a durable-row callback failed")
        finally:
            if not written:
                self.abandoned += len(batch)
            self._in_progress -= len(batch)
            self._in_flight.discard(first)
            self._wake_flush_waiters()
            self._slots.release()
            if self._queue:
                self._wakeup.set()

    async def _write_rows(self, entries: list[LedgerEntry]) -> set[str]:
        """Write a batch's rows; the IDs of those dropped (see the module docstring).

        Final rows go in batches (BatchWriteItem has no conditions); progress rows, which are
        rare (one per retry), are written one by one under a condition so that a late one can
        never overwrite a final status written by this or another poller. A progress row of an
        invocation whose final row is in the same batch is not written at all."""
        # The last row of an ID wins, as in the store: halving must not reorder two of them.
        final = list({e.id: e for e in entries if _is_final(e)}.values())
        final_ids = {e.id for e in final}
        progress = {e.id: e for e in entries if e.id not in final_ids}
        dropped: set[str] = set()
        if final:
            dropped |= await self._write_final(final)
        for entry in progress.values():
            dropped |= await self._write_one(entry, self._store.write_progress)
        return dropped

    async def _write_final(self, rows: list[LedgerEntry]) -> set[str]:
        try:
            await self._retrying(lambda: self._store.write_entries(rows))
        except Exception as exc:
            # One row refused fails its whole request: halve until it stands alone.
            if len(rows) == 1:
                return await self._write_reduced(rows[0], exc, self._write_single)
            half = len(rows) // 2
            return await self._write_final(rows[:half]) | await self._write_final(rows[half:])
        return set()

    async def _write_single(self, entry: LedgerEntry) -> None:
        await self._store.write_entries([entry])

    async def _write_one(
        self, entry: LedgerEntry, write: Callable[[LedgerEntry], Awaitable[object]]
    ) -> set[str]:
        try:
            await self._retrying(lambda: write(entry))
        except Exception as exc:
            return await self._write_reduced(entry, exc, write)
        return set()

    async def _write_reduced(
        self,
        entry: LedgerEntry,
        refusal: Exception,
        write: Callable[[LedgerEntry], Awaitable[object]],
    ) -> set[str]:
        """Write ``entry`` reduced after the store refused it; ``{entry.id}`` if refused again."""
        reason = str(refusal) or type(refusal).__name__
        log.error(
            "ledger: the store refused the row of %s (%s); writing it with its key and error "
            "text cut short",
            entry.id,
            reason,
            exc_info=not isinstance(refusal, IngressError),
        )
        try:
            await self._retrying(lambda: write(reduced_entry(entry, reason)))
        except Exception:
            self.refused += 1
            log.exception(
                "ledger: the store refused the reduced row of %s too; it is not recorded%s",
                entry.id,
                # A progress row has no callback: the final row that follows is what counts.
                " and its offset stays unfinished (its partition commits no further)"
                if _is_final(entry)
                else "",
            )
            return {entry.id}
        self.reduced += 1
        return set()

    async def _retrying(self, write: Callable[[], Awaitable[object]]) -> None:
        """Run ``write`` until it succeeds, backing off after each StoreError; any other
        exception is a refusal and goes to the caller."""
        delay = 0.1
        while True:
            try:
                await write()
            except StoreError as exc:
                self.failures += 1
                if self.last_error is None:
                    log.warning("ledger write failed, will retry: %s", exc)
                self.last_error = str(exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._max_backoff_s)
                continue
            if self.last_error is not None:
                log.info("ledger writes recovered after %d failures", self.failures)
            self.last_error = None
            return
