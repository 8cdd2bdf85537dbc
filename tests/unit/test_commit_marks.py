"""The metadata a commit carries: the topic ID, and a graceful owner's handover."""

from __future__ import annotations

import pytest

from adapter.kafka.commit_marks import Handover, commit_metadata, parse_commit_metadata

TOPIC_ID = "Zm9vYmFyYmF6cXV4cXV1eA"


@pytest.mark.parametrize(
    "handover", [None, Handover(0, None), Handover(7, 0), Handover(123456, 987654321)]
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
    assert commit_metadata(None, Handover(3, 9)) == ""


@pytest.mark.parametrize(
    "tail",
    ["", "3", "3:", ":9", "x:9", "3:x", "-1:9", "3:-2", "3:9:1", "3:9 ", "٣:9", "3:" + "9" * 40],
)
def test_an_unreadable_handover_counts_as_none(tail: str) -> None:
    assert parse_commit_metadata(f"{TOPIC_ID} handover={tail}") == (TOPIC_ID, None)


def test_only_the_very_next_generation_takes_a_handover() -> None:
    handover = Handover(generation=5, fence=40)
    assert handover.for_generation(6)
    assert not handover.for_generation(5)  # the same generation: a restarted static member
    assert not handover.for_generation(7)  # someone else may have owned it in generation 6
    assert not handover.for_generation(None)
