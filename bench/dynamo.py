"""DynamoDB for the benchmark: moto's DynamoDB server in its own process, counting requests.

The poller's ``DynamoStore.requests`` counter lives inside the poller process, so the
benchmark counts where the requests arrive instead: a WSGI middleware in front of moto's
application tallies each request by its ``X-Amz-Target`` operation (``BatchWriteItem``,
``Scan`` …). ``GET /__bench/requests`` returns the tally; requests to that route are not
counted. Run with ``python -m bench.dynamo``; it prints ``READY <endpoint>`` once serving.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson

__all__ = ["CountingMiddleware", "main"]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

COUNTS_PATH = "/__bench/requests"


class CountingMiddleware:
    """Counts requests per DynamoDB operation; serves the counts on :data:`COUNTS_PATH`."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self._lock:
                body = orjson.dumps(dict(self.counts))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        operation = target.rpartition(".")[2] or f"{environ.get('REQUEST_METHOD')} (no target)"
        with self._lock:
            self.counts[operation] += 1
        return self._app(environ, start_response)


def main(argv: list[str] | None = None) -> int:
    import logging

    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from adapter.local.moto import fake_aws_credentials

    parser = argparse.ArgumentParser(prog="python -m bench.dynamo")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    fake_aws_credentials()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # moto's single-service app, not the all-services dispatcher: the dispatcher matches every
    # request against the URL patterns of every AWS service moto knows (~0.5-0.9 ms of CPU per
    # request here), and the benchmark only ever speaks DynamoDB.
    app = CountingMiddleware(create_backend_app("dynamodb"))
    server = make_server("127.0.0.1", args.port, app, True, request_handler=MotoRequestHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    port = server.server_address[1]
    print(f"READY http://127.0.0.1:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
