"""``python -m bench.poller [--loop L] [--experiment E ...] -- <kafka-ingress arguments>``.

With neither option this is exactly ``python -m adapter``, the poller as shipped. ``--loop
uvloop`` runs the same code on uvloop's event loop and ``--experiment`` applies one of
:mod:`bench.experiments`' prototypes, to measure what a proposed change would give without
changing the engine.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    loop = "asyncio"
    experiments: list[str] = []
    while args[:1] in (["--loop"], ["--experiment"]):
        if args[0] == "--loop":
            loop = args[1]
        else:
            experiments.append(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif loop != "asyncio":
        raise SystemExit(f"unknown --loop {loop!r} (asyncio or uvloop)")
    if experiments:
        from bench.experiments import apply

        apply(experiments)
    from adapter.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
