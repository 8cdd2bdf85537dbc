"""Verifying the poller's request signature: an ed25519 JWT, like Restate's request identity.

Every request the poller sends carries

    x-kafka-ingress-signature-scheme: v1
    x-kafka-ingress-jwt-v1: <JWT, alg EdDSA>

whose claims are ``aud`` (the invoked path relative to the deployment, e.g.
``/invoke/Account/acct-1/apply`` or ``/discover``), ``iat``, ``nbf``, a short ``exp``, a
unique token ID ``jti``, ``body_sha256`` (base64url SHA-256 of the exact body bytes) and, for
invocations, ``invocation_id``. When a deployment is configured with public keys,
:meth:`IdentityVerifier.verify` rejects requests that are unsigned, signed by another key,
expired or not yet valid, meant for another path, carrying another body or invocation ID, or
replayed (a ``jti`` already seen while the token is valid, :mod:`adapter.sdk.replay`); the
ASGI app answers those with 401 (503 when replay cannot be checked, so the poller retries).

Public keys are given as ``publickeyv1_<base58 of the raw 32-byte key>`` (the format
``python -m adapter.invokers.signing keygen`` prints, as Restate does) or as PEM text.
PyJWT and cryptography are imported only when keys are configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from adapter.sdk.protocol import (
    HEADER_INVOCATION_ID,
    HEADER_JWT,
    HEADER_SIGNATURE_SCHEME,
    SIGNATURE_SCHEME,
)
from adapter.sdk.replay import MemoryReplayStore, ReplayCacheFullError, ReplayStore

__all__ = [
    "PUBLIC_KEY_PREFIX",
    "IdentityError",
    "IdentityVerifier",
    "b58decode",
    "b58encode",
    "body_digest",
    "parse_public_key",
]

PUBLIC_KEY_PREFIX = "publickeyv1_"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
# Clock skew tolerated between the poller and the handler, on nbf/iat and exp.
_LEEWAY_S = 5
_REQUIRED_CLAIMS = ["aud", "exp", "nbf", "iat", "jti", "body_sha256"]


class IdentityError(Exception):
    """The request's signature is missing or invalid; the message says which.

    ``status`` is the HTTP answer: 401, or 503 when the request may be fine but cannot be
    checked for replay right now (the poller retries with a fresh token).
    """

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def body_digest(body: bytes) -> str:
    """The ``body_sha256`` claim: base64url (unpadded) SHA-256 of the body bytes."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode("ascii")


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + _B58_INDEX[char]
    pad = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * pad + body


def parse_public_key(text: str) -> Any:
    """An ``Ed25519PublicKey`` from ``publickeyv1_…`` or PEM; ValueError says what is wrong."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    if text.startswith(PUBLIC_KEY_PREFIX):
        raw = b58decode(text.removeprefix(PUBLIC_KEY_PREFIX))
        if len(raw) != 32:
            raise ValueError(f"{PUBLIC_KEY_PREFIX} key must hold 32 bytes, got {len(raw)}")
        return Ed25519PublicKey.from_public_bytes(raw)
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an ed25519 key")
        return key
    raise ValueError(f"a public key must start with {PUBLIC_KEY_PREFIX!r} or be PEM text")


class IdentityVerifier:
    """Checks request signatures against one or more public keys (several during rotation).

    ``replay_store`` remembers token IDs; the default is a bounded in-memory store, which
    protects one process only (see :mod:`adapter.sdk.replay` for several instances).
    """

    def __init__(self, keys: Iterable[str], *, replay_store: ReplayStore | None = None) -> None:
        texts = [k for k in keys if k.strip()]
        if not texts:
            raise ValueError("IdentityVerifier needs at least one public key")
        self._keys = [parse_public_key(k) for k in texts]
        self.replay_store: ReplayStore = (
            MemoryReplayStore() if replay_store is None else replay_store
        )

    def __repr__(self) -> str:
        return f"IdentityVerifier({len(self._keys)} key(s), {self.replay_store!r})"

    async def verify(self, headers: Mapping[str, str], path: str, body: bytes) -> dict[str, Any]:
        """Return the token's claims, or raise :class:`IdentityError`. Headers lower-case.

        Checked in this order: signature and times, path, body digest, invocation ID, and
        only then the token ID, so a forged or misdirected request never fills the store.
        """
        claims = self._decode(headers, path)
        digest = claims["body_sha256"]
        if not isinstance(digest, str) or not hmac.compare_digest(digest, body_digest(body)):
            raise IdentityError("request signature is for another body")
        invocation_id = headers.get(HEADER_INVOCATION_ID)
        if invocation_id is not None and claims.get("invocation_id") != invocation_id:
            raise IdentityError("request signature is for another invocation")
        jti, exp = claims["jti"], claims["exp"]
        if not isinstance(jti, str) or not jti or not isinstance(exp, int | float):
            raise IdentityError("invalid request signature: malformed jti or exp claim")
        try:
            first = await self.replay_store.first_use(jti, float(exp) + _LEEWAY_S)
        except ReplayCacheFullError as exc:
            raise IdentityError(str(exc), status=503) from exc
        if not first:
            raise IdentityError("request signature was already used (replayed request)")
        return claims

    def _decode(self, headers: Mapping[str, str], path: str) -> dict[str, Any]:
        import jwt

        scheme = headers.get(HEADER_SIGNATURE_SCHEME)
        token = headers.get(HEADER_JWT)
        if scheme is None or token is None:
            raise IdentityError("request is not signed (no x-kafka-ingress-jwt-v1 header)")
        if scheme != SIGNATURE_SCHEME:
            raise IdentityError(f"unsupported signature scheme {scheme!r} (expected 'v1')")
        last: Exception | None = None
        for key in self._keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=["EdDSA"],
                    audience=path,
                    leeway=_LEEWAY_S,
                    options={"require": _REQUIRED_CLAIMS},
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                last = exc  # maybe the next key (rotation)
            except jwt.ExpiredSignatureError as exc:
                raise IdentityError("request signature has expired") from exc
            except jwt.ImmatureSignatureError as exc:
                raise IdentityError("request signature is not valid yet") from exc
            except jwt.InvalidAudienceError as exc:
                raise IdentityError(f"request signature is for another path, not {path}") from exc
            except jwt.PyJWTError as exc:
                raise IdentityError(f"invalid request signature: {exc}") from exc
        raise IdentityError("request signature does not match any configured key") from last
