"""The HTTP invoker: ``POST`` one invocation to a deployment over a pooled aiohttp session.

A thin shell around :mod:`adapter.engine.mapping`: the URL comes from :func:`invoke_url`, the
outcome from :func:`outcome_from_http`. This module only adds transport concerns -- one shared
keep-alive connection pool, a per-request deadline, and the translation of aiohttp's errors into
outcomes, so that no handler or network failure ever escapes as an exception:

    timeout, refused/reset connection, server disconnect, broken response  → Outcome.retry
    deployment without a usable http(s) URL, invalid URL                   → Outcome.terminal

Header precedence, lowest to highest (case-insensitive): the mapped request headers, then the
deployment's ``additional_headers``, then whatever the ``sign`` hook returns.
"""

from __future__ import annotations

import asyncio
import enum
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from adapter import __version__
from adapter.engine.mapping import HEADER_ATTEMPT, invoke_url, outcome_from_http, with_attempt
from adapter.errors import TerminalInvokeError
from adapter.invokers.base import InvocationRequest, Outcome

__all__ = ["HttpInvoker", "HttpInvokerState", "Signer"]

Signer = Callable[[InvocationRequest, str], Mapping[str, str]]
"""Request-signing hook: gets the request and its final URL, returns headers to add."""

_USER_AGENT = f"kafka-ingress/{__version__}"
_CHUNKED_WRITE_ABOVE = 1 << 20
_USERINFO = re.compile(r"//[^/@]*@")  # credentials in a URL we could not parse


class HttpInvokerState(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class HttpInvoker:
    """Invoke HTTP handlers; one instance serves every deployment of a poller.

    The aiohttp session is created lazily on first use, inside the running event loop, and is
    bound to that loop. ``aclose()`` releases the pool; using the invoker afterwards raises
    :class:`RuntimeError`.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float | None = None,
        limit: int = 256,
        limit_per_host: int = 0,
        keepalive_timeout_s: float = 30.0,
        sign: Signer | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if connect_timeout_s is not None and connect_timeout_s <= 0:
            raise ValueError(
                f"connect_timeout_s must be > 0 seconds or None, got {connect_timeout_s}"
            )
        if keepalive_timeout_s < 0:
            raise ValueError(f"keepalive_timeout_s must be >= 0 seconds, got {keepalive_timeout_s}")
        if limit < 0 or limit_per_host < 0:
            raise ValueError("limit and limit_per_host must be >= 0 (0 = unlimited)")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._timeout_s = timeout_s
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {timeout_s: self._timeout}
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive_timeout_s = keepalive_timeout_s
        self._sign = sign
        self._state = HttpInvokerState.UNOPENED
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Normalised base URL per deployment URI (or the reason it is unusable), so the
        # per-request work is string concatenation plus one already-encoded yarl URL.
        self._bases: dict[str, str | _InvalidBase] = {}

    def __repr__(self) -> str:
        return (
            f"HttpInvoker(state={self._state.value}, timeout_s={self._timeout_s}, "
            f"limit={self._limit}, limit_per_host={self._limit_per_host})"
        )

    @property
    def state(self) -> HttpInvokerState:
        return self._state

    async def __aenter__(self) -> HttpInvoker:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._state is HttpInvokerState.CLOSED:
            raise RuntimeError("HttpInvoker is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                keepalive_timeout=self._keepalive_timeout_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"user-agent": _USER_AGENT},
                # Handlers are independent of each other and of past records: a cookie one
                # response sets must never ride along on later invocations.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
            self._state = HttpInvokerState.OPENED
        elif loop is not self._loop:
            raise RuntimeError("HttpInvoker is bound to the event loop it was first used in")
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        self._state = HttpInvokerState.CLOSED
        session, self._session = self._session, None
        if session is not None:
            await session.close()

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

    async def invoke(self, request: InvocationRequest) -> Outcome:
        """``POST`` the request to its deployment and map the response to an outcome."""
        session = self._open()
        if request.headers.get(HEADER_ATTEMPT) != str(request.attempt):
            # A retry made with dataclasses.replace(request, attempt=n) would otherwise tell
            # the handler it is attempt 1 again.
            request = with_attempt(request, request.attempt)
        deployment = request.target.deployment
        try:
            base = self._base(deployment.uri, deployment.id)
            url_text = invoke_url(base, request.target, request.key)
        except TerminalInvokeError as exc:
            return Outcome.terminal(str(exc))
        url = URL(url_text, encoded=True)

        headers: Mapping[str, str] = request.headers
        if deployment.additional_headers or self._sign is not None:
            # Case-insensitive override; a plain dict merge would send both "Authorization"
            # and "authorization".
            merged: CIMultiDict[str] = CIMultiDict(request.headers)
            merged.update(deployment.additional_headers)
            if self._sign is not None:
                merged.update(self._sign(request, url_text))
            headers = merged

        body = request.body
        # aiohttp writes a bytes body in one go and warns above 1 MiB; a BytesIO (which shares
        # the buffer, no copy) is written in chunks that yield to the event loop in between.
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > _CHUNKED_WRITE_ABOVE else body
        timeout_s = request.timeout_s or self._timeout_s
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            # One per distinct subscription timeout, not one per request (hot path).
            timeout = aiohttp.ClientTimeout(
                total=timeout_s, sock_connect=self._timeout.sock_connect
            )
            self._timeouts[timeout_s] = timeout
        try:
            async with session.post(
                url, data=data, headers=headers, allow_redirects=False, timeout=timeout
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
        except aiohttp.ServerDisconnectedError:
            return Outcome.retry(f"POST {_display(url)}: server disconnected before responding")
        except aiohttp.ClientError as exc:
            return Outcome.retry(f"POST {_display(url)} failed: {type(exc).__name__}: {exc}")


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
    return str(url)


def _display(url: URL) -> str:
    """The URL for error messages, without credentials."""
    return str(url.with_user(None)) if url.user or url.password else str(url)
