"""The control group's assignor: shards split among the pollers, change signal partitions to
every poller that listens for them."""

from __future__ import annotations

import json

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from adapter.kafka.change_signal import SIGNAL_TOPIC
from adapter.kafka.control_group import CONTROL_TOPIC, _assignor


class _Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self._partitions.get(topic)
        return set(range(count)) if count is not None else None


def _member(poller: str, topics: list[str]) -> ConsumerProtocolMemberMetadata:
    return ConsumerProtocolMemberMetadata(0, topics, json.dumps({"poller": poller}).encode())


def test_every_listening_member_gets_every_signal_partition_and_shards_are_split() -> None:
    maps: list[list[str]] = []
    assignor = _assignor("a", maps.append)
    out = assignor.assign(
        _Cluster({CONTROL_TOPIC: 4, SIGNAL_TOPIC: 1}),
        {
            "m-a": _member("a", [CONTROL_TOPIC, SIGNAL_TOPIC]),
            "m-b": _member("b", [CONTROL_TOPIC, SIGNAL_TOPIC]),
            "m-c": _member("c", [CONTROL_TOPIC]),  # does not listen (OAUTHBEARER)
        },
    )
    topics = {m: dict(a.assignment) for m, a in out.items()}
    assert topics["m-a"][SIGNAL_TOPIC] == [0]
    assert topics["m-b"][SIGNAL_TOPIC] == [0]
    assert SIGNAL_TOPIC not in topics["m-c"]
    shards = sorted(p for t in topics.values() for p in t[CONTROL_TOPIC])
    assert shards == [0, 1, 2, 3]  # each shard to exactly one poller


def test_no_signal_topic_yet_assigns_shards_only() -> None:
    assignor = _assignor("a", lambda owners: None)
    out = assignor.assign(
        _Cluster({CONTROL_TOPIC: 2}), {"m-a": _member("a", [CONTROL_TOPIC, SIGNAL_TOPIC])}
    )
    assert dict(out["m-a"].assignment) == {CONTROL_TOPIC: [0, 1]}
