"""The metadata a commit carries: the topic ID, and a graceful owner's handover."""

from __future__ import annotations

import pytest

from adapter.kafka.commit_marks import (
    MAX_DONE_CHARS,
    Handover,
    commit_metadata,
    parse_commit_metadata,
)

TOPIC_ID = "Zm9vYmFyYmF6cXV4cXV1eA"
SUB = "sub_2Wfv1q0bXcH8rXsOa9yDd3Kw1Pz"


@pytest.mark.parametrize(
    "handover",
    [
        None,
        Handover(0, None, SUB),
        Handover(7, 0, SUB),
        Handover(123456, 987654321, SUB),
        Handover(3, 9, SUB, settled=False),
        Handover(3, 9, "a:b"),
    ],
)
def test_metadata_reads_back_as_written(handover: Handover | None) -> None:
    assert parse_commit_metadata(commit_metadata(TOPIC_ID, handover)) == (TOPIC_ID, handover)


def test_metadata_of_an_earlier_version_is_the_topic_id_alone() -> None:
    assert commit_metadata(TOPIC_ID) == TOPIC_ID
    assert parse_commit_metadata(TOPIC_ID) == (TOPIC_ID, None)
    assert parse_commit_metadata("") == (None, None)
    assert parse_commit_metadata(None) == (None, None)


def test_without_a_topic_id_nothing_is_written() -> None:
    # A handover that names no topic could be applied to another topic's log.
    assert commit_metadata(None, Handover(3, 9, SUB)) == ""


@pytest.mark.parametrize(
    "tail",
    [
        "",
        "3:9:s",
        "3:9:s:",
        "3:9:x:sub",
        ":9:s:sub",
        "x:9:s:sub",
        "3:x:s:sub",
        "-1:9:s:sub",
        "3:-2:s:sub",
        "3:9:s:sub t",
        "3:9:s:sub ",
        "٣:9:s:sub",
        "3:" + "9" * 40 + ":s:sub",
        "3:9:s:" + "s" * 300,
    ],
)
def test_an_unreadable_handover_counts_as_none(tail: str) -> None:
    assert parse_commit_metadata(f"{TOPIC_ID} handover={tail}") == (TOPIC_ID, None)


def test_only_the_very_next_generation_of_the_same_subscription_takes_a_handover() -> None:
    handover = Handover(generation=5, fence=40, subscription_id=SUB)
    assert handover.applies_to(SUB, 6)
    assert not handover.applies_to(SUB, 5)  # the same generation: a restarted static member
    assert not handover.applies_to(SUB, 7)  # someone else may have owned it in generation 6
    assert not handover.applies_to(SUB, None)
    # Another subscription in the same group: the fence is of another ledger.
    assert not handover.applies_to("sub_other", 6)


@pytest.mark.parametrize(
    "handover",
    [
        Handover(3, 9, SUB, through=9, done=()),
        Handover(3, 9, SUB, through=120, done=((100, 104), (107, 107), (110, 119))),
        Handover(3, 9, SUB, through=10**17, done=((10**17 - 5, 10**17),)),
        Handover(3, None, SUB, settled=False, through=4, done=((0, 4),)),
    ],
)
def test_what_finished_above_the_commit_survives_the_round_trip(handover: Handover) -> None:
    assert parse_commit_metadata(commit_metadata(TOPIC_ID, handover)) == (TOPIC_ID, handover)


def test_finished_answers_only_up_to_through() -> None:
    handover = Handover(3, 9, SUB, through=120, done=((100, 104), (107, 107), (110, 119)))
    offsets = (99, 100, 104, 105, 107, 108, 110, 119, 120, 121)
    got = [handover.finished(o) for o in offsets]
    assert got == [False, True, True, False, True, False, True, True, False, None]
    assert Handover(3, 9, SUB).finished(0) is None


def test_ranges_that_do_not_fit_are_left_out_and_through_cut_below_them() -> None:
    done = tuple((i * 10, i * 10 + 5) for i in range(1_000))
    metadata = commit_metadata(TOPIC_ID, Handover(3, 9, SUB, through=10**6, done=done))
    assert len(metadata) <= 200 + MAX_DONE_CHARS
    _, handover = parse_commit_metadata(metadata)
    assert handover is not None
    assert handover.through is not None
    kept = len(handover.done)
    assert 100 < kept < 1_000
    assert handover.done == done[:kept]
    # Everything up to through is described as it was; nothing of the rest is claimed.
    assert handover.through == done[kept][0] - 1
    assert handover.finished(done[kept][0]) is None


@pytest.mark.parametrize(
    "done",
    [
        "",
        "x:",
        "5",
        "5:1+2,0+1",  # overlapping
        "5:1+2,",
        "5:1+9",  # beyond through
        "5:1-2",
        # Well formed, in order and below through, but longer than any this version writes.
        f"{10**17}:" + ",".join(["1+0"] * 1_000),
    ],
)
def test_an_unreadable_finished_part_makes_the_whole_handover_none(done: str) -> None:
    # Read as no handover at all: the next owner reads the ledger, as after a crash.
    metadata = f"{TOPIC_ID} handover=3:9:s:{SUB} done={done}"
    assert parse_commit_metadata(metadata) == (TOPIC_ID, None)
