"""Batch mode for Lambda sinks: concurrent invocations of one partition share one call.

The runner already runs many invocations of a subscription at once (service and shared
handlers freely, exclusive handlers across keys). :class:`BatchingInvoker` sits between the
runner and a :class:`BatchInvoker` (the Lambda invoker): it holds each request for at most
``linger_s`` and sends the requests of the same (deployment, handler, topic, partition)
together, up to ``batch_size`` per call, like Lambda's own Kafka trigger. Every request still
gets its own outcome (per-record results), so one bad record fails alone; no engine change.
Each request keeps the send fence of the task that asked (``adapter.invokers.base``): a
request whose fence no longer holds when its batch goes out (the process was paused while it
lingered) is left out and raises :class:`NotSent` to its caller.

:class:`BatchBuffer` is the pure bookkeeping (which requests go together, when a batch is
full); the invoker adds the timers and the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from adapter.invokers.base import (
    InvocationRequest,
    NotSent,
    Outcome,
    SendFence,
    current_fence,
    fence_sends,
)

__all__ = ["BatchBuffer", "BatchInvoker", "BatchingInvoker", "batch_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchInvoker(Protocol):
    async def invoke_batch(
        self, requests: Sequence[InvocationRequest]
    ) -> Sequence[Outcome | NotSent]:
        """One result per request, in order: its outcome, or :class:`NotSent` for a request
        that did not go out (part of a call that was split, the rest of which did). Raises
        NotSent when nothing was sent."""
        ...

    async def aclose(self) -> None: ...


def batch_key(request: InvocationRequest) -> Hashable | None:
    """Requests with equal keys may share a call; ``None`` = never batched (no record)."""
    record = request.record
    if record is None:
        return None
    target = request.target
    return (
        target.deployment.id,
        target.deployment.arn,
        target.service,
        target.handler,
        record.topic,
        record.partition,
    )


@dataclass(slots=True)
class _Group(Generic[T]):
    items: list[T] = field(default_factory=list)


class BatchBuffer(Generic[T]):
    """Groups items by key; ``add`` returns a batch as soon as one is full."""

    def __init__(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._groups: dict[Hashable, _Group[T]] = {}

    def __len__(self) -> int:
        return sum(len(g.items) for g in self._groups.values())

    def add(self, key: Hashable, item: T) -> tuple[bool, list[T] | None]:
        """Add ``item``; returns (opened a new group, the full batch to send now or None)."""
        group = self._groups.get(key)
        opened = group is None
        if group is None:
            group = self._groups[key] = _Group()
        group.items.append(item)
        if len(group.items) >= self.batch_size:
            del self._groups[key]
            return opened, group.items
        return opened, None

    def take(self, key: Hashable) -> list[T]:
        """Everything waiting under ``key`` (the linger expired)."""
        group = self._groups.pop(key, None)
        return group.items if group is not None else []

    def pending_keys(self) -> list[Hashable]:
        return list(self._groups)


_Item = tuple[InvocationRequest, "asyncio.Future[Outcome]", SendFence | None]


class BatchingInvoker:
    """An ``Invoker`` that batches requests per partition for a :class:`BatchInvoker`."""

    def __init__(self, inner: BatchInvoker, *, batch_size: int, linger_s: float = 0.01) -> None:
        if linger_s < 0:
            raise ValueError(f"linger_s must be >= 0, got {linger_s}")
        self.inner = inner
        self.linger_s = linger_s
        self._buffer: BatchBuffer[_Item] = BatchBuffer(batch_size)
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._closed = False
        self.calls = 0

    def __repr__(self) -> str:
        return (
            f"BatchingInvoker(batch_size={self._buffer.batch_size}, linger_s={self.linger_s}, "
            f"inner={self.inner!r})"
        )

    @property
    def batch_size(self) -> int:
        return self._buffer.batch_size

    async def invoke(self, request: InvocationRequest) -> Outcome:
        if self._closed:
            raise RuntimeError("BatchingInvoker is closed")
        key = batch_key(request)
        if key is None or self._buffer.batch_size == 1:
            self.calls += 1
            return _outcome((await self.inner.invoke_batch([request]))[0])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        opened, full = self._buffer.add(key, (request, future, current_fence()))
        if full is not None:
            self._cancel_timer(key)
            self._send(full)
        elif opened:
            self._timers[key] = loop.call_later(self.linger_s, self._linger_expired, key)
        # The call goes on if this invocation is cancelled (revocation); its result is dropped.
        return await future

    def _cancel_timer(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _linger_expired(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        items = self._buffer.take(key)
        if items:
            self._send(items)

    def _send(self, items: list[_Item]) -> None:
        live: list[_Item] = []
        for item in items:
            _, future, fence = item
            if future.done():
                continue
            if fence is not None and not fence():
                future.set_exception(NotSent("not sent: ownership lapsed while the batch lingered"))
                continue
            live.append(item)
        if not live:
            return
        self.calls += 1
        task = asyncio.get_running_loop().create_task(self._call(live))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, items: list[_Item]) -> None:
        requests = sorted((r for r, _, _ in items), key=_offset)
        fences = {id(fence): fence for _, _, fence in items if fence is not None}
        # The inner invoker may wait too (credentials): the call is fenced by all its callers.
        fence_sends((lambda: all(f() for f in fences.values())) if fences else None)
        try:
            outcomes = await self.inner.invoke_batch(requests)
            if len(outcomes) != len(requests):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(requests)} requests")
        except NotSent as exc:
            for _, future, _ in items:
                if not future.done():
                    future.set_exception(NotSent(str(exc)))
            return
        except Exception as exc:
            # Never leave an invocation hanging: a broken batch call retries its records.
            log.exception("batch invocation failed")
            outcomes = [Outcome.retry(f"batch invocation failed: {exc!r}")] * len(requests)
        by_id = {r.invocation_id: o for r, o in zip(requests, outcomes, strict=True)}
        for request, future, _ in items:
            if future.done():
                continue
            result = by_id[request.invocation_id]
            if isinstance(result, NotSent):
                future.set_exception(NotSent(str(result)))
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        """Send what is waiting, wait for calls in flight, close the inner invoker."""
        if not self._closed:
            self._closed = True
            for key in self._buffer.pending_keys():
                self._cancel_timer(key)
                self._send(self._buffer.take(key))
            if self._calls:
                with contextlib.suppress(Exception):
                    await asyncio.gather(*self._calls, return_exceptions=True)
        await self.inner.aclose()


def _outcome(result: Outcome | NotSent) -> Outcome:
    if isinstance(result, NotSent):
        raise NotSent(str(result))
    return result


def _offset(request: InvocationRequest) -> int:
    return request.record.offset if request.record is not None else -1
