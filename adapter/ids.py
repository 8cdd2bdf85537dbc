"""Identifiers: ``sub_`` subscriptions, ``dp_`` deployments, ``inv_`` invocations.

Subscription and deployment IDs sort by creation time (a millisecond timestamp followed by
random bits, Crockford base32, like a ULID), so listing them in ID order lists them in creation
order. Invocation IDs are *derived*, not random: the same record of the same subscription always
gets the same ID, which is what makes redelivery detectable and lets the ID double as the
handler's idempotency key.
"""

from __future__ import annotations

import hashlib
import os
import time

__all__ = [
    "deployment_id",
    "invocation_id",
    "is_invocation_id",
    "subscription_id",
]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_INV_PREFIX = "inv_"


# Every pair of digits: one lookup per 10 bits.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def _b32(value: int, length: int) -> str:
    """``value`` as ``length`` (even) big-endian Crockford base32 digits.

    Two digits per table lookup: this runs for every record, and it measured 1.9 µs against
    4.5 µs for ``base64.b32encode`` (pure Python in 3.11) and more for a digit loop (bench/).
    """
    if length % 2:
        raise ValueError(f"length must be even, got {length}")
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in range(length * 5 - 10, -1, -10)])


def _sortable(prefix: str, now_ms: int | None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}{_b32(ms, 10)}{_b32(rand, 16)}"


def subscription_id(now_ms: int | None = None) -> str:
    return _sortable("sub_", now_ms)


def deployment_id(now_ms: int | None = None) -> str:
    return _sortable("dp_", now_ms)


def invocation_id(subscription: str, topic: str, partition: int, offset: int) -> str:
    """Stable ID of the invocation for one record of one subscription."""
    digest = hashlib.blake2b(
        f"{subscription}\x00{topic}\x00{partition}\x00{offset}".encode(), digest_size=16
    ).digest()
    return _INV_PREFIX + _b32(int.from_bytes(digest, "big"), 26)


def is_invocation_id(value: str) -> bool:
    body = value.removeprefix(_INV_PREFIX)
    return value.startswith(_INV_PREFIX) and len(body) == 26 and all(c in _ALPHABET for c in body)
