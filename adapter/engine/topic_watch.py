"""What a subscription knows of its topic: whether it exists, and which topic it is.

A topic is identified by its *topic ID* (the UUID Kafka assigns at creation), not by its name:
deleted and created again under the same name, it is another topic, whose records must not be
taken for the old one's. The runner looks the topic up (``Consumer.describe_topic``) when it
starts, at every assignment, every second while it has no partition, and now and then while
it consumes, and feeds each answer to :meth:`TopicWatch.observe`::

    observe(None) ─▶ MISSING ──(topic created)──▶ APPEARED
    observe(info) ─▶ UNCHANGED | RECREATED (another topic ID than the one known)

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

from adapter.kafka.topics import TopicInfo
from adapter.model import topic_key

__all__ = ["TopicChange", "TopicWatch"]


class TopicChange(enum.Enum):
    UNCHANGED = "unchanged"
    MISSING = "missing"
    """The topic does not exist (any more): said once, until it appears."""
    APPEARED = "appeared"
    """It exists again, or for the first time after having been missing."""
    RECREATED = "recreated"
    """It exists under another topic ID than the one known: deleted and created again."""


class TopicWatch:
    __slots__ = ("_missing", "previous_id", "topic", "topic_id")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.topic_id: str | None = None
        self.previous_id: str | None = None
        self._missing = False

    def __repr__(self) -> str:
        return f"TopicWatch({self.topic!r}, topic_id={self.topic_id}, missing={self._missing})"

    @property
    def exists(self) -> bool:
        return self.topic_id is not None and not self._missing

    @property
    def key(self) -> str:
        """What invocation IDs, the ledger and commits key the topic by (``name@topic-id``)."""
        return topic_key(self.topic, self.topic_id)

    def observe(self, info: TopicInfo | None) -> TopicChange:
        if info is None:
            if self._missing:
                return TopicChange.UNCHANGED
            self._missing = True
            return TopicChange.MISSING
        change = TopicChange.UNCHANGED
        if self._missing:
            self._missing = False
            change = TopicChange.APPEARED
        if self.topic_id is not None and info.topic_id != self.topic_id:
            self.previous_id = self.topic_id
            change = TopicChange.RECREATED
        self.topic_id = info.topic_id
        return change

    def waiting_reason(self) -> str:
        """Why a subscription waits, for its ``last_error``."""
        if self.previous_id is None and self.topic_id is None:
            return f"waiting for topic {self.topic!r}: it does not exist yet"
        return f"waiting for topic {self.topic!r}: it was deleted"
