"""Three ``kafka-ingress serve`` processes share a subscription: any one's admin API serves it.

Real broker, one moto server, three poller processes (each with its own admin API on
loopback), default ledger settings (first-attempt successes in pages). Checked: a retry-now
and a kill sent to a poller that does not hold the record take effect on the one that does
(queued as a command: 202, then done); a paged success is found by ID from every poller; the
listing without a subscription filter shows the successes; the CLI lists them too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from adapter.cli import main as cli
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import (
    Call,
    Ingress,
    PollerProcess,
    RecordingHandler,
    eventually,
    produce,
    record_id,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

BACKOFF_MS = 120_000  # far longer than the test waits for the retry it asks for
PARTITIONS = 3


async def admin_url(poller: PollerProcess) -> str:
    found: list[str] = []

    def listening() -> bool:
        match = re.search(rb"admin API listening on (http://\S+)", poller.output)
        if match is not None:
            found.append(match.group(1).decode())
        return bool(found)

    await eventually(listening, timeout=60, message=lambda: poller.output.decode()[-2000:])
    return found[0]


async def test_admin_actions_and_lookups_work_from_any_of_three_pollers(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    store: DynamoStore,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def behave(call: Call) -> Response | None:
        kind = json.loads(call.body)["kind"]
        first = call.headers.get("x-kafka-ingress-attempt", "1") == "1"
        if kind == "kill" or (kind == "retry" and first):
            return JSONResponse({"busy": True}, status_code=500)
        return None

    handler = RecordingHandler(behave)
    url = await handler_server(handler.app)
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    await harness.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = await topic_factory(PARTITIONS)
    sub = await harness.subscribe(
        topic,
        "Greeter",
        "greet",
        {
            "retry.initial.interval.ms": str(BACKOFF_MS),
            "retry.max.interval.ms": str(BACKOFF_MS),
            "retry.jitter": "0",
            "retry.max.attempts": "unlimited",
            "session.timeout.ms": "10000",
            "heartbeat.interval.ms": "1000",
        },
    )
    pollers = [PollerProcess(harness.env()) for _ in range(3)]
    try:
        for poller in pollers:
            await poller.start(tmp_path)
        urls = [await admin_url(p) for p in pollers]
        async with httpx.AsyncClient(timeout=10) as http:

            async def held() -> list[set[int]]:
                out = []
                for base in urls:
                    doc = (await http.get(f"{base}/subscriptions/{sub.id}")).json()
                    runtime = doc.get("runtime") or {}
                    out.append({p["partition"] for p in runtime.get("partitions", [])})
                return out

            async def one_partition_each() -> bool:
                return sorted(len(h) for h in await held()) == [1, 1, 1]

            await eventually(one_partition_each, timeout=120, interval=0.5)
            owners = await held()

            ok = [(b"k", json.dumps({"kind": "ok", "n": n}).encode()) for n in range(10)]
            placed: dict[str, tuple[int, int]] = {}
            for partition in range(PARTITIONS):
                await produce(kafka_bootstrap, topic, ok, partition=partition)
            [placed["retry"]] = await produce(
                kafka_bootstrap, topic, [(b"r", b'{"kind": "retry"}')], partition=0
            )
            [placed["kill"]] = await produce(
                kafka_bootstrap, topic, [(b"x", b'{"kind": "kill"}')], partition=1
            )
            inv = {
                kind: await record_id(kafka_bootstrap, sub.id, topic, p, o)
                for kind, (p, o) in placed.items()
            }
            paged_id = await record_id(kafka_bootstrap, sub.id, topic, 2, 3)

            async def backing_off() -> bool:
                rows = [await store.get_entry(i) for i in inv.values()]
                return all(r is not None and r.status == "BACKING_OFF" for r in rows)

            await eventually(backing_off, timeout=60, interval=0.2)

            def not_owner(partition: int) -> str:
                return next(u for u, h in zip(urls, owners, strict=True) if partition not in h)

            # Retry-now through a poller that does not hold partition 0.
            sent = time.monotonic()
            asked = await http.patch(f"{not_owner(0)}/invocations/{inv['retry']}/retry")
            assert asked.status_code == 202, asked.text
            assert asked.json()["command"]["state"] == "pending"

            def retried() -> bool:
                return len([c for c in handler.calls if c.invocation_id == inv["retry"]]) >= 2

            await eventually(retried, timeout=30, message="the retry never reached the owner")
            attempts = [c for c in handler.calls if c.invocation_id == inv["retry"]]
            assert attempts[1].started - attempts[0].started < BACKOFF_MS / 1000 / 2
            assert attempts[1].started >= sent
            with capsys.disabled():
                waited = attempts[1].started - sent
                print(f"\nretry-now via a non-owner: attempt 2 after {waited:.2f}s")

            async def command_done(base: str, inv_id: str, outcome: str) -> bool:
                doc = (await http.get(f"{base}/invocations/{inv_id}/command")).json()
                return doc.get("state") == "done" and doc.get("outcome") == outcome

            await eventually(lambda: command_done(urls[0], inv["retry"], "PENDING"), timeout=30)

            # Kill through a poller that does not hold partition 1.
            killer = not_owner(1)
            kill_sent = time.monotonic()
            asked = await http.patch(f"{killer}/invocations/{inv['kill']}/kill")
            assert asked.status_code == 202, asked.text

            async def killed() -> bool:
                doc = (await http.get(f"{killer}/invocations/{inv['kill']}")).json()
                return doc.get("status") == "KILLED"

            await eventually(killed, timeout=30, interval=0.2, message="never KILLED")
            with capsys.disabled():
                print(f"kill via a non-owner: KILLED {time.monotonic() - kill_sent:.2f}s later")
            await eventually(lambda: command_done(urls[2], inv["kill"], "KILLED"), timeout=30)
            assert await store.get_entry(paged_id) is None  # a paged success: no row

            # A paged success, by ID, from each poller's API.
            async def found_everywhere() -> bool:
                for base in urls:
                    response = await http.get(f"{base}/invocations/{paged_id}")
                    if response.status_code != 200:
                        return False
                    doc: dict[str, Any] = response.json()
                    assert (doc["status"], doc["partition"], doc["offset"]) == ("SUCCEEDED", 2, 3)
                return True

            await eventually(found_everywhere, timeout=30, interval=0.2)

            # The unfiltered listing, newest first, shows the successes.
            listing = (await http.get(f"{urls[1]}/invocations", params={"limit": 1000})).json()
            statuses = {i["id"]: i["status"] for i in listing["invocations"]}
            assert statuses[paged_id] == "SUCCEEDED"
            assert statuses[inv["kill"]] == "KILLED"
            assert sum(1 for s in statuses.values() if s == "SUCCEEDED") >= 3 * len(ok)
            capsys.readouterr()
            code = await asyncio.to_thread(
                cli, ["invocations", "list", "--admin-url", urls[2], "--limit", "1000"]
            )
            out = capsys.readouterr().out
            assert code == 0
            assert paged_id in out
            assert "SUCCEEDED" in out
    finally:
        for poller in pollers:
            if poller.proc is not None and poller.proc.returncode is None:
                await poller.terminate(timeout=60)
