"""Serving the admin API inside a poller: uvicorn on the configured address.

The socket is bound before uvicorn starts, so the bound address (port 0 picks a free one, as
the tests do) is known at once and a port in use fails start-up with a clear error. uvicorn's
own signal handling is switched off: the poller owns SIGTERM/SIGINT and stops the server as
part of its orderly shutdown.

Without a token the API is open. That is only said quietly for an explicit ``allow-open`` on a
loopback address (``make dev``); anything else gets a loud warning at start-up.
"""

from __future__ import annotations

import ipaddress
import logging

from adapter.api.app import create_app
from adapter.api.catalog import ClusterCatalog
from adapter.api.endpoint import AdminState
from adapter.api.groups import reset_group_offsets
from adapter.api.limits import RequestLimits, h11_protocol
from adapter.api.readiness import KafkaReadiness
from adapter.config import Settings
from adapter.engine.ledger import LedgerWriter
from adapter.engine.supervisor import Supervisor
from adapter.errors import ConfigError, LocalStackError
from adapter.invokers.discovery import Discovery
from adapter.invokers.signing import RequestSigner
from adapter.kafka.change_signal import ChangeSignaller
from adapter.local.asgi_server import AsgiServer
from adapter.masking import remember_secret
from adapter.secrets import SecretResolver
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
    signer: RequestSigner | None = None,
) -> AdminState:
    """The admin API wired to real discovery, offset resets and readiness checks."""
    # One cache of referenced secrets: a refusal seen by the consumers refreshes it for all.
    secret_refs = (
        supervisor.secret_refs if supervisor is not None else SecretResolver.from_settings(settings)
    )
    return AdminState(
        settings=settings,
        store=store,
        catalog=catalog,
        supervisor=supervisor,
        ledger=ledger,
        discover=Discovery(
            lambda_endpoint_url=settings.lambda_.endpoint_url,
            lambda_region=settings.lambda_.region,
            sign=signer.headers_for if signer is not None else None,
            deny_private=settings.security.deny_private_targets,
        ),
        reset_offsets=reset_group_offsets,
        signals=ChangeSignaller(),
        check_kafka=KafkaReadiness(
            shared_token_provider=supervisor.token_provider if supervisor is not None else None,
            secret_refs=secret_refs,
        ),
        secret_refs=secret_refs,
    )


class AdminServer:
    """``await start()`` binds and serves in the background; ``await stop()`` ends it."""

    def __init__(self, state: AdminState, bind_address: str) -> None:
        self._state = state
        host, _, port = bind_address.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        limits = RequestLimits.from_settings(state.settings.admin)
        remember_secret(state.settings.admin.token)  # masked wherever it might be quoted
        self._server = AsgiServer(
            create_app(state),
            host=self._host,
            port=self._port,
            log_level=None,
            graceful_shutdown_s=5,
            reuse_address=True,
            http_protocol=h11_protocol(limits),
            limit_concurrency=state.settings.admin.max_connections,
            # h11's own bound (a plain 400) stays above ours (a 431 with a message).
            max_header_bytes=limits.max_header_bytes + 4096,
        )

    @property
    def address(self) -> str | None:
        """``host:port`` (``[host]:port`` for IPv6) once started."""
        return self._server.address

    @property
    def url(self) -> str:
        assert self.address is not None, "the admin server is not started"
        return f"http://{self.address}"

    async def start(self) -> None:
        settings = self._state.settings.admin
        warning = open_admin_warning(
            self._host, token=settings.token, allow_open=settings.allow_open
        )
        if warning:
            log.warning("%s", warning)
        try:
            await self._server.start(timeout_s=None)
        except LocalStackError as exc:
            raise ConfigError(
                f"[admin] bind-address {self._host}:{self._port}: the admin API could not "
                f"start ({exc}); choose another port"
            ) from exc
        log.info("admin API listening on http://%s", self.address)

    async def wait(self) -> None:
        """Until the server stops (returns at once if it was never started)."""
        await self._server.wait()

    async def stop(self) -> None:
        await self._server.stop()
        if self._state.signals is not None:
            await self._state.signals.aclose()
        if isinstance(self._state.check_kafka, KafkaReadiness):
            await self._state.check_kafka.aclose()
