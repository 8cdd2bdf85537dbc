"""IDs as the code before Restate's ID format generated them, to write rows of that era."""

from __future__ import annotations

import hashlib

__all__ = ["earlier_invocation_id", "earlier_resource_id"]

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _crockford(value: int, length: int) -> str:
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(length)))


def earlier_resource_id(prefix: str, ms: int, rand: int) -> str:
    """The earlier generator: prefix, 10 digits of milliseconds, 16 of random bits."""
    return f"{prefix}{_crockford(ms, 10)}{_crockford(rand, 16)}"


def earlier_invocation_id(subscription: str, topic: str, partition: int, offset: int) -> str:
    """The earlier derivation: a 128-bit digest of the record's coordinates."""
    digest = hashlib.blake2b(
        f"{subscription}\x00{topic}\x00{partition}\x00{offset}".encode(), digest_size=16
    ).digest()
    return "inv_" + _crockford(int.from_bytes(digest, "big"), 26)
