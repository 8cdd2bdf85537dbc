"""``python -m bench`` (``make bench``): run the scenarios, print the table, write results.json."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
from rich.console import Console

from bench.cli import parse_args
from bench.report import (
    ScenarioResult,
    http_clients_table,
    ledger_table,
    results_document,
    scenario_table,
    targets_table,
)
from bench.suite import Suite


async def _until_terminated(suite: Suite) -> list[ScenarioResult]:
    """The suite's run; SIGTERM (a kill by PID) stops it as Ctrl-C does, stack included:
    otherwise the broker, moto, the handlers and the consumers outlive it."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await suite.run()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["masking"]:
        # A micro-benchmark of its own: no stack, no scenarios.
        from bench.masking import main as masking

        return masking(args[1:])
    if args[:1] == ["engine"]:
        from bench.engine import main as engine  # the engine alone, on the fakes

        return engine(args[1:])
    options = parse_args(args)
    # Wide enough for the table when the output is a file or a CI log, not a terminal.
    console = Console(width=None if sys.stdout.isatty() else 150)
    suite = Suite(options, console)
    try:
        scenarios = asyncio.run(_until_terminated(suite))
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("interrupted; the stack was stopped")
        return 130
    extras = {
        "http_clients": suite.http_clients,
        "ledger_paths": suite.ledger_paths,
        "scale_out": suite.scale_out,
    }
    document = results_document(suite.meta, scenarios, extras)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    console.print()
    console.print(scenario_table(scenarios))
    if suite.http_clients:
        console.print(http_clients_table(suite.http_clients))
    if suite.ledger_paths:
        console.print(ledger_table(suite.ledger_paths))
    console.print(targets_table(scenarios))
    machine = suite.meta.get("machine", {})
    console.print(
        f"{machine.get('cpus')} CPUs ({machine.get('cpu_model')}), load average at start "
        f"{machine.get('load_average')}, at end {suite.meta.get('load_average_end')}; "
        f"{suite.meta.get('duration_s')} s in all. Figures: {options.out}",
        highlight=False,
    )
    failed = [s.id for s in scenarios if s.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
