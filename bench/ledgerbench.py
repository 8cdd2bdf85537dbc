"""Micro-benchmark of the ledger path alone: ``LedgerWriter`` → ``DynamoStore`` → DynamoDB.

``python -m bench.ledgerbench --endpoint URL --rows N [--success-pages]`` writes ``N``
completed-invocation rows through the engine's own :class:`~adapter.engine.ledger.LedgerWriter`
(its batching and concurrency as shipped) into fresh tables, and prints one JSON line: rows/s,
the writer process's CPU milliseconds per 1,000 rows and the requests made. The bench measures
the DynamoDB server's CPU around it. Isolating the ledger this way gives a low-noise figure for
what a change to the ledger path is worth, which the end-to-end runs cannot on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson

__all__ = ["main"]


async def _run(endpoint: str, rows: int, success_pages: bool) -> dict[str, object]:
    from adapter.engine.ledger import LedgerWriter
    from adapter.ids import invocation_id
    from adapter.model import LedgerEntry
    from adapter.store.dynamo import DynamoStore, make_client
    from adapter.store.tables import TableNames

    names = TableNames(f"ledger{uuid.uuid4().hex[:8]}-")
    client = make_client(endpoint, "us-east-1")
    store = DynamoStore(client, names, success_pages=success_pages)
    await asyncio.to_thread(store.create_tables)
    now = int(time.time() * 1000)
    entries = [
        LedgerEntry(
            id=invocation_id("sub_bench", "bench", i % 4, i // 4),
            subscription_id="sub_bench",
            topic="bench",
            partition=i % 4,
            offset=i // 4,
            key=f"key-{i % 1000:06d}",
            target="service://Bench/run",
            status="SUCCEEDED",
            attempts=1,
            created_at_ms=now,
            updated_at_ms=now,
            completed_at_ms=now,
        )
        for i in range(rows)
    ]
    writer = LedgerWriter(store)
    runner = asyncio.create_task(writer.run())
    durable = 0

    def on_durable() -> None:
        nonlocal durable
        durable += 1

    requests0 = store.requests
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for entry in entries:
        writer.submit(entry, on_durable)
    await writer.flushed()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await store.aclose()

    def drop() -> None:
        for table in names.all().values():
            client.delete_table(TableName=table)

    await asyncio.to_thread(drop)
    return {
        "rows": durable,
        "seconds": round(wall, 3),
        "rows_per_s": round(durable / wall, 1),
        "cpu_ms_per_1k": round(cpu * 1_000_000 / max(durable, 1), 1),
        "requests": store.requests - requests0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledgerbench")
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint URL")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--experiment", action="append", default=[])
    parser.add_argument("--success-pages", action="store_true", help='[ledger] successes = "pages"')
    args = parser.parse_args(argv)
    if args.experiment:
        from bench.experiments import apply

        apply(args.experiment)
    result = asyncio.run(_run(args.endpoint, args.rows, args.success_pages))
    variant = "+".join([*args.experiment, *(["pages"] if args.success_pages else [])])
    print("RESULT " + orjson.dumps({"variant": variant or "rows", **result}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
