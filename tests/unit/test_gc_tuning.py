"""The serve process's collector setting (adapter.gc_tuning)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from adapter.gc_tuning import YOUNG_GENERATION_THRESHOLD, tune_for_throughput


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_young_passes_are_rarer_and_older_ratios_kept(caplog: pytest.LogCaptureFixture) -> None:
    gc.set_threshold(700, 10, 10)
    with caplog.at_level(logging.INFO, logger="adapter.gc_tuning"):
        tune_for_throughput()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 10, 10)
    assert "young generation every 50000 allocations (was 700)" in caplog.text
