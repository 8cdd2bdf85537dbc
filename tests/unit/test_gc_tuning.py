"""The serve process's collector settings (adapter.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from adapter.gc_tuning import YOUNG_GENERATION_THRESHOLD, tune_for_throughput


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_young_passes_are_rarer() -> None:
    older = gc.get_threshold()[1:]
    survivor = [object()]  # alive at start-up: moved out of the collector's generations
    tune_for_throughput()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *older)
    assert survivor
