"""Serving the admin API inside a poller: uvicorn on the configured address.

The socket is bound before uvicorn starts, so the bound address (port 0 picks a free one, as
the tests do) is known at once and a port in use fails start-up with a clear error. uvicorn's
own signal handling is switched off: the poller owns SIGTERM/SIGINT and stops the server as
part of its orderly shutdown.

Without a token the API is open. That is only said quietly for an explicit ``allow-open`` on a
loopback address (``make dev``); anything else gets a loud warning at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Generator

import uvicorn

from adapter.api.app import create_app
from adapter.api.catalog import ClusterCatalog
from adapter.api.endpoint import AdminState
from adapter.api.groups import reset_group_offsets
from adapter.api.readiness import KafkaReadiness
from adapter.config import Settings
from adapter.engine.ledger import LedgerWriter
from adapter.engine.supervisor import Supervisor
from adapter.errors import ConfigError
from adapter.invokers.discovery import Discovery
from adapter.store.dynamo import DynamoStore

__all__ = ["AdminServer", "admin_state", "open_admin_warning"]

log = logging.getLogger("kafka_ingress.admin")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_admin_warning(host: str, *, token: str | None, allow_open: bool) -> str | None:
    """The start-up warning for an admin API without a token (None when there is no need)."""
    if token:
        return None
    if allow_open and _is_loopback(host):
        return None
    reason = (
        "[admin] allow-open = true"
        if allow_open
        else "no [admin] token is configured (KAFKA_INGRESS_ADMIN_TOKEN)"
    )
    return (
        f"THE ADMIN API ON {host} IS OPEN: {reason}. Anyone who can reach it can create and "
        "delete subscriptions, register handlers and kill invocations. Set [admin] token "
        "(at least 16 characters) to require 'Authorization: Bearer <token>'."
    )


def admin_state(
    settings: Settings,
    store: DynamoStore,
    catalog: ClusterCatalog,
    *,
    supervisor: Supervisor | None = None,
    ledger: LedgerWriter | None = None,
) -> AdminState:
    """The admin API wired to real discovery, offset resets and readiness checks."""
    return AdminState(
        settings=settings,
        store=store,
        catalog=catalog,
        supervisor=supervisor,
        ledger=ledger,
        discover=Discovery(
            lambda_endpoint_url=settings.lambda_.endpoint_url, lambda_region=settings.lambda_.region
        ),
        reset_offsets=reset_group_offsets,
        check_kafka=KafkaReadiness(),
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The poller handles signals; uvicorn must not take them over (or re-raise them).
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        if not await self.on_tick(0):
            await self._stop.wait()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()


class AdminServer:
    """``await start()`` binds and serves in the background; ``await stop()`` ends it."""

    def __init__(self, state: AdminState, bind_address: str) -> None:
        self._state = state
        host, _, port = bind_address.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: str | None = None

    @property
    def url(self) -> str:
        assert self.address is not None, "the admin server is not started"
        return f"http://{self.address}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"[admin] bind-address {self._host}:{self._port}: cannot listen ({exc}); "
                "choose another port"
            ) from exc
        return sock

    async def start(self) -> None:
        settings = self._state.settings.admin
        warning = open_admin_warning(
            self._host, token=settings.token, allow_open=settings.allow_open
        )
        if warning:
            log.warning("%s", warning)
        sock = self._bind()
        host, port = sock.getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        config = uvicorn.Config(
            create_app(self._state),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(self._serve(server, sock), name="admin API")
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self._task  # re-raises why it did not start
        log.info("admin API listening on http://%s", self.address)

    async def _serve(self, server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn exits the process when it cannot start; inside a poller that is an error.
            raise ConfigError(f"the admin API could not start (exit code {exc.code})") from exc
        finally:
            sock.close()

    async def wait(self) -> None:
        """Until the server stops (returns at once if it was never started)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
