"""``kafka-ingress dev`` / ``make dev``: the whole product on one machine.

Starts a Kafka broker (child JVM, KRaft), DynamoDB (moto server on loopback) with the tables,
the local Lambda endpoint running serverless.yml's functions, the example handlers over HTTP
(uvicorn) and a poller with its admin API. Unless ``--no-demo``: registers both deployments
(HTTP and Lambda) through the admin API, creates demo topics and subscriptions, produces a
trickle of demo events and shows a live status table. Prints where everything listens and a
config file to reuse; stops everything on Ctrl-C (or SIGTERM), broker last, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.table import Table

from adapter.config import load_settings
from adapter.engine import tracing
from adapter.errors import ConfigError, IngressError
from adapter.local.kafka import KafkaBroker
from adapter.local.lambda_server import AsgiServer, LocalLambda
from adapter.local.moto import MotoServer
from adapter.logs import configure_logging
from adapter.poller import Poller, build_store

__all__ = ["ADMIN_PORT_ENV", "DEFAULT_ADMIN_PORT", "dev_admin_port", "run_dev", "traces_hint"]

log = logging.getLogger("kafka_ingress.dev")

# Broker data, the signing key and the config file; another directory lets a second stack
# (a test) run beside a developer's `make dev` without sharing the broker's files.
DEV_DIR = Path(
    os.environ.get("KAFKA_INGRESS_DEV_DIR")
    or Path(__file__).resolve().parents[2] / ".cache" / "dev"
)
ADMIN_PORT_ENV = "KAFKA_INGRESS_DEV_ADMIN_PORT"
# Restate's admin port too: the two cannot run side by side on it, hence --admin-port.
DEFAULT_ADMIN_PORT = 9070


def dev_admin_port(flag: int | None, env: Mapping[str, str]) -> int:
    """The dev stack's admin port: ``--admin-port``, else $KAFKA_INGRESS_DEV_ADMIN_PORT, else
    9070. 0 asks for any free port (the one taken is printed)."""
    if flag is not None:
        port, source = flag, "--admin-port"
    elif env.get(ADMIN_PORT_ENV, "").strip():
        source = f"environment variable {ADMIN_PORT_ENV}"
        text = env[ADMIN_PORT_ENV].strip()
        if not text.isdigit():
            raise ConfigError(f"{source}: {text[:40]!r} is not a port number (0-65535)")
        port = int(text)
    else:
        return DEFAULT_ADMIN_PORT
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: {port} is not a port number (0-65535)")
    return port


def _dev_signing_key() -> Path:
    """The dev stack signs every invocation like production should: a key kept across runs,
    whose public half the example handlers verify (``KAFKA_INGRESS_IDENTITY_KEYS``)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from adapter.invokers.signing import generate_private_key_pem, public_key_text
    from adapter.sdk.endpoint import IDENTITY_KEYS_ENV

    path = DEV_DIR / "signing.pem"
    if not path.exists():
        path.write_bytes(generate_private_key_pem())
        path.chmod(0o600)
    key = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    # Read by every Endpoint built after this point (local Lambda functions, HTTP handlers).
    os.environ[IDENTITY_KEYS_ENV] = public_key_text(key)
    return path


def _dev_config(
    bootstrap: str,
    dynamodb: str,
    lambda_endpoint: str,
    signing_key: Path,
    kms_key: str,
    admin_port: int,
) -> str:
    return (
        "# Written by `kafka-ingress dev`; valid while the dev stack runs.\n"
        'log-level = "INFO"\n\n'
        "[[ingress.kafka-clusters]]\n"
        'name = "local"\n'
        f'brokers = ["PLAINTEXT://{bootstrap}"]\n\n'
        "[dynamodb]\n"
        f'endpoint-url = "{dynamodb}"\n'
        'region = "us-east-1"\n\n'
        "[lambda]\n"
        f'endpoint-url = "{lambda_endpoint}"\n'
        'region = "us-east-1"\n\n'
        "[admin]\n"
        f'bind-address = "127.0.0.1:{admin_port}"\n'
        "allow-open = true\n\n"
        "[signing]\n"
        f'private-key-file = "{signing_key}"\n\n'
        "# Secrets stored in DynamoDB are encrypted with this key of moto's KMS.\n"
        "[secrets]\n"
        f'kms-key-id = "{kms_key}"\n'
    )


async def _run(stop: asyncio.Event, *, admin_port: int, demo: bool = True) -> None:
    print(
        f"admin API port {admin_port or 'any free'} on 127.0.0.1 "
        f"(--admin-port / {ADMIN_PORT_ENV} to move it)",
        flush=True,
    )
    signing_key = _dev_signing_key()
    broker = KafkaBroker(work_dir=DEV_DIR / "kafka")
    moto = MotoServer()
    local_lambda = LocalLambda.from_serverless()
    lambda_server = AsgiServer(local_lambda.app)
    handlers_server = AsgiServer(_http_handlers_app())
    poller: Poller | None = None
    poller_task: asyncio.Task[None] | None = None
    background: list[asyncio.Task[None]] = []
    try:
        print("starting Kafka broker …", flush=True)
        await asyncio.to_thread(broker.start)
        endpoint = moto.start()
        lambda_url = await lambda_server.start()
        handlers_url = await handlers_server.start()
        config_path = DEV_DIR / "kafka-ingress.toml"
        kms_key = moto.create_kms_key()
        config_path.write_text(
            _dev_config(
                broker.bootstrap_servers, endpoint, lambda_url, signing_key, kms_key, admin_port
            )
        )
        settings = load_settings(config_path, env={})
        store = build_store(settings)
        created = store.create_tables()
        tracing.install(tracing.configure())  # before the poller: its dispatchers trace
        poller = Poller(settings, store)
        poller_task = asyncio.create_task(poller.run())
        started = asyncio.create_task(poller.started())
        await asyncio.wait({started, poller_task}, return_when=asyncio.FIRST_COMPLETED)
        if poller_task.done():
            started.cancel()
            await poller_task  # raises why the poller (or its admin API) did not start
        print(
            "\nKafka Ingress dev stack is up:\n"
            f"  Kafka broker     {broker.bootstrap_servers}  (Kafka {broker.kafka_version}, "
            f"pid {broker.pid}, log {broker.log_path})\n"
            f"  DynamoDB (moto)  {endpoint}  ({len(created)} tables created)\n"
            f"  Lambda (local)   {lambda_url}  ({', '.join(local_lambda.function_names)} "
            "from serverless.yml)\n"
            f"  handlers (HTTP)  {handlers_url}  (Greeter, Signup, AuditLog)\n"
            f"  admin API        http://{poller.admin_address}  (open, loopback only; try "
            f"`{_cli_hint(poller.admin_address)}kafka-ingress subscriptions list`)\n"
            f"  dashboard        http://{poller.admin_address}/ui/\n"
            f"  signing          ed25519 key {signing_key} (every handler verifies it)\n"
            f"  config file      {config_path}\n"
            f"  {traces_hint(os.environ)}\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        if demo:
            admin_url = f"http://{poller.admin_address}"
            await _set_up_demo(
                broker.bootstrap_servers, admin_url, handlers_url, local_lambda.arn("account")
            )
            background.append(asyncio.create_task(_produce_demo(broker.bootstrap_servers)))
            background.append(
                asyncio.create_task(_show_status(poller, broker.bootstrap_servers, stop))
            )
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {stop_wait, poller_task, *background}, return_when=asyncio.FIRST_COMPLETED
        )
        stop_wait.cancel()
        for task in background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("dev stack component failed", exc_info=task.exception())
    finally:
        print("\nstopping …", flush=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if poller is not None and poller_task is not None:
            poller.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(poller_task, 30)
        await handlers_server.stop()
        await lambda_server.stop()
        await asyncio.to_thread(local_lambda.close)
        await asyncio.to_thread(tracing.shutdown)
        moto.stop()
        await asyncio.to_thread(broker.stop)
        print("dev stack stopped.", flush=True)


def traces_hint(env: Mapping[str, str]) -> str:
    """The banner's traces line: where spans go, or how to send them to a collector."""
    if tracing.enabled(env):
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        service = env.get("OTEL_SERVICE_NAME") or tracing.DEFAULT_SERVICE_NAME
        return f"traces           OTLP/HTTP to {endpoint} as service {service}"
    return (
        "traces           off; OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make dev "
        "sends them to an OpenTelemetry collector (docs/operations.md, Traces)"
    )


def _cli_hint(address: str | None) -> str:
    """What the CLI needs to find this admin API, when it is not the CLI's default address."""
    if address is None or address == f"127.0.0.1:{DEFAULT_ADMIN_PORT}":
        return ""
    return f"KAFKA_INGRESS_ADMIN_URL=http://{address} "


def run_dev(args: argparse.Namespace) -> int:
    json_logs = os.environ.get("KAFKA_INGRESS_LOG_FORMAT") == "json"
    configure_logging(
        os.environ.get("KAFKA_INGRESS_LOG_LEVEL", "INFO"), "json" if json_logs else "text"
    )
    try:
        admin_port = dev_admin_port(getattr(args, "admin_port", None), os.environ)
    except ConfigError as exc:
        print(f"kafka-ingress dev: {exc}", file=sys.stderr)
        return 2
    DEV_DIR.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await _run(stop, admin_port=admin_port, demo=not getattr(args, "no_demo", False))

    try:
        asyncio.run(main())
    except IngressError as exc:
        print(f"kafka-ingress dev: {exc}", file=sys.stderr)
        return 1
    return 0


# -- the demo: topics, deployments, subscriptions, events, live status ------------------------

_LOCALES = ["en", "de", "fr", "es"]
_TOPICS = {"members.joined": 1, "payments": 3, "payments.dead-letters": 1, "signups": 1}


def _http_handlers_app() -> object:
    """The example services served over HTTP; Account runs as a Lambda function instead."""
    from adapter.sdk import Endpoint
    from handlers.audit import audit
    from handlers.greeter import greeter
    from handlers.signup import signup

    return Endpoint([greeter, signup, audit]).asgi_app()


async def _set_up_demo(bootstrap: str, admin_url: str, handlers_url: str, account_arn: str) -> None:
    """Topics (aiokafka admin), then deployments and subscriptions through the admin API."""
    import aiohttp
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1)
            for name, n in _TOPICS.items()
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()

    subscriptions = [
        ("members.joined", "service://Greeter/greet", {}),
        # Lambda, batch mode, AWS's MSK event shape: what an existing Kafka consumer reads.
        (
            "payments",
            "service://Account/apply",
            {
                "batch.size": "10",
                "event.format": "msk",
                "dead.letter.topic": "payments.dead-letters",
            },
        ),
        ("payments", "service://AuditLog/append", {}),
        ("signups", "service://Signup/run", {}),
    ]
    async with aiohttp.ClientSession(
        base_url=admin_url, timeout=aiohttp.ClientTimeout(total=30)
    ) as client:
        for body in ({"uri": handlers_url}, {"arn": account_arn}):
            async with client.post("/deployments", json=body) as response:
                if response.status >= 300:
                    raise IngressError(f"registering {body} failed: {await response.text()}")
        for topic, sink, options in subscriptions:
            async with client.post(
                "/subscriptions",
                json={
                    "source": f"kafka://local/{topic}",
                    "sink": sink,
                    "options": {"auto.offset.reset": "earliest", **options},
                },
            ) as response:
                if response.status >= 300 and response.status != 409:
                    text = await response.text()
                    raise IngressError(f"subscribing {topic} -> {sink} failed: {text}")
    print(
        "demo: deployments registered (HTTP: Greeter, Signup, AuditLog; Lambda: Account), "
        f"{len(subscriptions)} subscriptions; producing demo events …\n",
        flush=True,
    )


async def _produce_demo(bootstrap: str) -> None:
    """A burst of demo events, then one payment and one new member every two seconds."""
    import itertools
    import json
    import random

    from aiokafka import AIOKafkaProducer

    rng = random.Random(7)
    names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()

    async def send(topic: str, key: str | None, value: object) -> None:
        await producer.send(
            topic,
            json.dumps(value).encode(),
            key=key.encode() if key is not None else None,
            headers=[("source", b"kafka-ingress-dev")],
        )

    def a_payment(n: int) -> tuple[str, dict[str, object]]:
        account = f"acct-{rng.randint(1, 6)}"
        direction = "credit" if rng.random() < 0.7 else "debit"
        # Now and then a payment in the wrong currency: terminal, dead-lettered.
        currency = "USD" if n % 17 == 16 else "EUR"
        return account, {
            "payment_id": f"pay-{n}",
            "amount_cents": rng.randint(100, 5000),
            "direction": direction,
            "currency": currency,
        }

    try:
        for n, name in enumerate(names):
            await send(
                "members.joined",
                None,
                {"name": name, "locale": rng.choice(["en", "de", "fr", "es"])},
            )
            await send(
                "signups", f"user-{n % 5}", {"email": f"{name.lower()}@example.com", "name": name}
            )
        for n in range(30):
            await send("payments", *a_payment(n))
        await producer.flush()
        for n in itertools.count(30):
            await asyncio.sleep(2)
            await send("payments", *a_payment(n))
            await send("members.joined", None, {"name": rng.choice(names)})
    finally:
        await producer.stop()


async def _show_status(poller: Poller, bootstrap: str, stop: asyncio.Event) -> None:
    """A live table (rich) of subscriptions: records consumed, invocations by status, lag."""
    from aiokafka import AIOKafkaConsumer
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not console.is_terminal:
        # Printed to a pipe or file: wide enough for every column, without wrapping.
        console = Console(width=170)
    offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await offsets.start()
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while not stop.is_set():
                    live.update(await _status_table(poller, offsets))
                    await asyncio.sleep(1)
        else:
            # Not a terminal (CI, a log file): print the table every few seconds instead.
            while not stop.is_set():
                await asyncio.sleep(5)
                console.print(await _status_table(poller, offsets))
    finally:
        await offsets.stop()


async def _status_table(poller: Poller, offsets: Any) -> Table:
    from aiokafka import TopicPartition

    table = Table(title="Kafka Ingress — subscriptions (Ctrl-C stops everything)")
    for column in ("subscription", "source → sink", "state", "consumed", "succeeded"):
        table.add_column(column, justify="right" if column in ("consumed", "succeeded") else "left")
    for column in ("failed", "dead-lettered", "duplicates", "retries", "in flight", "lag"):
        table.add_column(column, justify="right")
    runners = poller.supervisor.runners()
    for sub_id, status in sorted(poller.supervisor.status().items()):
        runner = runners.get(sub_id)
        stats = status.get("stats")
        lag: int | str = "-"
        if runner is not None:
            parts = runner.partition_status()
            if parts:
                ends = await offsets.end_offsets(list(parts))
                lag = sum(
                    max(0, ends[tp] - (info["committed"] or 0))
                    for tp, info in parts.items()
                    if isinstance(tp, TopicPartition) and tp in ends
                )
        sub = runner.subscription if runner is not None else None
        route = f"{sub.topic} → {sub.service}/{sub.handler}" if sub else "-"
        table.add_row(
            "…" + sub_id[-8:],
            route,
            str(status.get("state")),
            *(
                str(getattr(stats, name, 0)) if stats is not None else "0"
                for name in (
                    "consumed",
                    "succeeded",
                    "failed",
                    "dead_lettered",
                    "duplicates",
                    "retries",
                )
            ),
            str(status.get("in_flight", 0)),
            str(lag),
        )
    return table
