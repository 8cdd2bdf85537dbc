"""The metadata a commit carries: the topic ID, and a graceful owner's handover."""

from __future__ import annotations

import pytest

from adapter.kafka.commit_marks import Handover, commit_metadata, parse_commit_metadata

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
