"""What a ledger row keeps of a record's key: at most KEY_MAX_BYTES, a cut marked and hashed."""

from __future__ import annotations

import hashlib

import pytest

from adapter.store.row_limits import KEY_MAX_BYTES, stored_key


def test_a_key_within_the_bound_is_kept_whole() -> None:
    key = "é" * (KEY_MAX_BYTES // 2)  # exactly KEY_MAX_BYTES bytes
    assert stored_key(key).text == key
    assert stored_key(key).sha256 is None


@pytest.mark.parametrize("filler", ["k", "é", "ключ", "✓", "😀"])
def test_a_longer_key_is_cut_within_the_bound_on_a_character_marked_and_hashed(
    filler: str,
) -> None:
    key = filler * 450_000
    data = key.encode()
    stored = stored_key(key)
    assert len(stored.text.encode()) <= KEY_MAX_BYTES
    prefix, mark = stored.text.split("…", 1)
    assert mark == f"[cut: {len(data)} bytes]"
    assert key.startswith(prefix)
    assert len(prefix.encode()) > KEY_MAX_BYTES - 40
    assert stored.sha256 == hashlib.sha256(data).hexdigest()


def test_a_cut_key_stays_what_it_was_cut_from() -> None:
    # A key that reads like a cut one is short, so stored whole: no hash, never confused.
    cut = stored_key("k" * 5_000).text
    assert stored_key(cut).text == cut
    assert stored_key(cut).sha256 is None
