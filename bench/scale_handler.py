"""Scenario (g)'s handler: acknowledges at once and records, per topic, when each record
arrived and when it was produced, so the bench can find every topic's delivery gaps.

``python -m bench.scale_handler`` prints ``READY <url>``. ``GET /__arrivals`` returns
``{topic: [[produced_ms, arrived_ms], ...]}`` (redeliveries included; ``?topic=<name>`` for
one topic), ``POST /__reset``
forgets everything.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import orjson

from bench.handler import Receive, Scope, Send, _best, _header_map, _read_body, _respond

__all__ = ["main", "make_app"]

Arrivals = dict[str, list[tuple[int, int]]]


def make_app(arrivals: Arrivals) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if scope["method"] == "POST" and path.startswith("/invoke/"):
            await _read_body(receive)
            meta = _header_map(scope["headers"])
            topic = meta.get(b"kafka.topic", b"?").decode("latin-1")
            produced = int(meta.get(b"kafka.timestamp", b"0"))
            arrivals[topic].append((produced, int(time.time() * 1000)))
            await _respond(send, 200, b'{"ok":true}')
        elif path == "/__arrivals":
            # ?topic=<name>: that topic's only, small enough to ask for every few ms.
            query = scope.get("query_string", b"").decode("latin-1")
            only = query.removeprefix("topic=") if query.startswith("topic=") else None
            found = arrivals if only is None else {only: arrivals.get(only, [])}
            await _respond(send, 200, orjson.dumps(found))
        elif path == "/__reset" and scope["method"] == "POST":
            arrivals.clear()
            await _respond(send, 200, b'{"ok":true}')
        else:
            await _respond(send, 404, b'{"message":"not found"}')

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.scale_handler")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    arrivals: Arrivals = defaultdict(list)
    config = uvicorn.Config(
        make_app(arrivals),
        loop=_best("uvloop", "asyncio"),
        http=_best("httptools", "h11"),
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=60,
    )
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
