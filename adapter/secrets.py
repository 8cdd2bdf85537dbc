"""Secret references in Kafka options, resolved when a consumer connects.

Instead of the secret itself, a secret option (``sasl.password``, ``sasl.username``,
``sasl.oauthbearer.client.secret``, ``ssl.key.password`` … — see
:func:`adapter.kafka.options.is_secret`) may name where the secret lives::

    "sasl.password" = "secretsmanager:prod/kafka/ingress"            the whole SecretString
    "sasl.password" = "secretsmanager:prod/kafka/ingress:password"   one key of a JSON secret
    "sasl.password" = "secretsmanager:arn:aws:secretsmanager:eu-west-1:1234:secret:k-AbCdEf:pw"
    "sasl.oauthbearer.client.secret" = "ssm:/prod/kafka/oidc-client-secret"   a SecureString

Only the reference is stored (in DynamoDB or the settings file); the value is fetched when a
consumer is built and kept in memory for ``[secrets] reference-cache-seconds``. The
supervisor calls :meth:`SecretResolver.invalidate` when the broker refuses the credentials, so
the next attempt fetches again and a rotated secret is picked up without a restart.

:func:`parse_reference` is pure; :class:`SecretResolver` holds the cache around a one-method
:class:`SecretFetcher`; :class:`AwsSecretFetcher` is the boto3 shell (Secrets Manager, SSM).
Errors: a reference that names nothing, names a secret without the JSON key, or an SSM
parameter that is not a SecureString is a :class:`~adapter.errors.ConfigError` naming the
option and the reference (never a value); AWS being unreachable is a
:class:`~adapter.errors.SecretError`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapter.config import Settings
from adapter.errors import ConfigError, SecretError
from adapter.kafka.options import is_secret

__all__ = [
    "AwsSecretFetcher",
    "SecretFetcher",
    "SecretRef",
    "SecretResolver",
    "check_references",
    "parse_reference",
]

_SECRETS_MANAGER = "secretsmanager:"
_SSM = "ssm:"
# arn:partition:secretsmanager:region:account:secret:name — seven parts before a JSON key.
_ARN_PARTS = 7


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives: a Secrets Manager secret (optionally one JSON key) or an SSM
    SecureString parameter."""

    kind: Literal["secretsmanager", "ssm"]
    name: str
    json_key: str | None = None

    def __str__(self) -> str:
        key = f":{self.json_key}" if self.json_key is not None else ""
        return f"{self.kind}:{self.name}{key}"


def parse_reference(value: str) -> SecretRef | None:
    """The reference ``value`` spells, ``None`` for a plain value; ValueError if malformed."""
    if value.startswith(_SECRETS_MANAGER):
        rest = value.removeprefix(_SECRETS_MANAGER)
        if rest.startswith("arn:"):
            parts = rest.split(":")
            if len(parts) < _ARN_PARTS or parts[2] != "secretsmanager" or parts[5] != "secret":
                raise ValueError(
                    "a secretsmanager: ARN reads arn:<partition>:secretsmanager:<region>:"
                    "<account>:secret:<name>[:<json-key>]"
                )
            name = ":".join(parts[:_ARN_PARTS])
            key = ":".join(parts[_ARN_PARTS:]) if len(parts) > _ARN_PARTS else None
        else:
            # Secret names cannot contain ':' (Secrets Manager allows letters, digits, /_+=.@-).
            name, sep, key_text = rest.partition(":")
            key = key_text if sep else None
        if not name:
            raise ValueError("secretsmanager: needs a secret name or ARN")
        if key == "":
            raise ValueError("the JSON key after the secret name is empty")
        return SecretRef("secretsmanager", name, key)
    if value.startswith(_SSM):
        name = value.removeprefix(_SSM)
        if not name:
            raise ValueError("ssm: needs a parameter name")
        return SecretRef("ssm", name)
    return None


def check_references(options: Mapping[str, str]) -> None:
    """Raise ConfigError naming the first secret option whose reference is malformed."""
    for option, value in options.items():
        if is_secret(option):
            try:
                parse_reference(value)
            except ValueError as exc:
                raise ConfigError(f"option {option!r}: invalid secret reference: {exc}") from None


class SecretFetcher(Protocol):
    def fetch(self, ref: SecretRef) -> str:
        """The secret's current value (blocking I/O; called in a worker thread)."""
        ...


class SecretResolver:
    """Replaces references in secret options by their values, with a cache.

    ``ttl_s`` bounds how long a fetched value is used before it is fetched again even
    without an authentication failure (a consumer already connected keeps its credentials).
    """

    def __init__(
        self,
        fetcher: SecretFetcher,
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[SecretRef, tuple[float, str]] = {}
        self.fetches = 0

    def __repr__(self) -> str:
        return f"SecretResolver({len(self._cache)} cached, ttl_s={self._ttl_s})"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretResolver:
        """Fetching from AWS where ``[secrets]`` (else ``[dynamodb]``) points."""
        secrets = settings.secrets
        fetcher = AwsSecretFetcher(
            endpoint_url=secrets.endpoint_url or settings.dynamodb.endpoint_url,
            region=secrets.region or settings.dynamodb.region,
        )
        return cls(fetcher, ttl_s=secrets.reference_cache_s)

    def invalidate(self) -> None:
        """Forget every fetched value: the next resolution asks AWS again (after an
        authentication failure, the secret may have been rotated)."""
        self._cache.clear()

    async def resolve_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``options`` with every secret option's reference replaced by its value."""
        resolved = dict(options)
        for option, value in options.items():
            if not is_secret(option):
                continue
            try:
                ref = parse_reference(value)
            except ValueError as exc:
                raise ConfigError(f"option {option!r}: invalid secret reference: {exc}") from None
            if ref is not None:
                resolved[option] = await self._value(option, ref)
        return resolved

    async def _value(self, option: str, ref: SecretRef) -> str:
        now = self._clock()
        cached = self._cache.get(ref)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            value = await asyncio.to_thread(self._fetcher.fetch, ref)
        except ConfigError as exc:
            raise ConfigError(f"option {option!r}: {exc}") from exc
        except SecretError as exc:
            raise SecretError(f"option {option!r}: {exc}") from exc
        self.fetches += 1
        self._cache[ref] = (now, value)
        return value


_NOT_FOUND = {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"}
_REFUSED = {
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidRequestException",
    "DecryptionFailure",
    "InvalidKeyId",
    "KMSAccessDeniedException",
}


class AwsSecretFetcher:
    """Reads Secrets Manager secrets and SSM parameters with boto3 (clients made on first use)."""

    def __init__(self, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self._endpoint_url = endpoint_url
        self._region = region
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AwsSecretFetcher(region={self._region!r})"

    def _client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._clients[service] = boto3.client(
                    service,  # type: ignore[call-overload]
                    endpoint_url=self._endpoint_url,
                    region_name=self._region,
                    config=Config(
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=3,
                        read_timeout=10,
                    ),
                )
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def fetch(self, ref: SecretRef) -> str:
        try:
            if ref.kind == "ssm":
                return self._parameter(ref)
            return self._secret(ref)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise ConfigError(f"{ref}: no such {_what(ref)}") from None
            if code in _REFUSED:
                raise ConfigError(f"{ref}: AWS refused to read the {_what(ref)} ({code})") from None
            raise SecretError(f"{ref}: AWS answered {code or 'an error'}") from None
        except BotoCoreError as exc:
            raise SecretError(f"{ref}: AWS is unreachable ({type(exc).__name__})") from None

    def _parameter(self, ref: SecretRef) -> str:
        answer = self._client("ssm").get_parameter(Name=ref.name, WithDecryption=True)
        parameter = answer["Parameter"]
        if parameter.get("Type") != "SecureString":
            raise ConfigError(
                f"{ref}: the parameter is a {parameter.get('Type')}, stored in clear; "
                "store secrets as SecureString parameters"
            )
        return str(parameter["Value"])

    def _secret(self, ref: SecretRef) -> str:
        answer = self._client("secretsmanager").get_secret_value(SecretId=ref.name)
        text = answer.get("SecretString")
        if text is None:
            raise ConfigError(f"{ref}: the secret holds binary data, not a SecretString")
        if ref.json_key is None:
            return str(text)
        try:
            document = json.loads(text)
        except ValueError:
            raise ConfigError(
                f"{ref}: the secret is not a JSON object, so it has no key {ref.json_key!r}"
            ) from None
        if not isinstance(document, dict) or ref.json_key not in document:
            raise ConfigError(f"{ref}: the secret's JSON has no key {ref.json_key!r}")
        value = document[ref.json_key]
        if not isinstance(value, str):
            raise ConfigError(f"{ref}: the secret's key {ref.json_key!r} is not a string")
        return value


def _what(ref: SecretRef) -> str:
    return "parameter" if ref.kind == "ssm" else "secret"
