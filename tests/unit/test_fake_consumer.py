"""The shipped FakeConsumer hands a partition's records out in offset order, as Kafka does."""

from __future__ import annotations

from adapter.kafka.consumer import TP
from adapter.model import KafkaRecord
from adapter.testing import FakeConsumer, ManualClock, record

TOPIC = "orders"
P0: TP = (TOPIC, 0)


class _Listener:
    async def on_assigned(self, tps: set[TP]) -> None:
        pass

    async def on_revoked(self, tps: set[TP]) -> None:
        pass


async def _offsets(consumer: FakeConsumer, fetches: int) -> list[int]:
    got: list[KafkaRecord] = []
    for _ in range(fetches):
        fetched = await consumer.getmany(timeout_ms=50, max_records=1000)
        got.extend(fetched.records.get(P0, []))
    return [r.offset for r in got]


async def test_records_delivered_while_a_partition_is_held_come_after_the_ones_kept() -> None:
    consumer = FakeConsumer(ManualClock())
    consumer.subscribe(TOPIC, _Listener())
    await consumer.assign(P0)
    consumer.deliver([record(TOPIC, 0, o) for o in range(3)])
    assert await _offsets(consumer, 1) == [0, 1, 2]
    consumer.hold(P0)  # back-pressure: the next fetch is kept, not returned
    consumer.deliver([record(TOPIC, 0, o) for o in range(3, 6)])
    assert await _offsets(consumer, 1) == []
    consumer.deliver([record(TOPIC, 0, o) for o in range(6, 9)])  # fetched meanwhile
    consumer.release(P0)
    assert await _offsets(consumer, 3) == list(range(3, 9))


async def test_a_paused_partition_resumes_where_it_stopped() -> None:
    consumer = FakeConsumer(ManualClock())
    consumer.subscribe(TOPIC, _Listener())
    await consumer.assign(P0)
    consumer.pause(P0)
    consumer.deliver([record(TOPIC, 0, o) for o in range(2)])
    assert await _offsets(consumer, 1) == []
    consumer.deliver([record(TOPIC, 0, o) for o in range(2, 4)])
    consumer.resume(P0)
    consumer.deliver([record(TOPIC, 0, o) for o in range(4, 6)])
    assert await _offsets(consumer, 4) == list(range(6))
