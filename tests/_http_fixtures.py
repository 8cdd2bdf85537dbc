"""Pytest plugin: real uvicorn servers on loopback for HTTP handler tests.

Register with ``pytest_plugins = ["tests._http_fixtures"]``. The ``handler_server`` fixture is a
factory: ``base_url = await handler_server(app)`` serves any ASGI app on a fresh loopback port,
in the test's own event loop, and returns ``http://127.0.0.1:<port>``. Every server started is
stopped at teardown.

Readiness is an event set by the server's own startup hook and the port is bound before the
server starts (no "pick a free port, hope it stays free" race), so there is no polling or
sleeping on our side.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Literal

import pytest
import uvicorn
from starlette.types import ASGIApp

__all__ = ["HandlerServer", "handler_server", "refused_port"]

HandlerServer = Callable[..., Awaitable[str]]
"""``await handler_server(app, *, lifespan="auto") -> base URL``."""

_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """A uvicorn server that announces readiness instead of being polled for it."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        # uvicorn's own loop polls should_exit every 0.1 s; wait for the stop event instead.
        # One tick first: it fills in the default response headers (date, server).
        if not await self.on_tick(0):
            await self._stop.wait()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # serve() routes SIGINT/SIGTERM here while it runs; keep Ctrl-C working by waking
        # main_loop (from a signal handler, so through the loop's thread-safe entry point).
        super().handle_exit(sig, frame)
        self._loop.call_soon_threadsafe(self._stop.set)


def _bound_socket() -> socket.socket:
    # proto must be IPPROTO_TCP, not the default 0: asyncio only sets TCP_NODELAY on sockets
    # that say they are TCP, and without it every keep-alive request stalls ~40 ms on Nagle
    # plus delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _serve(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn sys.exit()s when the app's lifespan startup fails; inside a task that
        # would escape the event loop and end the whole test session.
        raise RuntimeError(f"uvicorn failed to start (exit code {exc.code})") from exc
    finally:
        sock.close()  # uvicorn closes it only if it got as far as serving


@pytest.fixture
async def handler_server() -> AsyncIterator[HandlerServer]:
    """Factory fixture: serve an ASGI app on loopback, return its base URL."""
    running: list[tuple[_Server, asyncio.Task[None]]] = []

    async def start(app: ASGIApp, *, lifespan: Literal["auto", "on", "off"] = "auto") -> str:
        sock = _bound_socket()
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            log_config=None,  # leave the process-wide logging configuration alone
            access_log=False,
            # Handlers that are still running at teardown (e.g. a deliberately hung one in a
            # timeout test) are cancelled instead of holding the test up.
            timeout_graceful_shutdown=1,
        )
        server = _Server(config)
        task = asyncio.create_task(_serve(server, sock), name=f"uvicorn:{port}")
        running.append((server, task))
        ready = asyncio.create_task(server.ready.wait())
        done, _ = await asyncio.wait(
            {ready, task}, timeout=_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                running.pop()  # failed and reported here; nothing left to stop
                task.result()  # re-raise the server's startup failure
            raise RuntimeError(f"uvicorn on port {port} not ready after {_READY_TIMEOUT}s")
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server, _ in running:
            server.stop()
        for server, task in running:
            try:
                await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT)
            except TimeoutError:
                server.force_exit = True
                await task


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, so nothing else can take it for the
    test's duration, but never listening."""
    sock = _bound_socket()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
