"""Pytest plugin: real uvicorn servers on loopback for HTTP handler tests.

Register with ``pytest_plugins = ["tests._http_fixtures"]``. The ``handler_server`` fixture is a
factory: ``base_url = await handler_server(app)`` serves any ASGI app on a fresh loopback port,
in the test's own event loop, and returns ``http://127.0.0.1:<port>``. Every server started is
stopped at teardown.

The servers are :class:`adapter.local.asgi_server.AsgiServer`: readiness is an event set by the
server's own startup hook and the port is bound before the server starts (no "pick a free port,
hope it stays free" race), so there is no polling or sleeping on our side.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Literal

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from starlette.types import ASGIApp

from adapter.local.asgi_server import AsgiServer, bind_tcp

__all__ = ["AnsweringResolver", "HandlerServer", "handler_server", "refused_port"]

HandlerServer = Callable[..., Awaitable[str]]
"""``await handler_server(app, *, lifespan="auto") -> base URL``."""

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@pytest.fixture
async def handler_server() -> AsyncIterator[HandlerServer]:
    """Factory fixture: serve an ASGI app on loopback, return its base URL."""
    running: list[AsgiServer] = []

    async def start(app: ASGIApp, *, lifespan: Literal["auto", "on", "off"] = "auto") -> str:
        server = AsgiServer(
            app,
            lifespan=lifespan,
            # Handlers that are still running at teardown (e.g. a deliberately hung one in a
            # timeout test) are cancelled instead of holding the test up.
            graceful_shutdown_s=1,
            # Ctrl-C stops the servers first, then reaches pytest.
            capture_signals=True,
        )
        url = await server.start(timeout_s=_READY_TIMEOUT)
        running.append(server)
        return url

    try:
        yield start
    finally:
        await asyncio.gather(*(server.stop(_STOP_TIMEOUT) for server in running))


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, so nothing else can take it for the
    test's duration, but never listening."""
    sock = bind_tcp("127.0.0.1", 0)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(params=["aiohttp", "pyreqwest"])
def http_client(request: pytest.FixtureRequest) -> Literal["aiohttp", "pyreqwest"]:
    """The HTTP invoker's client library: tests taking it run against both."""
    name: Literal["aiohttp", "pyreqwest"] = request.param
    return name


class AnsweringResolver(AbstractResolver):
    """A name server for aiohttp answering every name with the given addresses; it records
    the names asked. Nothing is connected to by resolving."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True
