"""The record preview's pure core: bounded, masked, text when it is text."""

from __future__ import annotations

import base64
import json

import pytest

from adapter.api.record_preview import PREVIEW_BYTES, RawRecord, preview

pytestmark = pytest.mark.promise("p-api-invocation-record")


def record(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> RawRecord:
    return RawRecord("orders", 2, 41, 1767323045000, b"k-1", value, headers or [])


def test_text_values_are_shown_with_secret_fields_masked() -> None:
    shown = preview(record(json.dumps({"id": 7, "password": "hunter2-secret"}).encode()))
    assert shown.encoding == "utf-8"
    assert shown.preview is not None
    assert '"id": 7' in shown.preview
    assert "hunter2-secret" not in shown.preview
    assert (shown.topic, shown.partition, shown.offset, shown.key) == ("orders", 2, 41, "k-1")
    assert shown.timestamp == "2026-01-02T03:04:05Z"


def test_large_values_are_cut_at_the_cap_even_inside_a_character() -> None:
    value = b"a" * (PREVIEW_BYTES - 1) + "é".encode() * 10  # the cap falls inside an "é"
    shown = preview(record(value))
    assert shown.truncated
    assert shown.value_bytes == len(value)
    assert shown.encoding == "utf-8"
    assert shown.preview == "a" * (PREVIEW_BYTES - 1)


def test_binary_values_are_base64_and_null_values_none() -> None:
    value = bytes(range(256)) * 40
    shown = preview(record(value))
    assert shown.encoding == "base64"
    assert shown.preview == base64.b64encode(value[:PREVIEW_BYTES]).decode()
    tombstone = preview(record(None))
    assert tombstone.preview is None
    assert tombstone.value_bytes == 0
    assert not tombstone.truncated


def test_secret_named_headers_lose_their_values_and_long_ones_are_cut() -> None:
    shown = preview(
        record(
            b"{}",
            [
                ("authorization", b"Bearer abcdef123456"),
                ("x-api-key", b"k-0123456789"),
                ("trace-id", b"t-1"),
                ("note", b"x" * 1000),
            ],
        )
    )
    values = {h.name: h.value for h in shown.headers}
    assert "abcdef123456" not in values["authorization"]
    assert "0123456789" not in values["x-api-key"]
    assert values["trace-id"] == "t-1"
    assert len(values["note"]) == 256
