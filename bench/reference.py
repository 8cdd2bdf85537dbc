"""The reference loop: the least code that moves Kafka records to an HTTP handler correctly.

aiokafka consumer → ``POST`` per record (aiohttp, one pooled keep-alive session) with a global
in-flight limit, commit of explicit offsets (the highest contiguous acknowledged one per
partition) every ``commit_interval`` and at the end, a lost partition handed over (its unsent
records dropped, those being sent finished, its position committed), and nothing else: no
ledger, no retries, no dead letters, no invocation IDs. ``--per-key`` adds the one guarantee
the exclusive sinks need, one record in flight per key in partition order; ``--in-flight 1``
on one partition is the one-record-at-a-time baseline of scenario (c).

Run in its own process (``python -m bench.reference``) until SIGTERM, so its CPU and memory are
measured exactly like the poller's. It runs with the poller's runtime settings, so that the
comparison is of the work done per record and not of the process around it: the same event
loop (``--loop``, uvloop by default as the poller runs) and the young-generation threshold
``serve`` sets for the garbage collector (:mod:`adapter.gc_tuning`; ``--collector default``
keeps CPython's). Records carry the same ``kafka.*`` headers our poller sends,
because the benchmark handler reads the produce time and position from them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from collections import deque
from typing import Any

__all__ = ["ContiguousOffsets", "main", "use_collector"]


class ContiguousOffsets:
    """Which offset of one partition may be committed: the first not yet acknowledged. Pure."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._acked: set[int] = set()
        self._next: int | None = None

    def track(self, offset: int) -> None:
        self._order.append(offset)

    def ack(self, offset: int) -> None:
        self._acked.add(offset)
        while self._order and self._order[0] in self._acked:
            head = self._order.popleft()
            self._acked.discard(head)
            self._next = head + 1

    @property
    def position(self) -> int | None:
        """Offset to commit (the next one to consume), or None if nothing finished yet."""
        return self._next

    @property
    def pending(self) -> int:
        return len(self._order)


async def _run(args: argparse.Namespace) -> None:
    import aiohttp
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.in_flight, keepalive_timeout=30)
    )
    slots = asyncio.Semaphore(args.in_flight)
    offsets: dict[Any, ContiguousOffsets] = {}
    paused: set[Any] = set()
    tails: dict[bytes, asyncio.Task[None]] = {}
    by_partition: dict[Any, set[asyncio.Task[None]]] = {}  # each record's task, until done
    posting: set[asyncio.Task[None]] = set()  # holding an in-flight slot
    base = args.url.rstrip("/")

    async def post(
        msg: Any, tracker: ContiguousOffsets, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        key = msg.key.decode() if msg.key is not None else None
        url = f"{base}/invoke/Bench/{key}/run" if args.per_key else f"{base}/invoke/Bench/run"
        headers = {
            "content-type": "application/json",
            "kafka.topic": msg.topic,
            "kafka.partition": str(msg.partition),
            "kafka.offset": str(msg.offset),
            "kafka.timestamp": str(msg.timestamp),
        }
        if key is not None:
            headers["kafka.key"] = key
        async with slots:
            current = asyncio.current_task()
            assert current is not None
            posting.add(current)
            while True:
                try:
                    async with session.post(url, data=msg.value or b"", headers=headers) as resp:
                        await resp.read()
                        if 200 <= resp.status < 300:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)  # the reference only ever meets a healthy handler
            posting.discard(current)
        tp = TopicPartition(msg.topic, msg.partition)
        tracker.ack(msg.offset)  # a partition lost meanwhile: its old tracker, forgotten
        if tp in paused and tracker.pending <= args.max_buffered // 2:
            paused.discard(tp)
            with contextlib.suppress(Exception):
                consumer.resume(tp)

    async def commit(partitions: Any = None) -> None:
        owned = consumer.assignment() if partitions is None else partitions
        positions = {
            tp: o.position for tp, o in offsets.items() if tp in owned and o.position is not None
        }
        if positions:
            await consumer.commit(positions)

    async def committer() -> None:
        while True:
            await asyncio.sleep(args.commit_interval)
            with contextlib.suppress(Exception):  # a rebalance under way: the next one commits
                await commit()

    class Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
        """A lost partition: its records not yet sent are dropped, those being sent finish
        (up to 10 s), and its position is committed before the next owner starts, as any
        correct consumer (and our poller) does; otherwise the next owner repeats them."""

        async def on_partitions_revoked(self, revoked: Any) -> None:
            running: list[asyncio.Task[None]] = []
            for tp in revoked:
                for task in by_partition.pop(tp, set()):
                    if task in posting:
                        running.append(task)
                    else:
                        task.cancel()
            if running:
                await asyncio.wait(running, timeout=10)
            with contextlib.suppress(Exception):
                await commit(set(revoked))
            for tp in revoked:
                offsets.pop(tp, None)
                paused.discard(tp)
            for key in [k for k, t in tails.items() if t.done()]:
                del tails[key]

        async def on_partitions_assigned(self, assigned: Any) -> None:
            return None

    consumer.subscribe([args.topic], listener=Revocations())
    await consumer.start()
    commit_task = asyncio.create_task(committer())
    stop_wait = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            fetch = asyncio.create_task(consumer.getmany(timeout_ms=500, max_records=500))
            await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                break
            for tp, messages in fetch.result().items():
                tracker = offsets.setdefault(tp, ContiguousOffsets())
                mine = by_partition.setdefault(tp, set())
                for msg in messages:
                    tracker.track(msg.offset)
                    previous = None
                    if args.per_key and msg.key is not None:
                        previous = tails.get(msg.key)
                        if previous is not None and previous.done():
                            previous = None
                    task = asyncio.create_task(post(msg, tracker, previous))
                    mine.add(task)
                    task.add_done_callback(mine.discard)
                    if args.per_key and msg.key is not None:
                        tails[msg.key] = task
                if tracker.pending >= args.max_buffered:
                    paused.add(tp)
                    consumer.pause(tp)
            if len(tails) > 4 * args.max_buffered:
                for key in [k for k, t in tails.items() if t.done()]:
                    del tails[key]
    finally:
        commit_task.cancel()
        stop_wait.cancel()
        unfinished = set().union(*by_partition.values())
        if unfinished:
            await asyncio.wait(unfinished, timeout=10)
        with contextlib.suppress(Exception):
            await commit()
        await session.close()
        await consumer.stop()


def use_collector(choice: str) -> None:
    """``serve``: the young-generation threshold ``serve`` sets (the poller's runtime);
    ``default``: CPython's."""
    if choice == "serve":
        from adapter.gc_tuning import YOUNG_GENERATION_THRESHOLD

        gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--url", required=True, help="handler base URL")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--per-key", action="store_true", help="one in flight per key")
    parser.add_argument("--max-buffered", type=int, default=1000, help="per partition")
    parser.add_argument("--commit-interval", type=float, default=0.2)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--collector", choices=("serve", "default"), default="serve")
    args = parser.parse_args(argv)
    use_collector(args.collector)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_run(args))
    else:
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
