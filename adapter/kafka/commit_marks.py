"""What a poller writes into a Kafka offset commit besides the offset. Pure.

Every commit carries the topic ID it was made against, so a position of a deleted topic is
never applied to a re-created one of the same name. The last commit an owner makes when it
gives a partition up gracefully also carries a *handover*: the group generation it owned the
partition in and the partition's ledger fence (the highest offset any owner may have recorded,
as far as it knows, which bounds everything it ever fetched).

The member that owns the partition in the very next generation takes that fence as it is,
instead of reading the ledger: nobody else owned the partition in between, and the group
coordinator refuses commits from a member it has removed, so a paused owner cannot leave a
handover behind once the group has moved on. A handover of any older generation says nothing
(a later owner may have recorded more and crashed before its own handover), and the fence is
read from the ledger as before.

The handover names its subscription: two subscriptions may share a consumer group (an explicit
``group.id``, or a subscription replaced by another while both run), and a fence says what one
subscription's ledger holds.

A fence read from the ledger's index right after an assignment may miss the previous owner's
last rows (the index lags its table); it is handed on *unsettled*, and the next owner reads the
ledger once more after that lag, keeping the higher of the two.

Format: ``<topic id>`` or ``<topic id> handover=<generation>:<fence or ->:<s|u>:<subscription
id>`` (``s`` settled, ``u`` unsettled). Kafka keeps up to ``offset.metadata.max.bytes`` (4,096
by default) of it; this needs about 100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Committed", "Handover", "commit_metadata", "parse_commit_metadata"]

_HANDOVER = " handover="
_NO_FENCE = "-"
_HANDOVER_VALUE = re.compile(r"([0-9]{1,18}):([0-9]{1,18}|-):([su]):([!-~]{1,256})")


@dataclass(frozen=True, slots=True)
class Handover:
    """An owner's fence, left for its successor in the next generation."""

    generation: int
    fence: int | None
    """The highest offset recorded by any owner so far; None when none ever recorded one."""
    subscription_id: str
    settled: bool = True
    """False: the fence may lack rows the ledger's index did not show yet; read it again."""

    def applies_to(self, subscription_id: str, generation: int | None) -> bool:
        """May this subscription's member that owns the partition in ``generation`` take the
        fence as it is?"""
        return (
            subscription_id == self.subscription_id
            and generation is not None
            and generation == self.generation + 1
        )


@dataclass(frozen=True, slots=True)
class Committed:
    """A partition's committed offset and what its metadata says."""

    offset: int
    topic_id: str | None
    handover: Handover | None = None


def commit_metadata(topic_id: str | None, handover: Handover | None = None) -> str:
    if not topic_id:
        return ""  # without the topic, a handover could be applied to another topic's log
    if handover is None:
        return topic_id
    fence = _NO_FENCE if handover.fence is None else str(handover.fence)
    settled = "s" if handover.settled else "u"
    return (
        f"{topic_id}{_HANDOVER}{handover.generation}:{fence}:{settled}:{handover.subscription_id}"
    )


def parse_commit_metadata(metadata: str | None) -> tuple[str | None, Handover | None]:
    """(topic ID, handover) of a commit's metadata. Anything unreadable in the handover part
    -- another tool's metadata, a hand-edited commit -- counts as no handover."""
    if not metadata:
        return None, None
    topic_id, marker, rest = metadata.partition(_HANDOVER)
    if not marker:
        return metadata, None
    value = _HANDOVER_VALUE.fullmatch(rest)
    if value is None:
        return topic_id or None, None
    generation, fence, settled, subscription_id = value.groups()
    return topic_id or None, Handover(
        int(generation),
        None if fence == _NO_FENCE else int(fence),
        subscription_id,
        settled=settled == "s",
    )
