"""The ``kafka-ingress`` command.

``serve``        run a poller (consumers, invokers, ledger) with the given configuration
``dev``          run the whole stack locally: Kafka broker, DynamoDB (moto), poller
``init-tables``  create the DynamoDB tables (idempotent)

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from adapter import __version__
from adapter.config import Settings, load_settings
from adapter.errors import ConfigError, IngressError
from adapter.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("kafka_ingress")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-ingress",
        description="Invoke serverless handlers from Kafka records.",
    )
    parser.add_argument("--version", action="version", version=f"kafka-ingress {__version__}")
    parser.add_argument(
        "--config-file", help="TOML settings file (default: $KAFKA_INGRESS_CONFIG_FILE)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run a poller")
    dev = sub.add_parser("dev", help="run the whole stack on this machine")
    dev.add_argument("--no-demo", action="store_true", help="do not create demo subscriptions")
    sub.add_parser("init-tables", help="create the DynamoDB tables")
    return parser


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config_file)
    configure_logging(settings.log_level)
    return settings


async def _serve(settings: Settings) -> None:
    from adapter.poller import Poller, build_store

    store = build_store(settings)
    await store.ping()
    poller = Poller(settings, store)
    await poller.run(handle_signals=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "dev":
            from adapter.local.stack import run_dev

            return int(run_dev(args))
        settings = _load(args)
        if args.command == "init-tables":
            from adapter.poller import build_store

            created = build_store(settings).create_tables()
            print(f"created {len(created)} table(s): {', '.join(created) or '-'}")
            return EXIT_OK
        if args.command == "serve":
            asyncio.run(_serve(settings))
            return EXIT_OK
    except ConfigError as exc:
        print(f"kafka-ingress: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IngressError as exc:
        print(f"kafka-ingress: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_USAGE
