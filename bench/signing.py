"""``python -m bench.signing``: CPU per signed request (µs), the poller's hot path.

Signs ``--requests`` invocation requests (distinct invocation IDs, one ``--body-bytes`` body,
``--routes`` handler routes) with :class:`adapter.invokers.signing.RequestSigner` and prints
the process CPU time per request, best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapter.invokers.base import InvocationRequest
from adapter.invokers.signing import RequestSigner
from adapter.model import Deployment, HandlerType, InputKind, ServiceType, Target


def _requests(count: int, routes: int, body_bytes: int) -> list[InvocationRequest]:
    deployment = Deployment("dp_bench", uri="http://127.0.0.1:9080")
    targets = [
        Target(
            "Bench", f"h{i}", ServiceType.SERVICE, HandlerType.SERVICE, InputKind.JSON, deployment
        )
        for i in range(routes)
    ]
    body = b'{"v":"' + b"x" * max(0, body_bytes - 8) + b'"}'
    return [
        InvocationRequest(f"inv_{n:012d}", targets[n % routes], None, body) for n in range(count)
    ]


def measure(count: int, routes: int, body_bytes: int, repeat: int) -> float:
    """Best CPU µs per request over ``repeat`` runs, each with a fresh signer."""
    requests = _requests(count, routes, body_bytes)
    best = float("inf")
    for _ in range(repeat):
        signer = RequestSigner(Ed25519PrivateKey.generate(), key_id="bench", ttl_s=60)
        started = time.process_time()
        for request in requests:
            signer(request, "http://127.0.0.1:9080/invoke/Bench/h")
        best = min(best, time.process_time() - started)
    return best / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signing")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--routes", type=int, default=4)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    per_request = measure(args.requests, args.routes, args.body_bytes, args.repeat)
    print(
        f"signing: {per_request:.1f} µs CPU per request "
        f"({args.requests} requests, {args.routes} routes, {args.body_bytes}-byte body, "
        f"best of {args.repeat})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
