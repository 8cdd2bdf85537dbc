"""The peer's handlers: the bench's workload as Restate Python SDK services.

Run by ``make bench-peers`` with the interpreter of ``.cache/peers/venv`` (restate-sdk and
hypercorn, pinned in bench/peers/requirements.txt), never imported by the project:

    python bench/peers/restate_service.py --port 0

``BenchService/run`` (a Service) and ``BenchObject/run`` (a Virtual Object, exclusive) answer at
once, ``BenchObject/slow`` after 20 ms: the same work as the bench's own handler (bench/handler.py).
Served over HTTP/2 (h2c) by hypercorn, as Restate's Python documentation serves it. Prints
``READY http://127.0.0.1:PORT`` as it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import restate  # type: ignore[import-not-found,unused-ignore]
from hypercorn.asyncio import serve  # type: ignore[import-not-found,unused-ignore]
from hypercorn.config import Config  # type: ignore[import-not-found,unused-ignore]

SLOW_S = 0.020

service = restate.Service("BenchService")
bench_object = restate.VirtualObject("BenchObject")


@service.handler("run")  # type: ignore[untyped-decorator,unused-ignore]
async def service_run(ctx: Any, record: Any) -> None:
    return None


@bench_object.handler("run")  # type: ignore[untyped-decorator,unused-ignore]
async def object_run(ctx: Any, record: Any) -> None:
    return None


@bench_object.handler("slow")  # type: ignore[untyped-decorator,unused-ignore]
async def object_slow(ctx: Any, record: Any) -> None:
    await asyncio.sleep(SLOW_S)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    sock.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    app = restate.app(services=[service, bench_object])

    # Printed before hypercorn listens: the bench retries the registration until it answers.
    print(f"READY http://127.0.0.1:{port}", flush=True)
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
