"""The consumer shell dates its evidence of group membership from the request, not the answer.

The engine starts no attempt unless the group coordinator renewed this member's session less
than 0.8 times ``session.timeout.ms`` ago (``p-ops-paused-starts-nothing``). A poller paused while a
heartbeat's answer sits in its socket reads that answer only when it wakes — possibly long
after the broker expired it and gave its partitions away. Dated at the moment it is read, the
stale answer would pass for fresh evidence and release every attempt held at the wake (the
chaos suite's zombie scenario once saw four committed records invoked again 55 ms after the
wake). Dated from the request, it is as old as the pause.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.protocol.group import HeartbeatRequest

from adapter.clocks import suspend_aware
from adapter.kafka.consumer import TP, AiokafkaConsumer
from adapter.kafka.errors import ConnectionWatch
from tests._kafka_fixtures import TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

PAUSE_S = 1.5


class _Listener:
    def __init__(self, evidence: list[float]) -> None:
        self.assigned = asyncio.Event()
        self._evidence = evidence
        self.evidence_at_assignment: list[float] = []
        self.assigned_at = 0.0

    async def on_revoked(self, tps: set[TP]) -> None:
        pass

    async def on_assigned(self, tps: set[TP]) -> None:
        if tps:
            self.assigned_at = suspend_aware()
            self.evidence_at_assignment = list(self._evidence)
            self.assigned.set()


async def _member(
    kafka_bootstrap: str, topic: str, losses: list[float]
) -> tuple[AiokafkaConsumer, list[float]]:
    """A member that has joined the group; its own heartbeats are far apart (20 s), so only
    the test's heartbeat is sent while it runs."""
    consumer = AiokafkaConsumer(
        watch=ConnectionWatch(f"test {topic}"),
        bootstrap_servers=kafka_bootstrap,
        group_id=f"membership-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=45_000,
        heartbeat_interval_ms=20_000,
    )
    evidence: list[float] = []
    listener = _Listener(evidence)
    await consumer.start()
    consumer.observe_membership(evidence.append, losses.append)
    consumer.subscribe(topic, listener)
    async with asyncio.timeout(30):
        while not listener.assigned.is_set():
            await consumer.getmany(timeout_ms=200, max_records=1)
    # The SyncGroup that brought the assignment is evidence, dated before the callback ran.
    assert listener.evidence_at_assignment, "the assignment's SyncGroup was not reported"
    assert listener.evidence_at_assignment[-1] <= listener.assigned_at
    return consumer, evidence


@pytest.mark.promise("p-ops-paused-starts-nothing")
async def test_a_heartbeat_answer_read_after_a_pause_is_dated_before_it(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    consumer, evidence = await _member(kafka_bootstrap, topic, [])
    try:
        coordinator = consumer._consumer._coordinator
        reported = len(evidence)
        sent_after = suspend_aware()
        beat = asyncio.create_task(coordinator._do_heartbeat())
        await asyncio.sleep(0)  # one step of the task: the heartbeat request is written
        # The poller pauses (a GC, SIGSTOP) with the heartbeat in flight; the broker answers
        # meanwhile and the answer waits in the socket.
        time.sleep(PAUSE_S)  # noqa: ASYNC251 - blocking is the point: the loop stands still
        woke_at = suspend_aware()
        assert await beat, "the broker refused the heartbeat"
        assert len(evidence) == reported + 1
        # Dated from the request: the pause shows in the evidence's age.
        assert sent_after <= evidence[-1] < woke_at - PAUSE_S + 0.5, (
            f"evidence dated {evidence[-1] - woke_at:+.3f} s from the wake"
        )
    finally:
        await consumer.stop()


@pytest.mark.promise("p-ops-paused-starts-nothing")
async def test_a_heartbeat_the_coordinator_refuses_is_reported_as_lost_membership(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = await topic_factory(1)
    losses: list[float] = []
    consumer, evidence = await _member(kafka_bootstrap, topic, losses)
    try:
        coordinator = consumer._consumer._coordinator
        sent_after = suspend_aware()
        # A heartbeat of a generation the group is not in: the broker answers
        # ILLEGAL_GENERATION, as it does to a member it has moved on from.
        stale = HeartbeatRequest(
            coordinator.group_id, coordinator.generation + 7, coordinator.member_id
        )
        response = await coordinator._send_req(stale)
        assert response.error_code == 22
        assert len(losses) == 1
        assert sent_after <= losses[0] <= suspend_aware()
        assert all(at < losses[0] for at in evidence)
    finally:
        await consumer.stop()
    # Stopping leaves the group: from then on the member is gone.
    assert len(losses) == 2
