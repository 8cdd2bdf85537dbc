"""The subscription runner driven through exact sequences with the in-package fakes.

No broker, no DynamoDB: ``adapter.testing``'s fake consumer, invoker and store, and a manual
clock for the ownership deadline. Each scenario takes milliseconds; the same sequences run on
a real broker in the integration and chaos suites.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from adapter import ids
from adapter.engine.batch_dispatch import BatchSettings
from adapter.engine.batches import BatchPolicy
from adapter.engine.dead_letters import DeadLetters
from adapter.engine.ledger import LedgerWriter
from adapter.engine.lifecycle import InvocationStatus
from adapter.engine.retry import RetryPolicy
from adapter.engine.runner import SubscriptionRunner, pause_bound, pause_growth
from adapter.engine.settings import RunnerSettings, RunnerState
from adapter.errors import KafkaError, StoreError
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.kafka import dead_letter
from adapter.kafka.commit_marks import Committed, Handover
from adapter.kafka.consumer import TP, CommitError
from adapter.kafka.dead_letter import DeadLetterProducer
from adapter.kafka.topics import TopicInfo
from adapter.model import (
    Deployment,
    HandlerType,
    InputKind,
    LedgerEntry,
    RetentionLoss,
    ServiceType,
    Subscription,
    Target,
    topic_key,
)
from adapter.store.pages import is_pageable
from adapter.testing import (
    FakeConsumer,
    FakeInvoker,
    FakeStore,
    ManualClock,
    SendWait,
    record,
)
from tests._fake_producer import FakeTopics

TOPIC = "orders"
OLD_ID = "AAAAAAAAAAAAAAAAAAAAAA"
NEW_ID = "BBBBBBBBBBBBBBBBBBBBBB"
SUB = Subscription(id="sub_test", cluster="c", topic=TOPIC, service="S", handler="h")
P0 = (TOPIC, 0)
P1 = (TOPIC, 1)
SESSION_S = 1.0  # ownership limit: 0.8 s of the manual clock after the last heartbeat


def target(*, ordered: bool, workflow: bool = False) -> Target:
    if workflow:
        service_type, handler_type = ServiceType.WORKFLOW, HandlerType.WORKFLOW
    elif ordered:
        service_type, handler_type = ServiceType.VIRTUAL_OBJECT, HandlerType.EXCLUSIVE
    else:
        service_type, handler_type = ServiceType.SERVICE, HandlerType.SERVICE
    return Target(
        service="S",
        handler="h",
        service_type=service_type,
        handler_type=handler_type,
        input_kind=InputKind.JSON,
        deployment=Deployment(id="dp_test", uri="http://127.0.0.1:9"),
    )


async def until(predicate: Callable[[], bool], *, timeout: float = 2.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.002)


OWNERSHIP_LOG = "adapter.engine.ownership"


def pause_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings logged about attempts held for proof of ownership."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == OWNERSHIP_LOG and r.levelno == logging.WARNING
    ]


class SlowClaims(FakeStore):
    """Workflow claims that wait for the test (DynamoDB answering slowly)."""

    def __init__(self) -> None:
        super().__init__()
        self.claiming = False
        self.answer = asyncio.Event()

    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool:
        self.claiming = True
        await self.answer.wait()
        return await super().claim_workflow(service, key, invocation_id)


@dataclass
class Harness:
    runner: SubscriptionRunner
    consumer: FakeConsumer
    invoker: FakeInvoker
    store: FakeStore
    clock: ManualClock

    def key_of(self, topic_id: str = OLD_ID) -> str:
        return topic_key(TOPIC, topic_id)

    def inv_id(self, partition: int, offset: int, topic_id: str = OLD_ID) -> str:
        return ids.invocation_id(SUB.id, self.key_of(topic_id), partition, offset)

    def committed(self, tp: tuple[str, int]) -> int | None:
        found = self.consumer.group_commits.get(tp)
        return None if found is None else found.offset


@asynccontextmanager
async def running(
    *,
    ordered: bool = False,
    workflow: bool = False,
    respond: Callable[[InvocationRequest], Outcome] | None = None,
    topics: tuple[TopicInfo, ...] = (TopicInfo(TOPIC, OLD_ID, 2),),
    store: FakeStore | None = None,
    max_buffered: int = 1000,
    committed: dict[tuple[str, int], tuple[int, str | None]] | None = None,
    group_of: Harness | None = None,
    topic_check_s: float = 30.0,
    standby_check_s: float = 120.0,
    drain_timeout_s: float = 30.0,
    revoke_timeout_s: float = 10.0,
    index_lag_s: float = 0.0,
    ran_before: bool = False,
    dead_letters: DeadLetters | None = None,
    dead_letter_topic: str | None = None,
    max_record_bytes: int = 6 * 1024 * 1024,
) -> AsyncIterator[Harness]:
    """A runner on fakes; with ``group_of``, another member of that harness's group (the two
    share its commits). ``ran_before``: an earlier poller recorded the topic, so fences are
    read from the ledger."""
    clock = ManualClock()
    consumer = FakeConsumer(clock, topics)
    if group_of is not None:
        consumer.group_commits = group_of.consumer.group_commits
    for tp, (offset, topic_id) in (committed or {}).items():
        consumer.group_commits[tp] = Committed(offset, topic_id)
    invoker = FakeInvoker(respond)
    store = store if store is not None else FakeStore()
    if ran_before:
        store.topics.add((SUB.id, topic_key(TOPIC, OLD_ID)))
    ledger = LedgerWriter(store, linger_s=0)
    settings = RunnerSettings(
        session_timeout_s=SESSION_S,
        commit_interval_s=0.005,
        topic_poll_s=0.01,
        topic_check_s=topic_check_s,
        standby_check_s=standby_check_s,
        drain_timeout_s=drain_timeout_s,
        revoke_timeout_s=revoke_timeout_s,
        index_lag_s=index_lag_s,
        max_buffered_per_partition=max_buffered,
        max_record_bytes=max_record_bytes,
        dead_letter_topic=dead_letter_topic,
        retry=RetryPolicy(initial_interval=0.01, max_interval=0.05, jitter=0.0),
    )
    runner = SubscriptionRunner(
        SUB,
        target(ordered=ordered, workflow=workflow),
        consumer_factory=lambda watch: consumer,
        store=store,
        ledger=ledger,
        invoker=invoker,
        dead_letters=dead_letters,
        settings=settings,
        clock=clock,
    )
    ledger_task = asyncio.create_task(ledger.run())
    run_task = asyncio.create_task(runner.run())
    try:
        yield Harness(runner, consumer, invoker, store, clock)
    finally:
        runner.stop()
        await asyncio.wait_for(run_task, 5)
        ledger_task.cancel()
        await asyncio.gather(ledger_task, return_exceptions=True)
    # Pollers record a topic before any ledger row of it (p-ops-first-recording).
    assert store.rows_before_recording == []


async def subscribed(h: Harness, *tps: tuple[str, int]) -> None:
    await until(lambda: h.consumer.listener is not None, what="subscribe")
    await h.consumer.assign(*tps)


class TestHappyPath:
    async def test_records_run_and_their_offsets_are_committed_with_the_topic_id(self) -> None:
        async with running() as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: h.committed(P0) == 3, what="commit of 3")
            assert h.invoker.offsets() == [0, 1, 2]
            assert h.consumer.group_commits[P0] == Committed(3, OLD_ID)
            # Invocation IDs and ledger rows are keyed by the topic's identity.
            assert {c.invocation_id for c in h.invoker.calls} == {h.inv_id(0, o) for o in range(3)}
            assert {e.topic for e in h.store.rows.values()} == {h.key_of()}

    @pytest.mark.promise("p-ops-completed-never-again")
    async def test_records_the_ledger_shows_finished_are_never_invoked_again(self) -> None:
        store = FakeStore()
        async with running(store=store) as h:
            for offset in (0, 1):
                store.seed(
                    LedgerEntry(
                        h.inv_id(0, offset), SUB.id, h.key_of(), 0, offset, None, "t", "SUCCEEDED"
                    )
                )
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: h.committed(P0) == 3, what="commit of 3")
            assert h.invoker.offsets() == [2]
            assert h.runner.stats.skipped_completed == 2


class TestDeadLetters:
    @pytest.mark.promise("p-fault-poison", "p-fault-dlq-too-large")
    @pytest.mark.parametrize(
        ("refused_by", "producer_options", "topic_limit"),
        [
            # Below the client's max_request_size, above the topic's max.message.bytes.
            ("broker", {}, 2_000),
            # Above the client's max_request_size: refused before it is sent.
            ("client", {"max_request_size": 2_000}, 1_000_000),
        ],
    )
    async def test_an_oversized_record_is_dead_lettered_without_its_value_and_passed(
        self,
        monkeypatch: pytest.MonkeyPatch,
        refused_by: str,
        producer_options: dict[str, int],
        topic_limit: int,
    ) -> None:
        topics = FakeTopics(max_message_bytes=topic_limit)
        monkeypatch.setattr(dead_letter, "AIOKafkaProducer", topics.producer)
        producer = DeadLetterProducer(**producer_options)
        big = b'"' + b"x" * 4_998 + b'"'  # valid JSON of 5,000 bytes, above max_record_bytes
        try:
            async with running(
                dead_letters=producer, dead_letter_topic="dlq", max_record_bytes=1_000
            ) as h:
                await subscribed(h, P0)
                h.consumer.deliver(
                    [
                        record(TOPIC, 0, 0),
                        record(TOPIC, 0, 1, key=b"k", value=big),
                        record(TOPIC, 0, 2),
                    ]
                )
                await until(lambda: h.committed(P0) == 3, what="commit past the oversized record")
                assert h.invoker.offsets() == [0, 2]
                assert h.store.rows[h.inv_id(0, 1)].status == InvocationStatus.DEAD_LETTERED
        finally:
            await producer.stop()
        [(where, size)] = topics.refused
        assert where == refused_by
        assert size > 5_000
        [letter] = topics.letters
        assert (letter.topic, letter.key, letter.value) == ("dlq", b"k", None)
        headers = dict(letter.headers)
        assert headers["x-kafka-ingress-omitted"] == b"value=5000"
        assert headers["x-kafka-ingress-source-topic"] == TOPIC.encode()
        assert headers["x-kafka-ingress-source-partition"] == b"0"
        assert headers["x-kafka-ingress-source-offset"] == b"1"
        assert b"above the limit of 1000 bytes" in headers["x-kafka-ingress-error"]


class TestFencing:
    """A poller that cannot prove it still belongs to its group starts nothing."""

    @pytest.mark.promise("p-ops-paused-starts-nothing", "p-ops-fencing-held")
    async def test_a_retry_does_not_start_after_a_pause_past_the_session(self) -> None:
        answers: dict[int, Outcome] = {0: Outcome.retry("busy", retry_after=0.02)}

        def respond(request: InvocationRequest) -> Outcome:
            return answers.pop(len(answers) - 1, Outcome.ack()) if answers else Outcome.ack()

        async with running(respond=respond) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: len(h.invoker.calls) == 1, what="first attempt")
            # The process "slept" past the session timeout: no heartbeat answered since.
            h.clock.advance(SESSION_S * 2)
            await asyncio.sleep(0.1)  # the retry's backoff (0.02 s) has long elapsed
            assert len(h.invoker.calls) == 1, "a retry started without proof of ownership"
            assert h.runner.stats.held >= 1
            # The group moved the partition away meanwhile: the held retry is abandoned.
            await h.consumer.revoke(P0)
            await asyncio.sleep(0.05)
            assert len(h.invoker.calls) == 1
            assert h.committed(P0) is None

    @pytest.mark.promise("p-ops-fencing-held")
    async def test_a_held_retry_runs_once_the_group_confirms_the_member(self) -> None:
        outcomes = iter([Outcome.retry("busy", retry_after=0.02), Outcome.ack()])
        async with running(respond=lambda r: next(outcomes)) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: len(h.invoker.calls) == 1, what="first attempt")
            h.clock.advance(SESSION_S * 2)
            await asyncio.sleep(0.1)
            assert len(h.invoker.calls) == 1
            h.consumer.heartbeat()  # still a member after all
            await until(lambda: h.committed(P0) == 1, what="retry and commit")
            assert len(h.invoker.calls) == 2

    @pytest.mark.promise("p-ops-paused-starts-nothing")
    async def test_the_next_record_of_a_key_waits_for_ownership(self) -> None:
        gate = asyncio.Event()
        async with running(ordered=True) as h:
            h.invoker.gate = gate
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o, key=b"k") for o in range(2)])
            await until(lambda: len(h.invoker.calls) == 1, what="first of the key")
            h.clock.advance(SESSION_S * 2)  # paused while the first was in flight
            gate.set()  # the in-flight call completes (the one allowed duplicate)
            await asyncio.sleep(0.05)
            assert h.invoker.offsets() == [0], "lane hand-off started without ownership"
            await h.consumer.revoke(P0)
            await asyncio.sleep(0.02)
            assert h.invoker.offsets() == [0]

    @pytest.mark.promise("p-ops-paused-starts-nothing")
    async def test_nothing_starts_after_the_coordinator_refused_the_member(self) -> None:
        async with running() as h:
            await subscribed(h, P0)
            h.consumer.lose_membership()  # UNKNOWN_MEMBER_ID: evidence not yet aged out
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
            assert h.invoker.calls == [], "started although the group no longer knew it"
            h.consumer.heartbeat()  # rejoined
            await until(lambda: len(h.invoker.calls) == 1, what="start after the rejoin")

    @pytest.mark.promise("p-ops-paused-starts-nothing")
    async def test_a_first_attempt_waits_for_ownership(self) -> None:
        async with running() as h:
            await subscribed(h, P0)
            h.clock.advance(SESSION_S * 2)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await asyncio.sleep(0.05)
            assert h.invoker.calls == []
            h.consumer.heartbeat()
            await until(lambda: len(h.invoker.calls) == 1, what="start after heartbeat")

    @pytest.mark.promise("p-ops-paused-starts-nothing")
    async def test_a_record_refused_before_any_attempt_fails_only_with_ownership(self) -> None:
        async with running() as h:
            await subscribed(h, P0)
            h.clock.advance(SESSION_S * 2)  # paused: the evidence has lapsed
            h.consumer.deliver([record(TOPIC, 0, 0, value=b"not json")])
            await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
            assert h.inv_id(0, 0) not in h.store.rows, "failed without proof of ownership"
            h.consumer.heartbeat()
            await until(lambda: h.committed(P0) == 1, what="failed and committed")
            assert h.store.rows[h.inv_id(0, 0)].status == "FAILED"
            assert h.invoker.calls == []

    @pytest.mark.promise("p-ops-paused-starts-nothing", "p-ops-send-fence")
    async def test_an_attempt_whose_invoker_waited_past_the_session_is_not_sent(self) -> None:
        wait = SendWait()
        async with running() as h:
            h.invoker.before_send = wait
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: wait.waiting == 1, what="the invoker's wait")
            h.clock.advance(SESSION_S * 2)  # paused while the invoker waited
            wait.release.set()
            await until(lambda: h.runner.stats.unsent == 1, what="the attempt given back")
            await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
            assert h.invoker.calls == [], "sent without proof of ownership"
            h.consumer.heartbeat()
            await until(lambda: h.committed(P0) == 1, what="the attempt after a heartbeat")
            # The attempt that was not sent was not counted.
            assert [c.attempt for c in h.invoker.calls] == [1]

    @pytest.mark.promise("p-ops-paused-starts-nothing")
    async def test_a_workflow_run_waits_for_ownership_after_a_slow_claim(self) -> None:
        store = SlowClaims()
        async with running(workflow=True, store=store) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0, key=b"order-1")])
            await until(lambda: store.claiming, what="the run's claim")
            h.clock.advance(SESSION_S * 2)  # paused while DynamoDB answered the claim
            store.answer.set()
            await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
            assert h.invoker.calls == [], "the run started without proof of ownership"
            h.consumer.heartbeat()
            await until(lambda: len(h.invoker.calls) == 1, what="the run after a heartbeat")

    async def test_a_run_held_before_and_after_its_claim_is_one_held_attempt(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """held counts attempts that had to wait, each once: a workflow run asks for the
        proof before its claim and again after it, and waiting both times is one attempt."""
        store = SlowClaims()
        async with running(workflow=True, store=store) as h:
            await subscribed(h, P0)
            h.clock.advance(SESSION_S * 2)  # paused before the record arrived
            h.consumer.deliver([record(TOPIC, 0, 0, key=b"order-1")])
            await until(lambda: h.runner.stats.held == 1, what="held before the claim")
            h.consumer.heartbeat()
            await until(lambda: store.claiming, what="the run's claim")
            h.clock.advance(SESSION_S * 2)  # paused again while DynamoDB answered the claim
            store.answer.set()
            await until(lambda: len(pause_warnings(caplog)) == 2, what="held after the claim")
            assert h.invoker.calls == [], "the run started without proof of ownership"
            h.consumer.heartbeat()
            await until(lambda: h.committed(P0) == 1, what="the run after a heartbeat")
            assert [c.attempt for c in h.invoker.calls] == [1]
            assert h.runner.stats.held == 1

    async def test_a_retryable_failure_counts_at_once_not_when_its_retry_answers(self) -> None:
        """The overview's errors include retries: a failure must show while its retry runs."""
        outcomes = iter([Outcome.retry("busy"), Outcome.ack()])
        gate = asyncio.Event()

        def respond(request: InvocationRequest) -> Any:  # an Outcome, or one to await
            if request.attempt == 1:
                return next(outcomes)

            async def later() -> Outcome:
                await gate.wait()
                return next(outcomes)

            return later()

        async with running(respond=respond) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: len(h.invoker.calls) == 2, what="the retry in flight")
            assert h.runner.stats.retries == 1
            gate.set()
            await until(lambda: h.committed(P0) == 1, what="the retry answered")
            assert h.runner.stats.retries == 1

    async def test_a_retry_made_is_counted_once(self) -> None:
        outcomes = iter([Outcome.retry("busy"), Outcome.retry("busy"), Outcome.ack()])
        async with running(respond=lambda r: next(outcomes)) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: h.committed(P0) == 1, what="the third attempt and commit")
            assert [c.attempt for c in h.invoker.calls] == [1, 2, 3]
            assert h.runner.stats.retries == 2

    @pytest.mark.promise("p-ops-fencing-held")
    async def test_a_pause_logs_one_warning_and_one_line_when_proof_is_back(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every held attempt used to log its own warning: 256 lines per pause at the default
        in-flight limit. One per pause (per subscription), and one when it ends."""
        caplog.set_level(logging.INFO, logger=OWNERSHIP_LOG)
        async with running() as h:
            await subscribed(h, P0, P1)
            h.clock.advance(SESSION_S * 2)  # paused: the evidence has lapsed
            h.consumer.deliver([record(TOPIC, p, o) for p in (0, 1) for o in range(10)])
            await until(lambda: h.runner.stats.held == 20, what="all twenty held")
            [warning] = pause_warnings(caplog)
            assert f"subscription {SUB.id}" in warning
            assert "no heartbeat answered for 2.0s" in warning
            assert f"invocation {h.inv_id(0, 0)} ({TOPIC}/0)" in warning
            await h.consumer.revoke(P1)  # its held attempts are given up
            h.clock.advance(0.5)
            h.consumer.heartbeat()
            await until(lambda: h.committed(P0) == 10, what="commit")
            [restored] = [
                r.getMessage()
                for r in caplog.records
                if r.name == OWNERSHIP_LOG and r.levelno == logging.INFO
            ]
            assert f"subscription {SUB.id}" in restored
            assert "after 2.5s without an answered heartbeat" in restored
            assert "0.5s after the first attempt was held; 10 held now may start" in restored
            assert "10 were given up" in restored
            assert h.invoker.offsets() == list(range(10))
            assert len(pause_warnings(caplog)) == 1
            # The next pause is a pause of its own: warned again.
            h.clock.advance(SESSION_S * 2)
            h.consumer.deliver([record(TOPIC, 0, 10)])
            await until(lambda: len(pause_warnings(caplog)) == 2, what="the next pause warned")

    async def test_records_fetched_while_the_assignment_is_set_up_are_not_lost(self) -> None:
        async with running() as h:
            await until(lambda: h.consumer.listener is not None, what="subscribe")
            slow_metadata = asyncio.Event()
            h.consumer.describe_gate = slow_metadata
            assign = asyncio.create_task(h.consumer.assign(P0))
            await until(lambda: h.consumer.describing > 0, what="the callback's topic look-up")
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await asyncio.sleep(0.02)  # ... while the fetch loop receives the records
            slow_metadata.set()
            await assign
            await until(lambda: h.committed(P0) == 3, what="all three, none skipped")
            assert h.invoker.offsets() == [0, 1, 2]

    async def test_a_partition_assigned_again_starts_from_its_commit(self) -> None:
        gate = asyncio.Event()
        async with running() as h:
            h.invoker.gate = gate
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: len(h.invoker.calls) == 1)
            revoke = asyncio.create_task(h.consumer.revoke(P0))
            await asyncio.sleep(0.01)
            gate.set()  # the running call finishes within the drain
            await revoke
            assert h.committed(P0) == 1
            await h.consumer.assign(P0)
            h.consumer.deliver([record(TOPIC, 0, 1), record(TOPIC, 0, 2)])
            await until(lambda: h.committed(P0) == 3, what="commit in the new assignment")
            assert h.invoker.offsets() == [0, 1, 2]


@dataclass(eq=False)
class _GatedStore(FakeStore):
    """Its next ledger write waits for :attr:`block`, once."""

    block: asyncio.Event | None = None
    blocked: bool = False

    async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
        gate, self.block = self.block, None
        if gate is not None:
            self.blocked = True
            await gate.wait()
        await super().write_entries(entries)


@dataclass(eq=False)
class _LaggingPages(FakeStore):
    """Plain successes go to pages, which ``paged_offsets`` finds only ``lag_s`` after they
    were written (the ledger's eventually consistent index)."""

    lag_s: float = 0.2
    pages: list[tuple[float, LedgerEntry]] = field(default_factory=list)
    page_reads: int = 0

    async def write_entries(self, entries: Sequence[LedgerEntry]) -> None:
        rows = [e for e in entries if not is_pageable(e)]
        await super().write_entries(rows)
        for entry in entries:
            if is_pageable(entry):
                self._check_recorded(entry)
                self.pages.append((time.monotonic(), entry))

    async def paged_offsets(
        self, subscription_id: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[int]:
        self.page_reads += 1
        visible = time.monotonic() - self.lag_s
        return {
            e.offset
            for at, e in self.pages
            if at <= visible
            and (e.topic, e.partition) == (topic, partition)
            and lo <= e.offset <= hi
        }


def _first_retries(request: InvocationRequest) -> Outcome:
    return Outcome.retry("not yet") if request.record.offset == 0 else Outcome.ack()


async def _paged(h: Harness, store: _LaggingPages) -> None:
    """Records 0..3 of P0: 1..3 succeed into pages while 0 retries (``_first_retries``)."""
    h.consumer.positions[P0] = 0
    await subscribed(h, P0)
    h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
    await until(lambda: len(store.pages) == 3, what="1..3 paged")


async def _paged_and_handed_back(
    h: Harness, store: _LaggingPages, *, finished_handed_over: bool = True
) -> None:
    """Records 0..3 of P0, 1..3 succeeded into pages while 0 retries; then a graceful
    handover (commit 0, fence 3) and an eager rebalance that gives P0 straight back.
    ``finished_handed_over=False``: the handover says nothing of which records finished (a
    poller of an earlier version, ranges that did not fit)."""
    await _paged(h, store)
    await h.consumer.revoke(P0)
    commit = h.consumer.group_commits[P0]
    assert commit.handover is not None
    assert (commit.handover.through, commit.handover.done) == (3, ((1, 3),))
    if not finished_handed_over:
        h.consumer.group_commits[P0] = replace(
            commit, handover=replace(commit.handover, through=None, done=())
        )
    await h.consumer.assign(P0)


async def _slow_ledger_write(h: Harness, store: _GatedStore) -> asyncio.Event:
    """P0's records 0..2 finished and committed; the ledger write of 3..5 waits for the
    returned gate."""
    await subscribed(h, P0)
    h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
    await until(lambda: h.committed(P0) == 3)
    gate = store.block = asyncio.Event()
    h.consumer.deliver([record(TOPIC, 0, o) for o in range(3, 6)])
    await until(lambda: store.blocked, what="a slow ledger write")
    return gate


class TestHandover:
    """A graceful owner commits its fence for the next owner; the member that owns the
    partition in the very next generation takes it instead of reading the ledger. An eager
    rebalance revokes and re-assigns every partition, so this is also how one that comes
    straight back to the same member keeps its fence."""

    @pytest.mark.promise("p-ops-fence-handover")
    async def test_the_next_owner_takes_the_fence_and_skips_what_finished_above_the_commit(
        self,
    ) -> None:
        store = FakeStore()

        def first_one_fails(request: InvocationRequest) -> Outcome:
            assert request.record is not None
            return Outcome.retry("not yet") if request.record.offset == 0 else Outcome.ack()

        async with running(
            store=store, respond=first_one_fails, committed={P0: (0, OLD_ID)}, ran_before=True
        ) as a:
            await subscribed(a, P0)
            await until(lambda: store.fence_reads == 1, what="the first owner's fence read")
            a.consumer.deliver([record(TOPIC, 0, o) for o in range(5)])
            # 1..4 finish and are recorded; 0 keeps retrying, so the commit stays at 0.
            await until(
                lambda: sum(r.status == "SUCCEEDED" for r in store.rows.values()) == 4,
                what="four successes recorded",
            )
            await a.consumer.revoke(P0)
            # It took and decided 0..4; of them, 1..4 finished.
            assert a.consumer.group_commits[P0] == Committed(
                0,
                OLD_ID,
                Handover(a.consumer.current_generation, 4, SUB.id, through=4, done=((1, 4),)),
            )
            async with running(store=store, group_of=a) as b:
                await until(lambda: b.consumer.listener is not None, what="subscribe")
                await b.consumer.assign(P0, generation=a.consumer.current_generation + 1)
                state = b.runner._assignments.states[P0]
                assert (state.fence, store.fence_reads) == (4, 1), "the ledger was read"
                b.consumer.deliver([record(TOPIC, 0, o) for o in range(6)])
                await until(lambda: b.committed(P0) == 6, what="the new owner's commit")
                # What finished above the old commit is not run again; 0 and 5 are.
                assert b.invoker.offsets() == [0, 5]

    async def test_a_handover_of_an_older_generation_is_not_taken(self) -> None:
        # The owner of the generation in between may have recorded more and crashed.
        store = FakeStore()
        async with running(store=store) as a:
            await subscribed(a, P0)
            a.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: a.committed(P0) == 3)
            await a.consumer.revoke(P0)
            assert a.consumer.group_commits[P0].handover is not None
            async with running(store=store, group_of=a) as b:
                await until(lambda: b.consumer.listener is not None, what="subscribe")
                reads = store.fence_reads
                await b.consumer.assign(P0, generation=a.consumer.current_generation + 2)
                await until(lambda: store.fence_reads == reads + 1, what="a fence read")
                assert b.runner._assignments.fences_handed_over == 0

    async def test_an_owner_that_leaves_no_handover_makes_the_next_read_the_ledger(
        self,
    ) -> None:
        # A removed member's commits are refused by the group coordinator; a crashed one
        # makes none. Either way the last commit carries no handover.
        store = FakeStore()
        async with running(store=store) as a:
            await subscribed(a, P0)
            a.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: a.committed(P0) == 3)
            a.consumer.reject_commits = True
            await a.consumer.revoke(P0)
            assert a.consumer.group_commits[P0] == Committed(3, OLD_ID)
            async with running(store=store, group_of=a) as b:
                await until(lambda: b.consumer.listener is not None, what="subscribe")
                reads = store.fence_reads
                await b.consumer.assign(P0, generation=a.consumer.current_generation + 1)
                await until(lambda: store.fence_reads == reads + 1, what="a fence read")
                b.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
                await until(lambda: b.committed(P0) == 3, what="checked, not run")
                assert b.invoker.offsets() == []

    async def test_a_stop_outliving_a_rebalance_commits_nothing_over_the_next_owner(
        self,
    ) -> None:
        # SIGTERM during a rebalance: the stop waits for the ledger while the group revokes
        # and moves on. The stop's commit came after the rejoin, in the next generation, over
        # the next owner's commits, with a handover whose fence was too low.
        store = _GatedStore()
        async with running(store=store, drain_timeout_s=10.0, revoke_timeout_s=0.1) as a:
            await subscribed(a, P0)
            a.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: a.committed(P0) == 3)
            gate = store.block = asyncio.Event()
            a.consumer.deliver([record(TOPIC, 0, 3)])
            await until(lambda: store.blocked, what="A's ledger row for 3 is slow")
            state = a.runner._assignments.states[P0]
            a.runner.stop()
            await until(lambda: state.revoking, what="the stop releasing")
            await a.consumer.revoke(P0)  # within its own deadline
            old_generation = a.consumer.current_generation
            assert a.consumer.group_commits[P0].handover == Handover(old_generation, 3, SUB.id)
            await a.consumer.assign(P1)  # the next generation; P0 went elsewhere
            async with running(store=store, group_of=a) as b:
                await until(lambda: b.consumer.listener is not None, what="subscribe")
                await b.consumer.assign(P0, generation=old_generation + 1)
                b.consumer.deliver([record(TOPIC, 0, o) for o in range(4, 11)])
                await until(lambda: b.committed(P0) == 11, what="the next owner's commit")
                gate.set()  # A's row is written at last, and A's stop goes on
                await until(lambda: a.runner.state is RunnerState.STOPPED, what="A stopped")
                assert b.consumer.group_commits[P0].offset == 11, "A committed over B"

    async def test_nothing_is_committed_for_an_assignment_of_an_earlier_generation(
        self,
    ) -> None:
        gate = asyncio.Event()
        async with running() as h:
            h.invoker.gate = gate
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: len(h.invoker.calls) == 1)
            # The member is in a later generation than the one it got P0 in: P0 may have
            # another owner by now, whose commits must stay.
            h.consumer.current_generation += 1
            commits = len(h.consumer.commits)
            gate.set()
            await until(lambda: h.runner._assignments.states[P0].tracker.position == 1)
            await h.runner._assignments.commit()
            assert len(h.consumer.commits) == commits

    async def test_a_fence_read_right_after_the_assignment_is_read_again_before_handed_on(
        self,
    ) -> None:
        # The ledger's index lags its table: a read right after a takeover may miss the
        # previous owner's last rows. Handed on, such a fence would outlive that lag.
        store = FakeStore()
        async with running(
            store=store, index_lag_s=0.3, committed={P0: (0, OLD_ID)}, ran_before=True
        ) as h:
            await subscribed(h, P0)
            await until(lambda: store.fence_reads == 1, what="the first read")
            state = h.runner._assignments.states[P0]
            assert (state.fence, state.fence_settled) == (None, False)
            # The previous owner's row for offset 7 shows up in the index only now.
            store.rows[h.inv_id(0, 7)] = LedgerEntry(
                h.inv_id(0, 7), SUB.id, h.key_of(), 0, 7, None, "t", "SUCCEEDED"
            )
            await until(lambda: store.fence_reads == 2, timeout=3, what="the second read")
            assert (state.fence, state.fence_settled) == (7, True)
            await h.consumer.revoke(P0)
            # Nothing above the commit (0) was decided: through is just below it.
            assert h.consumer.group_commits[P0].handover == Handover(
                h.consumer.current_generation, 7, SUB.id, through=-1
            )

    async def test_an_unsettled_fence_is_handed_on_as_such_and_read_again(self) -> None:
        store = FakeStore()
        async with running(
            store=store, index_lag_s=60, committed={P0: (0, OLD_ID)}, ran_before=True
        ) as a:
            await subscribed(a, P0)
            await until(lambda: store.fence_reads == 1, what="the first read")
            await a.consumer.revoke(P0)
            generation = a.consumer.current_generation
            handover = Handover(generation, None, SUB.id, settled=False, through=-1)
            assert a.consumer.group_commits[P0] == Committed(0, OLD_ID, handover)
            async with running(store=store, group_of=a, index_lag_s=0.2) as b:
                await until(lambda: b.consumer.listener is not None, what="subscribe")
                await b.consumer.assign(P0, generation=generation + 1)
                state = b.runner._assignments.states[P0]
                assert (state.fence_known, state.fence_settled, store.fence_reads) == (
                    True,
                    False,
                    1,
                ), "taken at once, not read"
                await until(lambda: state.fence_settled, what="the read after the lag")
                assert store.fence_reads == 2

    async def test_a_runner_stopped_during_an_assignment_still_hands_over(self) -> None:
        # A rolling deploy: a poller stops right after a rebalance gave it partitions.
        async with running(committed={P0: (5, OLD_ID)}) as h:
            await until(lambda: h.consumer.listener is not None, what="subscribe")
            slow_metadata = asyncio.Event()
            h.consumer.describe_gate = slow_metadata
            assign = asyncio.create_task(h.consumer.assign(P0))
            await until(lambda: h.consumer.describing > 0, what="the callback's topic look-up")
            h.runner.stop()
            await asyncio.sleep(0.02)  # the fetch loop ends while the callback waits
            slow_metadata.set()
            await assign
            await until(lambda: h.consumer.group_commits[P0].handover is not None)
            assert h.consumer.group_commits[P0] == Committed(
                5, OLD_ID, Handover(h.consumer.current_generation, None, SUB.id, through=4)
            )

    async def test_a_partition_back_in_the_next_generation_keeps_its_fence(self) -> None:
        async with running(ran_before=True) as h:
            await subscribed(h, P0)
            await until(lambda: h.store.fence_reads == 1, what="the first fence read")
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: h.committed(P0) == 3)
            await h.consumer.revoke(P0)
            await h.consumer.assign(P0)  # the very next generation
            state = h.runner._assignments.states[P0]
            assert (state.fence, h.store.fence_reads) == (2, 1)
            # Redelivered records at or below it are still checked against the ledger.
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(2, 5)])
            await until(lambda: h.committed(P0) == 5)
            assert h.invoker.offsets() == [0, 1, 2, 3, 4]

    async def test_a_partition_back_after_a_missed_generation_reads_the_ledger(self) -> None:
        async with running(ran_before=True) as h:
            await subscribed(h, P0)
            await until(lambda: h.store.fence_reads == 1, what="the first fence read")
            await h.consumer.revoke(P0)
            # Another member may have owned it in between: the ledger is read again.
            await h.consumer.assign(P0, generation=h.consumer.current_generation + 2)
            await until(lambda: h.store.fence_reads == 2, what="a fresh fence read")

    @pytest.mark.promise("p-ops-fence-handover")
    async def test_successes_paged_just_before_a_handover_are_not_run_again(self) -> None:
        """Pages are found through an index that lags: a handover that does not say which
        records finished makes the next owner's ledger check of the records between the
        commit and the fence wait for it."""
        store = _LaggingPages(lag_s=0.2)
        async with running(store=store, respond=_first_retries, index_lag_s=0.4) as h:
            await _paged_and_handed_back(h, store, finished_handed_over=False)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
            await until(lambda: h.runner.stats.skipped_completed >= 3, what="1..3 skipped")
            assert sorted({o for o in h.invoker.offsets() if o != 0}) == [1, 2, 3]
            assert h.invoker.offsets().count(1) == 1, "a paged success ran again"

    @pytest.mark.promise("p-ops-fence-handover")
    async def test_what_the_previous_owner_finished_is_skipped_without_waiting_for_the_index(
        self,
    ) -> None:
        """The handover says which records above the commit finished: the next owner skips
        them and reads only rows (consistent) for the others it decided, so it does not wait
        for the index's lag (the pages here never show in it)."""
        store = _LaggingPages(lag_s=60)
        async with running(store=store, respond=_first_retries, index_lag_s=60) as h:
            await _paged_and_handed_back(h, store)
            retried = h.invoker.offsets().count(0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(5)])
            await until(lambda: 4 in h.invoker.offsets(), timeout=3, what="4, without a wait")
            assert h.runner.stats.skipped_completed == 3
            assert [o for o in h.invoker.offsets() if o in (1, 2, 3)] == [1, 2, 3]
            # 0 had failed and was retrying: it goes on, and no page was looked for.
            await until(lambda: h.invoker.offsets().count(0) > retried, what="0 again")
            assert store.page_reads == 0

    async def test_what_finished_is_handed_on_by_an_owner_that_did_not_reach_it(self) -> None:
        # Handovers in quick succession (a second and a third poller joining): the owner in
        # between decided only 0..1, and passes on what it was told of 2..3.
        store = _LaggingPages(lag_s=60)
        async with running(store=store, respond=_first_retries, index_lag_s=60) as h:
            await _paged_and_handed_back(h, store)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
            await until(lambda: h.runner.stats.skipped_completed == 1, what="1 skipped")
            await h.consumer.revoke(P0)
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert handover.through == 3
            assert [handover.finished(o) for o in range(5)] == [False, True, True, True, None]
            await h.consumer.assign(P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(5)])
            await until(lambda: 4 in h.invoker.offsets(), timeout=3, what="4, without a wait")
            assert h.runner.stats.skipped_completed == 4
            assert [o for o in h.invoker.offsets() if o in (1, 2, 3)] == [1, 2, 3]

    async def test_nothing_is_handed_over_as_finished_unless_the_ledger_has_it_all(
        self,
    ) -> None:
        # A result still on its way to DynamoDB when the revocation's time ran out may land
        # after the next owner looked: that owner waits for the index and reads it instead.
        store = _GatedStore()
        async with running(store=store, revoke_timeout_s=0.1) as h:
            gate = await _slow_ledger_write(h, store)
            await h.consumer.revoke(P0)
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert handover.fence == 5
            assert (handover.through, handover.done) == (None, ())
            gate.set()

    async def test_records_decided_before_the_fence_settled_are_not_handed_over_as_known(
        self,
    ) -> None:
        # No handover to start from: the fence and the pages are read at once, within the
        # index's lag, and may miss a success the previous owner (crashed) paged just now.
        store = _LaggingPages(lag_s=60)
        async with running(
            store=store,
            respond=_first_retries,
            index_lag_s=60,
            committed={P0: (0, OLD_ID)},
            ran_before=True,
        ) as h:
            await subscribed(h, P0)
            await until(lambda: store.fence_reads == 1, what="the fence read")
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
            await until(lambda: len(store.pages) == 3, what="1..3 paged")
            await h.consumer.revoke(P0)
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert handover.settled is False
            assert (handover.through, handover.done) == (None, ())

    async def test_a_stop_and_a_revocation_at_once_hand_over_no_stale_ranges(self) -> None:
        # The revocation's flush runs out of time and it lets the partition go; the rows
        # land afterwards, unseen by the released state; the stop's own flush then succeeds
        # and its commit -- same generation -- must not claim those records unfinished.
        store = _GatedStore()
        async with running(store=store, drain_timeout_s=10.0, revoke_timeout_s=0.1) as h:
            gate = await _slow_ledger_write(h, store)
            state = h.runner._assignments.states[P0]
            h.runner.stop()
            await until(lambda: state.revoking, what="the stop releasing")
            await h.consumer.revoke(P0)
            commits = len(h.consumer.commits)
            gate.set()
            await until(lambda: h.runner.state is RunnerState.STOPPED, what="stopped")
            assert len(h.consumer.commits) > commits, "the stop's commit is what is tested"
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert (handover.through, handover.done) == (None, ())

    async def test_a_broker_refusing_the_ranges_still_gets_the_handover(self) -> None:
        # offset.metadata.max.bytes below Kafka's default: the handover's commit is made
        # again without the finished ranges rather than not at all.
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries) as h:
            await _paged(h, store)
            h.consumer.metadata_limit = 50  # the handover fits, its ranges do not
            await h.consumer.revoke(P0)
            assert h.consumer.rejected_commits == 1
            commit = h.consumer.group_commits[P0]
            assert commit.offset == 0
            assert commit.handover is not None
            assert (commit.handover.fence, commit.handover.through) == (3, None)

    async def test_a_handover_commit_failing_otherwise_is_not_sent_again(self) -> None:
        # Only a refused metadata size is worth a second commit: a timeout or an unreachable
        # coordinator fails the same way without the ranges (a stop with the broker gone
        # waited for the commit's timeout twice).
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries) as h:
            await _paged(h, store)
            handovers_sent: list[dict[TP, Handover]] = []

            async def time_out(
                offsets: dict[TP, int],
                topic_id: str | None,
                handovers: Mapping[TP, Handover] | None = None,
            ) -> None:
                if handovers:
                    handovers_sent.append(dict(handovers))
                raise CommitError("commit timed out (fake)")

            h.consumer.commit = time_out  # type: ignore[method-assign]
            await h.consumer.revoke(P0)
            assert len(handovers_sent) == 1, handovers_sent
            assert handovers_sent[0][P0].through is not None, "the test needs ranges"

    async def test_records_below_the_handed_over_commit_are_checked_against_pages(
        self,
    ) -> None:
        # The handover speaks of its commit (5) and above. A log truncated under the next
        # owner (unclean leader election) sends it back to the start: 0..2 come again, and
        # their success pages are still looked for.
        store = _LaggingPages(lag_s=0.2)

        def five_retries(request: InvocationRequest) -> Outcome:
            return Outcome.retry("not yet") if request.record.offset == 5 else Outcome.ack()

        async with running(store=store, respond=five_retries, index_lag_s=0.4) as h:
            h.consumer.positions[P0] = 0
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(10)])
            await until(lambda: len(store.pages) == 9, what="all but 5 paged")
            await until(lambda: h.committed(P0) == 5, what="the commit at 5")
            await h.consumer.revoke(P0)
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert handover.through == 9
            await h.consumer.assign(P0)
            skipped = h.runner.stats.skipped_completed
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(
                lambda: h.runner.stats.skipped_completed == skipped + 3,
                timeout=3,
                what="0..2 found in pages",
            )
            assert [o for o in h.invoker.offsets() if o < 3] == [0, 1, 2], "ran again"

    async def test_a_release_after_the_topic_was_re_created_commits_nothing_of_the_old(
        self,
    ) -> None:
        # A revocation's release drains while the topic check sees the re-creation: its
        # commit must not carry the dead topic's position (and what finished above it)
        # under the new topic's ID, which the next owner would take for the new topic's.
        async with running() as h:
            commits: list[tuple[int, str | None]] = []
            commit = h.consumer.commit

            async def recorded(
                offsets: dict[tuple[str, int], int], topic_id: str | None, *args: Any
            ) -> None:
                commits.extend((offset, topic_id) for tp, offset in offsets.items() if tp == P0)
                await commit(offsets, topic_id, *args)

            h.consumer.commit = recorded  # type: ignore[method-assign]
            h.consumer.positions[P0] = 0
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: h.committed(P0) == 3, what="3 committed")
            state = h.runner._assignments.states[P0]
            h.consumer.delete_topic(TOPIC)
            h.consumer.create_topic(TOPIC, NEW_ID)
            await h.runner._look_up_topic(h.consumer)  # what the topic check does
            assert h.runner._topic.topic_id == NEW_ID
            await h.runner._assignments.release([state], 1.0)
            assert [c for c in commits if c[1] == NEW_ID] == []
            assert h.consumer.group_commits[P0] == Committed(3, OLD_ID)

    async def test_decisions_after_a_handover_that_said_nothing_are_not_handed_on(
        self,
    ) -> None:
        # A handover without finished ranges (an earlier version, a flush that ran out of
        # time): the previous owner's late pages may land after this owner's checks.
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries, index_lag_s=0.2) as h:
            await _paged_and_handed_back(h, store, finished_handed_over=False)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
            await until(lambda: h.runner.stats.skipped_completed == 3, what="1..3 skipped")
            await h.consumer.revoke(P0)
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert (handover.through, handover.done) == (None, ())

    async def test_a_check_begun_before_the_fence_settled_is_not_handed_on(self) -> None:
        # The fence settles while the check is on its way: what that check read may still
        # have missed a page.
        @dataclass(eq=False)
        class SlowStatuses(FakeStore):
            asked: bool = False
            answer: asyncio.Event = field(default_factory=asyncio.Event)

            async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]:
                self.asked = True
                await self.answer.wait()
                return await super().get_statuses(ids)

        store = SlowStatuses()
        store.seed(
            LedgerEntry("inv-9", SUB.id, topic_key(TOPIC, OLD_ID), 0, 9, None, "t", "FAILED")
        )
        async with running(
            store=store, index_lag_s=0.3, committed={P0: (0, OLD_ID)}, ran_before=True
        ) as h:
            await subscribed(h, P0)
            await until(lambda: store.fence_reads == 1, what="the first fence read")
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])  # below the fence
            await until(lambda: store.asked, what="the check begun")
            state = h.runner._assignments.states[P0]
            await until(lambda: state.fence_settled, timeout=3, what="the fence settled")
            store.answer.set()
            await until(lambda: h.committed(P0) == 3, what="0..2 run")
            h.consumer.deliver([record(TOPIC, 0, 3)])
            await until(lambda: h.committed(P0) == 4, what="3 run")
            assert state.unsound_through == 2  # 0..2; 3, checked after it settled, is sound

    async def test_a_ledger_write_abandoned_keeps_the_ranges_back(self) -> None:
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries) as h:
            await _paged(h, store)
            h.runner._assignments._ledger.abandoned += 1  # as a cancelled write leaves it
            await h.consumer.revoke(P0)
            handover = h.consumer.group_commits[P0].handover
            assert handover is not None
            assert (handover.through, handover.done) == (None, ())


@dataclass(eq=False)
class _UnrecordableStore(FakeStore):
    """Recording a topic fails until :attr:`failures` runs out."""

    failures: int = 0

    async def remember_topic(self, subscription_id: str, topic: str) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("DynamoDB is unreachable")
        return await super().remember_topic(subscription_id, topic)


@dataclass(eq=False)
class _SlowRecordingStore(FakeStore):
    """Recording a topic waits for :attr:`release`."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    puts: int = 0

    async def remember_topic(self, subscription_id: str, topic: str) -> bool:
        self.puts += 1
        await self.release.wait()
        return await super().remember_topic(subscription_id, topic)


class TestFirstRecording:
    """Pollers record a topic before writing any ledger row of it; the put that records it
    first proves the ledger empty, so a new subscription's first owner reads no fence."""

    @pytest.mark.promise("p-ops-first-recording")
    async def test_a_new_subscription_reads_no_fence_and_records_its_topic_first(
        self,
    ) -> None:
        async with running() as h:  # the store refuses rows of an unrecorded topic
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await until(lambda: h.committed(P0) == 3, what="commit of 3")
            state = h.runner._assignments.states[P0]
            assert (state.fence_known, state.fence, state.fence_settled) == (True, None, True)
            assert h.store.fence_reads == 0
            assert (SUB.id, h.key_of()) in h.store.topics
            assert h.invoker.offsets() == [0, 1, 2]

    async def test_a_partition_assigned_after_the_topic_was_recorded_reads_the_ledger(
        self,
    ) -> None:
        # Between the two, another member may have owned it, written rows and crashed.
        async with running() as h:
            await subscribed(h, P0)
            await until(lambda: h.store.topics, what="the topic recorded")
            await h.consumer.revoke(P0)
            await h.consumer.assign(P0, generation=h.consumer.current_generation + 2)
            await until(lambda: h.store.fence_reads == 1, what="a fence read")

    async def test_a_member_that_finds_the_topic_recorded_reads_the_ledger(self) -> None:
        store = FakeStore()
        async with running(store=store) as a:
            await subscribed(a, P0)
            await until(lambda: store.topics, what="the first member recorded the topic")
            async with running(store=store, group_of=a) as b:
                await subscribed(b, P1)
                await until(lambda: store.fence_reads == 1, what="the second member's read")
                assert b.runner._assignments.states[P1].fence_known
                assert a.runner._assignments.states[P0].fence_settled
                assert store.fence_reads == 1, "the first member read the ledger"

    async def test_a_put_in_flight_across_a_rebalance_proves_nothing_for_the_new_assignment(
        self,
    ) -> None:
        # Sent before the later assignment: another member may have owned the partition in
        # between and written rows after finding the topic recorded by this very put.
        store = _SlowRecordingStore()
        async with running(store=store) as h:
            await subscribed(h, P0)
            await until(lambda: store.puts == 1, what="the put sent")
            await h.consumer.revoke(P0)
            await h.consumer.assign(P0, generation=h.consumer.current_generation + 2)
            store.release.set()
            await until(lambda: store.fence_reads == 1, what="the new assignment reads the ledger")
            assert store.puts == 1

    async def test_a_partition_with_a_committed_position_reads_the_ledger(self) -> None:
        # Its earlier owner may be of a version that wrote ledger rows before recording the
        # topic: finding the topic unrecorded proves nothing for it.
        store = FakeStore()
        for offset in range(5):
            inv_id = ids.invocation_id(SUB.id, topic_key(TOPIC, OLD_ID), 0, offset)
            store.rows[inv_id] = LedgerEntry(
                inv_id, SUB.id, topic_key(TOPIC, OLD_ID), 0, offset, None, "t", "SUCCEEDED"
            )
        async with running(store=store, committed={P0: (2, OLD_ID)}) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(2, 7)])
            await until(lambda: h.committed(P0) == 7, what="commit of 7")
            assert store.fence_reads == 1
            assert h.invoker.offsets() == [5, 6], "what finished before ran again"

    async def test_a_runner_waiting_to_record_its_topic_stops_when_asked(self) -> None:
        store = _UnrecordableStore(failures=10**6)
        async with running(store=store) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: h.runner.last_error is not None, what="the failure surfaced")
            h.runner.stop()
            await until(lambda: h.runner.state is RunnerState.STOPPED, timeout=3, what="stop")
            assert h.invoker.calls == []

    async def test_no_record_is_admitted_before_its_topic_is_recorded(self) -> None:
        store = _UnrecordableStore(failures=3)
        async with running(store=store) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
            await until(lambda: h.runner.last_error is not None, what="the failure surfaced")
            assert h.invoker.calls == []
            assert "DynamoDB is unreachable" in (h.runner.last_error or "")
            await until(lambda: h.committed(P0) == 2, timeout=5, what="commit once recorded")
            assert h.invoker.offsets() == [0, 1]
            assert h.runner.last_error is None
            # The recording that failed proved nothing: the fence came from the ledger.
            assert h.store.fence_reads >= 1


class TestTopicIdentity:
    @pytest.mark.promise("p-ops-recreated-topic", "p-fault-recreated-topic")
    async def test_a_recreated_topic_is_consumed_from_its_beginning(self) -> None:
        store = FakeStore()
        async with running(
            store=store,
            topics=(TopicInfo(TOPIC, NEW_ID, 1),),
            committed={P0: (400, OLD_ID)},
        ) as h:
            # The dead topic's ledger says offsets 0..399 finished.
            for offset in range(400):
                inv = h.inv_id(0, offset, OLD_ID)
                store.rows[inv] = LedgerEntry(
                    inv, SUB.id, h.key_of(OLD_ID), 0, offset, None, "t", "SUCCEEDED"
                )
            await subscribed(h, P0)
            assert h.consumer.seeks == [P0], "the dead topic's position was applied"
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(100)])
            await until(lambda: h.committed(P0) == 100, what="all of the new topic")
            assert h.invoker.offsets() == list(range(100))
            assert h.consumer.group_commits[P0] == Committed(100, NEW_ID)
            assert h.runner.stats.topic_recreations == 1

    @pytest.mark.promise("p-ops-recreated-topic")
    async def test_a_recreated_topic_waits_for_committed_positions_that_could_not_be_read(
        self,
    ) -> None:
        async with running(
            topics=(TopicInfo(TOPIC, NEW_ID, 1),), committed={P0: (400, OLD_ID)}
        ) as h:
            read = h.consumer.committed
            readable = asyncio.Event()

            async def unreadable_until_set(tps: set[tuple[str, int]]) -> dict[Any, Any]:
                if not readable.is_set():
                    raise KafkaError("cannot read committed offsets: timed out")
                return await read(tps)

            h.consumer.committed = unreadable_until_set  # type: ignore[method-assign]
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(100)])
            await until(lambda: h.runner.last_error is not None, what="the error shown")
            assert "committed positions" in (h.runner.last_error or "")
            assert h.invoker.calls == [], "started while the group's positions were unknown"
            readable.set()
            await until(lambda: h.committed(P0) == 100, what="all of the new topic")
            assert h.consumer.seeks == [P0], "the dead topic's position was applied"
            assert h.invoker.offsets() == list(range(100))
            assert h.consumer.group_commits[P0] == Committed(100, NEW_ID)

    async def test_a_position_committed_without_a_topic_id_is_kept(self) -> None:
        async with running(committed={P0: (7, None)}) as h:
            await subscribed(h, P0)
            assert h.consumer.seeks == []

    @pytest.mark.promise("p-fault-topic-not-yet")
    async def test_a_topic_that_does_not_exist_yet_is_waited_for(self) -> None:
        async with running(topics=()) as h:
            await until(lambda: h.runner.state is RunnerState.WAITING_FOR_TOPIC)
            assert h.runner.last_error is not None
            assert f"waiting for topic {TOPIC!r}" in h.runner.last_error
            assert h.consumer.listener is None
            h.consumer.create_topic(TOPIC, NEW_ID)
            await until(lambda: h.runner.state is RunnerState.RUNNING, what="running")
            assert h.runner.last_error is None
            assert h.consumer.subscribed == TOPIC

    async def test_a_member_without_partitions_looks_at_its_topic_rarely(self) -> None:
        # A standby lets its fetch connection close; every look would open it again.
        async with running(topic_check_s=0.02, standby_check_s=3600) as h:
            await subscribed(h)  # an empty assignment: another member holds the partition
            looks = h.consumer.descriptions
            await asyncio.sleep(0.3)  # an observation window: 15 checks of a consuming member
            # (at most one more: the fetch loop's turn that began before the assignment)
            assert h.consumer.descriptions <= looks + 1
            await h.consumer.assign(P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])  # ends the standby's long fetch wait
            await until(lambda: h.consumer.descriptions >= looks + 5, what="consuming checks")

    @pytest.mark.promise("p-fault-deleted-topic")
    async def test_a_deleted_topic_asks_for_metadata_until_it_is_back(self) -> None:
        async with running() as h:
            await subscribed(h, P0)
            # The group takes the deleted topic's partitions away and assigns none: the
            # assignment looks at the topic (a member without partitions looks only every
            # standby_check_s otherwise).
            h.consumer.delete_topic(TOPIC)
            await h.consumer.revoke(P0)
            await h.consumer.assign()
            assert h.runner.state is RunnerState.WAITING_FOR_TOPIC
            h.consumer.create_topic(TOPIC, NEW_ID)
            await until(lambda: h.consumer.metadata_refreshes > 0, what="metadata refresh")
            assert h.runner.state is RunnerState.RUNNING


class TestStartPosition:
    @pytest.mark.promise("p-ops-every-record")
    async def test_a_new_subscription_commits_where_it_starts_before_any_record_finishes(
        self,
    ) -> None:
        # auto.offset.reset = latest put the partition at 100; every record keeps retrying.
        async with running(respond=lambda request: Outcome.retry("handler down")) as h:
            h.consumer.positions[P0] = 100
            await subscribed(h, P0)
            await until(lambda: h.committed(P0) == 100, what="the start position committed")
            assert h.consumer.group_commits[P0] == Committed(100, OLD_ID)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(100, 103)])
            await until(lambda: len(h.invoker.calls) >= 3, what="the records tried")
            # A deploy moves the partition on while they retry: the next owner starts at 100,
            # not at a 'latest' of its own past them.
            await h.consumer.revoke(P0)
        assert h.committed(P0) == 100

    async def test_records_of_a_new_partition_wait_for_its_start_position(self) -> None:
        async with running() as h:
            gate = asyncio.Event()
            position = h.consumer.position

            async def slow_position(tp: tuple[str, int]) -> int | None:
                await gate.wait()  # the reset policy's ListOffsets is on its way
                return await position(tp)

            h.consumer.position = slow_position  # type: ignore[method-assign]
            h.consumer.positions[P0] = 0
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
            await asyncio.sleep(0.05)  # an observation window: nothing may start
            assert h.invoker.calls == []
            gate.set()
            await until(lambda: h.committed(P0) == 3, what="the records after the start")
            assert h.invoker.offsets() == [0, 1, 2]
            assert h.consumer.commits[0] == {P0: 0}

    async def test_the_start_position_is_asked_again_and_committed_before_any_record(
        self,
    ) -> None:
        async with running() as h:
            asked = 0
            position = h.consumer.position

            async def slow_to_resolve(tp: tuple[str, int]) -> int | None:
                nonlocal asked
                asked += 1
                if asked < 3:  # the fetch loop has not let aiokafka resolve it yet
                    raise KafkaError("the position of orders[0] was not resolved in time")
                return await position(tp)

            h.consumer.position = slow_to_resolve  # type: ignore[method-assign]
            h.consumer.positions[P0] = 0
            h.consumer.reject_commits = True  # and the first start commits fail
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
            await until(lambda: asked >= 3, timeout=5, what="the position asked again")
            # Refused twice after the position was known: nothing may have started meanwhile.
            await until(lambda: h.consumer.rejected_commits >= 2, timeout=5, what="refusals")
            assert h.invoker.calls == [], "started before its start position was committed"
            h.consumer.reject_commits = False
            await until(lambda: h.committed(P0) == 2, timeout=10, what="the records")
            assert h.consumer.commits[0] == {P0: 0}

    async def test_a_partition_with_a_committed_position_commits_nothing_new_at_start(
        self,
    ) -> None:
        async with running(committed={P0: (7, OLD_ID)}) as h:
            h.consumer.positions[P0] = 7
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 7)])
            await until(lambda: h.committed(P0) == 8, what="the record")
            assert h.consumer.commits == [{P0: 8}]


class TestRebalanceDuringAccept:
    async def test_records_fetched_before_a_rebalance_stay_with_their_assignment(self) -> None:
        """One fetch brings records of two partitions; accepting the first waits (here: its
        topic's first recording) while a rebalance gives the second a new assignment. The
        second's records belong to the assignment they were fetched under: the new one starts
        from the committed offset and must not have them tracked already."""

        @dataclass(eq=False)
        class SlowRecording(FakeStore):
            release: asyncio.Event = field(default_factory=asyncio.Event)
            waiting: bool = False

            async def remember_topic(self, subscription_id: str, topic: str) -> bool:
                self.waiting = True
                await self.release.wait()
                return await super().remember_topic(subscription_id, topic)

        store = SlowRecording()
        async with running(store=store) as h:
            await subscribed(h, P0, P1)
            h.consumer.deliver(
                [record(TOPIC, 0, o) for o in range(2)] + [record(TOPIC, 1, o) for o in range(3)]
            )
            await until(lambda: store.waiting, what="the first partition's accept waiting")
            # An eager rebalance: both come back in new assignments, from their commits.
            await h.consumer.revoke(P0, P1)
            await h.consumer.assign(P0, P1)
            h.consumer.deliver(
                [record(TOPIC, 0, o) for o in range(2)] + [record(TOPIC, 1, o) for o in range(3)]
            )
            store.release.set()
            await until(lambda: h.committed(P1) == 3, what="P1 from its new assignment")
            await until(lambda: h.committed(P0) == 2, what="P0 from its new assignment")
            calls = sorted((c.record.partition, c.record.offset) for c in h.invoker.calls)
            assert calls == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


async def _waiting_for_pages(h: Harness, store: _LaggingPages) -> None:
    """P0 handed back after a graceful handover, and its records redelivered: the fetch loop
    waits for the pages (the harness's index lag) before it checks them."""
    await _paged_and_handed_back(h, store, finished_handed_over=False)
    consumed = h.runner.stats.consumed
    h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
    await until(lambda: h.runner.stats.consumed > consumed, what="the wait begun")


class TestLedgerCheckWaits:
    """Accepting a fetch may wait for the ledger check (a handover's pages, a store that
    fails): the fetch loop waits with it, so those waits give way to a stop and to the
    partition's revocation."""

    async def test_a_stop_does_not_wait_out_a_handovers_pages(self) -> None:
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries, index_lag_s=60) as h:
            await _waiting_for_pages(h, store)
            stopping = time.monotonic()
        # Leaving the block stops the runner (5 s at most, else TimeoutError).
        assert time.monotonic() - stopping < 2
        assert h.invoker.offsets().count(1) == 1, "a record admitted on the way out"

    async def test_a_stop_during_one_partitions_wait_admits_no_other_of_the_fetch(
        self,
    ) -> None:
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries, index_lag_s=60) as h:
            await _paged_and_handed_back(h, store, finished_handed_over=False)
            h.consumer.positions[P1] = 0
            await h.consumer.assign(P1)
            await until(lambda: P1 not in h.consumer.paused, what="P1's start committed")
            consumed = h.runner.stats.consumed
            # One fetch: P0's records wait for the pages, P1's come after them.
            h.consumer.deliver(
                [record(TOPIC, 0, o) for o in range(4)] + [record(TOPIC, 1, o) for o in range(2)]
            )
            await until(lambda: h.runner.stats.consumed > consumed, what="P0's wait begun")
            h.runner.stop()
            await until(lambda: h.runner.state is RunnerState.STOPPED, what="stopped")
            assert [c.record.offset for c in h.invoker.calls if c.record.partition == 1] == []
            # Not taken on at all: the handover's fence would otherwise claim them (the next
            # owner would check them against the ledger for nothing).
            handover = h.consumer.group_commits[P1].handover
            assert handover is not None
            assert handover.fence is None

    async def test_a_revoked_partitions_pages_wait_holds_up_no_other(self) -> None:
        store = _LaggingPages(lag_s=0.0)
        async with running(store=store, respond=_first_retries, index_lag_s=60) as h:
            await _waiting_for_pages(h, store)
            await h.consumer.revoke(P0)
            h.consumer.positions[P1] = 0
            await h.consumer.assign(P1)
            h.consumer.deliver([record(TOPIC, 1, o) for o in range(2)])
            await until(lambda: h.committed(P1) == 2, timeout=3, what="P1, past P0's wait")

    async def test_a_revoked_partitions_failing_ledger_check_holds_up_no_other(self) -> None:
        @dataclass(eq=False)
        class StatusesDown(FakeStore):
            asked: int = 0

            async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]:
                self.asked += 1
                raise StoreError("DynamoDB unreachable")

        store = StatusesDown()
        # A row at offset 9: P0's fence, so its records 0..2 are checked against the ledger.
        store.seed(
            LedgerEntry("inv-9", SUB.id, topic_key(TOPIC, OLD_ID), 0, 9, None, "t", "FAILED")
        )
        async with running(store=store, committed={P0: (0, OLD_ID)}, ran_before=True) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])  # below its fence
            await until(lambda: store.asked >= 2, what="the check failing and retried")
            await h.consumer.revoke(P0)
            h.consumer.positions[P1] = 0
            await h.consumer.assign(P1)
            h.consumer.deliver([record(TOPIC, 1, o) for o in range(2)])
            await until(lambda: h.committed(P1) == 2, what="P1's records, past P0's check")
            assert [c.record.offset for c in h.invoker.calls] == [0, 1]


class TestRetention:
    @pytest.mark.promise("p-fault-retention")
    async def test_records_lost_to_retention_are_reported(self) -> None:
        async with running() as h:
            await subscribed(h, P0)
            h.consumer.lose(RetentionLoss(P0, 10, 19))
            await until(lambda: bool(h.runner.retention_losses), what="loss reported")
            assert h.runner.retention_losses == [RetentionLoss(P0, 10, 19)]
            assert h.runner.stats.records_lost_to_retention == 10


class TestBackpressure:
    @pytest.mark.promise("p-fault-dynamodb")
    async def test_a_partition_at_its_bound_is_held_and_released_when_drained(self) -> None:
        gate = asyncio.Event()
        async with running(max_buffered=4) as h:
            h.invoker.gate = gate
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
            await until(lambda: P0 in h.consumer.held, what="hold")
            assert P0 not in h.consumer.paused  # aiokafka's pause would drop its prefetch
            gate.set()
            await until(lambda: P0 not in h.consumer.held, what="release")
            await until(lambda: h.committed(P0) == 4)


class TestOperatorActions:
    async def test_kill_records_the_status_and_lets_the_offset_commit(self) -> None:
        gate = asyncio.Event()
        async with running() as h:
            h.invoker.gate = gate
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            await until(lambda: len(h.invoker.calls) == 1)
            inv = h.inv_id(0, 0)
            assert await h.runner.kill(inv, InvocationStatus.KILLED)
            await until(lambda: h.committed(P0) == 1)
            assert h.store.rows[inv].status == "KILLED"
            assert not await h.runner.kill(inv, InvocationStatus.KILLED)

    async def test_retry_now_ends_a_backoff(self) -> None:
        outcomes = iter([Outcome.retry("busy", retry_after=30.0), Outcome.ack()])
        async with running(respond=lambda r: next(outcomes)) as h:
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, 0)])
            inv = h.inv_id(0, 0)
            await until(lambda: h.store.rows.get(inv) is not None, what="backing-off row")
            assert h.store.rows[inv].status == "BACKING_OFF"
            h.consumer.heartbeat()
            assert h.runner.retry_now(inv)
            await until(lambda: h.committed(P0) == 1, what="retried and committed")
            assert not h.runner.retry_now(inv)


class TestDrain:
    @pytest.mark.promise("p-fault-sigterm")
    async def test_stop_lets_running_invocations_finish_and_commits(self) -> None:
        gate = asyncio.Event()
        async with running() as h:
            h.invoker.gate = gate
            await subscribed(h, P0, P1)
            h.consumer.deliver([record(TOPIC, 0, 0), record(TOPIC, 1, 0)])
            await until(lambda: len(h.invoker.calls) == 2)
            h.runner.stop()
            await asyncio.sleep(0.01)
            gate.set()
            await until(lambda: h.runner.state is RunnerState.STOPPED)
            assert h.committed(P0) == 1
            assert h.committed(P1) == 1
            assert h.consumer.stopped

    @pytest.mark.promise("p-fault-rebalance")
    async def test_a_revoked_partitions_unstarted_records_are_left_to_the_next_owner(
        self,
    ) -> None:
        gate = asyncio.Event()
        async with running(ordered=True) as h:
            h.invoker.gate = gate
            await subscribed(h, P0)
            h.consumer.deliver([record(TOPIC, 0, o, key=b"k") for o in range(3)])
            await until(lambda: len(h.invoker.calls) == 1)
            revoke = asyncio.create_task(h.consumer.revoke(P0))
            await asyncio.sleep(0.01)
            gate.set()
            await revoke
            assert h.invoker.offsets() == [0]
            assert h.committed(P0) == 1  # the finished one is committed before letting go


@pytest.mark.parametrize("ordered", [False, True])
async def test_many_records_over_two_partitions_all_commit(ordered: bool) -> None:
    async with running(ordered=ordered) as h:
        await subscribed(h, P0, P1)
        h.consumer.deliver(
            [record(TOPIC, p, o, key=f"k{o % 7}".encode()) for p in (0, 1) for o in range(200)]
        )
        await until(lambda: h.committed(P0) == 200 and h.committed(P1) == 200, timeout=5)
        assert sorted(h.invoker.offsets()) == sorted(list(range(200)) * 2)


class TestPauseBound:
    """Unfinished records per partition before fetching is held back (``pause_bound``,
    ``pause_growth``)."""

    def test_one_record_at_a_time_buffers_a_thousand_by_default(self) -> None:
        assert pause_bound(RunnerSettings()) == 1000
        assert pause_growth(RunnerSettings()) is None
        assert pause_bound(RunnerSettings(max_buffered_per_partition=50)) == 50

    @pytest.mark.parametrize(
        ("size", "least", "most"),
        [(10, 1000, None), (100, 1000, 4000), (250, 1000, 10_000), (6000, 12_000, None)],
    )
    def test_partition_batches_grow_to_forty_batches_by_default(
        self, size: int, least: int, most: int | None
    ) -> None:
        settings = RunnerSettings(batches=BatchSettings(policy=BatchPolicy(size=size)))
        assert pause_bound(settings) == least
        growth = pause_growth(settings)
        assert (growth and growth.records) == most
        assert growth is None or growth.bytes == 4 * 1024 * 1024

    def test_a_set_bound_is_kept_but_holds_two_batches(self) -> None:
        def settings(configured: int, size: int) -> RunnerSettings:
            batches = BatchSettings(policy=BatchPolicy(size=size))
            return RunnerSettings(max_buffered_per_partition=configured, batches=batches)

        assert pause_bound(settings(500, 100)) == 500
        assert pause_growth(settings(500, 100)) is None
        assert pause_bound(settings(150, 100)) == 200
