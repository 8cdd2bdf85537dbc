"""One ASGI app served by uvicorn inside the caller's event loop: the admin API, the local
Lambda endpoint, the example handlers and the tests' handler servers all run this way.

* The socket is bound before uvicorn starts, so the address (port 0 picks a free one) is known
  at once and "address in use" is an error of :meth:`AsgiServer.start`, not of a background task.
* Readiness is an event set by uvicorn's own startup hook: no polling.
* Stopping is an event too: uvicorn's main loop would otherwise poll ``should_exit`` every 0.1 s.
* Signals belong to whoever owns the event loop; uvicorn takes SIGINT/SIGTERM over only with
  ``capture_signals=True`` (then they stop the server and are re-raised once it has stopped).

Everything uvicorn can fail with is raised as :class:`~adapter.errors.LocalStackError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from types import FrameType
from typing import Any, Literal

import uvicorn

from adapter.errors import LocalStackError

__all__ = ["AsgiServer", "bind_tcp"]


def bind_tcp(host: str, port: int, *, reuse_address: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6), not listening yet; OSError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not the default 0: asyncio only sets TCP_NODELAY on sockets
    # that say they are TCP, and without it every keep-alive request stalls ~40 ms on Nagle
    # plus delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server that announces readiness and is stopped by an event."""

    def __init__(self, config: uvicorn.Config, *, capture_signals: bool) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._capture = capture_signals
        self._loop = asyncio.get_running_loop()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self._capture:
            with super().capture_signals():
                yield
        else:
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        # One tick first: it fills in the default response headers (date, server).
        if not await self.on_tick(0):
            await self._stop.wait()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Only called for captured signals: wake main_loop (from a signal handler, so through
        # the loop's thread-safe entry point).
        super().handle_exit(sig, frame)
        self._loop.call_soon_threadsafe(self._stop.set)


class AsgiServer:
    """``await start()`` binds and serves ``app`` in the background; ``await stop()`` ends it.

    ``graceful_shutdown_s`` is how long ``stop()`` lets running requests finish before they are
    cancelled; ``log_level=None`` leaves uvicorn's loggers as the process configured them.
    ``http_protocol`` replaces uvicorn's HTTP protocol class (the admin API's bounds its
    requests); ``limit_concurrency`` answers 503 past that many connections or requests;
    ``max_header_bytes`` is the h11 protocol's bound on an incomplete request head.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifespan: Literal["auto", "on", "off"] = "off",
        log_level: str | None = "warning",
        graceful_shutdown_s: int = 2,
        capture_signals: bool = False,
        reuse_address: bool = False,
        http_protocol: type[Any] | None = None,
        limit_concurrency: int | None = None,
        max_header_bytes: int | None = None,
    ) -> None:
        self._app = app
        self._http_protocol = http_protocol
        self._limit_concurrency = limit_concurrency
        self._max_header_bytes = max_header_bytes
        self._host = host
        self._port = port
        self._lifespan: Literal["auto", "on", "off"] = lifespan
        self._log_level = log_level
        self._graceful_shutdown_s = graceful_shutdown_s
        self._capture_signals = capture_signals
        self._reuse_address = reuse_address
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: str | None = None
        """``host:port`` (``[host]:port`` for IPv6) once started."""

    @property
    def url(self) -> str:
        if self.address is None:
            raise RuntimeError("the ASGI server is not started")
        return f"http://{self.address}"

    async def start(self, timeout_s: float | None = 10.0) -> str:
        """Serve until :meth:`stop`; returns the base URL once uvicorn is ready.

        Raises LocalStackError when the address cannot be bound, uvicorn exits during startup
        (a failed lifespan startup) or is not ready within ``timeout_s`` (None: no limit).
        """
        if self._task is not None:
            raise RuntimeError(f"the ASGI server on {self.address} is already started")
        try:
            sock = bind_tcp(self._host, self._port, reuse_address=self._reuse_address)
        except OSError as exc:
            raise LocalStackError(f"cannot listen on {self._host}:{self._port}: {exc}") from exc
        host, port = sock.getsockname()[:2]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        config = uvicorn.Config(
            self._app,
            lifespan=self._lifespan,
            log_level=self._log_level,
            log_config=None,  # leave the process-wide logging configuration alone
            access_log=False,
            timeout_graceful_shutdown=self._graceful_shutdown_s,
            http=self._http_protocol or "auto",
            limit_concurrency=self._limit_concurrency,
            h11_max_incomplete_event_size=self._max_header_bytes,
        )
        self._server = server = _Server(config, capture_signals=self._capture_signals)
        self._task = task = asyncio.create_task(_serve(server, sock), name=f"uvicorn {address}")
        ready = asyncio.create_task(server.ready.wait())
        done, _ = await asyncio.wait(
            {ready, task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                self._server = self._task = None
                task.result()  # re-raises why uvicorn did not start
            await self.stop()
            raise LocalStackError(f"uvicorn on {address} not ready after {timeout_s}s")
        self.address = address
        return self.url

    async def wait(self) -> None:
        """Until the server stops (returns at once if it is not started)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving; after ``timeout_s`` the shutdown is forced. A no-op if not started."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            server.force_exit = True
            await task

    async def __aenter__(self) -> AsgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def _serve(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn sys.exit()s when the app's lifespan startup fails; inside a task that would
        # escape the event loop and end the whole process.
        raise LocalStackError(f"uvicorn exited during startup (exit code {exc.code})") from exc
    finally:
        sock.close()  # uvicorn closes it only if it got as far as serving
