"""The dead-letter record's headers, exactly as docs/protocol.md ("Dead letters") lists them,
and the smaller forms a dead letter too large for its topic is written in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from adapter.engine.batches import Deliver, Entry
from adapter.engine.dead_letters import write_dead_letter
from adapter.engine.discards import Discards
from adapter.engine.dispatcher import Work
from adapter.engine.partition import PartitionState
from adapter.errors import IngressError, KafkaError, KafkaRecordTooLargeError
from adapter.invokers.failure_record import FailureCondition
from adapter.kafka import dead_letter
from adapter.kafka.dead_letter import (
    DeadLetter,
    DeadLetterProducer,
    dead_letter_forms,
    dead_letter_headers,
)
from adapter.model import Deployment, HandlerType, InputKind, KafkaRecord, ServiceType, Target
from tests._fake_producer import FakeTopics, record_bytes

RECORD = KafkaRecord(
    topic="orders",
    partition=3,
    offset=42,
    key=b"customer-7",
    value=b'{"amount": -1}',
    timestamp_ms=1_700_000_000_123,
    headers=(
        ("origin", b"shop"),
        ("nothing", None),
        ("x-kafka-ingress-attempts", b"99"),  # spoofed by the producer: replaced
        ("bin", b"\x00\xff"),
    ),
)


def headers_of(record: KafkaRecord = RECORD, reason: str = "boom") -> list[tuple[str, bytes]]:
    return dead_letter_headers(
        record,
        reason=reason,
        attempts=3,
        invocation_id="inv_1geyXZub2uGV2wcnz2JN0sTZCLXGuNMADK",
        subscription_id="sub_10tLrXW7fINPmGN7aBLxqOR",
        failed_at_ms=1_700_000_004_567,
    )


@pytest.mark.promise("p-dlq-headers")
@pytest.mark.promise("p-dlq-record")
def test_original_headers_then_every_documented_header_with_its_format() -> None:
    assert headers_of(reason="handler returned HTTP 422 Unprocessable Entity: no") == [
        ("origin", b"shop"),
        ("nothing", b""),
        ("bin", b"\x00\xff"),
        ("x-kafka-ingress-error", b"handler returned HTTP 422 Unprocessable Entity: no"),
        ("x-kafka-ingress-attempts", b"3"),
        ("x-kafka-ingress-invocation-id", b"inv_1geyXZub2uGV2wcnz2JN0sTZCLXGuNMADK"),
        ("x-kafka-ingress-subscription-id", b"sub_10tLrXW7fINPmGN7aBLxqOR"),
        ("x-kafka-ingress-source-topic", b"orders"),
        ("x-kafka-ingress-source-partition", b"3"),
        ("x-kafka-ingress-source-offset", b"42"),
        ("x-kafka-ingress-source-timestamp", b"1700000000123"),
        ("x-kafka-ingress-failed-at", b"1700000004567"),
    ]


@pytest.mark.promise("p-dlq-headers")
def test_the_error_header_is_at_most_4000_characters() -> None:
    error = dict(headers_of(reason="x" * 10_000))["x-kafka-ingress-error"]
    assert error == b"x" * 4000


# -- too large for the topic ---------------------------------------------------------------

BIG = KafkaRecord(
    topic="orders",
    partition=3,
    offset=42,
    key=b"customer-7",
    value=b"v" * 5_000,
    timestamp_ms=1_700_000_000_123,
    headers=(("origin", b"shop" * 50), ("x-kafka-ingress-omitted", b"spoofed")),
)


@pytest.mark.promise("p-dlq-record", "p-dlq-headers", "p-fault-dlq-too-large")
def test_forms_leave_out_the_value_then_the_records_headers_then_the_key() -> None:
    headers = headers_of(BIG)
    forms = dead_letter_forms(BIG, headers)
    whole, no_value, no_headers, no_key = forms
    ours = [(k, v) for k, v in headers if k.startswith("x-kafka-ingress-")]
    assert (whole.record, whole.headers, whole.omitted) == (BIG, headers, ())
    assert ("x-kafka-ingress-omitted", b"spoofed") not in headers  # a source header: dropped
    assert (no_value.record.key, no_value.record.value) == (b"customer-7", None)
    assert no_value.headers == [
        ("origin", b"shop" * 50),
        *ours,
        ("x-kafka-ingress-omitted", b"value=5000"),
    ]
    assert (no_headers.record.key, no_headers.record.value) == (b"customer-7", None)
    assert no_headers.headers == [*ours, ("x-kafka-ingress-omitted", b"value=5000,headers=206")]
    assert (no_key.record.key, no_key.record.value) == (None, None)
    assert no_key.headers == [
        *ours,
        ("x-kafka-ingress-omitted", b"value=5000,headers=206,key=10"),
    ]
    assert no_key.omitted == ("value", "headers", "key")
    # Each smaller than the one before; the coordinates of the original in every one.
    sizes = [size_of(f) for f in forms]
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == 4
    for form in forms:
        found = tuple(dict(form.headers)[f"x-kafka-ingress-source-{n}"] for n in NAMES)
        assert found == (b"orders", b"3", b"42")


NAMES = ("topic", "partition", "offset")


def size_of(form: DeadLetter) -> int:
    return record_bytes(form.record.key, form.record.value, form.headers)


def test_parts_the_record_does_not_have_or_that_would_not_shrink_it_are_no_step() -> None:
    bare = KafkaRecord("orders", 0, 7, key=None, value=b"v" * 100, timestamp_ms=0)
    whole, no_value = dead_letter_forms(bare, headers_of(bare))
    assert whole.omitted == ()
    assert no_value.omitted == ("value",)
    assert dict(no_value.headers)["x-kafka-ingress-omitted"] == b"value=100"
    empty = KafkaRecord("orders", 0, 8, key=None, value=None, timestamp_ms=0)
    assert [f.omitted for f in dead_letter_forms(empty, headers_of(empty))] == [()]
    # Leaving out 4 bytes of headers would add 10 to the note: the key goes with them.
    tiny = KafkaRecord("orders", 0, 9, b"k" * 50, b"v" * 100, 0, headers=(("a", b"bcd"),))
    assert [f.omitted for f in dead_letter_forms(tiny, headers_of(tiny))] == [
        (),
        ("value",),
        ("value", "headers", "key"),
    ]


@pytest.fixture
def topics(monkeypatch: pytest.MonkeyPatch) -> FakeTopics:
    found = FakeTopics(max_message_bytes=2_000)
    monkeypatch.setattr(dead_letter, "AIOKafkaProducer", found.producer)
    return found


async def test_a_broker_refusal_is_too_large_and_the_next_send_uses_a_new_producer(
    topics: FakeTopics,
) -> None:
    producer = DeadLetterProducer()
    try:
        with pytest.raises(KafkaRecordTooLargeError, match="too large for topic 'dlq'"):
            await producer.send("dlq", BIG, headers_of(BIG))
        # The refused batch left a gap in the idempotent producer's sequence numbers: the
        # same aiokafka producer could never write to the partition again.
        small = KafkaRecord("orders", 3, 43, b"k", b"{}", 0)
        await producer.send("dlq", small, headers_of(small))
        assert topics.started == 2
        assert topics.producers[0].stopped
        assert [(letter.key, letter.value) for letter in topics.letters] == [(b"k", b"{}")]
    finally:
        await producer.stop()


async def test_a_refusal_by_the_client_before_sending_is_too_large(topics: FakeTopics) -> None:
    producer = DeadLetterProducer(max_request_size=1_000)
    try:
        with pytest.raises(KafkaRecordTooLargeError, match=r"message\.max\.bytes"):
            await producer.send("dlq", BIG, headers_of(BIG))
        assert topics.refused == [("client", size_of(dead_letter_forms(BIG, headers_of(BIG))[0]))]
        assert topics.started == 1  # nothing was sent: the producer is fine
    finally:
        await producer.stop()


async def test_an_out_of_order_sequence_is_retried_on_a_new_producer(topics: FakeTopics) -> None:
    producer = DeadLetterProducer()
    small = KafkaRecord("orders", 3, 43, b"k", b"{}", 0)
    try:
        await producer.start()
        # Another caller's batch was refused: this one meets the gap it left.
        topics.producers[0].lose_sequence("dlq")
        with pytest.raises(KafkaError, match="OutOfOrderSequenceNumber") as raised:
            await producer.send("dlq", small, headers_of(small))
        assert not isinstance(raised.value, KafkaRecordTooLargeError)  # no reason to shrink
        await producer.send("dlq", small, headers_of(small))
        assert topics.started == 2
        assert topics.producers[0].stopped
        assert len(topics.letters) == 1
    finally:
        await producer.stop()


@dataclass
class RefusingTopic:
    """A dead-letter topic (the engine's DeadLetters) refusing records above ``limit`` bytes;
    ``down`` sends fail first as if the topic were missing."""

    limit: int
    down: int = 0
    sent: list[tuple[KafkaRecord, list[tuple[str, bytes]]]] = field(default_factory=list)
    refused: int = 0

    async def send(self, topic: str, record: KafkaRecord, headers: list[tuple[str, bytes]]) -> None:
        if self.down:
            self.down -= 1
            raise KafkaError(f"dead-letter topic {topic!r} does not exist or cannot be reached")
        if record_bytes(record.key, record.value, headers) > self.limit:
            self.refused += 1
            raise KafkaRecordTooLargeError(f"dead letter too large for topic {topic!r}")
        self.sent.append((record, headers))


@pytest.mark.promise("p-fault-dlq-too-large")
async def test_the_first_form_that_fits_is_stored_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = headers_of(BIG)
    # Room for the key and our headers, not for the value or the record's headers as well.
    topic = RefusingTopic(limit=size_of(dead_letter_forms(BIG, headers)[2]))
    errors: list[IngressError] = []
    form = await write_dead_letter(topic, "dlq", BIG, headers, on_error=errors.append)
    assert form.omitted == ("value", "headers")
    assert topic.sent == [(form.record, form.headers)]
    assert topic.refused == 2
    assert errors == []  # nothing to retry: not reported as a failure
    assert "dead letter of orders/3@42 stored in 'dlq' without value, headers" in caplog.text


@pytest.mark.promise("p-fault-dlq-missing")
async def test_other_failures_are_retried_with_the_same_form() -> None:
    topic = RefusingTopic(limit=100_000, down=2)
    errors: list[IngressError] = []
    form = await write_dead_letter(topic, "dlq", BIG, headers_of(BIG), on_error=errors.append)
    assert form.omitted == ()
    assert [record.value for record, _ in topic.sent] == [BIG.value]
    assert [str(e) for e in errors] == [
        "dead-letter topic 'dlq' does not exist or cannot be reached"
    ] * 2


async def test_a_topic_too_small_for_the_smallest_form_holds_it_and_says_so() -> None:
    topic = RefusingTopic(limit=10)
    errors: list[IngressError] = []
    retried = asyncio.Event()

    def report(exc: IngressError) -> None:
        errors.append(exc)
        if len(errors) == 2:
            retried.set()

    writing = asyncio.create_task(
        write_dead_letter(topic, "dlq", BIG, headers_of(BIG), on_error=report)
    )
    await asyncio.wait_for(retried.wait(), 5)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert topic.sent == []
    assert all(isinstance(e, KafkaRecordTooLargeError) for e in errors)
    assert "even without value, headers, key: raise the dead-letter topic's max.message.bytes" in (
        str(errors[0])
    )


async def test_the_records_of_a_failed_partition_batch_go_in_the_form_that_fits_too() -> None:
    headers = headers_of(BIG)
    # Room without the value (and some for the longer error text of a batch).
    topic = RefusingTopic(limit=size_of(dead_letter_forms(BIG, headers)[1]) + 200)
    errors: list[str] = []
    discards = Discards(
        subscription_id="sub_1",
        target=Target(
            service="S",
            handler="h",
            service_type=ServiceType.SERVICE,
            handler_type=HandlerType.SERVICE,
            input_kind=InputKind.JSON,
            deployment=Deployment(id="dp_1", uri="http://127.0.0.1:9"),
        ),
        destination=None,
        event_source=None,
        dead_letters=topic,
        dead_letter_topic="dlq",
        on_error=errors.append,
    )
    work = Work("inv_1", PartitionState(("orders", 3), "orders", pause_at=10), BIG, attempts=3)
    entry = Entry(work, offset=42, timestamp_ms=0, size=5_000, arrived_ms=0)
    await discards.deliver(Deliver((entry,), FailureCondition.RETRY_ATTEMPTS_EXHAUSTED, 3), None)
    [(record, written)] = topic.sent
    assert (record.key, record.value) == (b"customer-7", None)
    assert dict(written)["x-kafka-ingress-omitted"] == b"value=5000"
    assert errors == []
