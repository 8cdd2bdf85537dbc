"""``kafka-ingress dev`` / ``make dev``: the whole product on one machine.

Starts a Kafka broker (child JVM, KRaft), DynamoDB (moto server on loopback) with the tables,
and a poller; prints where everything listens and a config file to reuse; stops everything on
Ctrl-C (or SIGTERM), broker last, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from adapter.config import load_settings
from adapter.errors import IngressError
from adapter.local.kafka import KafkaBroker
from adapter.local.moto import MotoServer
from adapter.logs import configure_logging
from adapter.poller import Poller, build_store

__all__ = ["run_dev"]

log = logging.getLogger("kafka_ingress.dev")

DEV_DIR = Path(__file__).resolve().parents[2] / ".cache" / "dev"


def _dev_config(bootstrap: str, dynamodb: str) -> str:
    return (
        "# Written by `kafka-ingress dev`; valid while the dev stack runs.\n"
        'log-level = "INFO"\n\n'
        "[[ingress.kafka-clusters]]\n"
        'name = "local"\n'
        f'brokers = ["PLAINTEXT://{bootstrap}"]\n\n'
        "[dynamodb]\n"
        f'endpoint-url = "{dynamodb}"\n'
        'region = "us-east-1"\n\n'
        "[admin]\n"
        'bind-address = "127.0.0.1:9070"\n'
        "allow-open = true\n"
    )


async def _run(stop: asyncio.Event) -> None:
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(work_dir=DEV_DIR / "kafka")
    moto = MotoServer()
    poller: Poller | None = None
    poller_task: asyncio.Task[None] | None = None
    try:
        print("starting Kafka broker …", flush=True)
        await asyncio.to_thread(broker.start)
        endpoint = moto.start()
        config_path = DEV_DIR / "kafka-ingress.toml"
        config_path.write_text(_dev_config(broker.bootstrap_servers, endpoint))
        settings = load_settings(config_path, env={})
        store = build_store(settings)
        created = store.create_tables()
        poller = Poller(settings, store)
        poller_task = asyncio.create_task(poller.run())
        print(
            "\nKafka Ingress dev stack is up:\n"
            f"  Kafka broker     {broker.bootstrap_servers}  (Kafka {broker.kafka_version}, "
            f"pid {broker.pid}, log {broker.log_path})\n"
            f"  DynamoDB (moto)  {endpoint}  ({len(created)} tables created)\n"
            f"  config file      {config_path}\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_wait, poller_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
    finally:
        print("\nstopping …", flush=True)
        if poller is not None and poller_task is not None:
            poller.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(poller_task, 30)
        moto.stop()
        await asyncio.to_thread(broker.stop)
        print("dev stack stopped.", flush=True)


def run_dev(args: argparse.Namespace) -> int:
    configure_logging(os.environ.get("KAFKA_INGRESS_LOG_LEVEL", "INFO"))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _run(stop)

    try:
        asyncio.run(main())
    except IngressError as exc:
        print(f"kafka-ingress dev: {exc}", file=sys.stderr)
        return 1
    return 0
