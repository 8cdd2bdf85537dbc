"""KMS envelope encryption of single values (the store's secrets at rest).

KMS ``GenerateDataKey`` gives a 256-bit data key and its KMS-encrypted copy; each value is
sealed with AES-256-GCM under the data key, its location (``subscriptions/sub_…/options/
sasl.password``) as associated data so a sealed value copied to another row or field does not
open. The sealed form is ``v1.<encrypted data key>.<nonce + ciphertext>`` (base64url).

The plaintext data key is reused for at most ``max_uses`` values or ``max_age_s`` seconds,
whichever comes first, then a new one is generated; decrypted data keys are kept in a bounded
LRU so reading a table is not one KMS call per row. KMS is blocking boto3: the async methods go
to a worker thread only when KMS has to be called. KMS errors become
:class:`~adapter.errors.SecretError` naming the key and the rights it needs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapter.errors import SecretError

__all__ = ["ENCRYPTION_CONTEXT", "KmsEnvelope"]

_VERSION = "v1"
_NONCE_BYTES = 12
# Also what a key policy can require (kms:EncryptionContext:purpose).
ENCRYPTION_CONTEXT = {"purpose": "kafka-ingress-secrets"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class _DataKey:
    plaintext: bytes
    encrypted: str
    created: float
    uses: int = 0


class KmsEnvelope:
    """Seals and opens values with data keys from one KMS key (boto3 client given)."""

    def __init__(
        self,
        kms: Any,
        key_id: str,
        *,
        max_uses: int = 100_000,
        max_age_s: float = 3600.0,
        max_cached_keys: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kms = kms
        self.key_id = key_id
        self._max_uses = max_uses
        self._max_age_s = max_age_s
        self._max_cached = max_cached_keys
        self._clock = clock
        self._current: _DataKey | None = None
        self._opened: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.kms_calls = 0

    def __repr__(self) -> str:
        return f"KmsEnvelope(key_id={self.key_id!r})"

    # Blocking: KMS is called only when no usable data key is cached. Callers on the event
    # loop use the async wrappers, which go to a worker thread only then.

    def _data_key(self) -> _DataKey:
        with self._lock:
            key = self._current
            now = self._clock()
            if key is None or key.uses >= self._max_uses or now - key.created > self._max_age_s:
                answer = self._kms_call(
                    lambda: self._kms.generate_data_key(
                        KeyId=self.key_id,
                        KeySpec="AES_256",
                        EncryptionContext=ENCRYPTION_CONTEXT,
                    ),
                    "generate a data key",
                )
                key = _DataKey(bytes(answer["Plaintext"]), _b64(answer["CiphertextBlob"]), now)
                self._current = key
                self._remember(key.encrypted, key.plaintext)
            key.uses += 1
            return key

    def _remember(self, encrypted: str, plaintext: bytes) -> None:
        self._opened[encrypted] = plaintext
        self._opened.move_to_end(encrypted)
        while len(self._opened) > self._max_cached:
            self._opened.popitem(last=False)

    def _open_key(self, encrypted: str) -> bytes:
        with self._lock:
            cached = self._opened.get(encrypted)
            if cached is not None:
                self._opened.move_to_end(encrypted)
                return cached
        answer = self._kms_call(
            lambda: self._kms.decrypt(
                CiphertextBlob=_unb64(encrypted), EncryptionContext=ENCRYPTION_CONTEXT
            ),
            "decrypt a data key",
        )
        plaintext = bytes(answer["Plaintext"])
        with self._lock:
            self._remember(encrypted, plaintext)
        return plaintext

    def _kms_call(self, call: Callable[[], Any], what: str) -> Any:
        self.kms_calls += 1
        try:
            return call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise SecretError(
                f"KMS key {self.key_id!r}: cannot {what} ({code or 'error'}); check "
                "[secrets] kms-key-id and the poller's kms:GenerateDataKey/kms:Decrypt rights"
            ) from None
        except BotoCoreError as exc:
            raise SecretError(
                f"KMS key {self.key_id!r}: cannot {what}: KMS is unreachable ({type(exc).__name__})"
            ) from None

    def seal_now(self, plaintext: str, where: str) -> str:
        key = self._data_key()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key.plaintext).encrypt(nonce, plaintext.encode("utf-8"), where.encode())
        return f"{_VERSION}.{key.encrypted}.{_b64(nonce + sealed)}"

    def open_now(self, sealed: str, where: str) -> str:
        version, _, rest = sealed.partition(".")
        encrypted, _, body = rest.partition(".")
        if version != _VERSION or not encrypted or not body:
            raise SecretError(f"{where}: not a sealed value this version can open")
        data = _unb64(body)
        try:
            plaintext = AESGCM(self._open_key(encrypted)).decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:], where.encode()
            )
        except InvalidTag:
            raise SecretError(
                f"{where}: the sealed value does not open (altered, or copied from elsewhere)"
            ) from None
        return plaintext.decode("utf-8")

    def _cached_for_sealing(self) -> bool:
        key = self._current
        return (
            key is not None
            and key.uses < self._max_uses
            and self._clock() - key.created <= self._max_age_s
        )

    async def seal(self, values: Mapping[str, str], where: str) -> dict[str, str]:
        """``{name: sealed}`` for each value, sealed under ``where/name``."""

        def run() -> dict[str, str]:
            return {name: self.seal_now(value, f"{where}/{name}") for name, value in values.items()}

        if not values:
            return {}
        return run() if self._cached_for_sealing() else await asyncio.to_thread(run)

    async def open(self, sealed: Mapping[str, str], where: str) -> dict[str, str]:
        def run() -> dict[str, str]:
            return {name: self.open_now(value, f"{where}/{name}") for name, value in sealed.items()}

        if not sealed:
            return {}
        cached = all(v.partition(".")[2].partition(".")[0] in self._opened for v in sealed.values())
        return run() if cached else await asyncio.to_thread(run)
