"""Secrets at rest: what the store does with a secret value before it reaches DynamoDB.

Secret values are SASL credentials, the OIDC client secret, key passwords (any option
:func:`~adapter.kafka.options.is_secret` names), URLs with credentials in them
(``https://user:pass@host``), a deployment's URI credentials and its additional header values
(all but a few harmless headers). A reference (``secretsmanager:…``, ``ssm:…``,
:mod:`adapter.secrets`) is not a secret and is stored as written.

With ``[secrets] kms-key-id`` they are envelope-encrypted (:mod:`adapter.store.envelope`)
and kept in the row's ``sealed`` map attribute (``options/sasl.password`` → sealed value), so
a value in the clear attributes is never mistaken for a sealed one.

Without a KMS key, :class:`SecretSealing` refuses secret values with a
:class:`~adapter.errors.ValidationError` (the API answers 400 naming the option and the
setting) unless ``[secrets] allow-plaintext = true`` says otherwise. Rows written in clear
before any of this are read as they are and sealed on their next write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from adapter.config import Settings
from adapter.errors import SecretError, ValidationError
from adapter.kafka.options import is_secret
from adapter.secrets import parse_reference
from adapter.store.envelope import KmsEnvelope

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

# Headers whose values are never credentials; every other header value counts as a secret.
HARMLESS_HEADERS = frozenset(
    {"accept", "accept-language", "content-type", "user-agent", "x-request-id", "x-api-version"}
)


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
