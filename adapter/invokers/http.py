"""The HTTP invoker: ``POST`` one invocation to a deployment over a pooled keep-alive client.

A thin shell around :mod:`adapter.engine.mapping`: the URL comes from :func:`invoke_url`, the
outcome from :func:`outcome_from_http`. This module only adds transport concerns -- one shared
keep-alive connection pool, a per-request deadline, and the translation of the client's errors
into outcomes, so that no handler or network failure ever escapes as an exception:

    timeout, refused/reset connection, server disconnect, broken response  → Outcome.retry
    deployment without a usable http(s) URL, invalid URL                   → Outcome.terminal
    deployment address refused (link-local, metadata; see invokers.targets) → Outcome.terminal

The client is pyreqwest (Rust's reqwest and hyper, HTTP/1.1): measured on the invoker's hot path
(bench/, 64 in flight, 11 headers, 200-byte bodies) it costs ~90 µs of CPU per request against
aiohttp's ~220 µs, and does its I/O outside the GIL. One exception: reqwest parses URLs by the
WHATWG rules, which resolve ``%2E``/``%2E%2E`` path segments as ``.``/``..`` -- a record keyed
``..`` would reach another handler. The rare URL with such a segment goes out through aiohttp,
which sends the path as given.

Header precedence, lowest to highest (case-insensitive): the mapped request headers, then the
deployment's ``additional_headers``, then whatever the ``sign`` hook returns.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
from multidict import CIMultiDict
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import ClientClosedError, PyreqwestError, RequestTimeoutError
from pyreqwest.http import Url
from yarl import URL

from adapter import __version__
from adapter.engine.mapping import HEADER_ATTEMPT, invoke_url, outcome_from_http, with_attempt
from adapter.errors import IngressError, TerminalInvokeError
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.invokers.targets import RECHECK_S, TargetRefused, check_target

__all__ = ["HttpInvoker", "HttpInvokerState", "Signer"]

Signer = Callable[[InvocationRequest, str], Mapping[str, str]]
"""Request-signing hook: gets the request and its final URL, returns headers to add."""

_USER_AGENT = f"kafka-ingress/{__version__}"
_USERINFO = re.compile(r"//[^/@]*@")  # credentials in a URL or an error message
# A path segment that WHATWG URL parsing would resolve away (see the module docstring).
_DOT_SEGMENT = re.compile(r"/%2E(%2E)?(/|$)", re.IGNORECASE)


class HttpInvokerState(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class HttpInvoker:
    """Invoke HTTP handlers; one instance serves every deployment of a poller.

    The client is created lazily on first use, inside the running event loop, and is bound to
    that loop. ``aclose()`` releases the pool; using the invoker afterwards raises
    :class:`RuntimeError`. ``limit`` bounds the requests in flight at once (0: no bound).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float | None = None,
        limit: int = 256,
        keepalive_timeout_s: float = 30.0,
        sign: Signer | None = None,
        deny_private_targets: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if connect_timeout_s is not None and connect_timeout_s <= 0:
            raise ValueError(
                f"connect_timeout_s must be > 0 seconds or None, got {connect_timeout_s}"
            )
        if keepalive_timeout_s < 0:
            raise ValueError(f"keepalive_timeout_s must be >= 0 seconds, got {keepalive_timeout_s}")
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = unlimited)")
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        # One timedelta per distinct subscription timeout, not one per request (hot path).
        self._timeouts: dict[float, timedelta] = {timeout_s: timedelta(seconds=timeout_s)}
        self._limit = limit
        self._keepalive_timeout_s = keepalive_timeout_s
        self._sign = sign
        self._state = HttpInvokerState.UNOPENED
        self._client: Client | None = None
        self._fallback: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Normalised base URL per deployment URI (or the reason it is unusable), so the
        # per-request work is string concatenation.
        self._bases: dict[str, str | _InvalidBase] = {}
        # Per deployment URI: when its address was last checked, and why it is refused.
        self._deny_private = deny_private_targets
        self._targets: dict[str, tuple[float, str | None]] = {}

    def __repr__(self) -> str:
        return (
            f"HttpInvoker(state={self._state.value}, timeout_s={self._timeout_s}, "
            f"limit={self._limit})"
        )

    @property
    def state(self) -> HttpInvokerState:
        return self._state

    async def __aenter__(self) -> HttpInvoker:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> Client:
        client = self._client
        if client is not None and asyncio.get_running_loop() is self._loop:
            return client
        if self._state is HttpInvokerState.CLOSED:
            raise RuntimeError("HttpInvoker is closed; create a new one")
        loop = asyncio.get_running_loop()
        if client is not None:
            raise RuntimeError("HttpInvoker is bound to the event loop it was first used in")
        builder = (
            ClientBuilder()
            .http1_only()
            .follow_redirects(False)
            # Handlers are independent of each other and of the environment the poller runs
            # in: no cookie store (the default), and no proxy taken from HTTP(S)_PROXY.
            .no_proxy()
            .user_agent(_USER_AGENT)
            .pool_idle_timeout(timedelta(seconds=self._keepalive_timeout_s))
            .max_connections(self._limit or None)
        )
        if self._connect_timeout_s is not None:
            builder = builder.connect_timeout(timedelta(seconds=self._connect_timeout_s))
        self._client = client = builder.build()
        self._loop = loop
        self._state = HttpInvokerState.OPENED
        return client

    def _fallback_session(self) -> aiohttp.ClientSession:
        if self._fallback is None:
            self._fallback = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                headers={"user-agent": _USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._fallback

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        self._state = HttpInvokerState.CLOSED
        client, self._client = self._client, None
        fallback, self._fallback = self._fallback, None
        if client is not None:
            await client.close()
        if fallback is not None:
            await fallback.close()

    def _base(self, uri: str | None, deployment_id: str) -> str:
        if uri is None:
            raise TerminalInvokeError(f"deployment {deployment_id} has no HTTP uri")
        cached = self._bases.get(uri)
        if cached is None:
            cached = _normalise_base(uri, deployment_id)
            self._bases[uri] = cached
        if isinstance(cached, _InvalidBase):
            raise TerminalInvokeError(cached.message)
        return cached

    async def _refused(self, uri: str) -> str | None:
        """Why requests to ``uri`` are refused (:mod:`adapter.invokers.targets`), re-checked
        at most every RECHECK_S seconds; None when allowed or not resolvable right now (the
        request then fails, and is retried, as any unreachable handler is)."""
        now = time.monotonic()
        checked = self._targets.get(uri)
        if checked is not None and now - checked[0] < RECHECK_S:
            return checked[1]
        reason: str | None = None
        try:
            await check_target(uri, deny_private=self._deny_private)
        except TargetRefused as exc:
            reason = str(exc)
        except IngressError:
            reason = None
        self._targets[uri] = (now, reason)
        return reason

    async def invoke(self, request: InvocationRequest) -> Outcome:
        """``POST`` the request to its deployment and map the response to an outcome."""
        client = self._open()
        if request.headers.get(HEADER_ATTEMPT) != str(request.attempt):
            # A retry made with dataclasses.replace(request, attempt=n) would otherwise tell
            # the handler it is attempt 1 again.
            request = with_attempt(request, request.attempt)
        deployment = request.target.deployment
        try:
            base = self._base(deployment.uri, deployment.id)
            url = invoke_url(base, request.target, request.key)
        except TerminalInvokeError as exc:
            return Outcome.terminal(str(exc))
        refused = await self._refused(base)
        if refused is not None:
            return Outcome.terminal(f"deployment {deployment.id}: {refused}")

        headers: Mapping[str, str] = request.headers
        if deployment.additional_headers or self._sign is not None:
            # Case-insensitive override; a plain dict merge would send both "Authorization"
            # and "authorization".
            merged: CIMultiDict[str] = CIMultiDict(request.headers)
            merged.update(deployment.additional_headers)
            if self._sign is not None:
                merged.update(self._sign(request, url))
            headers = merged

        timeout_s = request.timeout_s or self._timeout_s
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = self._timeouts[timeout_s] = timedelta(seconds=timeout_s)
        if _DOT_SEGMENT.search(url):
            return await self._invoke_verbatim(url, request.body, headers, timeout_s, request)
        try:
            response = await (
                client.post(url).headers(headers).body_bytes(request.body).timeout(timeout).build()
            ).send()
            body = bytes(await response.bytes())
        except ClientClosedError as exc:
            raise RuntimeError("HttpInvoker is closed; create a new one") from exc
        except PyreqwestError as exc:
            return _failure(exc, _display(url), timeout_s, request.attempt)
        except ValueError as exc:
            # A URL or header value reqwest refuses: no retry would change it.
            return Outcome.terminal(f"cannot send POST {_display(url)}: {exc}")
        return outcome_from_http(response.status, response.headers, body)

    async def _invoke_verbatim(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        request: InvocationRequest,
    ) -> Outcome:
        """The same request through aiohttp, whose URL is sent exactly as given."""
        try:
            async with self._fallback_session().post(
                URL(url, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=timeout_s, sock_connect=self._connect_timeout_s
                ),
            ) as response:
                return outcome_from_http(response.status, response.headers, await response.read())
        except aiohttp.ConnectionTimeoutError:
            return Outcome.retry(f"connecting to {_display(url)} timed out")
        except TimeoutError:
            return Outcome.retry(
                f"POST {_display(url)} timed out after {timeout_s:g}s (attempt {request.attempt})"
            )
        except aiohttp.InvalidURL as exc:
            return Outcome.terminal(f"invalid handler URL {_display(url)}: {exc}")
        except aiohttp.ClientConnectorError as exc:
            return Outcome.retry(f"cannot connect to {_display(url)}: {exc.os_error or exc}")
        except aiohttp.ClientError as exc:
            return Outcome.retry(f"POST {_display(url)} failed: {type(exc).__name__}: {exc}")


def _failure(exc: PyreqwestError, shown_url: str, timeout_s: float, attempt: int) -> Outcome:
    """A transport error as a retry. reqwest's error kinds are coarse (a total timeout comes
    as ConnectTimeoutError, a server hanging up as ConnectError): its chain of causes says
    what happened -- hyper names the phase, ``client error (Connect)`` or ``(SendRequest)``."""
    details = getattr(exc, "details", None) or {}
    causes = [str(c.get("message", "")) for c in details.get("causes") or ()]
    connecting = "client error (Connect)" in causes
    if isinstance(exc, RequestTimeoutError):
        if connecting:
            return Outcome.retry(f"connecting to {shown_url} timed out")
        return Outcome.retry(f"POST {shown_url} timed out after {timeout_s:g}s (attempt {attempt})")
    # The first cause repeats the URL (credentials included); the last one says why.
    reason = _USERINFO.sub("//", causes[-1] if causes else str(exc) or type(exc).__name__)
    if connecting:
        return Outcome.retry(f"cannot connect to {shown_url}: {reason}")
    return Outcome.retry(f"POST {shown_url} failed: {reason}")


@dataclass(frozen=True, slots=True)
class _InvalidBase:
    message: str


def _normalise_base(uri: str, deployment_id: str) -> str | _InvalidBase:
    try:
        # Not encoded=True: the configured base may be human-written; quote it once here so
        # the per-request URL can be passed to aiohttp as already encoded.
        url = URL(uri)
        host = url.host
    except (ValueError, TypeError) as exc:
        shown = _USERINFO.sub("//", uri)
        return _InvalidBase(f"deployment {deployment_id} has an invalid uri {shown!r}: {exc}")
    if url.scheme not in ("http", "https") or not host:
        return _InvalidBase(
            f"deployment {deployment_id} uri {_display(url)} is not an absolute http(s) URL"
        )
    if url.query_string or url.fragment:
        return _InvalidBase(
            f"deployment {deployment_id} uri {_display(url)} must not have a query or fragment"
        )
    try:
        # reqwest parses by the WHATWG rules, stricter than yarl here and there (a numeric
        # last host label, IPv6 zone IDs): refuse such a base once, not on every request.
        Url(str(url))
    except ValueError as exc:
        return _InvalidBase(f"deployment {deployment_id} uri {_display(url)} is invalid: {exc}")
    return str(url)


def _display(url: str | URL) -> str:
    """The URL for error messages, without credentials."""
    return _USERINFO.sub("//", str(url))
