"""OAUTHBEARER tokens for AWS MSK IAM authentication.

Configured the way Restate configures it (``sasl.mechanism=OAUTHBEARER`` with
``sasl.oauthbearer.config="provider=msk-iam,region=us-east-1"``, optionally ``profile=``), plus
``role_arn=`` (and ``role_session_name=``) to assume a role on top of the base credentials.

A token is what AWS's ``aws-msk-iam-sasl-signer-python`` produces: a SigV4 presigned
``kafka-cluster:Connect`` URL, base64url-encoded, valid for 15 minutes. It is signed with the
AWS default credential chain (environment, profile, ECS task role, EC2 instance role …) or, with
``role_arn``, with the credentials of that role, which botocore assumes through STS and renews
before they run out. :class:`MskIamTokenProvider` shares the cache and early refresh of
:class:`~adapter.kafka.oidc.RefreshingTokenProvider`: a new token at 80% of its lifetime, so a
connection never waits for signing while a token is valid, failures retried with backoff and
shown in the status. Signing (and any credential look-up behind it, which may do network I/O)
runs in a worker thread.

Credentials never appear in a message, a log line or a ``repr``; the role ARN and region do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import botocore.session
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from adapter.errors import KafkaAuthError
from adapter.kafka.oidc import RefreshingTokenProvider, Token, TokenEndpointError
from adapter.kafka.options import MskIamSettings

__all__ = ["DEFAULT_REGION", "MskIamTokenProvider"]

log = logging.getLogger(__name__)

# Restate's default when neither the option nor the AWS configuration names a region.
DEFAULT_REGION = "us-east-1"
_DEFAULT_SESSION_NAME = "kafka-ingress"
# A token signed with credentials about to expire is not used past them (role sessions).
_CREDENTIALS_MARGIN_S = 30.0

ClientCreator = Callable[..., Any]


class _Given(CredentialProvider):
    """The signer takes a botocore CredentialProvider; this one hands over resolved credentials."""

    METHOD = "kafka-ingress"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


class MskIamTokenProvider(RefreshingTokenProvider):
    """MSK IAM tokens for one cluster identity (region, profile, role)."""

    def __init__(
        self,
        settings: MskIamSettings,
        *,
        session: botocore.session.Session | None = None,
        client_creator: ClientCreator | None = None,
        sign_timeout_s: float = 10.0,
        max_wait_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``session`` (default: a fresh botocore session, the default credential chain and
        ``settings.profile``) and ``client_creator`` (default: ``session.create_client``, used
        for STS) are the seams for tests."""
        self._session = session or botocore.session.Session(profile=settings.profile)
        try:
            # Looked up explicitly: with AWS_REGION set, botocore would not read the profile
            # until the first token, and an unknown profile must fail at start-up.
            if settings.profile and settings.profile not in self._session.available_profiles:
                raise ProfileNotFound(profile=settings.profile)
            configured = self._session.get_config_variable("region")
        except BotoCoreError as exc:  # a profile that does not exist, an unreadable file
            raise KafkaAuthError(f"sasl.oauthbearer.config: {exc}") from exc
        self.region: str = settings.region or configured or DEFAULT_REGION
        self.settings = settings
        super().__init__(
            endpoint=f"AWS MSK IAM ({self.region})",
            client_id=settings.role_arn or f"default credentials{_profile(settings)}",
            max_wait_s=max_wait_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._client_creator = client_creator or self._session.create_client
        self._sign_timeout_s = sign_timeout_s
        self._credentials: Credentials | None = None
        # Wall-clock expiry of the assumed role's current session, when a role is assumed.
        self._role_expires_at: float | None = None

    async def _request(self) -> Token:
        try:
            async with asyncio.timeout(self._sign_timeout_s):
                value, expires_ms = await asyncio.to_thread(self._sign)
        except TimeoutError:
            raise TokenEndpointError(
                f"no AWS credentials within {self._sign_timeout_s:.0f}s "
                "(credential provider or STS not answering)",
                retryable=True,
            ) from None
        now, wall_now = self._clock(), self._wall_clock()
        expires_wall = expires_ms / 1000
        if self._role_expires_at is not None:
            expires_wall = min(expires_wall, self._role_expires_at - _CREDENTIALS_MARGIN_S)
        lifetime = expires_wall - wall_now
        if lifetime <= 0:
            raise TokenEndpointError(
                "the AWS credentials expire before a token signed with them could be used",
                retryable=True,
            )
        return Token(value=value, obtained_at=now, expires_at=now + lifetime)

    # -- in the worker thread -----------------------------------------------------------------

    def _sign(self) -> tuple[str, int]:
        try:
            # One consistent snapshot: each attribute read of refreshable credentials may
            # refresh them, and a key from one session with a secret from the next signs nothing.
            frozen = self._resolve_credentials().get_frozen_credentials()
            if not frozen.access_key or not frozen.secret_key:
                raise TokenEndpointError(
                    "no usable AWS credentials: the access key or secret key is empty",
                    retryable=True,
                )
            snapshot = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
            token, expires_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
                self.region, _Given(snapshot)
            )
        except ClientError as exc:
            # STS refused the role (AccessDenied …): the code and AWS's message, no credential.
            error = exc.response.get("Error", {})
            raise TokenEndpointError(
                f"STS refused to assume {self.settings.role_arn}: "
                f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": "),
                retryable=True,
            ) from None
        except BotoCoreError as exc:
            raise TokenEndpointError(
                f"no usable AWS credentials: {type(exc).__name__}: {exc}", retryable=True
            ) from None
        return str(token), int(expires_ms)

    def _resolve_credentials(self) -> Credentials:
        if self._credentials is None:
            base = self._session.get_credentials()
            if base is None:
                raise TokenEndpointError(
                    "no AWS credentials found by the default chain (environment, "
                    f"profile{_profile(self.settings)}, container or instance role)",
                    retryable=True,
                )
            if self.settings.role_arn is None:
                # botocore renews refreshable credentials (task and instance roles) by itself.
                self._credentials = base
            else:
                fetcher = AssumeRoleCredentialFetcher(
                    client_creator=self._sts_client,
                    source_credentials=base,
                    role_arn=self.settings.role_arn,
                    extra_args={
                        "RoleSessionName": self.settings.role_session_name or _DEFAULT_SESSION_NAME
                    },
                )

                def refresh() -> dict[str, Any]:
                    fetched: dict[str, Any] = fetcher.fetch_credentials()
                    self._role_expires_at = _wall_seconds(fetched["expiry_time"])
                    return fetched

                self._credentials = DeferredRefreshableCredentials(
                    refresh_using=refresh, method="assume-role"
                )
        return self._credentials

    def _sts_client(self, service: str, **kwargs: Any) -> Any:
        # The regional STS endpoint, next to the cluster.
        kwargs.setdefault("region_name", self.region)
        return self._client_creator(service, **kwargs)


def _profile(settings: MskIamSettings) -> str:
    return f" {settings.profile!r}" if settings.profile else ""


def _wall_seconds(value: Any) -> float:
    """botocore's expiry (an ISO 8601 string or a datetime) as a Unix timestamp."""
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
