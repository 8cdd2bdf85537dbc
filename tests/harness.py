"""Test harness: a recording handler app, an in-process poller, produce/poll helpers.

Used by the integration and end-to-end tests. Everything here talks to real parts: the broker
started by the kafka fixtures, the moto server over HTTP, uvicorn on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter import ids
from adapter.config import Settings, load_settings
from adapter.kafka.topics import describe_topics
from adapter.model import (
    HandlerInfo,
    HandlerType,
    InputKind,
    LedgerEntry,
    ServiceInfo,
    ServiceType,
    Subscription,
    topic_key,
)
from adapter.poller import Poller
from adapter.store.dynamo import DynamoStore

__all__ = [
    "Call",
    "Ingress",
    "RecordingHandler",
    "committed_offsets",
    "consume_all",
    "eventually",
    "produce",
    "record_id",
    "topic_key_of",
]


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> None:
    """Poll ``predicate`` until true; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text}")
        await asyncio.sleep(interval)


@dataclass
class Call:
    service: str
    handler: str
    key: str | None
    body: bytes
    headers: dict[str, str]
    started: float
    ended: float = 0.0
    status: int = 0

    @property
    def offset(self) -> int:
        return int(self.headers["kafka.offset"])

    @property
    def partition(self) -> int:
        return int(self.headers["kafka.partition"])

    @property
    def invocation_id(self) -> str:
        return self.headers["idempotency-key"]


Behaviour = Callable[[Call], Awaitable[Response | None]]


class RecordingHandler:
    """A handler deployment that records every call and answers per ``behaviour``."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour
        self.calls: list[Call] = []
        self.active_by_key: dict[str | None, int] = defaultdict(int)
        self.key_overlaps = 0
        self.active = 0
        self.max_active = 0
        self.app = Starlette(
            routes=[
                Route("/invoke/{service}/{handler}", self._invoke, methods=["POST"]),
                Route("/invoke/{service}/{key}/{handler}", self._invoke, methods=["POST"]),
            ]
        )

    async def _invoke(self, request: Request) -> Response:
        key = request.path_params.get("key")
        call = Call(
            service=request.path_params["service"],
            handler=request.path_params["handler"],
            key=key,
            body=await request.body(),
            headers=dict(request.headers),
            started=time.monotonic(),
        )
        self.calls.append(call)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if key is not None:
            self.active_by_key[key] += 1
            if self.active_by_key[key] > 1:
                self.key_overlaps += 1
        try:
            response = await self.behaviour(call) if self.behaviour else None
            response = response or JSONResponse({"ok": True})
        finally:
            self.active -= 1
            if key is not None:
                self.active_by_key[key] -= 1
            call.ended = time.monotonic()
        call.status = response.status_code
        return response

    def acked(self) -> list[Call]:
        return [c for c in self.calls if 200 <= c.status < 300]

    def acked_ids(self) -> set[str]:
        return {c.invocation_id for c in self.acked()}


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[
        tuple[bytes | None, bytes | None]
        | tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
    ],
    *,
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Produce records (key, value[, headers]); returns (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = []
        for item in records:
            key, value = item[0], item[1]
            headers = list(item[2]) if len(item) > 2 else []  # type: ignore[misc]
            futures.append(
                await producer.send(
                    topic, value=value, key=key, headers=headers, partition=partition
                )
            )
        results = [await f for f in futures]
        return [(r.partition, r.offset) for r in results]
    finally:
        await producer.stop()


async def topic_key_of(bootstrap: str, topic: str) -> str:
    """The topic's identity as invocation IDs and the ledger key it (name@topic-id)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        info = (await describe_topics(client, [topic]))[topic]
    finally:
        await client.close()
    assert info is not None, f"topic {topic!r} does not exist"
    return topic_key(topic, info.topic_id)


async def record_id(
    bootstrap: str, subscription_id: str, topic: str, partition: int, offset: int
) -> str:
    """The invocation ID of one record, as the engine derives it."""
    key = await topic_key_of(bootstrap, topic)
    return ids.invocation_id(subscription_id, key, partition, offset)


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            out[p] = await consumer.committed(TopicPartition(topic, p))
        return out
    finally:
        await consumer.stop()


async def consume_all(
    bootstrap: str, topic: str, expected: int, *, timeout: float = 30
) -> list[Any]:
    """Read ``expected`` records of a topic from the beginning (no group)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                out.extend(messages)
        return out
    finally:
        await consumer.stop()


def _toml_cluster(name: str, bootstrap: str, options: dict[str, str]) -> str:
    # JSON strings are TOML basic strings (same quotes and escapes).
    scheme = options.get("security.protocol", "PLAINTEXT")
    items = [f"name={json.dumps(name)}", f"brokers=[{json.dumps(f'{scheme}://{bootstrap}')}]"]
    items += [f"{json.dumps(k)}={json.dumps(v)}" for k, v in options.items()]
    return "{" + ", ".join(items) + "}"


@dataclass
class Ingress:
    """An in-process poller wired to the test's broker and moto server."""

    bootstrap: str
    store: DynamoStore
    endpoint_url: str
    limits: dict[str, Any] = field(default_factory=dict)
    # The local Lambda endpoint (adapter.local.lambda_server) for Lambda deployments.
    lambda_endpoint: str | None = None
    # [signing] private-key-file: sign every invocation.
    signing_key_file: str | None = None
    # librdkafka options of the "local" cluster, and more clusters: name -> (bootstrap,
    # options). All of it reaches the poller as KAFKA_INGRESS_KAFKA_CLUSTERS (TOML inline).
    cluster_options: dict[str, str] = field(default_factory=dict)
    extra_clusters: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    poller: Poller | None = None
    task: asyncio.Task[None] | None = None
    settings: Settings | None = None

    def env(self) -> dict[str, str]:
        """The environment a poller process needs to join this test's stack."""
        return {
            "KAFKA_INGRESS_KAFKA_CLUSTERS": self.clusters_env(),
            "KAFKA_INGRESS_DYNAMODB_ENDPOINT_URL": self.endpoint_url,
            "KAFKA_INGRESS_DYNAMODB_TABLE_PREFIX": self.store.names.prefix,
            **(
                {"KAFKA_INGRESS_LAMBDA_ENDPOINT_URL": self.lambda_endpoint}
                if self.lambda_endpoint
                else {}
            ),
            **(
                {"KAFKA_INGRESS_SIGNING_PRIVATE_KEY_FILE": self.signing_key_file}
                if self.signing_key_file
                else {}
            ),
        }

    def clusters_env(self) -> str:
        clusters = {"local": (self.bootstrap, self.cluster_options), **self.extra_clusters}
        return "[" + ", ".join(_toml_cluster(n, b, o) for n, (b, o) in clusters.items()) + "]"

    def build_settings(self) -> Settings:
        settings = load_settings(None, env=self.env())
        limits = {"subscription_refresh_ms": 200, **self.limits}
        admin = {"bind_address": "127.0.0.1:0", "allow_open": True}
        # The in-process poller writes through this harness's store: its settings must say
        # what that store does (the store fixture keeps a row per invocation, which most of
        # these tests read; pages have their own tests and the process tests run the default).
        ledger = {"successes": "pages" if self.store.success_pages else "rows"}
        return settings.model_copy(
            update={
                "limits": settings.limits.model_copy(update=limits),
                "admin": settings.admin.model_copy(update=admin),
                "ledger": settings.ledger.model_copy(update=ledger),
            }
        )

    async def start(self) -> Poller:
        self.settings = self.build_settings()
        self.poller = Poller(self.settings, self.store)
        self.task = asyncio.create_task(self.poller.run())
        await asyncio.wait_for(self.poller.started(), 10)
        return self.poller

    async def stop(self) -> None:
        if self.poller is not None and self.task is not None:
            self.poller.stop()
            await asyncio.wait_for(self.task, 60)
        self.poller, self.task = None, None

    async def register(
        self,
        base_url: str,
        service: str,
        service_type: ServiceType,
        handlers: dict[str, tuple[HandlerType, InputKind]],
    ) -> str:
        dep_id = ids.deployment_id()
        await self.store.put_deployment({"id": dep_id, "uri": base_url, "created_at": 0})
        await self.store.put_service(
            ServiceInfo(
                name=service,
                service_type=service_type,
                deployment_id=dep_id,
                handlers=tuple(HandlerInfo(n, t, i) for n, (t, i) in handlers.items()),
            )
        )
        return dep_id

    async def entry_of(
        self, subscription_id: str, topic: str, partition: int, offset: int
    ) -> LedgerEntry | None:
        """The ledger row of one record (None if it has none)."""
        inv_id = await record_id(self.bootstrap, subscription_id, topic, partition, offset)
        return await self.store.get_entry(inv_id)

    async def subscribe(
        self,
        topic: str,
        service: str,
        handler: str,
        options: dict[str, str] | None = None,
        *,
        cluster: str = "local",
    ) -> Subscription:
        sub = Subscription(
            id=ids.subscription_id(),
            cluster=cluster,
            topic=topic,
            service=service,
            handler=handler,
            options={"auto.offset.reset": "earliest", **(options or {})},
        )
        await self.store.put_subscription(sub)
        if self.poller is not None:
            self.poller.supervisor.wake()
        return sub


class PollerProcess:
    """``kafka-ingress serve`` in a child process, for crash (SIGKILL) and SIGTERM tests."""

    # Several pollers run at once in these tests: each admin API gets a free port.
    DEFAULT_CONFIG = '[admin]\nbind-address = "127.0.0.1:0"\nallow-open = true\n'

    def __init__(self, env: dict[str, str], config_text: str = DEFAULT_CONFIG) -> None:
        self._env = env
        self._config_text = config_text
        self.proc: asyncio.subprocess.Process | None = None
        self.output = b""

    async def start(self, tmp_path: Any) -> None:
        import os
        import sys

        config = tmp_path / f"poller-{ids.deployment_id()}.toml"
        config.write_text(self._config_text)
        env = {**os.environ, **self._env, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapter",
            "--config-file",
            str(config),
            "serve",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self.output += chunk

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            await self._reader
            raise AssertionError(
                f"poller exited by itself with {self.proc.returncode}:\n"
                + self.output.decode(errors="replace")[-4000:]
            )
        self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 30)
        await self._reader

    async def terminate(self, timeout: float = 60) -> int:
        import signal

        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code
