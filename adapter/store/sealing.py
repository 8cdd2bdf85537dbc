"""Secrets at rest: what the store does with a secret value before it reaches DynamoDB.

Secret values are SASL credentials, the OIDC client secret, key passwords (any option
:func:`~adapter.kafka.options.is_secret` names), URLs with credentials in them
(``https://user:pass@host``), a deployment's URI credentials and its additional header values
(all but a few harmless headers). A reference (``secretsmanager:…``, ``ssm:…``,
:mod:`adapter.secrets`) is not a secret and is stored as written.

With ``[secrets] kms-key-id`` they are envelope-encrypted (:class:`KmsEnvelope`): KMS
``GenerateDataKey`` gives a 256-bit data key and its KMS-encrypted copy; each value is sealed
with AES-256-GCM under the data key, its location (``subscriptions/sub_…/options/sasl.password``)
as associated data so a sealed value copied to another row or field does not open. The stored
form is ``v1.<encrypted data key>.<nonce + ciphertext>`` (base64url), kept in separate
``sealed_*`` attributes, so a value in the clear attributes is never mistaken for a sealed one.

The plaintext data key is reused for at most ``max_uses`` values or ``max_age_s`` seconds,
whichever comes first, then a new one is generated; decrypted data keys are kept in a bounded
LRU so reading a table is not one KMS call per row.

Without a KMS key, :class:`SecretSealing` refuses secret values with a
:class:`~adapter.errors.ValidationError` (the API answers 400 naming the option and the
setting) unless ``[secrets] allow-plaintext = true`` says otherwise. Rows written in clear
before any of this are read as they are and sealed on their next write.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapter.config import Settings
from adapter.errors import SecretError, ValidationError
from adapter.kafka.options import is_secret
from adapter.secrets import parse_reference

__all__ = [
    "CLUSTER_SECRETS",
    "DEPLOYMENT_SECRETS",
    "HARMLESS_HEADERS",
    "SUBSCRIPTION_SECRETS",
    "KmsEnvelope",
    "RowSecrets",
    "SecretSealing",
    "has_userinfo",
    "is_secret_option_value",
]

log = logging.getLogger(__name__)

_VERSION = "v1"
_NONCE_BYTES = 12
_ENCRYPTION_CONTEXT = {"purpose": "kafka-ingress-secrets"}
# Headers whose values are never credentials; every other header value counts as a secret.
HARMLESS_HEADERS = frozenset(
    {"accept", "accept-language", "content-type", "user-agent", "x-request-id", "x-api-version"}
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def has_userinfo(value: str) -> bool:
    """Whether ``value`` is a URL carrying ``user[:password]@`` before its host."""
    if "://" not in value or "@" not in value:
        return False
    try:
        return "@" in urlsplit(value.strip()).netloc
    except ValueError:
        return True  # unparsable but URL-shaped with an '@': treat as a secret


def is_secret_option_value(name: str, value: str) -> bool:
    """Whether option ``name``'s ``value`` must be sealed (a reference is not a secret)."""
    if is_secret(name):
        try:
            return parse_reference(value) is None
        except ValueError:
            return True
    return has_userinfo(value)


def _is_secret_header(name: str, value: str) -> bool:
    return name.lower() not in HARMLESS_HEADERS


def _always(name: str, value: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class RowSecrets:
    """Which attributes of a table's rows may hold secrets.

    ``maps``: attribute → (is this entry secret?, how to name an entry in an error);
    ``scalars``: attribute → is this value secret? Sealed values of a row live in its
    ``sealed`` map attribute under ``attribute/name`` (maps) or ``attribute`` (scalars).
    """

    table: str
    key: str
    maps: Mapping[str, tuple[Callable[[str, str], bool], str]]
    scalars: Mapping[str, Callable[[str], bool]]


SEALED_ATTRIBUTE = "sealed"
SUBSCRIPTION_SECRETS = RowSecrets(
    "subscriptions", "id", {"options": (is_secret_option_value, "option")}, {}
)
CLUSTER_SECRETS = RowSecrets(
    "clusters", "name", {"properties": (is_secret_option_value, "property")}, {}
)
DEPLOYMENT_SECRETS = RowSecrets(
    "deployments",
    "id",
    {"additional_headers": (_is_secret_header, "additional header")},
    {"uri": has_userinfo},
)


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
                        EncryptionContext=_ENCRYPTION_CONTEXT,
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
                CiphertextBlob=_unb64(encrypted), EncryptionContext=_ENCRYPTION_CONTEXT
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


class SecretSealing:
    """The store's policy: seal with KMS, refuse secrets, or (allowed) keep them in clear."""

    def __init__(self, envelope: KmsEnvelope | None = None, *, allow_plaintext: bool = False):
        self.envelope = envelope
        self.allow_plaintext = allow_plaintext

    def __repr__(self) -> str:
        mode = "kms" if self.envelope else "plaintext" if self.allow_plaintext else "refuse"
        return f"SecretSealing({mode})"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretSealing:
        """The policy ``[secrets]`` asks for; says at start-up what happens to secrets."""
        secrets = settings.secrets
        if secrets.kms_key_id:
            kms = boto3.client(
                "kms",
                endpoint_url=secrets.endpoint_url or settings.dynamodb.endpoint_url,
                region_name=secrets.region or settings.dynamodb.region,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, read_timeout=10),
            )
            log.info("secrets in DynamoDB are encrypted with KMS key %s", secrets.kms_key_id)
            return cls(KmsEnvelope(kms, secrets.kms_key_id))
        if secrets.allow_plaintext:
            log.warning(
                "[secrets] allow-plaintext is set and no kms-key-id: secret values (SASL "
                "passwords, client secrets, header values, URL credentials) are stored in "
                "DynamoDB IN CLEAR; set [secrets] kms-key-id"
            )
            return cls(None, allow_plaintext=True)
        log.info(
            "no [secrets] kms-key-id: secret values are refused; give secretsmanager:/ssm: "
            "references or set kms-key-id to store them encrypted"
        )
        return cls(None)

    @classmethod
    def plaintext(cls) -> SecretSealing:
        """Secrets kept in clear: only for stores built by hand (tests, benchmarks)."""
        return cls(None, allow_plaintext=True)

    async def split(
        self,
        values: Mapping[str, str],
        where: str,
        is_secret_value: Callable[[str, str], bool],
        what: str,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """``(clear, sealed)``: the values to store as they are, and the sealed secrets."""
        secret = {k: v for k, v in values.items() if is_secret_value(k, v)}
        clear = {k: v for k, v in values.items() if k not in secret}
        if not secret:
            return clear, {}
        if self.envelope is not None:
            return clear, await self.envelope.seal(secret, where)
        if self.allow_plaintext:
            return dict(values), {}
        first = sorted(secret)[0]
        raise ValidationError(
            f"{what} {first!r} holds a secret and no [secrets] kms-key-id is set to encrypt "
            "it in DynamoDB: set kms-key-id (KAFKA_INGRESS_SECRETS_KMS_KEY_ID), or give a "
            "reference instead of the value (secretsmanager:<name>[:<json-key>] or "
            "ssm:<parameter>)"
        )

    async def seal_row(self, row: Mapping[str, Any], spec: RowSecrets) -> dict[str, Any]:
        """``row`` as it may be stored: secrets moved to its ``sealed`` attribute (or refused)."""
        where = f"{spec.table}/{row[spec.key]}"
        out = dict(row)
        sealed: dict[str, str] = {}
        for field, (is_secret_value, what) in spec.maps.items():
            values = row.get(field)
            if not values:
                continue
            clear, sealed_values = await self.split(
                values, f"{where}/{field}", is_secret_value, what
            )
            out[field] = clear
            sealed.update({f"{field}/{name}": text for name, text in sealed_values.items()})
        for field, is_secret_scalar in spec.scalars.items():
            value = row.get(field)
            if isinstance(value, str) and is_secret_scalar(value):
                _, sealed_values = await self.split(
                    {field: value}, where, _always, f"{spec.table.rstrip('s')} field"
                )
                if sealed_values:
                    out.pop(field)
                    sealed.update(sealed_values)
        out.pop(SEALED_ATTRIBUTE, None)
        if sealed:
            out[SEALED_ATTRIBUTE] = sealed
        return out

    async def open_row(self, row: Mapping[str, Any], spec: RowSecrets) -> dict[str, Any]:
        """A stored row with its sealed values opened back into their attributes."""
        sealed = row.get(SEALED_ATTRIBUTE)
        out = {k: v for k, v in row.items() if k != SEALED_ATTRIBUTE}
        if not sealed:
            return out
        where = f"{spec.table}/{row[spec.key]}"
        if self.envelope is None:
            raise SecretError(
                f"{where}: holds values encrypted with KMS but no [secrets] kms-key-id is set "
                "to decrypt them"
            )
        opened = await self.envelope.open({str(k): str(v) for k, v in sealed.items()}, where)
        for path, value in opened.items():
            field, _, name = path.partition("/")
            if name:
                out[field] = {**(out.get(field) or {}), name: value}
            else:
                out[field] = value
        return out
