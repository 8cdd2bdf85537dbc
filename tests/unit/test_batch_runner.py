"""The runner in ESM partition-batch mode, and filtering on both paths, with the fakes.

No broker, no DynamoDB, no Lambda: ``adapter.testing``'s consumer and store, and a fake batch
caller answering as the Lambda invoker's ``invoke_records`` does. The same behaviour runs on a
real broker and a local Lambda endpoint in tests/integration/test_partition_batches.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import pytest

from adapter.engine.batch_dispatch import BatchDispatcher, BatchSettings
from adapter.engine.batches import BatchPolicy
from adapter.engine.discards import FailureDestination
from adapter.engine.ledger import LedgerWriter
from adapter.engine.lifecycle import InvocationStatus
from adapter.engine.retry import RetryPolicy
from adapter.engine.runner import SubscriptionRunner
from adapter.engine.settings import RunnerSettings
from adapter.failure_destination import DestinationKind
from adapter.filters import parse_filter_criteria
from adapter.invokers.base import InvocationRequest
from adapter.invokers.batch_response import BatchAnswer
from adapter.invokers.destinations import Delivery
from adapter.kafka.topics import TopicInfo
from adapter.model import Deployment, HandlerType, InputKind, ServiceType, Target
from adapter.testing import (
    FakeConsumer,
    FakeInvoker,
    FakeStore,
    ManualClock,
    SendWait,
    record,
)
from tests.unit.test_runner import (
    OLD_ID,
    P0,
    P1,
    SESSION_S,
    SUB,
    TOPIC,
    Harness,
    pause_warnings,
    until,
)

TARGET = Target(
    service="S",
    handler="h",
    service_type=ServiceType.SERVICE,
    handler_type=HandlerType.SERVICE,
    input_kind=InputKind.JSON,
    deployment=Deployment(id="dp_fn", arn="arn:aws:lambda:us-east-1:123456789012:function:f"),
)
POISON_ONLY = "only offset 3 fails"


@dataclass
class FakeBatchCaller:
    """Answers whole batches with ``respond(offsets)`` (default: all succeeded)."""

    respond: Callable[[list[int]], BatchAnswer] | None = None
    batches: list[list[int]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    before_send: SendWait | None = None
    """If set, every call waits here before it is sent (the Lambda client's credentials)."""
    attempts_sent: list[list[int]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0

    async def invoke_records(
        self, requests: Sequence[InvocationRequest], *, report_batch_item_failures: bool
    ) -> BatchAnswer:
        if self.before_send is not None:
            await self.before_send()
        self.attempts_sent.append([r.attempt for r in requests])
        offsets = [r.record.offset for r in requests if r.record is not None]
        self.batches.append(offsets)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.respond is None:
                return BatchAnswer((False,) * len(offsets))
            return self.respond(offsets)
        finally:
            self.running -= 1

    def event_bytes(self, request: InvocationRequest) -> int:
        return len(request.body) + 256

    async def invoke(self, request: InvocationRequest) -> object:
        raise AssertionError("partition batches never invoke one record alone")

    async def aclose(self) -> None:
        return None


@dataclass
class FakeWriter:
    deliveries: list[dict[str, object]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    delivering: int = 0

    async def deliver(self, delivery: Delivery) -> None:
        self.delivering += 1
        if self.gate is not None:
            await self.gate.wait()
        self.deliveries.append(orjson.loads(delivery.body))


@asynccontextmanager
async def running(
    caller: FakeBatchCaller | FakeInvoker,
    *,
    policy: BatchPolicy | None = None,
    batches: bool = True,
    writer: FakeWriter | None = None,
    filter_json: str | None = None,
    max_buffered: int | None = 1000,
    retry: RetryPolicy | None = None,
    revoke_timeout_s: float = 10.0,
) -> AsyncIterator[Harness]:
    clock = ManualClock()
    consumer = FakeConsumer(clock, (TopicInfo(TOPIC, OLD_ID, 2),))
    store = FakeStore()
    ledger = LedgerWriter(store, linger_s=0)
    destination = FailureDestination(DestinationKind.SQS, writer) if writer else None
    settings = RunnerSettings(
        session_timeout_s=SESSION_S,
        commit_interval_s=0.005,
        topic_poll_s=0.01,
        max_buffered_per_partition=max_buffered,
        retry=retry or RetryPolicy(initial_interval=0.001, max_interval=0.002, jitter=0.0),
        revoke_timeout_s=revoke_timeout_s,
        batches=(
            BatchSettings(policy=policy or BatchPolicy(window_ms=5), destination=destination)
            if batches
            else None
        ),
        filter_criteria=parse_filter_criteria(filter_json) if filter_json else None,
    )
    runner = SubscriptionRunner(
        SUB,
        TARGET,
        consumer_factory=lambda watch: consumer,
        store=store,
        ledger=ledger,
        invoker=caller,  # type: ignore[arg-type]
        dead_letters=None,
        settings=settings,
        clock=clock,
    )
    ledger_task = asyncio.create_task(ledger.run())
    run_task = asyncio.create_task(runner.run())
    try:
        yield Harness(runner, consumer, FakeInvoker(), store, clock)
    finally:
        runner.stop()
        await asyncio.wait_for(run_task, 5)
        ledger_task.cancel()
        await asyncio.gather(ledger_task, return_exceptions=True)
    # Pollers record a topic before any ledger row of it (p-ops-first-recording).
    assert store.rows_before_recording == []


async def assigned(h: Harness, *tps: tuple[str, int]) -> None:
    await until(lambda: h.consumer.listener is not None, what="subscribe")
    await h.consumer.assign(*tps)


def statuses(h: Harness, partition: int, offsets: range) -> list[str | None]:
    rows = h.store.rows
    return [
        rows[h.inv_id(partition, o)].status if h.inv_id(partition, o) in rows else None
        for o in offsets
    ]


@pytest.mark.promise("p-config-partition-batches")
async def test_a_partition_runs_one_batch_at_a_time_in_offset_order() -> None:
    caller = FakeBatchCaller()
    async with running(caller, policy=BatchPolicy(size=4, window_ms=5)) as h:
        await assigned(h, P0, P1)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(10)])
        await until(lambda: h.committed(P0) == 10, what="all committed")
        assert caller.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert caller.max_running == 1
        assert statuses(h, 0, range(10)) == ["SUCCEEDED"] * 10


@pytest.mark.promise("p-config-batch-buffer")
async def test_a_batch_larger_than_the_partition_buffer_still_fills() -> None:
    """The per-partition bound grows to two batches: with batch.size above
    max-buffered-per-partition, fetching must not stop before one batch is full."""
    caller = FakeBatchCaller()
    async with running(caller, policy=BatchPolicy(size=8, window_ms=5), max_buffered=4) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])  # two fetches
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(4, 8)])
        await until(lambda: h.committed(P0) == 8, what="all committed")
        assert caller.batches == [list(range(8))]
        assert P0 not in h.consumer.held


@pytest.mark.promise("p-config-batch-buffer-default")
async def test_partition_batches_buffer_forty_batches_by_default() -> None:
    """Unset, max-buffered-per-partition is 40 batches for partition batches: with 1,000
    records (10 batches of 100) a partition's line ran dry while its finished batches waited
    for the ledger. Here 1,500 records of 50-record batches are taken on without a hold, and
    the 2,000th holds the partition."""
    caller = FakeBatchCaller(gate=asyncio.Event())
    policy = BatchPolicy(size=50, window_ms=5)
    async with running(caller, policy=policy, max_buffered=None) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(1500)])
        await until(lambda: caller.batches == [list(range(50))], what="first batch called")
        await until(lambda: h.runner.stats.consumed == 1500, what="1,500 records taken on")
        assert P0 not in h.consumer.held
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(1500, 2000)])
        await until(lambda: P0 in h.consumer.held, what="held at 40 batches")
        assert caller.gate is not None
        caller.gate.set()
        await until(lambda: h.committed(P0) == 2000, what="all committed")
        assert P0 not in h.consumer.held


@pytest.mark.promise("p-config-batch-buffer-default")
async def test_large_records_keep_the_thousand_record_default() -> None:
    """The default grows only within 4 MiB of records: 8 KiB records are held at 1,000."""
    caller = FakeBatchCaller(gate=asyncio.Event())
    policy = BatchPolicy(size=50, window_ms=5)
    value = b'"' + b"x" * 8190 + b'"'
    async with running(caller, policy=policy, max_buffered=None) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o, value=value) for o in range(999)])
        await until(lambda: h.runner.stats.consumed == 999, what="999 records taken on")
        assert P0 not in h.consumer.held
        h.consumer.deliver([record(TOPIC, 0, 999, value=value)])
        await until(lambda: P0 in h.consumer.held, what="held at 1,000")
        assert caller.gate is not None
        caller.gate.set()
        await until(lambda: h.committed(P0) == 1000, what="all committed")


@pytest.mark.promise("p-config-partial-response")
async def test_a_partial_failure_resumes_from_the_first_failed_record() -> None:
    answers = iter([(False, False, True, True), (False, False)])

    def respond(offsets: list[int]) -> BatchAnswer:
        return BatchAnswer(next(answers), "batch item failure reported from orders-0@2")

    caller = FakeBatchCaller(respond)
    async with running(caller, policy=BatchPolicy(size=4, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
        await until(lambda: h.committed(P0) == 4, what="all committed")
        assert caller.batches == [[0, 1, 2, 3], [2, 3]]
        assert [h.store.rows[h.inv_id(0, o)].attempts for o in range(4)] == [1, 1, 2, 2]


@pytest.mark.promise("p-config-bisect")
@pytest.mark.promise("p-config-on-failure")
async def test_bisect_sends_only_the_poison_record_to_the_destination() -> None:
    def respond(offsets: list[int]) -> BatchAnswer:
        if 3 in offsets:  # the function fails (FunctionError): only that bisects
            return BatchAnswer((True,) * len(offsets), POISON_ONLY, "Unhandled")
        return BatchAnswer((False,) * len(offsets))

    caller = FakeBatchCaller(respond)
    writer = FakeWriter()
    policy = BatchPolicy(size=8, window_ms=5, bisect=True, max_retries=1)
    async with running(caller, policy=policy, writer=writer) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(8)])
        await until(lambda: h.committed(P0) == 8, what="all committed")
        assert len(writer.deliveries) == 1
        document = writer.deliveries[0]
        assert document["requestContext"]["condition"] == "RetryAttemptsExhausted"  # type: ignore[index]
        where = document["KafkaBatchInfo"]["recordsInfo"]["orders-0"]  # type: ignore[index]
        assert (where["firstRecordOffset"], where["lastRecordOffset"]) == ("3", "3")
        expected = ["SUCCEEDED"] * 8
        expected[3] = "DEAD_LETTERED"
        assert statuses(h, 0, range(8)) == expected
        assert h.runner.stats.dead_lettered == 1


async def test_a_killed_record_of_a_batch_in_flight_settles_at_once() -> None:
    caller = FakeBatchCaller(gate=asyncio.Event())
    async with running(caller, policy=BatchPolicy(size=3, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
        await until(lambda: caller.running == 1, what="first batch in flight")
        assert await h.runner.kill(h.inv_id(0, 1), InvocationStatus.KILLED)
        assert not await h.runner.kill(h.inv_id(0, 1), InvocationStatus.KILLED)  # settled
        await until(lambda: h.inv_id(0, 1) in h.store.rows, what="kill recorded")
        assert caller.gate is not None
        caller.gate.set()
        await until(lambda: h.committed(P0) == 4, what="all committed")
        assert statuses(h, 0, range(4)) == ["SUCCEEDED", "KILLED", "SUCCEEDED", "SUCCEEDED"]
        assert caller.batches == [[0, 1, 2], [3]]


async def test_killing_every_record_of_a_hung_batch_cancels_its_call() -> None:
    caller = FakeBatchCaller(gate=asyncio.Event())  # never opened: the function hangs
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
        await until(lambda: caller.running == 1, what="first batch in flight")
        for offset in (0, 1):
            assert await h.runner.kill(h.inv_id(0, offset), InvocationStatus.KILLED)
        await until(lambda: caller.batches == [[0, 1], [2]], what="the next batch")
        assert caller.gate is not None
        caller.gate.set()
        await until(lambda: h.committed(P0) == 3, what="all committed")
        assert statuses(h, 0, range(3)) == ["KILLED", "KILLED", "SUCCEEDED"]


async def test_revocation_abandons_the_commit_of_the_batch_in_flight() -> None:
    caller = FakeBatchCaller(gate=asyncio.Event())
    async with running(caller, policy=BatchPolicy(size=3, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
        await until(lambda: caller.running == 1, what="batch in flight")
        revoking = asyncio.create_task(h.consumer.revoke(P0))
        await asyncio.sleep(0)
        assert caller.gate is not None
        caller.gate.set()  # the answer arrives after the revocation began
        await asyncio.wait_for(revoking, 5)
        assert h.committed(P0) is None
        assert statuses(h, 0, range(3)) == [None] * 3


VALUE_PATTERN = '{"Filters": [{"Pattern": "{\\"value\\": {\\"kind\\": [\\"keep\\"]}}"}]}'


def kinds(offsets: range) -> list[bytes]:
    return [orjson.dumps({"kind": "keep" if o % 2 == 0 else "drop"}) for o in offsets]


@pytest.mark.promise("p-config-filter-applied")
async def test_filtering_in_partition_batches_commits_excluded_records_uninvoked() -> None:
    caller = FakeBatchCaller()
    async with running(caller, filter_json=VALUE_PATTERN) as h:
        await assigned(h, P0)
        h.consumer.deliver(
            [record(TOPIC, 0, o, value=v) for o, v in zip(range(6), kinds(range(6)), strict=True)]
        )
        await until(lambda: h.committed(P0) == 6, what="all committed")
        assert [o for batch in caller.batches for o in batch] == [0, 2, 4]
        assert h.runner.stats.filtered == 3


@pytest.mark.promise("p-config-filter-applied")
async def test_filtering_in_the_per_record_path_commits_excluded_records_uninvoked() -> None:
    invoker = FakeInvoker()
    async with running(invoker, batches=False, filter_json=VALUE_PATTERN) as h:
        await assigned(h, P0)
        h.consumer.deliver(
            [record(TOPIC, 0, o, value=v) for o, v in zip(range(6), kinds(range(6)), strict=True)]
        )
        await until(lambda: h.committed(P0) == 6, what="all committed")
        assert sorted(invoker.offsets()) == [0, 2, 4]
        assert h.runner.stats.filtered == 3


FAIL_ONCE_THEN_SUCCEED = "fails once"


def _fails_first_call() -> Callable[[list[int]], BatchAnswer]:
    calls: list[int] = []

    def respond(offsets: list[int]) -> BatchAnswer:
        calls.append(1)
        if len(calls) == 1:
            return BatchAnswer((True,) * len(offsets), FAIL_ONCE_THEN_SUCCEED, "Unhandled")
        return BatchAnswer((False,) * len(offsets))

    return respond


async def test_a_record_killed_during_the_backoff_is_left_out_of_the_retry() -> None:
    caller = FakeBatchCaller(_fails_first_call())
    slow = RetryPolicy(initial_interval=0.3, max_interval=0.3, jitter=0.0)
    async with running(caller, policy=BatchPolicy(size=3, window_ms=5), retry=slow) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
        await until(lambda: len(caller.batches) == 1, what="first call")
        assert await h.runner.kill(h.inv_id(0, 1), InvocationStatus.KILLED)
        await until(lambda: h.committed(P0) == 3, what="all committed")
        assert caller.batches == [[0, 1, 2], [0, 2]]
        assert statuses(h, 0, range(3)) == ["SUCCEEDED", "KILLED", "SUCCEEDED"]


async def test_a_record_killed_during_delivery_is_settled_once_and_the_partition_commits() -> None:
    caller = FakeBatchCaller(lambda offsets: BatchAnswer.whole(len(offsets), "no", called=True))
    writer = FakeWriter(gate=asyncio.Event())
    policy = BatchPolicy(size=2, window_ms=5, max_retries=0)
    async with running(caller, policy=policy, writer=writer) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: writer.delivering == 1, what="delivery under way")
        assert await h.runner.kill(h.inv_id(0, 0), InvocationStatus.KILLED)
        assert writer.gate is not None
        writer.gate.set()
        await until(lambda: h.committed(P0) == 2, what="both committed")
        assert statuses(h, 0, range(2)) == ["KILLED", "DEAD_LETTERED"]


async def test_a_revocation_ends_the_backoff_and_nothing_more_is_invoked() -> None:
    caller = FakeBatchCaller(lambda offsets: BatchAnswer.whole(len(offsets), "no", called=True))
    slow = RetryPolicy(initial_interval=5.0, max_interval=5.0, jitter=0.0)
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5), retry=slow) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: len(caller.batches) == 1, what="first call")
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(h.consumer.revoke(P0), 10)
        assert loop.time() - began < 2.0  # not the 5 s backoff
        assert caller.batches == [[0, 1]]


@pytest.mark.promise("p-config-batch-retries")
async def test_calls_that_never_reach_the_function_use_no_retry_and_no_bisection() -> None:
    calls: list[int] = []

    def respond(offsets: list[int]) -> BatchAnswer:
        calls.append(len(offsets))
        if len(calls) <= 2:  # throttled twice: the function never ran
            return BatchAnswer.whole(len(offsets), "TooManyRequestsException", called=False)
        return BatchAnswer((False,) * len(offsets))

    caller = FakeBatchCaller(respond)
    writer = FakeWriter()
    policy = BatchPolicy(size=2, window_ms=5, max_retries=0, bisect=True)
    async with running(caller, policy=policy, writer=writer) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: h.committed(P0) == 2, what="committed")
        assert caller.batches == [[0, 1], [0, 1], [0, 1]]
        assert statuses(h, 0, range(2)) == ["SUCCEEDED", "SUCCEEDED"]
        assert writer.deliveries == []
        assert [h.store.rows[h.inv_id(0, o)].attempts for o in range(2)] == [1, 1]


async def test_a_retried_batch_tells_the_function_its_attempt() -> None:
    seen: list[list[int]] = []

    class Capturing(FakeBatchCaller):
        async def invoke_records(
            self, requests: Sequence[InvocationRequest], *, report_batch_item_failures: bool
        ) -> BatchAnswer:
            seen.append([r.attempt for r in requests])
            return await super().invoke_records(
                requests, report_batch_item_failures=report_batch_item_failures
            )

    caller = Capturing(_fails_first_call())
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: h.committed(P0) == 2, what="committed")
        assert seen == [[1, 1], [2, 2]]


@pytest.mark.promise("p-ops-paused-starts-nothing", "p-ops-send-fence")
async def test_a_batch_whose_invoker_waited_past_the_session_is_not_sent() -> None:
    """The Lambda client waits (a credentials refresh) and the poller is paused meanwhile:
    the batch does not go out until the group confirms the member, and counts no attempt."""
    wait = SendWait()
    caller = FakeBatchCaller(before_send=wait)
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: wait.waiting == 1, what="the call's wait")
        h.clock.advance(SESSION_S * 2)  # paused while the client waited
        wait.release.set()
        await until(lambda: h.runner.stats.unsent == 1, what="the call given back")
        await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
        assert caller.batches == [], "sent without proof of ownership"
        h.consumer.heartbeat()
        await until(lambda: h.committed(P0) == 2, what="committed after a heartbeat")
        assert caller.attempts_sent == [[1, 1]]
        assert caller.batches == [[0, 1]]


async def test_a_call_not_sent_leaves_the_next_retry_its_backoff() -> None:
    """A first attempt given back (no backoff waited) must not make the batch's next real
    retry skip its backoff."""
    wait = SendWait()
    caller = FakeBatchCaller(_fails_first_call(), before_send=wait)
    slow = RetryPolicy(initial_interval=30.0, max_interval=30.0, jitter=0.0)
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5), retry=slow) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: wait.waiting == 1, what="the call's wait")
        h.clock.advance(SESSION_S * 2)
        wait.release.set()
        await until(lambda: h.runner.stats.unsent == 1, what="the call given back")
        h.consumer.heartbeat()
        await until(lambda: caller.batches == [[0, 1]], what="the first attempt, sent")
        await asyncio.sleep(0.2)
        assert caller.batches == [[0, 1]], "the retry skipped its 30 s backoff"


def batch_calls(h: Harness) -> int:
    """The batch dispatcher's count of calls that reached the function."""
    dispatcher = h.runner._dispatcher
    assert isinstance(dispatcher, BatchDispatcher)
    return dispatcher.batches


async def test_a_retry_given_back_unsent_is_one_retry_and_one_batch() -> None:
    """A retry the invoker gives back unsent (the proof lapsed while it waited) is handed out
    again as the same step: still one retry, and the call that never went out no batch."""
    wait = SendWait()
    caller = FakeBatchCaller(_fails_first_call(), gate=asyncio.Event())
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: caller.running == 1, what="the first call in flight")
        caller.before_send = wait  # only the retry waits before it is sent
        assert caller.gate is not None
        caller.gate.set()
        await until(lambda: wait.waiting == 1, what="the retry's wait")
        h.clock.advance(SESSION_S * 2)  # paused while the client waited
        wait.release.set()
        await until(lambda: h.runner.stats.unsent == 1, what="the retry given back")
        h.consumer.heartbeat()
        await until(lambda: h.committed(P0) == 2, what="committed after the retry")
        assert caller.attempts_sent == [[1, 1], [2, 2]]
        assert batch_calls(h) == len(caller.batches) == 2
        assert h.runner.stats.retries == 1


async def test_a_retry_not_sent_because_records_expired_is_one_retry() -> None:
    """Records that expire during a retry's backoff go to the destination first and the
    retry goes on without them: the same step again, one retry."""
    import time

    caller = FakeBatchCaller(_fails_first_call())
    writer = FakeWriter()
    slow = RetryPolicy(initial_interval=2.0, max_interval=2.0, jitter=0.0)
    max_age_ms = 60_000
    now_ms = int(time.time() * 1000)
    # Offset 0 turns older than maximum.record.age.ms during the backoff, offset 1 does not.
    born = [now_ms - max_age_ms + 1_000, now_ms]
    policy = BatchPolicy(size=2, window_ms=5, max_age_ms=max_age_ms)
    async with running(caller, policy=policy, writer=writer, retry=slow) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o, timestamp_ms=born[o]) for o in range(2)])
        await until(lambda: h.committed(P0) == 2, timeout=10, what="settled")
        assert caller.batches == [[0, 1], [1]]
        assert statuses(h, 0, range(2)) == ["DEAD_LETTERED", "SUCCEEDED"]
        assert h.runner.stats.retries == 1
        assert batch_calls(h) == 2


async def test_a_retry_that_did_not_reach_the_function_is_counted_once_it_does() -> None:
    """A throttled retry is handed out again as the same attempt (no attempt counted, as
    AWS counts them): one retry, and the throttled call is no batch."""
    answers = iter(
        [
            BatchAnswer((True, True), FAIL_ONCE_THEN_SUCCEED, "Unhandled"),
            BatchAnswer.whole(2, "TooManyRequestsException", called=False),
            BatchAnswer.whole(2, "TooManyRequestsException", called=False),
            BatchAnswer((False, False)),
        ]
    )
    caller = FakeBatchCaller(lambda offsets: next(answers))
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: h.committed(P0) == 2, what="committed")
        assert caller.attempts_sent == [[1, 1], [2, 2], [2, 2], [2, 2]]
        assert [h.store.rows[h.inv_id(0, o)].attempts for o in range(2)] == [2, 2]
        assert batch_calls(h) == 2
        assert h.runner.stats.retries == 1


async def test_a_batch_held_before_its_call_and_again_after_it_came_back_unsent_is_held_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """held counts attempts that had to wait, each once: a call held, then given back unsent
    by the invoker and held again, is one attempt."""
    wait = SendWait()
    caller = FakeBatchCaller(before_send=wait)
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.clock.advance(SESSION_S * 2)  # paused before the records arrived
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: h.runner.stats.held == 1, what="held before the call")
        h.consumer.heartbeat()
        await until(lambda: wait.waiting == 1, what="the call's wait")
        h.clock.advance(SESSION_S * 2)  # paused again while the client waited
        wait.release.set()
        await until(lambda: len(pause_warnings(caplog)) == 2, what="held again")
        assert caller.batches == [], "sent without proof of ownership"
        h.consumer.heartbeat()
        await until(lambda: h.committed(P0) == 2, what="committed after a heartbeat")
        assert caller.attempts_sent == [[1, 1]]
        assert h.runner.stats.held == 1


async def test_records_that_expire_during_the_backoff_are_not_invoked_again() -> None:
    import time

    caller = FakeBatchCaller(_fails_first_call())
    writer = FakeWriter()
    slow = RetryPolicy(initial_interval=2.0, max_interval=2.0, jitter=0.0)
    max_age_ms = 60_000
    # They turn older than maximum.record.age.ms one second from now: during the backoff.
    born = int(time.time() * 1000) - max_age_ms + 1_000
    policy = BatchPolicy(size=2, window_ms=5, max_age_ms=max_age_ms)
    async with running(caller, policy=policy, writer=writer, retry=slow) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o, timestamp_ms=born) for o in range(2)])
        await until(lambda: h.committed(P0) == 2, timeout=10, what="settled")
        assert caller.batches == [[0, 1]]
        assert [d["requestContext"]["condition"] for d in writer.deliveries] == [  # type: ignore[index]
            "RecordAgeExceeded"
        ]
        assert statuses(h, 0, range(2)) == ["DEAD_LETTERED", "DEAD_LETTERED"]


@pytest.mark.promise("p-ops-paused-starts-nothing")
async def test_a_record_failed_without_an_attempt_waits_for_ownership_too() -> None:
    """A record that fails without being invoked (here: not JSON) is dead-lettered or recorded
    as failed by the partition's owner only: a poller woken from a pause past the session must
    not write a failure of a record the group has given to another member."""
    caller = FakeBatchCaller()
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5)) as h:
        await assigned(h, P0)
        h.clock.advance(SESSION_S * 2)  # paused: the evidence has lapsed
        h.consumer.deliver([record(TOPIC, 0, 0, value=b"not json")])
        await until(lambda: h.runner.stats.held == 1, what="held for proof of ownership")
        assert h.inv_id(0, 0) not in h.store.rows, "failed without proof of ownership"
        assert h.runner.stats.failed == 0
        h.consumer.heartbeat()
        await until(lambda: h.committed(P0) == 1, what="recorded and committed after a heartbeat")
        assert h.store.rows[h.inv_id(0, 0)].status == "FAILED"
        assert caller.batches == []


def _poison_at(offset: int) -> Callable[[list[int]], BatchAnswer]:
    """A function that fails (a function error) every call holding ``offset``."""

    def respond(offsets: list[int]) -> BatchAnswer:
        if offset in offsets:
            return BatchAnswer((True,) * len(offsets), "poison", "Unhandled")
        return BatchAnswer((False,) * len(offsets))

    return respond


async def test_an_expired_record_does_not_stop_its_batch_from_being_bisected() -> None:
    # Offset 0 is past maximum.record.age.ms when its batch forms, offset 3 is poison: as on
    # AWS, 0 expires, 1 and 2 succeed, only 3 is discarded. The expired record counted as
    # "not failed" made the call's failure look partial: 1-3 were retried whole, then all
    # three discarded.
    import time

    now_ms = int(time.time() * 1000)
    born = [now_ms - 120_000, now_ms, now_ms, now_ms]
    policy = BatchPolicy(size=4, window_ms=5, bisect=True, max_retries=0, max_age_ms=60_000)
    caller = FakeBatchCaller(_poison_at(3))
    async with running(caller, policy=policy, writer=FakeWriter()) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o, timestamp_ms=born[o]) for o in range(4)])
        await until(lambda: h.committed(P0) == 4, what="all committed")
        assert statuses(h, 0, range(4)) == [
            "DEAD_LETTERED",
            "SUCCEEDED",
            "SUCCEEDED",
            "DEAD_LETTERED",
        ]


async def test_a_record_killed_during_the_call_does_not_stop_its_batch_from_being_bisected() -> (
    None
):
    caller = FakeBatchCaller(_poison_at(3), gate=asyncio.Event())
    policy = BatchPolicy(size=4, window_ms=5, bisect=True, max_retries=0)
    async with running(caller, policy=policy, writer=FakeWriter()) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(4)])
        await until(lambda: caller.running == 1, what="the first call in flight")
        assert await h.runner.kill(h.inv_id(0, 0), InvocationStatus.KILLED)
        assert caller.gate is not None
        caller.gate.set()
        await until(lambda: h.committed(P0) == 4, what="all committed")
        assert statuses(h, 0, range(4)) == ["KILLED", "SUCCEEDED", "SUCCEEDED", "DEAD_LETTERED"]


async def test_retry_now_while_the_batchs_call_runs_is_refused_and_cuts_no_later_backoff() -> None:
    # Accepted, the command was marked done, and the flag it set made the retry after the
    # running call fail skip its 30 s backoff.
    caller = FakeBatchCaller(_fails_first_call(), gate=asyncio.Event())
    slow = RetryPolicy(initial_interval=30.0, max_interval=30.0, jitter=0.0)
    async with running(caller, policy=BatchPolicy(size=2, window_ms=5), retry=slow) as h:
        await assigned(h, P0)
        h.consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
        await until(lambda: caller.running == 1, what="the first call in flight")
        assert not h.runner.retry_now(h.inv_id(0, 0))  # not backing off
        assert caller.gate is not None
        caller.gate.set()
        # Waiting out its backoff, not skipping it (a stale flag ends it at once).
        dispatcher = h.runner._dispatcher
        assert isinstance(dispatcher, BatchDispatcher)
        await until(
            lambda: any(line.in_backoff for line in dispatcher._lines.values()),
            what="the retry's backoff",
        )
        assert caller.batches == [[0, 1]]
        assert h.runner.retry_now(h.inv_id(0, 0))  # backing off now: ends it
        await until(lambda: caller.batches == [[0, 1], [0, 1]], what="the retry")
