"""Connection slots (adapter.invokers.slots): taken at once while free, else in arrival order;
a waiter cancelled takes none and loses none."""

from __future__ import annotations

import asyncio

import pytest

from adapter.invokers.slots import Slots


async def test_free_slots_are_taken_without_waiting_then_none_is() -> None:
    slots = Slots(2)
    assert slots.take_nowait()
    assert slots.take_nowait()
    assert not slots.take_nowait()
    slots.release()
    assert slots.take_nowait()


async def test_a_released_slot_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    slots = Slots(1)
    assert slots.take_nowait()
    served: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        served.append(name)

    first = asyncio.create_task(wait("first"))
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0)  # both are waiting now
    slots.release()
    assert not slots.take_nowait()  # handed to "first", not free for whoever comes next
    await first
    slots.release()
    await second
    assert served == ["first", "second"]
    slots.release()
    assert slots.take_nowait()
    assert not slots.take_nowait()


@pytest.mark.parametrize("handed_over", [False, True])
async def test_a_cancelled_waiter_takes_no_slot_and_loses_none(handed_over: bool) -> None:
    slots = Slots(1)
    assert slots.take_nowait()
    cancelled = asyncio.create_task(slots.take())
    other = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    if handed_over:
        slots.release()  # the slot passes to `cancelled`, which is cancelled before it runs
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    if not handed_over:
        slots.release()
    await other  # the slot reached the next waiter either way
    slots.release()
    assert slots.take_nowait()
    assert not slots.take_nowait()
    assert "waiting=0" in repr(slots)


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        Slots(0)
