"""OAUTHBEARER tokens from an OIDC token endpoint (librdkafka's ``sasl.oauthbearer.method=oidc``).

:class:`OidcTokenProvider` is the ``sasl_oauth_token_provider`` aiokafka asks for a token
whenever it opens a connection. It gets tokens with the client-credentials grant (RFC 6749
§4.4: HTTP Basic client authentication, ``grant_type=client_credentials`` and the optional
``scope``), caches them, and refreshes them in the background at 80% of their lifetime, as
librdkafka does, so a connection never waits for the identity provider while a token is
valid. A failed fetch is retried with capped exponential backoff; the failure stays visible
in :meth:`OidcTokenProvider.status` (and the log) until a fetch succeeds again. When no valid
token is left, ``token()`` waits a bounded time for a fetch (or, while the endpoint is known
to fail, none at all: the refresher is on it) and then raises
:class:`~adapter.kafka.errors.TokenUnavailableError`, which aiokafka treats like an
unreachable broker: it logs and retries the connection.

:func:`check_token` sends a token through the SASL handshake of one broker and reports the
broker's verdict. aiokafka cannot: it does not read the broker's reply to a rejected token,
believes it is authenticated, and is then left without any broker to talk to.

The pure parts (:func:`parse_token_response`, :class:`Token`) do no I/O. The client secret
and the tokens never appear in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import enum
import json
import logging
import math
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.protocol.admin import SaslAuthenticateRequest, SaslHandShakeRequest

from adapter.errors import KafkaAuthError, KafkaError, ValidationError
from adapter.invokers.targets import (
    GuardedResolver,
    RefusedAddressError,
    TargetRefused,
    check_target,
)
from adapter.kafka.errors import TokenUnavailableError, translate
from adapter.kafka.options import SecuritySettings

__all__ = [
    "OidcTokenProvider",
    "RefreshingTokenProvider",
    "Token",
    "TokenEndpointError",
    "TokenState",
    "check_token",
    "parse_token_response",
    "provider_for",
]

log = logging.getLogger(__name__)

_MECHANISM = "OAUTHBEARER"
# librdkafka's refresh point; the Java client's default window factor is the same.
_REFRESH_RATIO = 0.8
# A token this close to its expiry is not handed out: it could expire in transit.
_EXPIRY_MARGIN_S = 5.0
_EXPIRY_MARGIN_RATIO = 0.1


class TokenEndpointError(KafkaAuthError):
    """One token request failed. ``retryable``: a later attempt may succeed by itself."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# --------------------------------------------------------------------------------------------
# Pure core


@dataclass(frozen=True, slots=True, repr=False)
class Token:
    """A token and its schedule, on the monotonic clock of whoever parsed it."""

    value: str
    obtained_at: float
    expires_at: float

    @property
    def lifetime_s(self) -> float:
        return self.expires_at - self.obtained_at

    @property
    def refresh_at(self) -> float:
        return self.obtained_at + _REFRESH_RATIO * self.lifetime_s

    def usable(self, now: float) -> bool:
        margin = min(_EXPIRY_MARGIN_S, _EXPIRY_MARGIN_RATIO * self.lifetime_s)
        return now < self.expires_at - margin

    def __repr__(self) -> str:
        return f"Token(value='***', lifetime_s={self.lifetime_s:.0f})"


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (the broker verifies)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp):
        return float(exp)
    return None


def _oauth_error(body: bytes) -> str:
    """``error: error_description`` of an RFC 6749 §5.2 error response, if there is one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [str(data[k])[:300] for k in ("error", "error_description") if data.get(k)]
    return ": ".join(parts)


def parse_token_response(
    status: int, body: bytes, *, now: float, wall_now: float, client_id: str
) -> Token:
    """A :class:`Token` from the token endpoint's answer, or :class:`TokenEndpointError`.

    The lifetime is ``expires_in``, else the JWT's ``exp`` (librdkafka reads ``exp``); with
    both, the shorter. ``now`` is the monotonic clock, ``wall_now`` Unix time.
    """
    if not 200 <= status < 300:
        detail = _oauth_error(body)
        retryable = status >= 500 or status in (408, 429)
        said = f" ({detail})" if detail else ""
        if status in (400, 401, 403) and not retryable:
            return _raise(
                f"the token endpoint refused client {client_id!r}: HTTP {status}{said}; check "
                "sasl.oauthbearer.client.id, sasl.oauthbearer.client.secret and "
                "sasl.oauthbearer.scope",
                retryable=False,
            )
        return _raise(f"the token endpoint answered HTTP {status}{said}", retryable=retryable)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return _raise("the token endpoint did not answer with a JSON object", retryable=True)
    value = data.get("access_token")
    if not isinstance(value, str) or not value:
        return _raise("the token endpoint's answer has no access_token", retryable=True)
    lifetimes: list[float] = []
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        lifetimes.append(float(expires_in))
    exp = _jwt_exp(value)
    if exp is not None:
        lifetimes.append(exp - wall_now)
    if not lifetimes:
        return _raise(
            "the token endpoint's answer has no expires_in and the token is not a JWT with "
            "an exp claim, so it cannot be refreshed in time",
            retryable=False,
        )
    lifetime = min(lifetimes)
    if not math.isfinite(lifetime) or lifetime <= 0:
        return _raise("the token endpoint issued a token that has already expired", retryable=True)
    return Token(value=value, obtained_at=now, expires_at=now + lifetime)


def _raise(message: str, *, retryable: bool) -> Token:
    raise TokenEndpointError(message, retryable=retryable)


def _display_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to show."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _request_url(url: str) -> str:
    """The URL without user info: the client authenticates with its Basic header, and aiohttp
    refuses a request that carries both."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _basic_auth(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1 form-encodes both before Basic encoding, as Kafka's Java client does.
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _transport_reason(exc: aiohttp.ClientError | TimeoutError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    # The deepest OS error says most: "Connect call failed (...)" beats aiohttp's summary.
    found = str(exc) or type(exc).__name__
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, OSError) and str(cause):
            found = str(cause)
        cause = cause.__cause__ or cause.__context__
    return found


# --------------------------------------------------------------------------------------------
# The provider


class TokenState(enum.StrEnum):
    NO_TOKEN = "no-token"  # nothing fetched yet
    VALID = "valid"
    REFRESH_FAILING = "refresh-failing"  # the current token is still valid; refreshes fail
    UNAVAILABLE = "unavailable"  # no valid token, and fetching fails
    CLOSED = "closed"


class RefreshingTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """Tokens for aiokafka's OAUTHBEARER, cached and refreshed early; subclasses fetch them.

    Share one per identity among the consumers and producers that use it; :meth:`aclose` it
    when none does any more. ``endpoint`` and ``client_id`` name the source and the identity
    in messages and :meth:`status`; they hold no secret.
    """

    def __init__(
        self,
        *,
        endpoint: str,
        client_id: str,
        extensions: Mapping[str, str] | None = None,
        max_wait_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self._extensions = dict(extensions or {})
        self._max_wait_s = max_wait_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._token: Token | None = None
        self._inflight: asyncio.Task[Token] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed fetches
        self.fetched = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r}, client_id={self.client_id!r})"

    async def _request(self) -> Token:
        """Fetch one token; raise :class:`TokenEndpointError` (holding no secret) on failure."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Close what the fetching holds (HTTP clients …); called once by :meth:`aclose`."""

    # -- aiokafka's interface ---------------------------------------------------------------

    async def token(self) -> str:
        """A valid token; waits at most ``max_wait_s`` for a fetch when none is cached."""
        if self._closed:
            raise TokenUnavailableError(f"the token provider for {self.endpoint} is closed")
        self._ensure_refresher()
        current = self._token
        if current is not None and current.usable(self._clock()):
            return current.value
        if self.failures and (self._inflight is None or self._inflight.done()):
            # The endpoint is known to fail and the refresher retries it with backoff;
            # aiokafka retries connections every retry.backoff.ms, and each must not become
            # a request to the identity provider.
            raise TokenUnavailableError(f"{self.endpoint}: {self.last_error}")
        try:
            async with asyncio.timeout(self._max_wait_s):
                return (await self._fetch_shared()).value
        except TimeoutError:
            raise TokenUnavailableError(
                f"{self.endpoint}: no answer within {self._max_wait_s:.0f}s"
            ) from None
        except TokenEndpointError as exc:
            raise TokenUnavailableError(f"{self.endpoint}: {exc}") from None

    def extensions(self) -> dict[str, str]:
        return dict(self._extensions)

    # -- ours -------------------------------------------------------------------------------

    @property
    def state(self) -> TokenState:
        if self._closed:
            return TokenState.CLOSED
        current = self._token
        usable = current is not None and current.usable(self._clock())
        if self.failures:
            return TokenState.REFRESH_FAILING if usable else TokenState.UNAVAILABLE
        if current is None:
            return TokenState.NO_TOKEN
        return TokenState.VALID if usable else TokenState.UNAVAILABLE

    def status(self) -> dict[str, Any]:
        """State for health and status APIs; holds no secret."""
        current = self._token
        expires_in = None
        if current is not None:
            expires_in = round(max(current.expires_at - self._clock(), 0.0), 1)
        return {
            "state": self.state.value,
            "token_endpoint": self.endpoint,
            "client_id": self.client_id,
            "expires_in_s": expires_in,
            "last_error": self.last_error,
            "consecutive_failures": self.failures,
            "tokens_fetched": self.fetched,
        }

    def invalidate(self) -> None:
        """Forget the cached token (e.g. the broker refused it); the next one is fetched."""
        self._token = None
        self._wake.set()

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._refresher, self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TokenEndpointError):
                await task
        self._refresher = self._inflight = None
        await self._release()

    # -- internals --------------------------------------------------------------------------

    def _ensure_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            # A context of its own: the provider is shared, and must not report to the
            # connection watch of whichever consumer happened to ask first.
            self._refresher = asyncio.create_task(
                self._refresh_loop(),
                name=f"token refresh {self.endpoint}",
                context=contextvars.Context(),
            )

    async def _refresh_loop(self) -> None:
        delay = self._backoff_initial_s
        retry_in: float | None = None
        while not self._closed:
            current = self._token
            if retry_in is not None:
                wait = retry_in
            elif current is None:
                wait = 0.0
            else:
                wait = current.refresh_at - self._clock()
            if wait > 0:
                # invalidate() cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self._fetch_shared()
            except TokenEndpointError:
                retry_in, delay = delay, min(delay * 2, self._backoff_max_s)
            else:
                retry_in, delay = None, self._backoff_initial_s

    async def _fetch_shared(self) -> Token:
        """One fetch at a time; concurrent callers share its result."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), context=contextvars.Context())
        # Shielded: a caller that gives up must not cancel the fetch the others wait for.
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> Token:
        try:
            token = await self._request()
        except TokenEndpointError as exc:
            self.failures += 1
            self.last_error = str(exc)
            current = self._token
            left = (
                f"the current token expires in {current.expires_at - self._clock():.0f}s"
                if current is not None and current.usable(self._clock())
                else "no valid token"
            )
            log.warning(
                "OAUTHBEARER token from %s for client %r failed (attempt %d, %s): %s",
                self.endpoint,
                self.client_id,
                self.failures,
                left,
                exc,
            )
            raise
        if self.failures:
            log.info(
                "OAUTHBEARER token endpoint %s works again after %d failed attempts",
                self.endpoint,
                self.failures,
            )
        self.failures = 0
        self.last_error = None
        self.fetched += 1
        self._token = token
        return token


class OidcTokenProvider(RefreshingTokenProvider):
    """Client-credentials tokens from an OIDC token endpoint (RFC 6749 §4.4)."""

    def __init__(
        self,
        *,
        token_endpoint_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        extensions: Mapping[str, str] | None = None,
        request_timeout_s: float = 10.0,
        max_wait_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            endpoint=_display_url(token_endpoint_url),
            client_id=client_id,
            extensions=extensions,
            max_wait_s=max_wait_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._url = token_endpoint_url
        self._secret = client_secret
        self._scope = scope
        self._request_timeout_s = request_timeout_s
        self._http: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None

    async def _release(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    async def _request(self) -> Token:
        # The client secret goes there: the name must not resolve to a link-local or metadata
        # address (a literal one is refused when the option is parsed), as for deployments.
        try:
            await check_target(self._url, deny_private=False)
        except TargetRefused as exc:
            reason = str(exc).replace("deployment address", "its address")
            raise TokenEndpointError(
                f"token endpoint {self.endpoint}: {reason}", retryable=False
            ) from None
        except ValidationError as exc:
            raise TokenEndpointError(
                f"cannot reach the token endpoint: {exc}", retryable=True
            ) from None
        if self._http is None:
            # The name was checked above; the resolver checks the address connected to as
            # well (a name that changes its answer in between: DNS rebinding).
            self._resolver = GuardedResolver(deny_private=False)
            # The system's CA store, as librdkafka's token requests use by default.
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._request_timeout_s),
                connector=aiohttp.TCPConnector(
                    ssl=ssl.create_default_context(), resolver=self._resolver
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        try:
            async with self._http.post(
                _request_url(self._url),
                data=form,
                headers={
                    "Authorization": _basic_auth(self.client_id, self._secret),
                    "Accept": "application/json",
                },
                allow_redirects=False,
            ) as response:
                status, body = response.status, await response.read()
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddressError):
                raise TokenEndpointError(
                    f"token endpoint {self.endpoint}: not sent, {exc.os_error}", retryable=False
                ) from None
            reason = self._scrub(_transport_reason(exc))
            raise TokenEndpointError(
                f"cannot reach the token endpoint: {reason}", retryable=True
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = self._scrub(_transport_reason(exc))
            raise TokenEndpointError(
                f"cannot reach the token endpoint: {reason}", retryable=True
            ) from None
        try:
            return parse_token_response(
                status,
                body,
                now=self._clock(),
                wall_now=self._wall_clock(),
                client_id=self.client_id,
            )
        except TokenEndpointError as exc:
            # The endpoint's own words could echo what it was sent.
            raise TokenEndpointError(self._scrub(str(exc)), retryable=exc.retryable) from None

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text


def provider_key(cluster: str, security: SecuritySettings) -> tuple[str, ...]:
    """The identity a token provider serves: consumers (and readiness checks) of the same
    cluster with the same key share one provider. A corrected secret is another key, so it
    never reuses the provider that holds the wrong one."""
    return (
        cluster,
        security.oauthbearer_token_endpoint_url or "",
        security.oauthbearer_client_id or "",
        security.oauthbearer_client_secret or "",
        security.oauthbearer_scope or "",
        repr(security.oauthbearer_extensions),
        repr(security.oauthbearer_msk_iam),
    )


def provider_for(security: SecuritySettings) -> RefreshingTokenProvider:
    """A provider for the OAUTHBEARER settings of ``security`` (validated by resolve_options):
    AWS MSK IAM for ``sasl.oauthbearer.config=provider=msk-iam``, else OIDC."""
    if security.oauthbearer_msk_iam is not None:
        # Imported here: botocore's signer is loaded only by the clusters that use it.
        from adapter.kafka.msk_iam import MskIamTokenProvider

        return MskIamTokenProvider(security.oauthbearer_msk_iam)
    url = security.oauthbearer_token_endpoint_url
    client_id = security.oauthbearer_client_id
    secret = security.oauthbearer_client_secret
    if url is None or client_id is None or secret is None:
        raise KafkaAuthError(
            "sasl.oauthbearer.method=oidc needs sasl.oauthbearer.token.endpoint.url, "
            "sasl.oauthbearer.client.id and sasl.oauthbearer.client.secret"
        )
    return OidcTokenProvider(
        token_endpoint_url=url,
        client_id=client_id,
        client_secret=secret,
        scope=security.oauthbearer_scope,
        extensions=dict(security.oauthbearer_extensions),
    )


# --------------------------------------------------------------------------------------------
# Asking a broker what it thinks of a token


def _client_first_message(token: str, extensions: Mapping[str, str]) -> bytes:
    # RFC 7628 §3.1: gs2 header, then kvsep-separated auth and extensions.
    extra = "".join(f"\x01{key}={value}" for key, value in extensions.items())
    return f"n,,\x01auth=Bearer {token}{extra}\x01\x01".encode()


async def check_token(
    bootstrap_servers: Sequence[str],
    provider: OidcTokenProvider,
    *,
    security: SecuritySettings,
    ssl_context: ssl.SSLContext | None,
    request_timeout_ms: int = 30_000,
    context: str,
) -> None:
    """Authenticate once with ``provider``'s token against the first reachable broker.

    Raises :class:`KafkaAuthError` with the broker's verdict when it refuses the token (or no
    token can be had), :class:`KafkaError` when no broker can be reached.
    """
    try:
        token = await provider.token()
    except TokenUnavailableError as exc:
        raise translate(exc, context=context) from None
    # No SASL in aiokafka's own handshake: this function does that part itself.
    transport = "SSL" if security.uses_ssl else "PLAINTEXT"
    last: BaseException | None = None
    for server in bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                security_protocol=transport,
                ssl_context=ssl_context,
                request_timeout_ms=request_timeout_ms,
                client_id="kafka-ingress-token-check",
            )
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            last = exc
            continue
        try:
            await _authenticate(conn, token, provider.extensions(), provider.endpoint, context)
            return
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            raise translate(exc, context=context) from None
        finally:
            conn.close()
    if last is not None:
        raise translate(last, context=context) from None
    raise KafkaError(f"{context}: no bootstrap servers")


async def _authenticate(
    conn: Any, token: str, extensions: Mapping[str, str], endpoint: str, context: str
) -> None:
    handshake = await conn.send(SaslHandShakeRequest(_MECHANISM))
    if handshake.error_code != 0 or _MECHANISM not in handshake.enabled_mechanisms:
        offered = ", ".join(handshake.enabled_mechanisms) or "none"
        raise KafkaAuthError(
            f"{context}: the listener does not accept sasl.mechanism=OAUTHBEARER "
            f"(it offers: {offered})"
        )
    response = await conn.send(SaslAuthenticateRequest(_client_first_message(token, extensions)))
    if response.error_code != 0:
        raise KafkaAuthError(
            f"{context}: the broker refused the OAUTHBEARER token from {endpoint}: "
            f"{response.error_message or 'authentication failed'}"
        )
    challenge = bytes(response.sasl_auth_bytes or b"")
    if not challenge:
        return
    # RFC 7628 §3.2.2: an error challenge, to be answered with a lone 0x01 before the server
    # reports the failure itself.
    try:
        status = str(json.loads(challenge).get("status", "invalid_token"))
    except (ValueError, AttributeError, UnicodeDecodeError):
        status = "invalid_token"
    final = await conn.send(SaslAuthenticateRequest(b"\x01"))
    said = ""
    if final.error_message and status not in final.error_message:
        said = f" ({final.error_message})"
    raise KafkaAuthError(
        f"{context}: the broker refused the OAUTHBEARER token from {endpoint}: {status}{said}; "
        "check the token's audience, issuer and scope against the broker's "
        "sasl.oauthbearer.expected.* settings"
    )
