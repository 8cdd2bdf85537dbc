"""The poller process: supervisor + ledger writer + invokers (+ admin API when enabled).

One asyncio task group owns all background work, so a failure of any part surfaces here and
shuts the process down cleanly instead of leaving a half-working poller behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

from adapter.config import Settings
from adapter.engine.ledger import LedgerWriter
from adapter.engine.supervisor import Supervisor
from adapter.invokers.base import Invoker
from adapter.invokers.http import HttpInvoker
from adapter.kafka.options import IngressOptions
from adapter.model import Target
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.tables import TableNames

__all__ = ["Poller", "build_store"]

log = logging.getLogger(__name__)


def build_store(settings: Settings) -> DynamoStore:
    client = make_client(settings.dynamodb.endpoint_url, settings.dynamodb.region)
    return DynamoStore(
        client,
        TableNames(settings.dynamodb.table_prefix),
        retention_s=settings.limits.ledger_retention_days * 86400,
    )


@dataclass
class Poller:
    """Everything one poller instance runs. ``run()`` until ``stop()`` (or SIGTERM/SIGINT)."""

    settings: Settings
    store: DynamoStore
    ledger: LedgerWriter = field(init=False)
    supervisor: Supervisor = field(init=False)
    http: HttpInvoker = field(init=False)
    _stop: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _started: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.ledger = LedgerWriter(self.store)
        self.http = HttpInvoker(timeout_s=self.settings.limits.invocation_timeout_ms / 1000)
        self.supervisor = Supervisor(self.settings, self.store, self.ledger, self._invoker_for)

    def _invoker_for(self, target: Target, options: IngressOptions) -> Invoker:
        """The invoker for a target: HTTP deployments share one pooled client."""
        return self.http

    def stop(self) -> None:
        self._stop.set()

    async def started(self) -> None:
        await self._started.wait()

    async def run(self, *, handle_signals: bool = False, extra: list[Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        ledger_task = asyncio.create_task(self.ledger.run(), name="ledger writer")
        supervisor_task = asyncio.create_task(self.supervisor.run(), name="supervisor")
        extra_tasks = [asyncio.create_task(c) for c in (extra or [])]
        stop_task = asyncio.create_task(self._stop.wait())
        self._started.set()
        tasks = {ledger_task, supervisor_task, stop_task, *extra_tasks}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_task and not task.cancelled() and task.exception():
                    log.error("poller component failed", exc_info=task.exception())
        finally:
            log.info("poller stopping: draining subscriptions")
            supervisor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor_task
            # The supervisor's shutdown drained every runner; wait for their ledger rows.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ledger.flushed(), 10)
            for task in (ledger_task, stop_task, *extra_tasks):
                task.cancel()
            await asyncio.gather(ledger_task, stop_task, *extra_tasks, return_exceptions=True)
            await self.http.aclose()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info(
                "poller stopped: %d ledger rows written, %d pending",
                self.ledger.written,
                self.ledger.pending,
            )
