"""How a commit waits: answered the moment the broker answers it, and without the partitions
of a topic a lookup beside it shows deleted (aiokafka retries such a commit without end).

aiokafka's consumer is replaced by a stand-in whose commit and topic lookup each wait for the
test to let them end, so each ordering is set up exactly."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError

from adapter.errors import KafkaError
from adapter.kafka import consumer as consumer_module
from adapter.kafka.consumer import AiokafkaConsumer, CommitError
from adapter.kafka.errors import ConnectionWatch
from adapter.kafka.topics import TopicInfo

TOPIC = "orders"


class _Aiokafka:
    """aiokafka's consumer as the commit path uses it."""

    def __init__(self) -> None:
        self.metadata_lost = False
        self.commits: list[set[tuple[str, int]]] = []
        self.committing = asyncio.Event()
        self.answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._client = object()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return None if self.metadata_lost else {0, 1}

    async def commit(self, offsets: dict[Any, Any]) -> None:
        self.commits.append({(tp.topic, tp.partition) for tp in offsets})
        self.committing.set()
        await asyncio.shield(self.answer)


class _Lookups:
    """``describe_topics``: each lookup waits for ``answer`` (the topic there, or gone)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.third = asyncio.Event()
        self.count = 0
        self.gone: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def __call__(
        self, client: object, topics: Sequence[str], *, timeout_s: float
    ) -> dict[str, TopicInfo | None]:
        self.count += 1
        self.started.set()
        if self.count == 3:
            self.third.set()
        gone = await asyncio.shield(self.gone)
        return {t: None if gone else TopicInfo(t, "id", 2) for t in topics}


@pytest.fixture
async def parts(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[AiokafkaConsumer, _Aiokafka, _Lookups]]:
    monkeypatch.setattr(consumer_module, "COMMIT_TOPIC_CHECK_S", 0.01)
    lookups = _Lookups()
    monkeypatch.setattr(consumer_module, "describe_topics", lookups)
    consumer = AiokafkaConsumer(
        watch=ConnectionWatch("test"), bootstrap_servers="127.0.0.1:9", commit_timeout_s=30.0
    )
    inner, real = _Aiokafka(), consumer._consumer
    consumer._consumer = inner  # type: ignore[assignment]
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(str(context["message"])))
    yield consumer, inner, lookups
    await real.stop()  # never started; stopped so it is not reported unclosed (this also
    # lets the loop run the callbacks of futures a test settled last)
    gc.collect()
    assert unretrieved == [], "an outcome nobody read was logged"


async def _waiting_beside_a_lookup(
    consumer: AiokafkaConsumer, lookups: _Lookups, offsets: dict[tuple[str, int], int]
) -> asyncio.Task[None]:
    """A commit of ``offsets``, once it has waited long enough to start a lookup."""
    commit = asyncio.create_task(consumer.commit(offsets, "id"))
    async with asyncio.timeout(5):
        await lookups.started.wait()
    return commit


async def test_a_commit_is_answered_while_its_lookup_still_waits(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    # The lookup may queue behind a fetch the broker holds on the same connection (5 s).
    consumer, inner, lookups = parts
    commit = await _waiting_beside_a_lookup(consumer, lookups, {(TOPIC, 0): 5})
    inner.answer.set_result(None)
    async with asyncio.timeout(5):
        await commit
    assert not lookups.gone.done(), "the lookup was still waiting"


async def test_a_failed_commit_reports_its_own_error_while_its_lookup_waits(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    commit = await _waiting_beside_a_lookup(consumer, lookups, {(TOPIC, 0): 5})
    inner.answer.set_exception(CommitFailedError("the group rebalanced"))
    with pytest.raises(CommitError, match="rebalanced"):
        async with asyncio.timeout(5):
            await commit


async def test_a_topic_deleted_while_its_commit_waits_is_not_committed(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    commit = await _waiting_beside_a_lookup(consumer, lookups, {(TOPIC, 0): 5, (TOPIC, 1): 7})
    lookups.gone.set_result(True)
    async with asyncio.timeout(5):
        await commit  # returns without the broker ever answering
    assert inner.commits == [{(TOPIC, 0), (TOPIC, 1)}], "sent again"


async def test_a_live_topic_keeps_waiting_for_its_commit(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    commit = asyncio.create_task(consumer.commit({(TOPIC, 0): 5}, "id"))
    lookups.gone.set_result(False)
    async with asyncio.timeout(5):
        await lookups.third.wait()  # looked up again and again, the commit left alone
    assert not commit.done()
    inner.answer.set_result(None)
    async with asyncio.timeout(5):
        await commit
    assert len(inner.commits) == 1


async def test_a_topic_the_metadata_has_lost_is_looked_up_before_committing(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    inner.metadata_lost = True
    lookups.gone.set_result(True)
    async with asyncio.timeout(5):
        await consumer.commit({(TOPIC, 0): 5}, "id")
    assert inner.commits == [], "a deleted topic's offsets were sent"


async def test_a_lookup_that_fails_leaves_the_commit_waiting(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer, inner, _ = parts
    failures: list[int] = []
    third = asyncio.Event()

    async def no_broker(client: object, topics: Sequence[str], *, timeout_s: float) -> None:
        failures.append(1)
        if len(failures) == 3:
            third.set()
        raise KafkaError("no broker answered")

    monkeypatch.setattr(consumer_module, "describe_topics", no_broker)
    commit = asyncio.create_task(consumer.commit({(TOPIC, 0): 5}, "id"))
    async with asyncio.timeout(5):
        await third.wait()
    assert not commit.done(), "a failed lookup ended the commit"
    inner.answer.set_result(None)
    async with asyncio.timeout(5):
        await commit


async def test_a_lookup_that_fails_before_committing_commits_everything(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer, inner, _ = parts
    inner.metadata_lost = True

    async def no_broker(client: object, topics: Sequence[str], *, timeout_s: float) -> None:
        raise KafkaError("no broker answered")

    monkeypatch.setattr(consumer_module, "describe_topics", no_broker)
    inner.answer.set_result(None)
    async with asyncio.timeout(5):
        await consumer.commit({(TOPIC, 0): 5}, "id")
    assert inner.commits == [{(TOPIC, 0)}]


async def test_a_commit_answered_with_its_lookup_wins_and_is_not_said_left_out(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups], caplog: pytest.LogCaptureFixture
) -> None:
    consumer, inner, lookups = parts
    commit = await _waiting_beside_a_lookup(consumer, lookups, {(TOPIC, 0): 5})
    lookups.gone.set_result(True)
    inner.answer.set_exception(CommitFailedError("the group rebalanced"))
    with pytest.raises(CommitError, match="rebalanced"):
        async with asyncio.timeout(5):
            await commit
    assert "not committing" not in caplog.text


async def test_partitions_above_a_recreated_topics_count_are_left_out(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    # The cached metadata has 2 partitions (partitions_for_topic): looked up first.
    lookups.gone.set_result(False)  # the topic is there, with 2 partitions
    inner.answer.set_result(None)
    async with asyncio.timeout(5):
        await consumer.commit({(TOPIC, 0): 5, (TOPIC, 1): 6, (TOPIC, 2): 7}, "id")
    assert inner.commits == [{(TOPIC, 0), (TOPIC, 1)}]


async def test_a_cancelled_commit_leaves_nothing_running(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    commit = await _waiting_beside_a_lookup(consumer, lookups, {(TOPIC, 0): 5})
    commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await commit
    left = asyncio.all_tasks() - {asyncio.current_task()}
    if left:  # cancelled with the commit: they end on their next step
        _, running = await asyncio.wait(left, timeout=5)
        assert not running, "a commit or lookup still runs"
    # Their outcomes, arriving later, are nobody's (the fixture checks none is logged once
    # the loop has run their callbacks).
    inner.answer.set_exception(CommitFailedError("late"))
    lookups.gone.set_exception(KafkaError("late"))


async def test_a_lookup_failing_as_its_commit_is_answered_is_not_logged_unread(
    parts: tuple[AiokafkaConsumer, _Aiokafka, _Lookups],
) -> None:
    consumer, inner, lookups = parts
    commit = await _waiting_beside_a_lookup(consumer, lookups, {(TOPIC, 0): 5})
    lookups.gone.set_exception(KafkaError("no broker answered"))
    inner.answer.set_result(None)
    async with asyncio.timeout(5):
        await commit  # the fixture checks the lookup's error was not logged as never read
