"""AWS's partial batch responses for Kafka, and the bisect/retry planner."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from hypothesis import given
from hypothesis import strategies as st

from adapter.invokers.batch_response import VerdictKind, read_batch_response
from adapter.invokers.bisect import BisectPlanner, Discard, Done, Invoke
from adapter.invokers.kafka_event import EventSource, build_kafka_event
from adapter.model import KafkaRecord

BATCH = [KafkaRecord("orders", 0, offset, None, b"{}", 1) for offset in range(10, 15)] + [
    KafkaRecord("orders", 1, offset, None, b"{}", 1) for offset in range(3, 5)
]


def read(payload: Any, *, report: bool = True, error: str | None = None) -> tuple[bool, ...]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    verdict = read_batch_response(
        BATCH, raw, function_error=error, report_batch_item_failures=report
    )
    return verdict.failed


NONE = (False,) * 7
ALL = (True,) * 7


def item(identifier: Any) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": identifier}]}


def test_a_function_error_fails_the_batch() -> None:
    verdict = read_batch_response(
        BATCH, b'{"errorMessage": "x"}', function_error="Unhandled", report_batch_item_failures=True
    )
    assert verdict.kind is VerdictKind.FUNCTION_ERROR
    assert verdict.all_failed


def test_partial_responses_count_only_when_enabled_as_on_aws() -> None:
    partial = item({"partition": "orders-0", "offset": 12})
    assert read(partial, report=False) == NONE
    assert read(partial) == (False, False, True, True, True, False, False)


@pytest.mark.parametrize(
    "payload", [b"", b"null", b"{}", {"batchItemFailures": None}, {"batchItemFailures": []}, b"ok"]
)
def test_aws_success_conditions(payload: Any) -> None:
    assert read(payload) == NONE


@pytest.mark.parametrize(
    "identifier",
    [
        None,
        "",
        {"partition": "orders-0"},
        {"partition": "", "offset": 12},
        {"partitoin": "orders-0", "offset": 12},  # a bad key name
        {"partition": "orders-0", "offset": 99},  # not in the batch
        {"partition": "orders-9", "offset": 12},
        12,  # a bare offset, but the batch has two partitions
        True,
        [1],
    ],
)
def test_aws_failure_conditions_fail_the_whole_batch(identifier: Any) -> None:
    verdict = read_batch_response(
        BATCH,
        json.dumps(item(identifier)).encode(),
        function_error=None,
        report_batch_item_failures=True,
    )
    assert verdict.kind is VerdictKind.INVALID_RESPONSE
    assert verdict.failed == ALL
    assert "whole batch" in verdict.reason


def test_not_a_list_or_no_identifier_fails_the_whole_batch() -> None:
    assert read({"batchItemFailures": "orders-0"}) == ALL
    assert read({"batchItemFailures": [{"id": 1}]}) == ALL


def test_the_lowest_reported_offset_per_partition_is_the_checkpoint() -> None:
    payload = {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": "orders-0", "offset": 14}},
            {"itemIdentifier": {"partition": "orders-0", "offset": 11}},
            {"itemIdentifier": {"partition": "orders-1", "offset": "4"}},
        ]
    }
    assert read(payload) == (False, True, True, True, True, False, True)


@pytest.mark.parametrize(
    "identifier",
    [
        {"partition": "orders-0", "offset": 13},  # Powertools 3.37's BatchProcessor
        {"topic-partition": "orders-0", "offset": 13},  # an earlier Powertools example
        "orders-0-13",  # middy's string
    ],
)
def test_identifier_spellings(identifier: Any) -> None:
    assert read(item(identifier)) == (False, False, False, True, True, False, False)


def test_a_bare_offset_names_the_only_partition() -> None:
    single = BATCH[:5]
    verdict = read_batch_response(
        single,
        json.dumps(item("13")).encode(),
        function_error=None,
        report_batch_item_failures=True,
    )
    assert verdict.failed == (False, False, False, True, True)


def test_powertools_batch_processor_response_is_understood() -> None:
    """Powertools' own BatchProcessor(EventType.Kafka) answer, from our own event."""
    event = build_kafka_event(BATCH, EventSource(bootstrap_servers=["h:9092"]))

    def handler(record: KafkaEventRecord) -> None:
        if (record.partition, record.offset) in ((0, 13), (1, 4)):
            raise ValueError("poison")

    response = process_partial_response(
        event=event, record_handler=handler, processor=BatchProcessor(EventType.Kafka), context=None
    )
    verdict = read_batch_response(
        BATCH, json.dumps(response).encode(), function_error=None, report_batch_item_failures=True
    )
    assert verdict.kind is VerdictKind.PARTIAL
    assert verdict.failed == (False, False, False, True, True, False, True)


# --------------------------------------------------------------------------------------------
# The planner


def run(
    n: int, poison: set[int], *, bisect: bool, max_retries: int | None, limit: int = 10_000
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[int]]:
    """Drive the planner against a function failing every batch holding a poison record."""
    planner = BisectPlanner(list(range(n)), bisect=bisect, max_retries=max_retries)
    calls: list[tuple[int, ...]] = []
    discarded: list[tuple[int, ...]] = []
    completed: list[int] = []
    action = planner.start()
    for _ in range(limit):
        if isinstance(action, Done):
            return calls, discarded, completed
        if isinstance(action, Discard):
            discarded.append(action.items)
            completed.extend(action.items)
            action = planner.resume()
            continue
        assert isinstance(action, Invoke)
        calls.append(action.items)
        bad = any(i in poison for i in action.items)
        if not bad:
            completed.extend(action.items)
        action = planner.report([bad] * len(action.items))
    raise AssertionError("the planner did not finish")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1000])
def test_one_poison_record_is_isolated_in_log2_rounds(n: int) -> None:
    rounds = math.ceil(math.log2(n)) + 1
    worst = 0
    for poison in {0, n // 3, n // 2, n - 1}:
        calls, discarded, completed = run(n, {poison}, bisect=True, max_retries=0)
        failing = [c for c in calls if poison in c]
        assert len(failing) <= rounds
        worst = max(worst, len(failing))
        assert discarded == [(poison,)]  # only it reaches the failure destination
        assert completed == list(range(n))  # in offset order, every record once
    assert worst == rounds  # the last record sits on the deepest level


def test_seven_records_like_the_issue() -> None:
    calls, discarded, completed = run(7, {4}, bisect=True, max_retries=0)
    assert calls == [(0, 1, 2, 3, 4, 5, 6), (0, 1, 2), (3, 4, 5, 6), (3, 4), (3,), (4,), (5, 6)]
    assert discarded == [(4,)]
    assert completed == list(range(7))


def test_without_bisect_the_whole_batch_is_retried_then_discarded() -> None:
    calls, discarded, _ = run(7, {4}, bisect=False, max_retries=2)
    assert calls == [tuple(range(7))] * 3  # the first attempt and two retries
    assert discarded == [tuple(range(7))]


def test_retries_of_an_isolated_record() -> None:
    calls, discarded, _ = run(2, {1}, bisect=True, max_retries=3)
    assert calls == [(0, 1), (0,), (1,), (1,), (1,), (1,)]
    assert discarded == [(1,)]


def test_a_transient_failure_recovers_on_retry() -> None:
    planner = BisectPlanner(["a", "b"], bisect=False, max_retries=None)
    first = planner.start()
    assert first == Invoke(("a", "b"), 1)
    again = planner.report([True, True])
    assert again == Invoke(("a", "b"), 2)
    assert planner.report([False, False]) == Done()


def test_a_partial_response_resumes_at_the_failed_records() -> None:
    planner = BisectPlanner([10, 11, 12, 13], bisect=True, max_retries=1)
    planner.start()
    retry = planner.report([False, False, True, True])
    assert retry == Invoke((12, 13), 2)  # a retry, not a bisection
    gone = planner.report([False, True])
    assert gone == Discard((13,), 2)  # invoked twice, retries used up
    assert planner.resume() == Done()


def test_records_that_left_the_unit_do_not_make_its_failure_partial() -> None:
    """10 expired (or was killed) before the call; 11-13 were sent and all failed on a
    function error: the unit failed as a whole, so it is split, not retried whole."""
    planner = BisectPlanner([10, 11, 12, 13], bisect=True, max_retries=0)
    planner.start()
    split = planner.report([False, True, True, True], gone=[True, False, False, False])
    assert split == Invoke((11,), 1)  # the first half of (11, 12, 13)
    assert planner.report([False]) == Invoke((12, 13), 1)


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        BisectPlanner([], bisect=True, max_retries=0)
    with pytest.raises(ValueError, match="max_retries"):
        BisectPlanner([1], bisect=True, max_retries=-1)
    planner = BisectPlanner([1, 2], bisect=True, max_retries=0)
    with pytest.raises(RuntimeError):
        planner.report([True])
    planner.start()
    with pytest.raises(ValueError, match="1 results for 2 records"):
        planner.report([True])
    with pytest.raises(RuntimeError):
        planner.resume()


@given(
    n=st.integers(1, 64),
    poison=st.sets(st.integers(0, 63), max_size=5),
    bisect=st.booleans(),
    retries=st.none() | st.integers(0, 3),
)
def test_every_record_ends_once_and_in_order(
    n: int, poison: set[int], bisect: bool, retries: int | None
) -> None:
    poison = {p for p in poison if p < n}
    if retries is None and poison:
        retries = 2  # a poison record with unlimited retries would never end
    _, discarded, completed = run(n, poison, bisect=bisect, max_retries=retries)
    assert completed == list(range(n))
    lost = {i for unit in discarded for i in unit}
    if bisect:
        assert lost == poison  # only poison records reach the destination
    else:
        assert poison <= lost
