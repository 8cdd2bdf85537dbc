"""The HTTP invoker: ``POST`` one invocation to a deployment over a pooled keep-alive client.

A thin shell around :mod:`adapter.engine.mapping`: the URL comes from :func:`invoke_url`, the
outcome from :func:`outcome_from_http`. This module only adds transport concerns -- one shared
keep-alive connection pool, a per-request deadline, the address check of
:mod:`adapter.invokers.targets`, request signing, and the send fence
(:mod:`adapter.invokers.base`) after every wait, the wait for a free connection included
(:mod:`adapter.invokers.slots`):

    deployment without a usable http(s) URL, invalid URL                   → Outcome.terminal
    deployment address refused (link-local, metadata; see invokers.targets) → Outcome.terminal

The client library is aiohttp, or pyreqwest when the ``fast-http`` extra is installed
(:mod:`adapter.invokers.http_clients`, which also maps each library's errors to outcomes).

Header precedence, lowest to highest (case-insensitive): the mapped request headers, then the
deployment's ``additional_headers``, then whatever the ``sign`` hook returns.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict
from yarl import URL

from adapter.engine.mapping import HEADER_ATTEMPT, invoke_url, with_attempt
from adapter.errors import IngressError, TerminalInvokeError
from adapter.invokers.base import InvocationRequest, Outcome, check_fence
from adapter.invokers.http_clients import (
    AiohttpTransport,
    ClientName,
    ReqwestTransport,
    Transport,
    display,
    resolve_client,
)
from adapter.invokers.slots import Slots
from adapter.invokers.targets import RECHECK_S, TargetRefused, check_target

__all__ = ["HttpInvoker", "HttpInvokerState", "Signer"]

Signer = Callable[[InvocationRequest, str], Mapping[str, str]]
"""Request-signing hook: gets the request and its final URL, returns headers to add."""

_log = logging.getLogger(__name__)


class HttpInvokerState(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class HttpInvoker:
    """Invoke HTTP handlers; one instance serves every deployment of a poller.

    The client is created lazily on first use, inside the running event loop, and is bound to
    that loop. ``aclose()`` releases the pool; using the invoker afterwards raises
    :class:`RuntimeError`. ``limit`` bounds the requests in flight at once (0: no bound): it
    is the size of the pool, and as many slots (:mod:`adapter.invokers.slots`) keep requests
    from waiting inside the client for a connection, where no send fence covers them.
    ``client`` chooses the library (:func:`~adapter.invokers.http_clients.resolve_client`);
    an unknown or uninstalled one is a :class:`ValueError` here, not at the first request.
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
        client: ClientName = "auto",
    ) -> None:
        self.client = resolve_client(client)
        _log.info("HTTP invoker client: %s (asked for %s)", self.client, client)
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
        self._limit = limit
        self._slots = Slots(limit) if limit else None
        self._keepalive_timeout_s = keepalive_timeout_s
        self._sign = sign
        self._state = HttpInvokerState.UNOPENED
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Normalised base URL per deployment URI (or the reason it is unusable), so the
        # per-request work is string concatenation.
        self._bases: dict[str, str | _InvalidBase] = {}
        # Per deployment URI: when its address was last checked, and why it is refused.
        self._deny_private = deny_private_targets
        self._targets: dict[str, tuple[float, str | None]] = {}
        # The check under way per deployment URI: requests that find the cache stale at once
        # (up to the in-flight limit, every RECHECK_S) share one name resolution.
        self._checking: dict[str, asyncio.Future[str | None]] = {}

    def __repr__(self) -> str:
        return (
            f"HttpInvoker(client={self.client}, state={self._state.value}, "
            f"timeout_s={self._timeout_s}, limit={self._limit})"
        )

    @property
    def state(self) -> HttpInvokerState:
        return self._state

    async def __aenter__(self) -> HttpInvoker:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> Transport:
        transport = self._transport
        if transport is not None and asyncio.get_running_loop() is self._loop:
            return transport
        if self._state is HttpInvokerState.CLOSED:
            raise RuntimeError("HttpInvoker is closed; create a new one")
        loop = asyncio.get_running_loop()
        if transport is not None:
            raise RuntimeError("HttpInvoker is bound to the event loop it was first used in")
        kind = ReqwestTransport if self.client == "pyreqwest" else AiohttpTransport
        self._transport = transport = kind(
            limit=self._limit,
            keepalive_timeout_s=self._keepalive_timeout_s,
            connect_timeout_s=self._connect_timeout_s,
            deny_private=self._deny_private,
        )
        self._loop = loop
        self._state = HttpInvokerState.OPENED
        return transport

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        self._state = HttpInvokerState.CLOSED
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    def _base(self, uri: str | None, deployment_id: str, transport: Transport) -> str:
        if uri is None:
            raise TerminalInvokeError(f"deployment {deployment_id} has no HTTP uri")
        cached = self._bases.get(uri)
        if cached is None:
            cached = _normalise_base(uri, deployment_id, transport)
            self._bases[uri] = cached
        if isinstance(cached, _InvalidBase):
            raise TerminalInvokeError(cached.message)
        return cached

    async def _check_shared(self, uri: str, now: float) -> str | None:
        """:meth:`_check`, one at a time per URI: callers arriving while it runs await the
        same answer. Shielded, so a caller cancelled meanwhile (a kill, a stop) does not
        cancel the others' check."""
        pending = self._checking.get(uri)
        if pending is None:
            pending = asyncio.ensure_future(self._check(uri, now))
            self._checking[uri] = pending
            pending.add_done_callback(lambda _: self._checking.pop(uri, None))
        return await asyncio.shield(pending)

    async def _check(self, uri: str, now: float) -> str | None:
        """Why requests to ``uri`` are refused (:mod:`adapter.invokers.targets`), cached with
        the time ``now`` and re-checked at most every RECHECK_S seconds (``invoke`` reads the
        cache); None when allowed or not resolvable right now (the request then fails, and is
        retried, as any unreachable handler is)."""
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
        transport = self._open()
        if request.headers.get(HEADER_ATTEMPT) != str(request.attempt):
            # A retry made with dataclasses.replace(request, attempt=n) would otherwise tell
            # the handler it is attempt 1 again.
            request = with_attempt(request, request.attempt)
        deployment = request.target.deployment
        try:
            base = self._base(deployment.uri, deployment.id, transport)
            url = invoke_url(base, request.target, request.key)
        except TerminalInvokeError as exc:
            return Outcome.terminal(str(exc))
        # The check's answer is cached: read it here, no coroutine per request (hot path).
        checked = self._targets.get(base)
        now = time.monotonic()
        if checked is not None and now - checked[0] < RECHECK_S:
            refused = checked[1]
        else:
            refused = await self._check_shared(base, now)
            check_fence()  # the check waited for name resolution
        if refused is not None:
            return Outcome.terminal(f"deployment {deployment.id}: {refused}")

        # A slot per pooled connection, held until the client has released its connection:
        # with one, the client never waits for a connection after the last fence check. A
        # plain method call when one is free (hot path); taken before signing, so a request
        # that waited is signed when it goes out.
        slots = self._slots
        if slots is not None and not slots.take_nowait():
            await slots.take()
        try:
            headers: Mapping[str, str] = request.headers
            if deployment.additional_headers or self._sign is not None:
                # Case-insensitive override; a plain dict merge would send both
                # "Authorization" and "authorization".
                merged: CIMultiDict[str] = CIMultiDict(request.headers)
                merged.update(deployment.additional_headers)
                if self._sign is not None:
                    merged.update(self._sign(request, url))
                headers = merged

            timeout_s = request.timeout_s or self._timeout_s
            # The last check, once the request is signed and right before the client takes
            # it: a pause since the engine's check, or any wait above (a free connection), is
            # caught here; a request that passes was signed before any pause that follows, so
            # whatever the client writes after a wake was in flight at the pause.
            check_fence()
            return await transport.post(url, request.body, headers, timeout_s, request.attempt)
        finally:
            if slots is not None:
                slots.release()


@dataclass(frozen=True, slots=True)
class _InvalidBase:
    message: str


def _normalise_base(uri: str, deployment_id: str, transport: Transport) -> str | _InvalidBase:
    try:
        # Not encoded=True: the configured base may be human-written; quote it once here so
        # the per-request URL can be passed to aiohttp as already encoded.
        url = URL(uri)
        host = url.host
    except (ValueError, TypeError) as exc:
        shown = display(uri)
        return _InvalidBase(f"deployment {deployment_id} has an invalid uri {shown!r}: {exc}")
    if url.scheme not in ("http", "https") or not host:
        return _InvalidBase(
            f"deployment {deployment_id} uri {display(url)} is not an absolute http(s) URL"
        )
    if url.query_string or url.fragment:
        return _InvalidBase(
            f"deployment {deployment_id} uri {display(url)} must not have a query or fragment"
        )
    refused = transport.check_base(str(url))
    if refused is not None:
        return _InvalidBase(f"deployment {deployment_id} uri {display(url)} is invalid: {refused}")
    return str(url)
