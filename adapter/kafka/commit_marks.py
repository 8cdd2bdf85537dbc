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

A graceful owner also hands over which records above its commit it *finished* (out of order:
concurrent records, one retrying): every record up to ``through`` it took and decided, and
``done`` lists those of them that finished, as offset ranges. Its ledger had them durable before
this commit, so the next owner skips them without a read, and reads only rows (strongly
consistent) for the others up to ``through``: the success pages it wrote just now, which an
index that lags would hide, are exactly the ``done`` ranges. Offsets above ``through`` (it never
decided them) are checked as before. Only what fits in :data:`MAX_DONE_CHARS` is handed over:
``through`` is then cut back to just below the first range left out.

Format: ``<topic id>`` or ``<topic id> handover=<generation>:<fence or ->:<s|u>:<subscription
id>`` (``s`` settled, ``u`` unsettled), optionally followed by `` done=<through>:<ranges>``,
ranges as ``<first>+<length>`` with every first after the first one counted from the end of the
range before (``100+4,3+0`` is 100..104 and 107). Kafka keeps up to ``offset.metadata.max.bytes``
(4,096 by default) of it; without ``done`` this needs about 100 characters, and ``done`` takes
at most :data:`MAX_DONE_CHARS` more.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["MAX_DONE_CHARS", "Committed", "Handover", "commit_metadata", "parse_commit_metadata"]

MAX_DONE_CHARS = 1_500
"""Room for the finished ranges: far below Kafka's 4,096 default with the rest of the metadata
(a commit whose metadata is too large is refused as a whole)."""

_HANDOVER = " handover="
_DONE = " done="
_NO_FENCE = "-"
_HANDOVER_VALUE = re.compile(r"([0-9]{1,18}):([0-9]{1,18}|-):([su]):([!-~]{1,256})")
_RANGE = r"[0-9]{1,18}\+[0-9]{1,18}"
_DONE_VALUE = re.compile(rf"(-1|[0-9]{{1,18}}):((?:{_RANGE},)*{_RANGE})?")


@dataclass(frozen=True, slots=True)
class Handover:
    """An owner's fence, left for its successor in the next generation."""

    generation: int
    fence: int | None
    """The highest offset recorded by any owner so far; None when none ever recorded one."""
    subscription_id: str
    settled: bool = True
    """False: the fence may lack rows the ledger's index did not show yet; read it again."""
    through: int | None = None
    """Every offset from the commit up to this one was decided by the owner (below the
    commit: none was; None: no such knowledge handed over)."""
    done: tuple[tuple[int, int], ...] = ()
    """Which of them finished: ascending, disjoint inclusive ranges, each ending at or below
    :attr:`through`."""

    def finished(self, offset: int) -> bool | None:
        """Did the owner finish ``offset``? None: not known (above :attr:`through`)."""
        if self.through is None or offset > self.through:
            return None
        i = bisect_right(self.done, (offset, _ABOVE_ANY)) - 1
        return i >= 0 and self.done[i][0] <= offset <= self.done[i][1]

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


_ABOVE_ANY = 1 << 63


def commit_metadata(topic_id: str | None, handover: Handover | None = None) -> str:
    if not topic_id:
        return ""  # without the topic, a handover could be applied to another topic's log
    if handover is None:
        return topic_id
    fence = _NO_FENCE if handover.fence is None else str(handover.fence)
    settled = "s" if handover.settled else "u"
    return (
        f"{topic_id}{_HANDOVER}{handover.generation}:{fence}:{settled}:{handover.subscription_id}"
        f"{_done_metadata(handover.through, handover.done)}"
    )


def _done_metadata(through: int | None, done: tuple[tuple[int, int], ...]) -> str:
    if through is None:
        return ""
    parts: list[str] = []
    size = 0
    previous_end: int | None = None
    for first, last in done:
        part = f"{first if previous_end is None else first - previous_end}+{last - first}"
        size += len(part) + 1
        if size > MAX_DONE_CHARS:
            # What does not fit is not known to the next owner: nor is anything above it.
            through = first - 1
            break
        parts.append(part)
        previous_end = last
    return f"{_DONE}{through}:{','.join(parts)}"


def _parse_done(value: str) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    match = _DONE_VALUE.fullmatch(value) if len(value) <= 20 + MAX_DONE_CHARS else None
    if match is None:
        return None
    through, ranges = match.groups()
    done: list[tuple[int, int]] = []
    previous_end: int | None = None
    for part in ranges.split(",") if ranges else ():
        start, length = part.split("+")
        first = int(start) if previous_end is None else previous_end + int(start)
        last = first + int(length)
        if (previous_end is not None and first <= previous_end) or last > int(through):
            return None
        done.append((first, last))
        previous_end = last
    return int(through), tuple(done)


def parse_commit_metadata(metadata: str | None) -> tuple[str | None, Handover | None]:
    """(topic ID, handover) of a commit's metadata. Anything unreadable in the handover part
    -- another tool's metadata, a hand-edited commit -- counts as no handover."""
    if not metadata:
        return None, None
    topic_id, marker, rest = metadata.partition(_HANDOVER)
    if not marker:
        return metadata, None
    rest, has_done, done_value = rest.partition(_DONE)
    value = _HANDOVER_VALUE.fullmatch(rest)
    if value is None:
        return topic_id or None, None
    done = _parse_done(done_value) if has_done else None
    if has_done and done is None:
        return topic_id or None, None
    generation, fence, settled, subscription_id = value.groups()
    return topic_id or None, Handover(
        int(generation),
        None if fence == _NO_FENCE else int(fence),
        subscription_id,
        settled=settled == "s",
        through=None if done is None else done[0],
        done=() if done is None else done[1],
    )
