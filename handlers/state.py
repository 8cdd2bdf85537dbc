"""A tiny thread-safe in-memory table for the examples (a stand-in for DynamoDB).

Sync handlers run on worker threads, so every read-modify-write goes through ``update``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MemoryTable"]

V = TypeVar("V")


class MemoryTable(Generic[V]):
    def __init__(self) -> None:
        self._items: dict[str, V] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._items[key] = value

    def put_if_absent(self, key: str, value: V) -> bool:
        """Store ``value`` unless ``key`` exists; True if stored (idempotent writes)."""
        with self._lock:
            if key in self._items:
                return False
            self._items[key] = value
            return True

    def update(self, key: str, fn: Callable[[V | None], V]) -> V:
        with self._lock:
            value = fn(self._items.get(key))
            self._items[key] = value
            return value

    def items(self) -> dict[str, V]:
        with self._lock:
            return dict(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
