"""Scenario (g)'s arithmetic: delivery gaps per topic, trickle records not yet delivered."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from bench.scale_handler import make_app
from bench.scale_measures import Trickle, delivery_gaps


def test_a_steady_topic_has_gaps_of_its_trickle_interval() -> None:
    arrivals = {"t": [[t, t + 50] for t in range(0, 10_000, 1000)]}
    gaps = delivery_gaps(arrivals, ["t"], 0, 9_500)
    assert gaps.worst_gap_s == 1.0
    assert gaps.worst_latency_s == 0.05
    assert gaps.topics_over_target == 0


def test_a_pause_shows_as_the_topics_longest_gap_and_its_latency() -> None:
    steady = [[t, t + 10] for t in range(0, 20_000, 1000)]
    # Records produced from 5 s to 12 s were delivered only at 13 s: a 7 s pause.
    paused = [
        [t, max(t + 10, 13_000) if 5_000 <= t <= 12_000 else t + 10] for t in range(0, 20_000, 1000)
    ]
    gaps = delivery_gaps({"a": steady, "b": paused}, ["a", "b"], 0, 19_500)
    assert gaps.worst_gap_topic == "b"
    assert gaps.worst_gap_s == 8.99
    assert gaps.worst_latency_s == 8.0
    assert gaps.topics_over_target == 1


def test_a_topic_never_delivered_is_one_gap_as_long_as_the_window() -> None:
    gaps = delivery_gaps({}, ["silent"], 1_000, 31_000)
    assert gaps.worst_gap_s == 30.0
    assert gaps.topics_over_target == 1


def test_records_produced_outside_the_window_do_not_count() -> None:
    arrivals = {"t": [[-5_000, 20_000], [1_000, 1_010], [2_000, 2_010]]}
    gaps = delivery_gaps(arrivals, ["t"], 0, 3_000)
    assert gaps.worst_latency_s == 0.01


def test_trickle_counts_records_not_yet_delivered_once_each() -> None:
    trickle = Trickle("127.0.0.1:1", ["a", "b"])
    trickle.started_ms = 1_000
    trickle.sent.update({"a": 3, "b": 2})
    arrivals = {
        "a": [[1_000, 1_100], [2_000, 2_100], [2_000, 2_900]],  # a redelivery counts once
        "b": [[500, 600], [1_500, 1_600], [2_500, 2_600]],  # before the trickle: not its
    }
    assert trickle.undelivered(arrivals) == 1  # a's third record
    arrivals["a"].append([3_000, 3_050])
    assert trickle.undelivered(arrivals) == 0


async def test_the_scale_handler_answers_for_one_topic_when_asked() -> None:
    arrivals: dict[str, list[tuple[int, int]]] = defaultdict(list)
    arrivals["a"].append((1, 2))
    arrivals["b"].append((3, 4))
    app = make_app(arrivals)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for query, expected in ((b"topic=b", {"b": [[3, 4]]}), (b"topic=c", {"c": []})):
        sent.clear()
        scope = {"type": "http", "method": "GET", "path": "/__arrivals", "query_string": query}
        await app(scope, receive, send)
        assert orjson.loads(sent[1]["body"]) == expected
    sent.clear()
    await app({"type": "http", "method": "GET", "path": "/__arrivals"}, receive, send)
    assert orjson.loads(sent[1]["body"]) == {"a": [[1, 2]], "b": [[3, 4]]}
