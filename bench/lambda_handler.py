"""The benchmark's Lambda function, behind the local Lambda endpoint, in its own process.

``python -m bench.lambda_handler`` serves :class:`adapter.local.lambda_server.LocalLambda` with
one function, ``bench``, that acknowledges every invocation of an ``ingress`` event — a single
``invoke`` or a ``batch`` — and records each one in :class:`bench.handler.Receipts` from the
same ``kafka.*`` headers as the HTTP handler. The bench's private routes (``/__count``,
``/__stats``, ``/__reset``) are served beside the Invoke API, so scenario (d) is measured
exactly like the HTTP scenarios.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from bench.handler import Receipts, Receive, Scope, Send, make_app

__all__ = ["FUNCTION_ARN", "FUNCTION_NAME", "BenchFunction", "main"]

FUNCTION_NAME = "bench"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION_NAME}"


class BenchFunction:
    """The Lambda handler ``(event, context) -> result``; thread-safe (run on a pool)."""

    def __init__(self, receipts: Receipts, clock: Any = time.time) -> None:
        self.receipts = receipts
        self._clock = clock
        self._lock = threading.Lock()

    def _record(self, invocation: Mapping[str, Any], now: float) -> None:
        headers = invocation.get("headers") or {}
        key = headers.get("kafka.key")
        self.receipts.begin(
            key,
            int(headers.get("kafka.partition", -1)),
            int(headers.get("kafka.offset", -1)),
            int(headers.get("kafka.timestamp", 0)),
            now,
        )
        self.receipts.end(key)

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        now = self._clock()
        kind = event.get("type")
        with self._lock:
            if kind == "batch":
                invocations = list(event.get("invocations") or [])
                for invocation in invocations:
                    self._record(invocation, now)
                return {
                    "results": [
                        {"invocationId": i.get("invocationId"), "statusCode": 200}
                        for i in invocations
                    ]
                }
            if kind == "invoke":
                self._record(event, now)
        return {"statusCode": 200}


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from adapter.local.lambda_server import FunctionSpec, LocalLambda

    parser = argparse.ArgumentParser(prog="python -m bench.lambda_handler")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    receipts = Receipts()
    local = LocalLambda(
        [FunctionSpec(FUNCTION_NAME, BenchFunction(receipts), timeout_s=60)], max_workers=64
    )
    bench_routes = make_app(receipts)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope["path"]).startswith("/__"):
            await bench_routes(scope, receive, send)
        elif scope["type"] == "http":
            await local.app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await bench_routes(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        local.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
