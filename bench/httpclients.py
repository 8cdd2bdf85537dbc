"""Micro-benchmark of the invoker's hot path: one HTTP client POSTing records, 64 at a time.

``python -m bench.httpclients --client aiohttp|httpx|pyreqwest --loop asyncio|uvloop --url URL``
sends
``--requests`` POSTs (or as many as fit in ``--max-seconds``) of a ~200-byte JSON body with the
metadata headers the poller sends, over one pooled keep-alive client, and prints one JSON line:
requests/s and the client process's CPU milliseconds per 1,000 requests (all its threads: pyreqwest
does its I/O on a thread of its own). Each combination runs
in a process of its own against the benchmark handler (another process), so the CPU figure is
the client's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

__all__ = ["main"]

Post = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


def _headers(index: int) -> dict[str, str]:
    # The same shape and size as the poller's metadata headers.
    return {
        "content-type": "application/json",
        "restate.subscription.id": "sub_0000000000000000000000000",
        "kafka.topic": "bench",
        "kafka.partition": str(index % 4),
        "kafka.offset": str(index),
        "kafka.timestamp": str(int(time.time() * 1000)),
        "kafka.key": f"key-{index % 1000:06d}",
        "idempotency-key": f"inv_{index:026d}",
        "x-kafka-ingress-invocation-id": f"inv_{index:026d}",
        "x-kafka-ingress-attempt": "1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }


async def _drive(
    post: Post, url: str, requests: int, concurrency: int, start: int, budget_s: float
) -> int:
    """Send ``requests`` POSTs (fewer if ``budget_s`` runs out first); returns how many."""
    body = b'{"seq":1,"key":"key-000001","amount":1,"pad":"' + b"x" * 150 + b'"}'
    next_index = start
    end = start + requests
    deadline = time.monotonic() + budget_s

    async def worker() -> None:
        nonlocal next_index
        while next_index < end and time.monotonic() < deadline:
            index = next_index
            next_index += 1
            status = await post(url, body, _headers(index))
            if status != 200:
                raise RuntimeError(f"handler answered {status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return next_index - start


async def _run(
    client: str, url: str, requests: int, concurrency: int, budget_s: float
) -> dict[str, Any]:
    target = f"{url.rstrip('/')}/invoke/Bench/run"
    close: Callable[[], Awaitable[None]]
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

        async def post(u: str, body: bytes, headers: dict[str, str]) -> int:
            async with session.post(u, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        close = session.close
    elif client == "httpx":
        import httpx

        httpx_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=30,
        )

        async def post(u: str, body: bytes, headers: dict[str, str]) -> int:
            resp = await httpx_client.post(u, content=body, headers=headers)
            return resp.status_code

        close = httpx_client.aclose
    elif client == "pyreqwest":
        from datetime import timedelta

        from pyreqwest.client import ClientBuilder

        reqwest = (
            ClientBuilder()
            .http1_only()
            .follow_redirects(False)
            .no_proxy()
            .max_connections(concurrency)
            .pool_idle_timeout(timedelta(seconds=30))
            .build()
        )
        timeout = timedelta(seconds=30)

        async def post(u: str, body: bytes, headers: dict[str, str]) -> int:
            request = reqwest.post(u).headers(headers).body_bytes(body).timeout(timeout).build()
            resp = await request.send()
            await resp.bytes()
            return resp.status

        close = reqwest.close
    else:
        raise SystemExit(f"unknown client {client!r}")
    try:
        warm_up = min(1000, requests)
        await _drive(post, target, warm_up, concurrency, 0, budget_s)  # fill the pool first
        cpu0, wall0 = time.process_time(), time.perf_counter()
        done = await _drive(post, target, requests, concurrency, warm_up, budget_s)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    return {
        "requests": done,
        "seconds": round(wall, 3),
        "requests_per_s": round(done / wall, 1),
        "cpu_ms_per_1k": round(cpu * 1000 * 1000 / max(done, 1), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.httpclients")
    parser.add_argument("--client", choices=("aiohttp", "httpx", "pyreqwest"), required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per phase")
    args = parser.parse_args(argv)
    coro = _run(args.client, args.url, args.requests, args.concurrency, args.max_seconds)
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print("RESULT " + orjson.dumps({"client": args.client, "loop": args.loop, **result}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
