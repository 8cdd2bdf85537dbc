"""``python -m bench masking``: time of secret masking against input size (no stack needed).

Every log line and error message goes through :func:`adapter.masking.mask_secrets`, on the
event loop that also runs the consumers, so its cost must grow linearly with the input whatever
the input is. Each shape below is timed at 1 k, 10 k, 100 k and 1 M characters; the last
column, time per character relative to the 1 k input, stays near 1 when the cost is linear
(a quadratic masker would show 10, 100, 1000).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import orjson

from adapter.masking import mask_secrets, remember_secret

__all__ = ["SHAPES", "main", "measure"]

SIZES = (1_000, 10_000, 100_000, 1_000_000)


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


SHAPES: dict[str, Callable[[int], str]] = {
    # The input of the reported freeze: one huge unknown option name in an error message.
    "unknown-option-name": lambda n: f"unknown option {'a' * n!r}; supported options: x",
    "log-lines": lambda n: _repeat(
        "consumer sub_1 started, sasl.password=hunter22, brokers 127.0.0.1:9092 ok. ", n
    ),
    "separators": lambda n: _repeat("a=", n),
    "uris": lambda n: _repeat("see http://user:pw@host:80/p ", n),
    "quotes": lambda n: _repeat('"token": "', n),
    "known-secret": lambda n: _repeat("payload c3VwZXItc2VjcmV0LXZhbHVl super-secret-value ", n),
}


def measure(text: str, repeats: int) -> float:
    """Median seconds of ``mask_secrets(text)`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        mask_secrets(text)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench masking", description=__doc__)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    remember_secret("super-secret-value")
    rows: list[dict[str, float | int | str]] = []
    for shape, make in SHAPES.items():
        base: float | None = None
        for size in sizes:
            seconds = measure(make(size), args.repeats)
            per_char = seconds / size
            base = base if base is not None else per_char
            rows.append(
                {
                    "shape": shape,
                    "chars": size,
                    "seconds": seconds,
                    "ns_per_char": per_char * 1e9,
                    "relative_per_char": per_char / base if base else 0.0,
                }
            )
    if args.json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"{'shape':<22}{'chars':>10}{'ms':>10}{'ns/char':>10}{'x of 1k':>9}")
    for row in rows:
        seconds = float(row["seconds"])
        print(
            f"{row['shape']:<22}{row['chars']:>10,}{seconds * 1e3:>10.2f}"
            f"{row['ns_per_char']:>10.1f}{row['relative_per_char']:>9.2f}"
        )
    return 0
