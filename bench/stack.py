"""The benchmark's own stack: Kafka broker, counting DynamoDB, handler servers, Kafka helpers.

Everything listens on loopback and is stopped (by PID) when the run ends. The broker runs with
the JIT fully enabled: the launcher's defaults cap it at C1 for fast test start-up, which would
make the broker, not the consumers, the bottleneck of a throughput benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from adapter.local.kafka import KafkaBroker
from adapter.local.moto import fake_aws_credentials
from bench.procs import Child, Meter

__all__ = ["HandlerClient", "Stack"]

# Later flags win: this lifts the launcher's C1-only default (-XX:TieredStopAtLevel=1).
BROKER_JVM_OPTIONS = ("-XX:TieredStopAtLevel=4",)
_ADMIN_TIMEOUT_MS = 30_000
_LAMBDA = -1.0  # key of the Lambda endpoint among the handler servers (by delay)


class HandlerClient:
    """The bench's side of a handler server's private routes (counts, receipts, reset)."""

    def __init__(self, child: Child, url: str, delay_ms: float) -> None:
        self.child = child
        self.url = url
        self.delay_ms = delay_ms
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def count(self) -> dict[str, Any]:
        async with self._http().get(f"{self.url}/__count") as resp:
            data: dict[str, Any] = orjson.loads(await resp.read())
            return data

    async def stats(self) -> dict[str, Any]:
        async with self._http().get(f"{self.url}/__stats") as resp:
            data: dict[str, Any] = orjson.loads(await resp.read())
            return data

    async def reset(self) -> None:
        async with self._http().post(f"{self.url}/__reset") as resp:
            resp.raise_for_status()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass
class Stack:
    work_dir: Path
    broker: KafkaBroker | None = None
    dynamo: Child | None = None
    dynamo_url: str = ""
    handlers: dict[float, HandlerClient] = field(default_factory=dict)
    _admin: AIOKafkaAdminClient | None = None
    _http: aiohttp.ClientSession | None = None
    _broker_dir: Path | None = None

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap_servers

    async def start(self) -> None:
        fake_aws_credentials()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._broker_dir = _memory_dir()
        self.broker = KafkaBroker(
            jvm_options=BROKER_JVM_OPTIONS, heap_mb=768, work_dir=self._broker_dir
        )
        broker_start = asyncio.to_thread(self.broker.start, 120)
        self.dynamo = Child(
            "dynamodb", [sys.executable, "-m", "bench.dynamo"], self.work_dir / "dynamodb.log"
        )
        # Both first, then any failure: stop() must never race a broker still starting.
        dynamo_url, broker_started = await asyncio.gather(
            self.dynamo.start(wait_ready=True, timeout=60), broker_start, return_exceptions=True
        )
        for outcome in (dynamo_url, broker_started):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(dynamo_url, str)
        self.dynamo_url = dynamo_url
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=_ADMIN_TIMEOUT_MS
        )
        await self._admin.start()

    async def handler(self, delay_ms: float) -> HandlerClient:
        """The handler server answering after ``delay_ms`` (started on first use)."""
        client = self.handlers.get(delay_ms)
        if client is None:
            child = Child(
                f"handler-{delay_ms:g}ms",
                [sys.executable, "-m", "bench.handler", "--delay-ms", str(delay_ms)],
                self.work_dir / f"handler-{delay_ms:g}ms.log",
            )
            url = await child.start(wait_ready=True, timeout=60)
            client = HandlerClient(child, url, delay_ms)
            self.handlers[delay_ms] = client
        return client

    async def lambda_handler(self) -> HandlerClient:
        """The local Lambda endpoint serving the benchmark function (started on first use)."""
        client = self.handlers.get(_LAMBDA)
        if client is None:
            child = Child(
                "lambda",
                [sys.executable, "-m", "bench.lambda_handler"],
                self.work_dir / "lambda.log",
            )
            url = await child.start(wait_ready=True, timeout=60)
            client = HandlerClient(child, url, 0.0)
            self.handlers[_LAMBDA] = client
        return client

    def meters(self) -> dict[str, Meter]:
        """Meters of the stack's own processes, to show who else used the CPU."""
        out: dict[str, Meter] = {}
        if self.broker is not None and self.broker.pid is not None:
            out["kafka broker"] = Meter(self.broker.pid)
        if self.dynamo is not None and self.dynamo.running:
            out["dynamodb (moto)"] = Meter(self.dynamo.pid)
        for client in self.handlers.values():
            if client.child.running:
                out[client.child.name] = Meter(client.child.pid)
        return out

    async def stop(self) -> None:
        for client in self.handlers.values():
            await client.close()
            await client.child.stop()
        if self._http is not None:
            await self._http.close()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        if self.dynamo is not None:
            await self.dynamo.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        if self._broker_dir is not None:
            shutil.rmtree(self._broker_dir, ignore_errors=True)

    # -- DynamoDB ---------------------------------------------------------------------------

    async def dynamo_counts(self) -> dict[str, int]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._http.get(f"{self.dynamo_url}/__bench/requests") as resp:
            data: dict[str, int] = orjson.loads(await resp.read())
            return data

    async def get_text(self, url: str) -> str:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return await resp.text()

    # -- Kafka ------------------------------------------------------------------------------

    async def new_topic(self, partitions: int, label: str) -> str:
        assert self._admin is not None
        name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1)
        response = await self._admin.create_topics([topic], timeout_ms=_ADMIN_TIMEOUT_MS)
        errors = [err for err in response.topic_errors if err[1] != 0]
        if errors:
            raise RuntimeError(f"creating topic {name} failed: {errors}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = (await self._admin.describe_topics([name]) or [{}])[0]
            led = [p for p in found.get("partitions", []) if p.get("leader", -1) >= 0]
            if found.get("error_code") == 0 and len(led) == partitions:
                return name
            await asyncio.sleep(0.05)
        raise RuntimeError(f"topic {name} has no leader for every partition after 30 s")

    async def delete_topic(self, name: str) -> None:
        assert self._admin is not None
        with contextlib.suppress(Exception):
            await self._admin.delete_topics([name], timeout_ms=_ADMIN_TIMEOUT_MS)

    async def produce_backlog(
        self, topic: str, partitions: int, records: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """Produce fast: whole batches per partition, keyed exactly as the default partitioner."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks=1,
            linger_ms=20,
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        await producer.start()
        partitioner = DefaultPartitioner()
        all_partitions = list(range(partitions))
        builders: dict[int, Any] = {}
        in_flight: list[asyncio.Future[Any]] = []
        try:
            for key, value in records:
                partition = partitioner(key, all_partitions, all_partitions)
                builder = builders.get(partition)
                if builder is None:
                    builder = builders[partition] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=None) is None:
                    builder.close()
                    in_flight.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = builders[partition] = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=None)
                if len(in_flight) >= 64:
                    await asyncio.gather(*in_flight)
                    in_flight.clear()
            for partition, builder in builders.items():
                if builder.record_count():
                    builder.close()
                    in_flight.append(await producer.send_batch(builder, topic, partition=partition))
            await asyncio.gather(*in_flight)
        finally:
            await producer.stop()

    async def produce_steady(
        self, topic: str, records: Iterable[tuple[bytes, bytes]], rate: float
    ) -> int:
        """Produce at ``rate`` records/s (each stamped when sent); returns the count."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0)
        await producer.start()
        sent: list[asyncio.Future[Any]] = []
        try:
            start = time.monotonic()
            for index, (key, value) in enumerate(records):
                due = start + index / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the producer, not synchronising
                sent.append(await producer.send(topic, value=value, key=key))
            await asyncio.gather(*sent)
            return len(sent)
        finally:
            await producer.stop()

    async def end_offsets(self, topic: str, partitions: int) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: int(offset) for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        assert self._admin is not None
        try:
            offsets = await self._admin.list_consumer_group_offsets(group)
        except KafkaError:
            # No coordinator yet (the group has not joined, or __consumer_offsets is still
            # being created): nothing is committed so far.
            return {}
        return {
            tp.partition: int(meta.offset)
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }


def _memory_dir() -> Path | None:
    """A directory in memory (tmpfs) for the broker's log, where the machine has one.

    On this machine's disk the broker stalled every produce and fetch for 5-6 s in scenario (g):
    its 200 topics, fed in lockstep, reach their first offset-index entry in the same second,
    and the request handler page-faults into 400 fresh pages of sparse, memory-mapped index
    files (a thread dump showed it in ``OffsetIndex.append``); the bench's own producer
    stalled with the pollers. In memory the same run had no gap over 1.2 s
    (docs/benchmarks.md, scenario (g)). The bench measures the pollers, not the disk."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return None
    return Path(tempfile.mkdtemp(prefix="bench-broker-", dir=shm))
