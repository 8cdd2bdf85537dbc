"""Request limits of the admin API: nothing a client sends is unbounded.

The admin API shares the poller's event loop with every consumer and invoker, so a request
that is too large, or too slow to arrive, must be turned away before it costs memory or time:

========================================  ======  ===============================================
what                                      status  where
========================================  ======  ===============================================
request line + headers > max-header-bytes  431    :class:`LimitedH11Protocol`, while reading them
more than max-headers headers              431    :class:`RequestLimitMiddleware`
headers not complete within the timeout    408    :class:`LimitedH11Protocol` (slow clients)
Content-Length > max-body-bytes            413    :class:`RequestLimitMiddleware`, before reading
body larger than max-body-bytes (chunked)  413    :class:`RequestLimitMiddleware`, while reading
body not complete within the timeout       408    :class:`RequestLimitMiddleware`
more connections than max-connections      503    uvicorn's ``limit_concurrency``
========================================  ======  ===============================================

JSON nesting and string lengths are checked where the body is parsed
(:func:`adapter.api.endpoint.read_body`). Every refusal has the API's error shape.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from adapter.api.errors import error_response
from adapter.config import AdminSettings

__all__ = ["LimitedH11Protocol", "RequestLimitMiddleware", "RequestLimits", "h11_protocol"]


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    max_body_bytes: int = 1024 * 1024
    body_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, admin: AdminSettings) -> RequestLimits:
        return cls(
            max_header_bytes=admin.max_header_bytes,
            max_headers=admin.max_headers,
            header_timeout_s=admin.header_timeout_s,
            max_body_bytes=admin.max_body_bytes,
            body_timeout_s=max(admin.header_timeout_s, 30.0),
        )


_LINGER_S = 2.0
_REASONS = {
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


def _raw_error(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection (written before h11
    has seen a request, so it cannot be sent through h11)."""
    body = json.dumps({"message": message, "restate_code": None}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a bound on the size of, and the time taken by, the request
    line and headers (uvicorn bounds neither on its own: httptools not at all, h11 only with
    a plain 400). Subclassed per server by :func:`h11_protocol`, which sets ``limits``."""

    limits = RequestLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes seen, to find a "\r\n\r\n" split across reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_bytes = 0
        self._head_tail = b""
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has its own deadline

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: what the client still sends is dropped
        if self.conn.their_state is h11.IDLE:
            # Count up to the end of the headers only: a body may arrive in the same read.
            window = self._head_tail + data
            end = window.find(b"\r\n\r\n")
            counted = len(data) if end < 0 else end + 4 - len(self._head_tail)
            self._head_bytes += max(counted, 0)
            self._head_tail = window[-3:]
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    f"request line and headers are larger than {self.limits.max_header_bytes} "
                    "bytes",
                )
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse(
                    408,
                    f"the request headers did not arrive within {self.limits.header_timeout_s:g}s",
                )
            else:
                self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, message: str) -> None:
        # Closing at once, with the client's bytes unread, would reset the connection and
        # the client might never read the answer: half-close and drop what still comes, for
        # a moment (a "lingering close", as nginx does), then close.
        self._disarm()
        self._refused = True
        self.transport.write(_raw_error(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)


def h11_protocol(limits: RequestLimits) -> type[LimitedH11Protocol]:
    """The protocol class for one server's limits (uvicorn instantiates it per connection)."""
    return type("AdminH11Protocol", (LimitedH11Protocol,), {"limits": limits})


class RequestLimitMiddleware:
    """Header count and body size and time: the body is read here, within the limits, and
    replayed to the app, so no route ever sees an unbounded body."""

    def __init__(self, app: ASGIApp, *, limits: RequestLimits) -> None:
        self._app = app
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limits = self._limits
        headers = scope.get("headers", [])
        if len(headers) > limits.max_headers:
            response = error_response(431, f"more than {limits.max_headers} request headers")
            await response(scope, receive, send)
            return
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None and (
            not declared.isdigit() or int(declared) > limits.max_body_bytes
        ):
            response = error_response(
                413, f"the request body is larger than {limits.max_body_bytes} bytes"
            )
            await response(scope, receive, send)
            return
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            body = None
            response = error_response(
                408, f"the request body did not arrive within {limits.body_timeout_s:g}s"
            )
        else:
            if body is not None:
                await self._app(scope, _replay(body, receive), send)
                return
            response = error_response(
                413, f"the request body is larger than {limits.max_body_bytes} bytes"
            )
        await response(scope, receive, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it exceeds the limit (reading stops there)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # disconnected: the app sees an empty/partial body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limits.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when the client goes away

    return replay
