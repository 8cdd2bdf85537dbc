"""Identifiers in Restate's format: ``sub_`` subscriptions, ``dp_`` deployments, ``inv_``
invocations.

Restate's codec (``crates/types/src/id_util.rs`` and ``base62_util.rs`` in restatedev/restate):
the resource prefix, ``_``, the codec version ``1``, then each integer of the ID as a fixed-width
base62 number over the alphabet ``0-9a-zA-Z``, left-padded with ``0`` — 11 characters for a u64,
22 for a u128. Restate encodes ``value.to_be()``, which on the little-endian machines it ships
for is the integer with its bytes reversed; we do the same, so our IDs are the ones Restate
would print for the same integers and its CLI parses them.

- Subscription and deployment IDs carry a ULID: a 48-bit millisecond timestamp then 80 random
  bits (``sub_1`` + 22 characters). The byte reversal puts the random bits first, so **these
  strings do not sort by creation time** (nor do Restate's); order by :func:`created_ms`.
- Invocation IDs are *derived*, not random: the same record of the same subscription always gets
  the same ID (redelivery is detectable; the ID doubles as the handler's idempotency key), and
  the ID names the record. Restate's partition key (u64) is :func:`topic_ref`, a digest of the
  subscription and the topic's identity; the 128-bit part is the Kafka partition (u32), the
  offset (u64) and 32 check bits of a digest of all three, so a mistyped ID is refused rather
  than resolved to another record.

IDs of the earlier form — the prefix then 26 lower-case Crockford base32 characters — are still
accepted on input: they are the keys of rows written before, and a subscription's ID may be its
Kafka consumer group, so they are never rewritten.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass
from functools import lru_cache

from adapter.errors import ValidationError

__all__ = [
    "InvocationCoordinates",
    "ResourceId",
    "created_ms",
    "creation_order",
    "deployment_id",
    "derived_deployment_id",
    "invocation_id",
    "is_invocation_id",
    "parse_invocation_id",
    "parse_resource_id",
    "restate_form",
    "stored_forms",
    "subscription_id",
    "topic_ref",
]

BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
CODEC_VERSION = "1"
U64_WIDTH = 11  # base62 characters of a u64
U128_WIDTH = 22  # base62 characters of a u128

_DIGIT = {c: i for i, c in enumerate(BASE62)}
# Two digits per lookup: half the divisions of a digit-by-digit loop (this runs per record).
_PAIRS = tuple(a + b for a in BASE62 for b in BASE62)
_LEGACY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_LEGACY_DIGIT = {c: i for i, c in enumerate(_LEGACY_ALPHABET)}
_LEGACY_LENGTH = 26
_RESOURCE_PREFIXES = ("sub", "dp")
_NOUN = {"sub": "subscription", "dp": "deployment"}
_INV = "inv"
_INV_LENGTH = len(_INV) + 2 + U64_WIDTH + U128_WIDTH
_COORDS = struct.Struct(">IQ")  # partition, offset
_CHECK_PERSON = b"kafka-ingress/iv"
# Copying a personalised hash is cheaper than making one with its parameters (per record).
_CHECK_HASH = hashlib.blake2b(digest_size=4, person=_CHECK_PERSON)


@dataclass(frozen=True, slots=True)
class ResourceId:
    """A parsed ``sub_``/``dp_`` ID: its 128-bit ULID, and whether it came in the earlier form."""

    prefix: str
    ulid: int
    legacy: bool

    @property
    def created_ms(self) -> int:
        return self.ulid >> 80


@dataclass(frozen=True, slots=True)
class InvocationCoordinates:
    """Where an invocation's record is: its subscription's topic reference, partition, offset."""

    topic_ref: int
    partition: int
    offset: int


def _swap(value: int, size: int) -> int:
    """``value.to_be()`` on a little-endian machine: the ``size`` bytes in reverse order."""
    return int.from_bytes(value.to_bytes(size, "big"), "little")


def _b62(value: int, width: int) -> str:
    """``value`` as exactly ``width`` base62 digits, most significant first, ``0``-padded."""
    pairs = []
    for _ in range(width // 2):
        value, low = divmod(value, 3844)
        pairs.append(_PAIRS[low])
    head = BASE62[value] if width % 2 else ""
    return head + "".join(reversed(pairs))


def _b62_u128(value: int) -> str:
    """``_b62(value, 22)`` unrolled: it runs for every record, and the loop's own overhead was
    about half its time."""
    p = _PAIRS
    value, a = divmod(value, 3844)
    value, b = divmod(value, 3844)
    value, c = divmod(value, 3844)
    value, d = divmod(value, 3844)
    value, e = divmod(value, 3844)
    value, f = divmod(value, 3844)
    value, g = divmod(value, 3844)
    value, h = divmod(value, 3844)
    value, i = divmod(value, 3844)
    k, j = divmod(value, 3844)
    return "".join((p[k], p[j], p[i], p[h], p[g], p[f], p[e], p[d], p[c], p[b], p[a]))


def _un_b62(text: str, bits: int) -> int | None:
    """The value of fixed-width base62 ``text``; None if a character or the value does not fit."""
    value = 0
    for char in text:
        digit = _DIGIT.get(char)
        if digit is None:
            return None
        value = value * 62 + digit
    return value if value >> bits == 0 else None


def _encode_ulid(prefix: str, ulid: int) -> str:
    return f"{prefix}_{CODEC_VERSION}{_b62(_swap(ulid, 16), U128_WIDTH)}"


def _new_ulid(now_ms: int | None) -> int:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"timestamp {ms} ms does not fit a ULID's 48 bits")
    return ms << 80 | int.from_bytes(os.urandom(10), "big")


def subscription_id(now_ms: int | None = None) -> str:
    return _encode_ulid("sub", _new_ulid(now_ms))


def deployment_id(now_ms: int | None = None) -> str:
    return _encode_ulid("dp", _new_ulid(now_ms))


def derived_deployment_id(name: str) -> str:
    """The same deployment ID for the same ``name`` everywhere (time 0, the rest a hash), so
    admin processes that register one implicitly at the same time write the same row."""
    digest = hashlib.blake2b(name.encode(), digest_size=10).digest()
    return _encode_ulid("dp", int.from_bytes(digest, "big"))


def _shown(value: str) -> str:
    return repr(value[:80]) + ("…" if len(value) > 80 else "")


def _parse_legacy(value: str, prefix: str) -> ResourceId | None:
    body = value[len(prefix) + 1 :]
    if len(body) != _LEGACY_LENGTH or any(c not in _LEGACY_DIGIT for c in body):
        return None
    number = 0
    for char in body:
        number = number * 32 + _LEGACY_DIGIT[char]
    ms, rand = number >> 80, number & ((1 << 80) - 1)
    if ms >> 48:
        return None
    return ResourceId(prefix=prefix, ulid=ms << 80 | rand, legacy=True)


def parse_resource_id(value: str, prefix: str) -> ResourceId:
    """Parse a ``sub_``/``dp_`` ID (``prefix``: ``sub`` or ``dp``), in either form.

    ValidationError naming the ID and what is wrong with it.
    """
    prefix = prefix.removesuffix("_")
    if prefix not in _RESOURCE_PREFIXES:
        raise ValueError(f"not a resource ID prefix: {prefix!r}")
    expected = (
        f"expected {prefix}_{CODEC_VERSION} followed by {U128_WIDTH} characters of 0-9 a-z A-Z"
    )
    head, sep, rest = value.partition("_")
    if not sep or head != prefix:
        raise ValidationError(f"{_shown(value)} is not a {_NOUN[prefix]} ID: {expected}")
    if len(rest) == _LEGACY_LENGTH:
        legacy = _parse_legacy(value, prefix)
        if legacy is not None:
            return legacy
    if not rest.startswith(CODEC_VERSION):
        raise ValidationError(
            f"{_shown(value)} is not a {_NOUN[prefix]} ID: unknown codec version "
            f"{rest[:1]!r}; {expected}"
        )
    number = _un_b62(rest[1:], 128) if len(rest) == 1 + U128_WIDTH else None
    if number is None:
        raise ValidationError(f"{_shown(value)} is not a {_NOUN[prefix]} ID: {expected}")
    return ResourceId(prefix=prefix, ulid=_swap(number, 16), legacy=False)


def _encode_legacy(prefix: str, ulid: int) -> str:
    return f"{prefix}_" + "".join(
        _LEGACY_ALPHABET[(ulid >> shift) & 31] for shift in range(125, -1, -5)
    )


def restate_form(value: str) -> str:
    """``value`` as Restate's tooling reads it: an earlier-form ``sub_``/``dp_`` ID becomes the
    same ULID in Restate's form; anything else is returned unchanged."""
    prefix = value.partition("_")[0]
    if prefix not in _RESOURCE_PREFIXES:
        return value
    try:
        parsed = parse_resource_id(value, prefix)
    except ValidationError:
        return value
    return _encode_ulid(prefix, parsed.ulid) if parsed.legacy else value


def stored_forms(value: str, prefix: str) -> tuple[str, str]:
    """The two keys a ``sub_``/``dp_`` resource named by ``value`` may be stored under — the
    form given first, then the other (rows created before keep their earlier-form key).

    ValidationError naming ``value`` if it is not such an ID.
    """
    parsed = parse_resource_id(value, prefix)
    restate, legacy = _encode_ulid(prefix, parsed.ulid), _encode_legacy(prefix, parsed.ulid)
    return (legacy, restate) if parsed.legacy else (restate, legacy)


def created_ms(value: str) -> int:
    """Creation time of a ``sub_``/``dp_`` ID (either form), for ordering; 0 if not one."""
    prefix = value.partition("_")[0]
    if prefix not in _RESOURCE_PREFIXES:
        return 0
    try:
        return parse_resource_id(value, prefix).created_ms
    except ValidationError:
        return 0


def creation_order(value: str) -> tuple[int, str]:
    """Sort key listing ``sub_``/``dp_`` IDs oldest first (ties by the ID itself)."""
    return created_ms(value), value


def topic_ref(subscription: str, topic: str) -> int:
    """The 64-bit reference of a subscription's topic: Restate's partition key of its invocations.

    ``topic`` is the topic's identity string as the engine names it.
    """
    digest = hashlib.blake2b(f"{subscription}\x00{topic}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@lru_cache(maxsize=4096)
def _inv_head(subscription: str, topic: str) -> tuple[str, bytes]:
    ref = topic_ref(subscription, topic)
    return f"{_INV}_{CODEC_VERSION}{_b62(_swap(ref, 8), U64_WIDTH)}", ref.to_bytes(8, "big")


def _check(ref: bytes, coords: bytes) -> bytes:
    check = _CHECK_HASH.copy()
    check.update(ref + coords)
    return check.digest()


def invocation_id(subscription: str, topic: str, partition: int, offset: int) -> str:
    """Stable ID of the invocation for one record of one subscription (engine hot path)."""
    head, ref = _inv_head(subscription, topic)
    coords = _COORDS.pack(partition, offset)
    # The u128 is partition | offset | check, big-endian; Restate encodes it byte-reversed,
    # which is the same bytes read as a little-endian integer.
    return head + _b62_u128(int.from_bytes(coords + _check(ref, coords), "little"))


def parse_invocation_id(value: str) -> InvocationCoordinates:
    """The record an ``inv_`` ID names. ValidationError naming the ID if it is not one of ours."""
    expected = (
        f"expected {_INV}_{CODEC_VERSION} followed by {U64_WIDTH + U128_WIDTH} characters "
        "of 0-9 a-z A-Z"
    )
    head, sep, rest = value.partition("_")
    if not sep or head != _INV:
        raise ValidationError(f"{_shown(value)} is not an invocation ID: {expected}")
    if _is_legacy_invocation_id(value):
        raise ValidationError(
            f"{_shown(value)} is an invocation ID of the earlier form, which does not name "
            "its record"
        )
    if not rest.startswith(CODEC_VERSION):
        raise ValidationError(
            f"{_shown(value)} is not an invocation ID: unknown codec version {rest[:1]!r}; "
            f"{expected}"
        )
    if len(value) != _INV_LENGTH:
        raise ValidationError(f"{_shown(value)} is not an invocation ID: {expected}")
    ref_number = _un_b62(rest[1 : 1 + U64_WIDTH], 64)
    uuid_number = _un_b62(rest[1 + U64_WIDTH :], 128)
    if ref_number is None or uuid_number is None:
        raise ValidationError(f"{_shown(value)} is not an invocation ID: {expected}")
    ref = _swap(ref_number, 8).to_bytes(8, "big")
    uuid = uuid_number.to_bytes(16, "little")
    coords, check = uuid[:12], uuid[12:]
    if check != _check(ref, coords):
        raise ValidationError(
            f"{_shown(value)} is not an invocation ID issued here: its check digits do not "
            "match (mistyped or truncated?)"
        )
    partition, offset = _COORDS.unpack(coords)
    return InvocationCoordinates(
        topic_ref=int.from_bytes(ref, "big"), partition=partition, offset=offset
    )


def _is_legacy_invocation_id(value: str) -> bool:
    body = value[len(_INV) + 1 :]
    return (
        value.startswith(f"{_INV}_")
        and len(body) == _LEGACY_LENGTH
        and all(c in _LEGACY_DIGIT for c in body)
    )


def is_invocation_id(value: str) -> bool:
    """An ``inv_`` ID of either form (the earlier one still names rows in the ledger)."""
    if _is_legacy_invocation_id(value):
        return True
    try:
        parse_invocation_id(value)
    except ValidationError:
        return False
    return True
