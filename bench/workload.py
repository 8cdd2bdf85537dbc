"""The benchmark workload: deterministic keyed JSON records from a seed. Pure, no I/O.

The same seed gives the same records, so our poller and the reference loop are fed identical
topics and two runs of the harness are comparable.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Workload", "make_records"]


@dataclass(frozen=True, slots=True)
class Workload:
    records: int
    partitions: int
    keys: int
    value_bytes: int = 200
    seed: int = 1

    def __post_init__(self) -> None:
        if self.records < 1 or self.partitions < 1 or self.keys < 1:
            raise ValueError("records, partitions and keys must be >= 1")
        if self.value_bytes < 64:
            raise ValueError("value_bytes must be >= 64 (the JSON envelope alone is ~60 bytes)")

    def key(self, index: int) -> bytes:
        return f"key-{index:06d}".encode()

    def as_dict(self) -> dict[str, int]:
        return {
            "records": self.records,
            "partitions": self.partitions,
            "keys": self.keys,
            "value_bytes": self.value_bytes,
            "seed": self.seed,
        }


def make_records(workload: Workload, *, start: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` pairs; values are JSON objects of exactly ``value_bytes`` bytes.

    Lazy, so a million-record backlog never sits in memory at once. ``start`` skips ahead
    (the same records as the full sequence from that index on).
    """
    rng = random.Random(workload.seed)
    for seq in range(workload.records):
        key_index = rng.randrange(workload.keys)
        amount = rng.randrange(1, 1_000_000)
        if seq < start:
            continue
        key = workload.key(key_index)
        head = b'{"seq":%d,"key":"%s","amount":%d,"pad":"' % (seq, key, amount)
        pad = max(0, workload.value_bytes - len(head) - 2)
        yield key, head + b"x" * pad + b'"}'
