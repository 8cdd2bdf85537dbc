"""``python -m bench.poller [--loop L] [--experiment E ...] -- <kafka-ingress arguments>``.

With neither option this is exactly ``python -m adapter``, the poller as shipped (on uvloop when
it is installed, as it is with the package). ``--loop asyncio`` runs the same code on asyncio's
own event loop (uvloop made unimportable), ``--loop uvloop`` insists on uvloop, and
``--experiment`` applies one of
:mod:`bench.experiments`' prototypes, to measure what a proposed change would give without
changing the engine.
"""

from __future__ import annotations

import sys

__all__ = ["choose_loop", "main"]


def choose_loop(loop: str) -> None:
    """Make ``adapter.cli`` run on ``loop``: "shipped" (uvloop when installed), "uvloop"
    (which must be installed) or "asyncio"."""
    if loop == "uvloop":
        import uvloop  # noqa: F401  (fails here, not silently on asyncio, when missing)
    elif loop == "asyncio":
        # adapter.cli runs on uvloop whenever it imports; this makes it fall back to asyncio.
        sys.modules["uvloop"] = None  # type: ignore[assignment]
    elif loop != "shipped":
        raise SystemExit(f"unknown --loop {loop!r} (asyncio or uvloop)")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    loop = "shipped"
    experiments: list[str] = []
    while args[:1] in (["--loop"], ["--experiment"]):
        if args[0] == "--loop":
            loop = args[1]
        else:
            experiments.append(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    choose_loop(loop)
    if experiments:
        from bench.experiments import apply

        apply(experiments)
    from adapter.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
