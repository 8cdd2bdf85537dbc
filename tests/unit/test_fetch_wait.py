"""The adaptive fetch wait: long only for a quiet consumer with nothing paused, short at once
on any sign of work; and the aiokafka internals it relies on."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher

from adapter.kafka.consumer import FetchWait


class _Fetcher:
    _fetch_max_wait_ms = 0


class _Consumer:
    def __init__(self) -> None:
        self._fetcher = _Fetcher()


def attached(quiet_after_s: float = 0.0) -> tuple[FetchWait, _Fetcher]:
    wait = FetchWait(500, 5_000, quiet_after_s)
    consumer: Any = _Consumer()
    wait.attach(consumer)
    fetcher: _Fetcher = consumer._fetcher
    return wait, fetcher


def test_quiet_consumer_gets_the_long_wait_and_records_bring_the_short_one_back() -> None:
    wait, fetcher = attached()
    assert fetcher._fetch_max_wait_ms == 500
    wait.fetched(records=False)
    assert fetcher._fetch_max_wait_ms == 5_000
    wait.fetched(records=True)
    assert fetcher._fetch_max_wait_ms == 500


def test_not_quiet_long_enough_keeps_the_short_wait() -> None:
    wait, fetcher = attached(quiet_after_s=60.0)
    wait.fetched(records=False)
    assert fetcher._fetch_max_wait_ms == 500


@pytest.mark.parametrize("event", ["pause", "resume", "reassign"])
def test_pause_resume_and_assignment_make_the_wait_short_at_once(event: str) -> None:
    wait, fetcher = attached()
    wait.fetched(records=False)
    assert fetcher._fetch_max_wait_ms == 5_000
    {
        "pause": lambda: wait.paused(("t", 0)),
        "resume": lambda: wait.resumed(("t", 0)),
        "reassign": lambda: wait.reassigned({("t", 0)}),
    }[event]()
    assert fetcher._fetch_max_wait_ms == 500


def test_a_paused_partition_keeps_the_wait_short_however_quiet() -> None:
    """A resumed partition would otherwise wait for its neighbours' held fetch."""
    wait, fetcher = attached()
    wait.paused(("t", 0))
    time.sleep(0.001)
    wait.fetched(records=False)
    assert fetcher._fetch_max_wait_ms == 500
    wait.resumed(("t", 0))
    wait.fetched(records=False)
    assert fetcher._fetch_max_wait_ms == 5_000


def test_a_fixed_wait_never_changes() -> None:
    wait = FetchWait(100, None, 0.0)
    consumer: Any = _Consumer()
    wait.attach(consumer)
    wait.fetched(records=False)
    assert consumer._fetcher._fetch_max_wait_ms == 100


def test_aiokafka_fetcher_reads_the_wait_each_time_it_builds_a_fetch() -> None:
    """FetchWait writes ``Fetcher._fetch_max_wait_ms``; this fails if aiokafka stops reading
    it when it builds each fetch request (then the wait would silently stay fixed)."""
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(Fetcher.__init__)
    assert "self._fetch_max_wait_ms," in inspect.getsource(Fetcher._get_actions_per_node)
