"""Soak: hours-long behaviour in minutes — steady traffic, periodic kills, leak watch.

Not part of ``make test`` (marker ``soak``, deselected by default); ``make soak`` runs it for
``SOAK_MINUTES`` (default 30). One poller lives for the whole run and is sampled every
``SOAK_SAMPLE_S`` seconds through its own ``/metrics`` (resident memory, open descriptors,
asyncio tasks); a second poller is SIGKILLed and restarted every few minutes, so rebalances keep
happening. At the end every record must be completed and the long-lived poller's memory,
descriptors and tasks must be flat (last third versus middle third of the run, after the pools
have filled). The samples
are written to ``.cache/soak-report.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from adapter.ids import invocation_id
from adapter.local.kafka import KafkaBroker
from adapter.local.moto import fake_aws_credentials
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.tables import TableNames
from tests._http_fixtures import HandlerServer
from tests.harness import Ingress, PollerProcess, RecordingHandler, eventually, topic_key_of
from tests.reliability.test_chaos import end_offsets

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
SAMPLE_S = float(os.environ.get("SOAK_SAMPLE_S", "30"))
# moto (the DynamoDB double) slows down sharply past ~100k ledger rows (a 25-row batch took
# 71 s at 142k rows), so the default rate keeps a 30-minute run below that.
RATE = int(os.environ.get("SOAK_RATE", "40"))  # records per second
KILL_EVERY_S = float(os.environ.get("SOAK_KILL_EVERY_S", "300"))
REPORT = Path(__file__).resolve().parents[2] / ".cache" / "soak-report.json"

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60 + 900))]

_METRIC = re.compile(
    r"^(process_resident_memory_bytes|process_open_fds|kafka_ingress_asyncio_tasks) (\S+)$", re.M
)


async def sample(admin_url: str) -> dict[str, float]:
    """The poller's leak gauges; a missed sample is recorded, not fatal (the test process
    may be briefly starved on two cores)."""
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(f"{admin_url}/metrics")).text
    except httpx.HTTPError:
        return {"missed": 1.0}
    return {name: float(value) for name, value in _METRIC.findall(text)}


class MotoProcess:
    """moto in a process of its own: the soak's DynamoDB load must not starve this one."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.endpoint_url = ""

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "adapter.local.moto",
            "--table-prefix",
            "soak-",
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        match = re.search(rb"(http://\S+)", line)
        assert match, line
        self.endpoint_url = match.group(1).decode()
        return self.endpoint_url

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)


def admin_url_of(poller: PollerProcess) -> str:
    match = re.search(rb"admin API listening on (http://\S+)", poller.output)
    assert match, poller.output.decode(errors="replace")[-2000:]
    return match.group(1).decode()


async def test_soak(handler_server: HandlerServer, tmp_path: Path) -> None:
    broker = KafkaBroker()
    broker.start()
    fake_aws_credentials()
    moto = MotoProcess()
    await moto.start()
    pollers: list[PollerProcess] = []
    try:
        store = DynamoStore(make_client(moto.endpoint_url, "us-east-1"), TableNames("soak-"))
        store.create_tables()
        handler = RecordingHandler()
        url = await handler_server(handler.app)
        harness = Ingress(broker.bootstrap_servers, store, moto.endpoint_url)
        await harness.register(
            url,
            "Account",
            ServiceType.VIRTUAL_OBJECT,
            {"apply": (HandlerType.EXCLUSIVE, InputKind.JSON)},
        )
        topic = "soak"
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 4, 1)])
        await admin.close()
        sub = await harness.subscribe(
            topic,
            "Account",
            "apply",
            {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        )

        steady = PollerProcess(harness.env())
        churn = PollerProcess(harness.env())
        pollers.extend([steady, churn])
        await steady.start(tmp_path)
        await churn.start(tmp_path)
        await eventually(lambda: b"admin API listening" in steady.output, timeout=60)
        admin_url = admin_url_of(steady)

        samples: list[dict[str, float]] = []
        deadline = time.monotonic() + MINUTES * 60
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        await producer.start()
        next_sample = next_kill = time.monotonic()
        next_kill += KILL_EVERY_S
        produced = 0
        try:
            while time.monotonic() < deadline:
                tick = time.monotonic()
                for _ in range(RATE // 10):
                    await producer.send(topic, key=f"acct-{produced % 500}".encode(), value=b"{}")
                    produced += 1
                if tick >= next_sample:
                    values = await sample(admin_url)
                    values["t"] = round(tick - (deadline - MINUTES * 60), 1)
                    values["acked"] = len(handler.acked())
                    samples.append(values)
                    print("soak sample", json.dumps(values), flush=True)
                    next_sample += SAMPLE_S
                if tick >= next_kill:
                    await churn.kill()
                    churn = PollerProcess(harness.env())
                    pollers.append(churn)
                    await churn.start(tmp_path)
                    next_kill += KILL_EVERY_S
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
            await producer.flush()
        finally:
            await producer.stop()

        ends = await end_offsets(broker.bootstrap_servers, topic)
        key = await topic_key_of(broker.bootstrap_servers, topic)
        expected = {invocation_id(sub.id, key, p, o) for p, end in ends.items() for o in range(end)}
        await eventually(lambda: expected <= handler.acked_ids(), timeout=600)
        samples.append(
            {**await sample(admin_url), "t": MINUTES * 60, "acked": len(handler.acked())}
        )
    finally:
        for poller in pollers:
            if poller.proc is not None and poller.proc.returncode is None:
                try:
                    await poller.terminate(timeout=120)
                except TimeoutError:
                    # A drain stuck behind an unanswering DynamoDB must not leave orphans.
                    await poller.kill()
        await moto.stop()
        broker.stop()

    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps({"records": len(expected), "samples": samples}, indent=2))
    taken = [row for row in samples if "missed" not in row]
    assert len(taken) >= 0.8 * len(samples), "too many samples missed"
    # Pools (HTTP keep-alive connections up to max-in-flight, Kafka connections) fill during
    # the first rebalances; what must not happen afterwards is growth. So the last third of
    # the run is compared with the middle third, and descriptors are also held to a hard bound.
    third = max(1, len(taken) // 3)
    middle, last = taken[third : 2 * third] or taken[:1], taken[2 * third :] or taken[-1:]

    def peak(rows: list[dict[str, float]], name: str) -> float:
        return max(row.get(name, 0.0) for row in rows)

    rss, fds, tasks = (
        "process_resident_memory_bytes",
        "process_open_fds",
        "kafka_ingress_asyncio_tasks",
    )
    assert peak(last, rss) <= 1.15 * peak(middle, rss), "resident memory keeps growing"
    assert peak(last, fds) <= 1.1 * peak(middle, fds) + 10, "file descriptors keep growing"
    assert peak(taken, fds) <= 256 + 200, "more descriptors than the connection pools allow"
    assert peak(last, tasks) <= 1.2 * peak(middle, tasks) + 10, "asyncio tasks keep growing"
