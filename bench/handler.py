"""The benchmark's handler deployment: a trivial ``200`` that records when each record arrived.

Run as its own process (``python -m bench.handler --delay-ms 20``) so it never shares a GIL with
the poller or the reference loop. It is a bare ASGI app on uvicorn (httptools and uvloop when
installed): the handler must cost as little as possible, so that what is measured is the caller.

Every invocation is recorded by :class:`Receipts` from the Kafka metadata headers that both our
poller and the reference loop send: ``kafka.timestamp`` (the produce time) gives the end-to-end
latency, ``kafka.partition``/``kafka.offset`` detect duplicates, and ``kafka.key`` checks the
per-key guarantees (one at a time, in offset order). The bench reads and resets the receipts
over two private routes, ``GET /__stats`` (``/__count`` for the cheap poll) and
``POST /__reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["Receipts", "main", "make_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ACK = orjson.dumps({"ok": True})
_JSON_HEADERS = [(b"content-type", b"application/json")]


class Receipts:
    """What the handler saw: counts, latencies and per-key guarantee violations. Pure."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.duplicates = 0
        self.overlaps = 0
        self.order_violations = 0
        self.active = 0
        self.max_active = 0
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.latencies_ms: list[float] = []
        self.arrivals_s: list[float] = []
        self._seen: set[tuple[int, int]] = set()
        self._active_by_key: dict[str, int] = defaultdict(int)
        self._last_offset_by_key: dict[str, int] = {}

    @property
    def count(self) -> int:
        """Distinct records received (redeliveries counted once)."""
        return self.total - self.duplicates

    def begin(
        self, key: str | None, partition: int, offset: int, timestamp_ms: int, now_s: float
    ) -> None:
        self.total += 1
        position = (partition, offset)
        fresh = position not in self._seen
        if fresh:
            self._seen.add(position)
            self.latencies_ms.append(now_s * 1000 - timestamp_ms)
            self.arrivals_s.append(now_s)
        else:
            self.duplicates += 1
        if self.first_s is None:
            self.first_s = now_s
        self.last_s = now_s
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if key is not None:
            self._active_by_key[key] += 1
            if self._active_by_key[key] > 1:
                self.overlaps += 1
            last = self._last_offset_by_key.get(key)
            # A redelivery (at-least-once) may go back in offsets; only fresh records count.
            if fresh and last is not None and offset <= last:
                self.order_violations += 1
            if last is None or offset > last:
                self._last_offset_by_key[key] = offset

    def end(self, key: str | None) -> None:
        self.active -= 1
        if key is not None:
            self._active_by_key[key] -= 1

    def snapshot(self, *, with_latencies: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "total": self.total,
            "duplicates": self.duplicates,
            "overlaps": self.overlaps,
            "order_violations": self.order_violations,
            "max_active": self.max_active,
            "first_s": self.first_s,
            "last_s": self.last_s,
        }
        if with_latencies:
            out["latencies_ms"] = self.latencies_ms
            out["arrivals_s"] = self.arrivals_s
        return out


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name: value for name, value in raw if name.startswith(b"kafka.")}


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


def make_app(
    receipts: Receipts, *, delay_s: float = 0.0, clock: Callable[[], float] = time.time
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app: ``POST /invoke/...`` acknowledges after ``delay_s``; bench routes aside."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and path.startswith("/invoke/"):
            await _read_body(receive)
            now = clock()
            meta = _header_map(scope["headers"])
            raw_key = meta.get(b"kafka.key")
            key = raw_key.decode("latin-1") if raw_key is not None else None
            receipts.begin(
                key,
                int(meta.get(b"kafka.partition", b"-1")),
                int(meta.get(b"kafka.offset", b"-1")),
                int(meta.get(b"kafka.timestamp", b"0")),
                now,
            )
            try:
                if delay_s:
                    await asyncio.sleep(delay_s)
            finally:
                receipts.end(key)
            await _respond(send, 200, _ACK)
        elif path == "/__count":
            await _respond(send, 200, orjson.dumps(receipts.snapshot(with_latencies=False)))
        elif path == "/__stats":
            await _respond(send, 200, orjson.dumps(receipts.snapshot()))
        elif path == "/__reset" and method == "POST":
            receipts.reset()
            await _respond(send, 200, _ACK)
        else:
            await _respond(send, 404, b'{"message":"not found"}')

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.handler")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)

    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it keep-alive requests stall on Nagle + delayed ACK (~40 ms each).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    config = uvicorn.Config(
        make_app(Receipts(), delay_s=args.delay_ms / 1000),
        loop=_best("uvloop", "asyncio"),
        http=_best("httptools", "h11"),
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=60,
    )
    # Connections made from here on wait in the listen backlog until uvicorn accepts them.
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _best(preferred: str, fallback: str) -> str:
    try:
        __import__(preferred)
    except ImportError:
        return fallback
    return preferred


if __name__ == "__main__":
    raise SystemExit(main())
