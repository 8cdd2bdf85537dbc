"""What a ledger row keeps of its record: bounded, so that no row nears DynamoDB's item limit. Pure.

A record may be up to ``max-record-bytes`` (6 MiB by default), far above DynamoDB's 400 KB item
limit, and a row over that limit is refused for good: re-sending it cannot help. So every
attribute of a row that comes from the record or its handler is bounded here; the others are
bounded where they are configured (topic and subscription IDs, sink, dead-letter topic):

    attribute      bound                                      longer ones
    key            KEY_MAX_BYTES UTF-8 bytes, marker included  a prefix ending in
                                                               ``…[cut: <n> bytes]`` and
                                                               ``key_sha256`` of the whole key
    last_error     ERROR_MAX_CHARS characters (<= 4 bytes each) the first ERROR_MAX_CHARS

A row is then at most ~10 KB: a few hundred bytes of IDs and numbers, the key, the error. Keys
never go into success pages (:mod:`adapter.store.pages`), so they do not bound a page.

A cut key still finds its row: a lookup by key (``GET /invocations?key=…``) of a key longer than
the bound compares ``key_sha256``; of a shorter one, ``key`` on rows without ``key_sha256`` -- so a
real key that happens to read like a cut one never matches a cut row -- or ``key_sha256`` (a row
written reduced after the store refused it has its key cut shorter still, and its hash kept:
``LedgerEntry.key_sha256``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = [
    "ERROR_MAX_CHARS",
    "KEY_MAX_BYTES",
    "StoredKey",
    "key_sha256",
    "stored_error",
    "stored_key",
]

KEY_MAX_BYTES = 1024
ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A record key as a ledger row holds it."""

    text: str
    """The key, or a prefix of it marked as cut."""
    sha256: str | None
    """Hex SHA-256 of the whole key's UTF-8 bytes when ``text`` is cut, else None."""


def stored_key(key: str) -> StoredKey:
    data = _utf8(key)
    if len(data) <= KEY_MAX_BYTES:
        return StoredKey(key, None)
    mark = f"…[cut: {len(data)} bytes]"
    room = KEY_MAX_BYTES - len(mark.encode())
    # "ignore" drops the character the cut split.
    prefix = data[:room].decode("utf-8", "ignore")
    return StoredKey(prefix + mark, hashlib.sha256(data).hexdigest())


def key_sha256(key: str) -> str:
    """Hex SHA-256 of the whole key's UTF-8 bytes: what ``key_sha256`` holds for a cut key."""
    return hashlib.sha256(_utf8(key)).hexdigest()


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def stored_error(error: str) -> str:
    return error[:ERROR_MAX_CHARS]
