"""The ESM line of one partition (adapter.engine.batches), driven on a manual clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapter.engine.batches import (
    BatchPolicy,
    Deliver,
    Entry,
    Idle,
    InvokeBatch,
    PartitionBatches,
    Settled,
    Wait,
)
from adapter.invokers.failure_record import FailureCondition

NOW = 1_000_000


def entries(
    offsets: range, *, size: int = 10, ts: int = NOW, arrived: int = NOW
) -> list[Entry[int]]:
    return [Entry(o, o, ts, size, arrived) for o in offsets]


def offsets(step: object) -> list[int]:
    assert isinstance(step, InvokeBatch | Deliver), step
    return [e.offset for e in step.entries]


def settled(results: list[Settled[int]]) -> list[tuple[str, list[int]]]:
    return [(s.result, [e.offset for e in s.entries]) for s in results]


def run(
    line: PartitionBatches[int],
    fails: Callable[[int, int], bool],
    now: int = NOW + 10_000,
) -> tuple[list[list[int]], list[tuple[str, list[int]]]]:
    """Drive the line until idle; ``fails(offset, attempt)`` says whether a record fails."""
    calls: list[list[int]] = []
    out: list[tuple[str, list[int]]] = []
    for _ in range(1000):
        step = line.step(now)
        if isinstance(step, Idle):
            return calls, out
        if isinstance(step, InvokeBatch):
            calls.append(offsets(step))
            flags = [fails(e.offset, e.attempts) for e in step.entries]
            # An ESM answer: a function error fails all, otherwise nothing failed.
            failed = any(flags)
            out += settled(line.reported([failed] * len(flags)))
        elif isinstance(step, Deliver):
            out += [(f"discarded:{step.condition}", offsets(step))]
            line.delivered()
        else:
            raise AssertionError(step)
    raise AssertionError("did not settle")


def test_batch_waits_for_the_window_then_closes() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=100, window_ms=500))
    assert isinstance(line.step(NOW), Idle)
    line.add(entries(range(3)))
    assert line.step(NOW + 499) == Wait(NOW + 500)
    step = line.step(NOW + 500)
    assert offsets(step) == [0, 1, 2]


def test_batch_closes_at_its_size_without_waiting() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=4, window_ms=500))
    line.add(entries(range(10)))
    assert offsets(line.step(NOW)) == [0, 1, 2, 3]


def test_batch_closes_before_the_payload_limit() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=100, max_bytes=35))
    line.add(entries(range(10), size=10))
    assert offsets(line.step(NOW)) == [0, 1, 2]


def test_a_record_too_large_alone_goes_to_the_destination_uninvoked() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=10, max_bytes=50))
    line.add([*entries(range(1), size=60), *entries(range(1, 3))])
    step = line.step(NOW + 1000)
    assert isinstance(step, Deliver)
    assert step.condition is FailureCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED
    assert settled(line.delivered()) == [("discarded", [0])]
    assert offsets(line.step(NOW + 1000)) == [1, 2]


def test_one_batch_in_flight_and_batches_follow_in_offset_order() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=2))
    line.add(entries(range(5)))
    first = line.step(NOW + 1000)
    assert offsets(first) == [0, 1]
    with pytest.raises(RuntimeError):
        line.step(NOW + 1000)  # the next batch waits for this one
    assert settled(line.reported([False, False])) == [("succeeded", [0, 1])]
    calls, out = run(line, lambda o, a: False)
    assert calls == [[2, 3], [4]]
    assert [o for _, group in out for o in group] == [2, 3, 4]


def test_function_error_retries_the_whole_batch_before_moving_on() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=3, max_retries=None))
    line.add(entries(range(4)))
    calls, out = run(line, lambda o, a: o == 1 and a < 3)
    assert calls == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [3]]
    assert out == [("succeeded", [0, 1, 2]), ("succeeded", [3])]


def test_partial_response_resumes_from_the_first_failed_record() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=5))
    line.add(entries(range(5)))
    assert offsets(line.step(NOW + 1000)) == [0, 1, 2, 3, 4]
    # The function reported offset 2: it and everything after it are retried.
    assert settled(line.reported([False, False, True, True, True])) == [("succeeded", [0, 1])]
    assert offsets(line.step(NOW + 1000)) == [2, 3, 4]
    assert settled(line.reported([False] * 3)) == [("succeeded", [2, 3, 4])]
    assert isinstance(line.step(NOW + 1000), Idle)


def test_bisect_isolates_one_poison_record() -> None:
    policy = BatchPolicy(size=8, bisect=True, max_retries=1)
    line: PartitionBatches[int] = PartitionBatches(policy)
    line.add(entries(range(8)))
    calls, out = run(line, lambda o, a: o == 5)
    discarded = [group for result, group in out if result.startswith("discarded")]
    assert discarded == [[5]]
    succeeded = [o for result, group in out if result == "succeeded" for o in group]
    assert succeeded == [0, 1, 2, 3, 4, 6, 7]  # in offset order
    assert calls[0] == list(range(8))
    assert [5] in calls


def test_without_bisect_the_whole_batch_is_discarded_after_the_retries() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=4, max_retries=2))
    line.add(entries(range(4)))
    calls, out = run(line, lambda o, a: o == 2)
    assert calls == [[0, 1, 2, 3]] * 3  # the first attempt and two retries
    assert out == [(f"discarded:{FailureCondition.RETRY_ATTEMPTS_EXHAUSTED}", [0, 1, 2, 3])]


def test_retry_limit_zero_discards_after_the_first_attempt() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=1, max_retries=0))
    line.add(entries(range(2)))
    calls, out = run(line, lambda o, a: o == 0)
    assert calls == [[0], [1]]
    assert out[0][0].startswith("discarded")
    assert out[1] == ("succeeded", [1])


def test_records_past_their_age_are_not_invoked_again() -> None:
    policy = BatchPolicy(size=3, max_retries=None, max_age_ms=60_000)
    line: PartitionBatches[int] = PartitionBatches(policy)
    line.add([*entries(range(2), ts=NOW), *entries(range(2, 3), ts=NOW + 30_000)])
    assert offsets(line.step(NOW + 1000)) == [0, 1, 2]
    assert line.reported([True] * 3) == []
    # Past the age of 0 and 1 but not of 2: those two go to the destination instead.
    step = line.step(NOW + 61_000)
    assert isinstance(step, Deliver)
    assert offsets(step) == [0, 1]
    assert step.condition is FailureCondition.RECORD_AGE_EXCEEDED
    assert settled(line.delivered()) == [("discarded", [0, 1])]
    assert offsets(line.step(NOW + 61_000)) == [2]
    assert settled(line.reported([False])) == [("succeeded", [2])]
    assert isinstance(line.step(NOW + 61_000), Idle)


def test_a_batch_that_expired_entirely_settles_and_the_line_moves_on() -> None:
    policy = BatchPolicy(size=2, max_retries=None, max_age_ms=1000)
    line: PartitionBatches[int] = PartitionBatches(policy)
    line.add(entries(range(3)))
    assert offsets(line.step(NOW + 500)) == [0, 1]
    line.reported([True, True])
    step = line.step(NOW + 2000)
    assert isinstance(step, Deliver)
    assert offsets(step) == [0, 1]
    line.delivered()
    step = line.step(NOW + 2000)
    assert isinstance(step, Deliver)
    assert offsets(step) == [2]


def test_revocation_abandons_the_batch_in_flight() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=2))
    line.add(entries(range(4)))
    assert offsets(line.step(NOW + 1000)) == [0, 1]
    line.revoke()
    assert line.reported([False, False]) == []  # its result commits nothing
    line.add(entries(range(4, 6)))
    assert isinstance(line.step(NOW + 1000), Idle)


def test_killing_every_record_in_flight_settles_them_and_the_line_moves_on() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=4, bisect=True))
    line.add(entries(range(5)))
    line.step(NOW + 1000)
    line.reported([True] * 4)  # bisect: [0, 1] next
    assert offsets(line.step(NOW + 1000)) == [0, 1]
    line.reported([False, False])
    assert offsets(line.step(NOW + 1000)) == [2, 3]
    assert settled(line.kill(lambda item: item in (2, 3))) == [("killed", [2, 3])]
    assert line.open_in_flight() == 0  # the shell cancels the call
    assert line.reported([True, True]) == []  # whatever the call said
    assert offsets(line.step(NOW + 1000)) == [4]


def test_a_killed_record_is_not_sent_again_when_its_batch_is_retried() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=3))
    line.add(entries(range(3)))
    assert offsets(line.step(NOW + 1000)) == [0, 1, 2]
    assert settled(line.kill(lambda item: item == 1)) == [("killed", [1])]
    assert line.open_in_flight() == 2
    assert line.reported([True, True, True]) == []
    assert offsets(line.step(NOW + 1000)) == [0, 2]
    assert settled(line.reported([False, False])) == [("succeeded", [0, 2])]
    assert isinstance(line.step(NOW + 1000), Idle)


def test_records_the_function_rejected_for_good_are_delivered_not_retried() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=4))
    line.add(entries(range(4)))
    line.step(NOW + 1000)
    # 1 rejected (a terminal result), 2 failed: 0 succeeded, 2 and 3 are retried.
    done = line.reported([False, False, True, True], rejected=[False, True, False, False])
    assert settled(done) == [("succeeded", [0])]
    step = line.step(NOW + 1000)
    assert isinstance(step, Deliver)
    assert offsets(step) == [1]
    assert settled(line.delivered()) == [("discarded", [1])]
    assert offsets(line.step(NOW + 1000)) == [2, 3]
    assert settled(line.reported([False, False])) == [("succeeded", [2, 3])]


def test_a_record_refused_at_admission_is_delivered_alone_and_never_invoked() -> None:
    line: PartitionBatches[int] = PartitionBatches(BatchPolicy(size=4))
    batch = entries(range(3))
    batch[1].refused = True
    line.add(batch)
    assert offsets(line.step(NOW + 1000)) == [0]
    line.reported([False])
    step = line.step(NOW + 1000)
    assert isinstance(step, Deliver)
    assert offsets(step) == [1]
    line.delivered()
    assert offsets(line.step(NOW + 1000)) == [2]


@pytest.mark.promise("p-config-bisect")
@pytest.mark.parametrize("function_error", [False, True])
def test_a_unit_failing_whole_is_split_only_on_a_function_error(function_error: bool) -> None:
    """A partial response naming the first record (or an answer that cannot be read) fails
    the unit whole without a FunctionError: it is retried whole, as AWS does."""
    line: PartitionBatches[int] = PartitionBatches(
        BatchPolicy(size=4, window_ms=0, bisect=True, max_retries=2)
    )
    line.add(entries(range(4)))
    assert offsets(line.step(0)) == [0, 1, 2, 3]
    line.reported((True,) * 4, function_error=function_error)
    retry = line.step(0)
    assert isinstance(retry, InvokeBatch)
    assert offsets(retry) == ([0, 1] if function_error else [0, 1, 2, 3])


@pytest.mark.promise("p-config-batch-retries")
def test_infinite_retries_with_a_destination_are_capped_at_ten_as_on_aws() -> None:
    from adapter.engine.batches import retries_for

    assert retries_for(None, has_destination=True) == 10
    assert retries_for(None, has_destination=False) is None
    assert retries_for(3, has_destination=True) == 3
    assert retries_for(0, has_destination=False) == 0


def test_a_discarded_records_attempts_are_its_own_invocations_after_bisection() -> None:
    line: PartitionBatches[int] = PartitionBatches(
        BatchPolicy(size=8, window_ms=0, bisect=True, max_retries=1)
    )
    line.add(entries(range(8)))
    calls = 0
    while True:
        step = line.step(NOW)
        if isinstance(step, Deliver):
            break
        assert isinstance(step, InvokeBatch)
        calls += 1
        poisoned = 3 in offsets(step)
        line.reported((poisoned,) * len(step.entries), function_error=poisoned)
    assert offsets(step) == [3]
    # 8 records, then 4, 2, 1 (each halving failed), then its one retry.
    assert step.attempts == 5


def test_a_record_without_a_timestamp_does_not_expire() -> None:
    line: PartitionBatches[int] = PartitionBatches(
        BatchPolicy(size=2, window_ms=0, max_age_ms=60_000)
    )
    line.add(entries(range(2), ts=-1))
    step = line.step(NOW)
    assert isinstance(step, InvokeBatch)
    assert offsets(step) == [0, 1]
