"""Rebalances and graceful shutdown: partitions move between pollers without loss or repeats."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from adapter.local.kafka import KafkaBroker
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
    committed_offsets,
    eventually,
    produce,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def first_call_order_violations(calls: list[Call]) -> int:
    """Per key, the first invocation of each offset must come in offset order."""
    seen: set[str] = set()
    last: dict[str | None, tuple[int, int]] = {}
    violations = 0
    for call in sorted(calls, key=lambda c: c.started):
        if call.invocation_id in seen:
            continue
        seen.add(call.invocation_id)
        position = (call.partition, call.offset)
        previous = last.get(call.key)
        if previous is not None and position < previous:
            violations += 1
        last[call.key] = position
    return violations


@pytest.mark.promise("p-fault-rebalance", "p-ops-fence-handover")
async def test_partitions_move_between_pollers_without_loss_or_repeats(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    rng = random.Random(11)

    async def work(call: Call) -> None:
        await asyncio.sleep(rng.random() * 0.01)

    handler = RecordingHandler(work)
    url = await handler_server(handler.app)
    await ingress.register(
        url,
        "Account",
        ServiceType.VIRTUAL_OBJECT,
        {"apply": (HandlerType.EXCLUSIVE, InputKind.JSON)},
    )
    topic = await topic_factory(partitions=4)
    sub = await ingress.subscribe(topic, "Account", "apply")
    total = 3000
    placed = await produce(
        ingress.bootstrap, topic, [(f"acct-{i % 100}".encode(), b"{}") for i in range(total)]
    )
    await ingress.start()
    second = Ingress(ingress.bootstrap, ingress.store, ingress.endpoint_url)
    try:
        await eventually(lambda: len(handler.acked()) >= 600, timeout=60)
        # The first fences, read from the ledger's index, may be handed on once they are
        # read again after the index's lag.
        await eventually(lambda: _fences_settled(ingress), timeout=30, message="fences settle")
        await second.start()  # joins the group: partitions are revoked and reassigned
        await eventually(
            lambda: _owns_partitions(second), timeout=60, message="second poller got no partition"
        )
        await eventually(lambda: len(handler.acked()) >= 2000, timeout=90)
        before = _handovers_taken(second)
        await ingress.stop()  # graceful leave: the second poller takes everything
        await eventually(
            lambda: len({c.invocation_id for c in handler.acked()}) >= total,
            timeout=90,
            message=lambda: f"{len(handler.acked())}/{total}",
        )
        ends: dict[int, int] = {}
        for partition, offset in placed:
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        await eventually(
            lambda: _committed(ingress, sub.id, topic, ends), timeout=30, message="commit lag"
        )
        # Every partition the second poller holds now came with its last owner's fence.
        await eventually(
            lambda: _partitions_held(second) == 4, timeout=30, message="second holds all"
        )
        handed_over = _handovers_taken(second) - before
    finally:
        await second.stop()

    assert handed_over >= 4, f"{handed_over} of 4 partitions came with a handover"
    ids = [c.invocation_id for c in handler.calls]
    assert len(set(ids)) == total, "records lost"
    # A graceful revocation drains in-flight work before the partition moves: no repeats.
    assert len(ids) == total, f"{len(ids) - total} records invoked twice"
    assert handler.key_overlaps == 0
    assert first_call_order_violations(handler.calls) == 0


def _owns_partitions(harness: Ingress) -> bool:
    if harness.poller is None:
        return False
    return any(r.partition_status() for r in harness.poller.supervisor.runners().values())


def _partitions_held(harness: Ingress) -> int:
    assert harness.poller is not None
    return sum(len(r._assignments.states) for r in harness.poller.supervisor.runners().values())


def _fences_settled(harness: Ingress) -> bool:
    assert harness.poller is not None
    states = [
        state
        for runner in harness.poller.supervisor.runners().values()
        for state in runner._assignments.states.values()
    ]
    return len(states) == 4 and all(state.fence_settled for state in states)


def _handovers_taken(harness: Ingress) -> int:
    assert harness.poller is not None
    return sum(
        r._assignments.fences_handed_over for r in harness.poller.supervisor.runners().values()
    )


async def _committed(ingress: Ingress, group: str, topic: str, ends: dict[int, int]) -> bool:
    return await committed_offsets(ingress.bootstrap, group, topic, len(ends)) == ends


@pytest.mark.promise("p-fault-sigterm")
async def test_sigterm_drains_commits_and_exits_zero(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    async def slow(call: Call) -> None:
        await asyncio.sleep(0.05)

    handler = RecordingHandler(slow)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = await topic_factory(partitions=2)
    sub = await ingress.subscribe(topic, "Svc", "h")
    total = 2000
    await produce(ingress.bootstrap, topic, [(None, b"{}") for _ in range(total)])

    poller = PollerProcess(ingress.env())
    await poller.start(tmp_path)
    await eventually(
        lambda: len(handler.acked()) >= 200,
        timeout=60,
        message=lambda: poller.output.decode(errors="replace")[-2000:],
    )
    assert await poller.terminate(timeout=60) == 0
    output = poller.output.decode(errors="replace")
    assert "poller stopped" in output
    acked = {c.invocation_id for c in handler.acked()}
    started = {c.invocation_id for c in handler.calls}
    assert acked == started, "SIGTERM abandoned running invocations instead of draining them"
    committed = await committed_offsets(ingress.bootstrap, sub.id, topic, 2)
    assert sum(v or 0 for v in committed.values()) > 0

    # The next poller resumes exactly where the drained one stopped: nothing lost or repeated.
    await ingress.start()
    await eventually(lambda: len({c.invocation_id for c in handler.acked()}) >= total, timeout=90)
    ids = [c.invocation_id for c in handler.calls]
    assert len(ids) == len(set(ids)) == total


@pytest.mark.promise("p-fault-sigterm")
async def test_sigterm_ends_the_poller_even_when_the_broker_is_gone(
    store: DynamoStore, moto_server: MotoServer, handler_server: HandlerServer, tmp_path: Path
) -> None:
    broker = KafkaBroker()
    broker.start()
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    harness = Ingress(broker.bootstrap_servers, store, moto_server.endpoint_url)
    await harness.register(
        url, "Svc", ServiceType.SERVICE, {"h": (HandlerType.SERVICE, InputKind.JSON)}
    )
    poller = PollerProcess(harness.env())
    try:
        await harness.subscribe("outage", "Svc", "h")
        await produce(broker.bootstrap_servers, "outage", [(None, b"{}")])
        await poller.start(tmp_path)
        await eventually(lambda: len(handler.acked()) == 1, timeout=60)
        broker.stop()
        # Drain, final commit and leaving the group all fail without a broker; each is
        # bounded, so the process still exits, and cleanly.
        assert await poller.terminate(timeout=90) == 0
    finally:
        if poller.proc is not None and poller.proc.returncode is None:
            await poller.kill()
        broker.stop()
