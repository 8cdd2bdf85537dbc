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

from adapter.api.catalog import ClusterCatalog
from adapter.api.emf import EmfEmitter
from adapter.api.server import AdminServer, admin_state
from adapter.config import Settings
from adapter.engine.ledger import LedgerWriter
from adapter.engine.shard_filter import ShardFilter
from adapter.engine.supervisor import Supervisor
from adapter.invokers.aws_lambda import LambdaClient, LambdaInvoker
from adapter.invokers.base import Invoker
from adapter.invokers.batching import BatchingInvoker
from adapter.invokers.http import HttpInvoker
from adapter.invokers.kafka_event import EventSource
from adapter.invokers.signing import RequestSigner
from adapter.kafka.options import IngressOptions
from adapter.model import HandlerType, Target
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.sealing import SecretSealing
from adapter.store.tables import TableNames

__all__ = ["Poller", "build_store"]

log = logging.getLogger(__name__)


def build_store(settings: Settings) -> DynamoStore:
    client = make_client(settings.dynamodb.endpoint_url, settings.dynamodb.region)
    return DynamoStore(
        client,
        TableNames(settings.dynamodb.table_prefix),
        retention_s=settings.limits.ledger_retention_days * 86400,
        success_pages=settings.ledger.successes == "pages",
        secrets=SecretSealing.from_settings(settings),
    )


@dataclass
class Poller:
    """Everything one poller instance runs. ``run()`` until ``stop()`` (or SIGTERM/SIGINT)."""

    settings: Settings
    store: DynamoStore
    ledger: LedgerWriter = field(init=False)
    supervisor: Supervisor = field(init=False)
    http: HttpInvoker = field(init=False)
    signer: RequestSigner | None = field(init=False)
    _lambda_client: LambdaClient | None = field(init=False, default=None)
    _lambda_invokers: dict[tuple[str, int | None, EventSource], Invoker] = field(
        init=False, default_factory=dict
    )
    _stop: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _started: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    admin: bool = True
    """Serve the admin API on ``settings.admin.bind_address`` (port 0 picks a free port)."""
    catalog: ClusterCatalog = field(init=False)
    admin_server: AdminServer | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # With success pages a longer linger means fewer, fuller pages (at 1,000 records/s:
        # ~20 requests per 1,000 records instead of ~60). A row is an item however it is
        # batched, so rows keep the short linger: bench/ scenario (e) measured the longer one
        # adding ~50-80 ms to p99 there, the ledger's writes arriving in larger bursts.
        linger_s = 0.05 if self.settings.ledger.successes == "pages" else 0.01
        self.ledger = LedgerWriter(self.store, linger_s=linger_s)
        self.signer = RequestSigner.from_settings(self.settings.signing)
        self.http = HttpInvoker(
            timeout_s=self.settings.limits.invocation_timeout_ms / 1000,
            sign=self.signer,
            deny_private_targets=self.settings.security.deny_private_targets,
            client=self.settings.http.client,
        )
        self.catalog = ClusterCatalog(self.settings, self.store)
        self.supervisor = Supervisor(
            self.settings,
            self.store,
            self.ledger,
            self._invoker_for,
            clusters=self.catalog.snapshot,
            refresh_clusters=self.catalog.refresh,
        )
        # Pollers of a group share its subscriptions through a shard map per Kafka cluster.
        supervisor = self.supervisor
        self.supervisor.shards = ShardFilter(
            self.settings.poller,
            client_kwargs=supervisor.cluster_client_kwargs,
            cluster_options=lambda name: (
                cluster.options if (cluster := self.catalog.snapshot().get(name)) else {}
            ),
            on_change=supervisor.wake,
            table_prefix=self.settings.dynamodb.table_prefix,
            on_signal=supervisor.wake,
        )
        supervisor.change_listeners.covered = self.supervisor.shards.listens

    def _invoker_for(self, target: Target, options: IngressOptions) -> Invoker:
        """The invoker for a target: HTTP deployments share one pooled client; Lambda ones
        share one boto3 client, with an invoker per event format and batch size."""
        if not target.deployment.arn:
            return self.http
        source = EventSource(
            bootstrap_servers=options.bootstrap_servers, msk_cluster_arn=options.msk_cluster_arn
        )
        # Partition batches (ESM) call whole batches themselves; concurrent batch mode groups
        # concurrent invocations in the BatchingInvoker.
        concurrent = not options.partition_batches(is_lambda=True) or (
            target.handler_type is HandlerType.WORKFLOW
        )
        batch_size = options.batch_size if concurrent else None
        key = (options.event_format, batch_size, source)
        invoker = self._lambda_invokers.get(key)
        if invoker is None:
            if self._lambda_client is None:
                self._lambda_client = LambdaClient(
                    endpoint_url=self.settings.lambda_.endpoint_url,
                    region=self.settings.lambda_.region,
                    timeout_s=self.settings.limits.invocation_timeout_ms / 1000,
                )
            invoker = LambdaInvoker(
                self._lambda_client,
                event_format=options.event_format,
                sign=self.signer,
                event_source=source,
            )
            if batch_size and batch_size > 1:
                invoker = BatchingInvoker(invoker, batch_size=batch_size)
            self._lambda_invokers[key] = invoker
        return invoker

    def stop(self) -> None:
        self._stop.set()

    async def started(self) -> None:
        await self._started.wait()

    @property
    def admin_address(self) -> str | None:
        """``host:port`` the admin API listens on, once ``run()`` has started it."""
        return self.admin_server.address if self.admin_server is not None else None

    async def run(self, *, handle_signals: bool = False, extra: list[Any] | None = None) -> None:
        if self.admin:
            self.admin_server = AdminServer(
                admin_state(
                    self.settings,
                    self.store,
                    self.catalog,
                    supervisor=self.supervisor,
                    ledger=self.ledger,
                    signer=self.signer,
                ),
                self.settings.admin.bind_address,
            )
            await self.admin_server.start()
            extra = [*(extra or []), self.admin_server.wait()]
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        metrics = self.settings.metrics
        if metrics.cloudwatch_emf:
            supervisor = self.supervisor
            emitter = EmfEmitter(
                metrics.service,
                status=supervisor.status,
                partitions=lambda: {
                    sub_id: runner.partition_status()
                    for sub_id, runner in supervisor.runners().items()
                },
                interval_s=metrics.cloudwatch_emf_interval_s,
            )
            extra = [*(extra or []), emitter.run()]
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
            if self.admin_server is not None:
                await self.admin_server.stop()
            supervisor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor_task
            # The supervisor's shutdown drained every runner; wait for their ledger rows.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ledger.flushed(), 10)
            for task in (ledger_task, stop_task, *extra_tasks):
                task.cancel()
            await asyncio.gather(ledger_task, stop_task, *extra_tasks, return_exceptions=True)
            await self.store.aclose()
            await self.http.aclose()
            for invoker in self._lambda_invokers.values():
                await invoker.aclose()
            if self._lambda_client is not None:
                await self._lambda_client.aclose()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info(
                "poller stopped: %d results written to the ledger, %d pending",
                self.ledger.written,
                self.ledger.pending,
            )
