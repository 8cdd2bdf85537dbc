"""Request signing: every invocation carries a short-lived ed25519 JWT (Restate-style identity).

    x-kafka-ingress-signature-scheme: v1
    x-kafka-ingress-jwt-v1: <JWT>     header {alg: EdDSA, typ: JWT, kid?}
                                      claims {aud: <path>, iat, nbf, exp = iat + ttl,
                                              jti, body_sha256, invocation_id?}

``aud`` is the invoked route relative to the deployment (``/invoke/Account/acct-1/apply``,
``/discover``), the same for HTTP and Lambda, so a token for one handler or key is useless for
another. ``body_sha256`` binds it to the exact body and ``jti`` (128 random bits, a new one for
every request, retries included) lets the handler refuse a second use. The handler SDK
(:mod:`adapter.sdk.identity`) verifies all of it against the public key.

Configured with ``[signing]`` in the settings (``private-key-file``, ``key-id``,
``ttl-seconds``). ``python -m adapter.invokers.signing keygen --out key.pem`` writes a new
private key and prints the public key in the form the SDK takes (``publickeyv1_…``).

Every request gets its own token (~40 µs of CPU, most of it the ed25519 signature; measured by
``python -m bench.signing``). The compact JWS is assembled here rather than by ``jwt.encode``,
which spends another ~10 µs validating and re-serialising the fixed header on every call;
verification stays with PyJWT, and a test pins that PyJWT reads these tokens.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapter.config import SigningSettings
from adapter.errors import ConfigError
from adapter.invokers.base import InvocationRequest
from adapter.sdk.identity import PUBLIC_KEY_PREFIX, b58encode, body_digest
from adapter.sdk.protocol import HEADER_JWT, HEADER_SIGNATURE_SCHEME, SIGNATURE_SCHEME, invoke_path

__all__ = ["RequestSigner", "audience", "generate_private_key_pem", "main", "public_key_text"]


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def audience(request: InvocationRequest) -> str:
    """The ``aud`` claim of a request: its invoke route relative to the deployment."""
    target = request.target
    return invoke_path(target.service, target.handler, request.key if target.keyed else None)


def public_key_text(private_key: Ed25519PrivateKey) -> str:
    """``publickeyv1_<base58(raw public key)>``: what handlers configure to verify."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return PUBLIC_KEY_PREFIX + b58encode(raw)


def generate_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class RequestSigner:
    """Signs requests; usable directly as the ``sign`` hook of the HTTP and Lambda invokers."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        key_id: str | None = None,
        ttl_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1 second, got {ttl_s}")
        self._key = private_key
        header: dict[str, Any] = {"alg": "EdDSA", "typ": "JWT"}
        if key_id:
            header["kid"] = key_id
        self._header_b64 = _b64url(orjson.dumps(header))
        self.key_id = key_id
        self.ttl_s = ttl_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"RequestSigner(key_id={self.key_id!r}, ttl_s={self.ttl_s})"

    @classmethod
    def from_settings(cls, settings: SigningSettings) -> RequestSigner | None:
        """The signer for ``[signing]``, or ``None`` when no key is configured."""
        if not settings.private_key_file:
            return None
        path = Path(settings.private_key_file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"signing.private-key-file {str(path)!r} cannot be read: {exc}"
            ) from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"signing.private-key-file {str(path)!r} is not an unencrypted PEM private key "
                f"({exc}); create one with `python -m adapter.invokers.signing keygen`"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"signing.private-key-file {str(path)!r} holds a {type(key).__name__}, "
                "not an ed25519 key"
            )
        return cls(key, key_id=settings.key_id, ttl_s=settings.ttl_s)

    @property
    def public_key(self) -> str:
        return public_key_text(self._key)

    def token(self, aud: str, body: bytes = b"", invocation_id: str | None = None) -> str:
        """A new token for one request: never cached, never reused (its ``jti`` is fresh)."""
        issued = int(self._clock())
        claims: dict[str, Any] = {
            "aud": aud,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.ttl_s,
            "jti": secrets.token_urlsafe(16),
            "body_sha256": body_digest(body),
        }
        if invocation_id is not None:
            claims["invocation_id"] = invocation_id
        signing_input = self._header_b64 + b"." + _b64url(orjson.dumps(claims))
        return (signing_input + b"." + _b64url(self._key.sign(signing_input))).decode("ascii")

    def headers_for(
        self, aud: str, body: bytes = b"", invocation_id: str | None = None
    ) -> dict[str, str]:
        """Signature headers for a request to ``aud`` (e.g. ``/discover``) with ``body``."""
        return {
            HEADER_SIGNATURE_SCHEME: SIGNATURE_SCHEME,
            HEADER_JWT: self.token(aud, body, invocation_id),
        }

    def __call__(self, request: InvocationRequest, url: str) -> dict[str, str]:
        return self.headers_for(audience(request), request.body, request.invocation_id)


def main(argv: list[str] | None = None) -> int:
    """``python -m adapter.invokers.signing keygen --out key.pem``."""
    parser = argparse.ArgumentParser(prog="python -m adapter.invokers.signing")
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write a new ed25519 private key, print its public key")
    keygen.add_argument("--out", required=True, help="where to write the private key (PEM)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; not overwriting it", file=sys.stderr)
        return 1
    pem = generate_private_key_pem()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    print(f"private key written to {out} (configure it as [signing] private-key-file)")
    print(f"public key for handlers (KAFKA_INGRESS_IDENTITY_KEYS): {public_key_text(key)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
