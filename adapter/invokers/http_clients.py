"""The HTTP invoker's client libraries: which one is used, and each one's ``POST``.

Two are supported, behind one small interface (:class:`Transport`):

* **aiohttp** (the default install): mature and widely used, the fastest of the mature
  asyncio clients on the invoker's hot path (``python -m bench --scenarios http``).
* **pyreqwest** (the optional extra ``kafka-ingress[fast-http]``): Rust's reqwest and hyper,
  with its I/O off the GIL and about half aiohttp's CPU per request; 0.x and a single
  maintainer, so opt-in. When installed it is picked up automatically (``client = "auto"``).

Each transport turns its library's errors into outcomes, so no handler or network failure
ever escapes as an exception:

    timeout, refused/reset connection, server disconnect, broken response  → Outcome.retry
    a URL the library refuses                                              → Outcome.terminal
"""

from __future__ import annotations

import importlib.util
import io
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

import aiohttp
from yarl import URL

from adapter import __version__
from adapter.engine.mapping import outcome_from_http
from adapter.errors import ConfigError
from adapter.invokers.base import Outcome
from adapter.invokers.targets import GuardedResolver, RefusedAddressError

if TYPE_CHECKING:
    from pyreqwest.client import Client

__all__ = [
    "CLIENT_NAMES",
    "AiohttpTransport",
    "ClientName",
    "ReqwestTransport",
    "Transport",
    "display",
    "resolve_client",
]

ClientName = Literal["auto", "aiohttp", "pyreqwest"]
CLIENT_NAMES: tuple[ClientName, ...] = ("auto", "aiohttp", "pyreqwest")

USER_AGENT = f"kafka-ingress/{__version__}"
_USERINFO = re.compile(r"//[^/@]*@")  # credentials in a URL or an error message
# aiohttp writes a bytes body in one go and warns above 1 MiB; a BytesIO (which shares the
# buffer, no copy) is written in chunks that yield to the event loop in between.
_CHUNKED_WRITE_ABOVE = 1 << 20


def display(url: str | URL) -> str:
    """The URL for error messages, without credentials."""
    return _USERINFO.sub("//", str(url))


def resolve_client(name: ClientName) -> Literal["aiohttp", "pyreqwest"]:
    """The client library to use: ``auto`` is pyreqwest when it is installed, else aiohttp.
    Asking for pyreqwest without it installed is a :class:`ConfigError` naming the setting
    and the extra; an unknown name is a :class:`ValueError`."""
    if name not in CLIENT_NAMES:
        raise ValueError(f"http client must be one of {', '.join(CLIENT_NAMES)}, got {name!r}")
    installed = importlib.util.find_spec("pyreqwest") is not None
    if name == "pyreqwest" and not installed:
        raise ConfigError(
            "[http] client = 'pyreqwest', but pyreqwest is not installed: install "
            "kafka-ingress[fast-http], or set client to 'auto' or 'aiohttp'"
        )
    if name == "auto":
        return "pyreqwest" if installed else "aiohttp"
    return name


class Transport(Protocol):
    """One pooled keep-alive client, bound to the event loop it was created in."""

    name: str

    def check_base(self, base: str) -> str | None:
        """Why the library cannot use this (already normalised) base URL; None if it can."""

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        attempt: int,
    ) -> Outcome: ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """aiohttp: the URL is sent exactly as given (``encoded=True``), no cookie jar, no
    proxy from the environment (aiohttp's default ``trust_env=False``), and names resolved
    through a :class:`~adapter.invokers.targets.GuardedResolver`: a name that resolves to a
    refused address when a connection is made fails the request terminally, with nothing
    sent. Make it inside the running event loop."""

    name = "aiohttp"

    def __init__(
        self,
        *,
        limit: int,
        keepalive_timeout_s: float,
        connect_timeout_s: float | None,
        deny_private: bool,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._resolver = GuardedResolver(deny_private=deny_private)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limit,
                limit_per_host=0,
                keepalive_timeout=keepalive_timeout_s,
                resolver=self._resolver,
            ),
            headers={"user-agent": USER_AGENT},
            # Handlers are independent of each other and of past records: a cookie one
            # response sets must never ride along on later invocations.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def check_base(self, base: str) -> str | None:
        return None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        attempt: int,
    ) -> Outcome:
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            # One per distinct subscription timeout, not one per request (hot path).
            timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._connect_timeout_s)
            self._timeouts[timeout_s] = timeout
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > _CHUNKED_WRITE_ABOVE else body
        try:
            async with self._session.post(
                URL(url, encoded=True),
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                return outcome_from_http(response.status, response.headers, await response.read())
        except aiohttp.ConnectionTimeoutError:
            return Outcome.retry(f"connecting to {display(url)} timed out")
        except TimeoutError:
            return Outcome.retry(
                f"POST {display(url)} timed out after {timeout_s:g}s (attempt {attempt})"
            )
        except aiohttp.InvalidURL as exc:
            return Outcome.terminal(f"invalid handler URL {display(url)}: {exc}")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddressError):
                # What the periodic address check would answer next: the same, terminally.
                return Outcome.terminal(f"not sent to {display(url)}: {exc.os_error}")
            reason = _USERINFO.sub("//", str(exc.os_error or exc))
            return Outcome.retry(f"cannot connect to {display(url)}: {reason}")
        except aiohttp.ServerDisconnectedError:
            return Outcome.retry(f"POST {display(url)}: server disconnected before responding")
        except aiohttp.ClientError as exc:
            reason = _USERINFO.sub("//", str(exc))
            return Outcome.retry(f"POST {display(url)} failed: {type(exc).__name__}: {reason}")
        except RuntimeError as exc:
            if self._session.closed:
                raise RuntimeError("HttpInvoker is closed; create a new one") from exc
            raise

    async def aclose(self) -> None:
        await self._session.close()
        await self._resolver.close()  # a connector leaves a resolver it was given open


class ReqwestTransport:
    """pyreqwest, HTTP/1.1 only. reqwest parses URLs by the WHATWG rules, which resolve
    ``%2E``/``%2E%2E`` path segments as ``.``/``..`` -- a record keyed ``..`` would reach
    another handler -- so the rare URL with such a segment goes out through aiohttp, which
    sends the path as given."""

    name = "pyreqwest"
    _DOT_SEGMENT = re.compile(r"/%2E(%2E)?(/|$)", re.IGNORECASE)

    def __init__(
        self,
        *,
        limit: int,
        keepalive_timeout_s: float,
        connect_timeout_s: float | None,
        deny_private: bool,
    ) -> None:
        from pyreqwest.client import ClientBuilder
        from pyreqwest.exceptions import ClientClosedError, PyreqwestError

        # Bound once: the hot path catches them on every request.
        self._closed_error = ClientClosedError
        self._error = PyreqwestError
        # reqwest resolves names itself, with no hook to check the answer: only the
        # invoker's periodic address check guards it (adapter.invokers.targets).
        self._settings = (limit, keepalive_timeout_s, connect_timeout_s, deny_private)
        self._timeouts: dict[float, timedelta] = {}
        builder = (
            ClientBuilder()
            .http1_only()
            .follow_redirects(False)
            # Handlers are independent of each other and of the environment the poller runs
            # in: no cookie store (the default), and no proxy taken from HTTP(S)_PROXY.
            .no_proxy()
            .user_agent(USER_AGENT)
            .pool_idle_timeout(timedelta(seconds=keepalive_timeout_s))
            .max_connections(limit or None)
        )
        if connect_timeout_s is not None:
            builder = builder.connect_timeout(timedelta(seconds=connect_timeout_s))
        self._client: Client = builder.build()
        self._verbatim: AiohttpTransport | None = None

    def check_base(self, base: str) -> str | None:
        from pyreqwest.http import Url

        try:
            # Stricter than yarl here and there (a numeric last host label, IPv6 zone IDs):
            # refuse such a base once, not on every request.
            Url(base)
        except ValueError as exc:
            return str(exc)
        return None

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
        attempt: int,
    ) -> Outcome:
        if self._DOT_SEGMENT.search(url):
            if self._verbatim is None:
                limit, keepalive_s, connect_s, deny_private = self._settings
                self._verbatim = AiohttpTransport(
                    limit=limit,
                    keepalive_timeout_s=keepalive_s,
                    connect_timeout_s=connect_s,
                    deny_private=deny_private,
                )
            return await self._verbatim.post(url, body, headers, timeout_s, attempt)
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = self._timeouts[timeout_s] = timedelta(seconds=timeout_s)
        try:
            response = await (
                self._client.post(url)
                .headers(headers)
                .body_bytes(body)
                .timeout(timeout)
                .build()
                .send()
            )
            content = bytes(await response.bytes())
        except self._closed_error as exc:
            raise RuntimeError("HttpInvoker is closed; create a new one") from exc
        except self._error as exc:
            return _reqwest_failure(exc, display(url), timeout_s, attempt)
        except ValueError as exc:
            # A URL or header value reqwest refuses: no retry would change it.
            return Outcome.terminal(f"cannot send POST {display(url)}: {exc}")
        return outcome_from_http(response.status, response.headers, content)

    async def aclose(self) -> None:
        verbatim, self._verbatim = self._verbatim, None
        await self._client.close()
        if verbatim is not None:
            await verbatim.aclose()


def _reqwest_failure(exc: Exception, shown_url: str, timeout_s: float, attempt: int) -> Outcome:
    """A transport error as a retry. reqwest's error kinds are coarse (a total timeout comes
    as ConnectTimeoutError, a server hanging up as ConnectError): its chain of causes says
    what happened -- hyper names the phase, ``client error (Connect)`` or ``(SendRequest)``."""
    from pyreqwest.exceptions import RequestTimeoutError

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
