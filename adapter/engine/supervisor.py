"""The supervisor: keeps one runner per active subscription in this poller.

Every poller instance runs one. It follows the change feed (:mod:`adapter.engine.control`)
and starts, restarts (on a new revision) and stops runners. All instances of a subscription
join the same consumer group, so Kafka spreads the partitions across them: scaling out is
running more instances.

A runner that fails (cluster unreachable, authentication refused, unknown handler) is retried
with capped exponential backoff and its error is kept for the health and subscription APIs;
it never takes other subscriptions down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from adapter.config import KafkaCluster, Settings
from adapter.engine.batch_dispatch import BatchSettings
from adapter.engine.batches import MAX_PAYLOAD_BYTES, BatchPolicy, retries_for
from adapter.engine.change_listeners import ChangeListeners
from adapter.engine.commands import CommandPoller
from adapter.engine.control import ControlFeed, RefreshClusters, Registry
from adapter.engine.failure_destinations import FailureDestinations
from adapter.engine.ledger import LedgerWriter
from adapter.engine.retry import RetryPolicy
from adapter.engine.runner import SubscriptionRunner
from adapter.engine.settings import RunnerSettings, RunnerState
from adapter.engine.shard_filter import ShardFilter
from adapter.engine.timings import TIMINGS
from adapter.errors import ConfigError, IngressError, KafkaAuthError, StoreError
from adapter.failure_destination import DestinationKind
from adapter.invokers.base import Invoker
from adapter.invokers.kafka_event import EventSource, envelope_bytes
from adapter.kafka.consumer import AiokafkaConsumer
from adapter.kafka.dead_letter import DeadLetterProducer
from adapter.kafka.errors import ConnectionWatch, certificate_problem
from adapter.kafka.oidc import RefreshingTokenProvider, check_token, provider_for, provider_key
from adapter.kafka.options import ClientOptions, IngressOptions, SecuritySettings, resolve_options
from adapter.kafka.security import build_ssl_context, consumer_security_kwargs
from adapter.model import (
    Deployment,
    HandlerType,
    RetentionLoss,
    ServiceType,
    Subscription,
    Target,
)
from adapter.secrets import SecretResolver
from adapter.store.dynamo import DynamoStore

__all__ = ["Supervisor", "resolve_target"]

log = logging.getLogger(__name__)

# Longer than a revocation may take: drain (revoke timeout) + ledger flush + final commit.
_REBALANCE_TIMEOUT_MS = 45_000


async def resolve_target(store: Registry, service: str, handler: str) -> Target:
    """Look up a sink in the registry; ConfigError says what is missing."""
    svc = await store.get_service(service)
    if svc is None:
        raise ConfigError(f"unknown service {service!r}: register a deployment that serves it")
    info = svc.handler(handler)
    if info is None:
        known = ", ".join(h.name for h in svc.handlers) or "none"
        raise ConfigError(f"service {service!r} has no handler {handler!r} (handlers: {known})")
    dep = await store.get_deployment(svc.deployment_id)
    if dep is None:
        raise ConfigError(f"deployment {svc.deployment_id} of service {service!r} is gone")
    deployment = Deployment(
        id=str(dep["id"]),
        uri=dep.get("uri"),
        arn=dep.get("arn"),
        additional_headers={
            str(k): str(v) for k, v in (dep.get("additional_headers") or {}).items()
        },
    )
    return Target(
        service=svc.name,
        handler=info.name,
        service_type=ServiceType(svc.service_type),
        handler_type=info.handler_type,
        input_kind=info.input_kind,
        deployment=deployment,
    )


CLUSTER_RESTART_GRACE_S = 10.0
"""How long a subscription runs on after its cluster changed without its revision moving
before it is restarted for it (a cluster update moves them itself, a moment later)."""


@dataclass(slots=True)
class _Slot:
    subscription: Subscription
    cluster: KafkaCluster | None
    """Its cluster as it was when the subscription was read (None: unknown then). A runner is
    rebuilt (after a failure) from this pair, not from the cluster as it is now: a cluster
    moved since, once the subscription's own secret was removed, must not receive that
    secret from a slot still holding the subscription as it was. A slot whose cluster
    changed is replaced by a later refresh, from the pair as it is then."""
    cluster_changed_at: float | None = None
    """When a refresh first saw its cluster differ from :attr:`cluster` (monotonic)."""
    task: asyncio.Task[None] | None = None
    runner: SubscriptionRunner | None = None
    state: str = RunnerState.STARTING.value
    last_error: str | None = None
    failures: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Outlive the slot's runners: shown until the subscription is updated or reset (which
    # replaces the slot), not forgotten when a runner restarts.
    retention_losses: list[RetentionLoss] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        store: DynamoStore,
        ledger: LedgerWriter,
        invoker_for: Callable[[Target, IngressOptions], Invoker],
        *,
        clusters: Callable[[], dict[str, KafkaCluster]] | None = None,
        refresh_clusters: RefreshClusters | None = None,
        refresh_interval_s: float | None = None,
        max_backoff_s: float = 30.0,
        secret_refs: SecretResolver | None = None,
    ) -> None:
        self._settings = settings
        # secretsmanager:/ssm: references in options, fetched when a runner is built.
        self.secret_refs = secret_refs or SecretResolver.from_settings(settings)
        self._store = store
        self._ledger = ledger
        self._invoker_for = invoker_for
        self._clusters = clusters or (lambda: settings.clusters)
        # Admin commands queued by any poller's API for invocations held here.
        self._commands = CommandPoller(self._store, self.runners)
        # Which subscriptions exist, from the change feed; it reloads what ``clusters``
        # returns (dynamic clusters live in DynamoDB) when they change.
        self._control = ControlFeed(
            store, refresh_clusters=refresh_clusters, on_commands=self._commands.notify
        )
        self._refresh_s = (
            refresh_interval_s
            if refresh_interval_s is not None
            else settings.limits.subscription_refresh_ms / 1000
        )
        self._max_backoff_s = max_backoff_s
        self.cluster_restart_grace_s = CLUSTER_RESTART_GRACE_S
        self._slots: dict[str, _Slot] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        """Stops of slots already gone from ``_slots``, by subscription ID: shutdown waits for
        them too, and a slot of the same ID starts only once its stop has ended."""
        self._dead_letters: dict[tuple[object, ...], DeadLetterProducer] = {}
        # As secrets do, the other AWS services follow the DynamoDB endpoint (one endpoint
        # for all of them in local setups; unset in production, where AWS is reached).
        self._failure_destinations = FailureDestinations(
            endpoint_url=settings.dynamodb.endpoint_url, region=settings.dynamodb.region
        )
        # One token provider (OIDC, MSK IAM) per cluster and identity, shared by its subscriptions.
        self._token_providers: dict[tuple[str, ...], RefreshingTokenProvider] = {}
        self._token_users: dict[str, tuple[str, ...]] = {}
        # Losses acknowledged (their slot replaced) still count in the metric's total.
        self._lost_total: dict[str, int] = {}
        self._wake = asyncio.Event()
        # Records on the clusters' signal topics wake the loop right after an admin write.
        self.change_listeners = ChangeListeners(self._clusters, self.secret_refs, self.wake)
        self.last_refresh_error: str | None = None
        # Which subscriptions run here (the shard map); None: all of them.
        self.shards: ShardFilter | None = None
        # Runners starting at once (store look-ups, consumer start): see _supervise.
        self._start_gate = asyncio.Semaphore(settings.poller.start_concurrency)

    # -- public -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Refresh now (the admin API calls this after changing a subscription)."""
        self._wake.set()

    def token_provider(
        self, cluster: str, security: SecuritySettings
    ) -> RefreshingTokenProvider | None:
        """The OIDC token provider this cluster's consumers use for ``security``, if any runs
        (readiness checks ask with the same provider)."""
        return self._token_providers.get(provider_key(cluster, security))

    def runners(self) -> dict[str, SubscriptionRunner]:
        return {k: s.runner for k, s in self._slots.items() if s.runner is not None}

    def status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for sub_id, slot in self._slots.items():
            runner = slot.runner
            # A runner that got going speaks for itself; until then the last failure stands.
            started = runner is not None and runner.state is not RunnerState.STARTING
            provider = self._token_providers.get(self._token_users.get(sub_id, ()))
            out[sub_id] = {
                "state": runner.state.value if runner is not None else slot.state,
                "last_error": runner.last_error if runner and started else slot.last_error,
                "in_flight": runner.in_flight if runner else 0,
                "stats": runner.stats if runner else None,
                "oauthbearer": provider.status() if provider is not None else None,
                "retention_losses": list(slot.retention_losses),
                "records_lost_to_retention": self._lost_total.get(sub_id, 0)
                + sum(loss.count for loss in slot.retention_losses),
            }
        return out

    async def run(self) -> None:
        commands = asyncio.create_task(self._commands.run())
        try:
            loop = asyncio.get_running_loop()
            while True:
                # Cleared first: a wake during the refresh (a write it may have missed) counts.
                self._wake.clear()
                started = loop.time()
                await self.refresh()
                # At a fixed rate: the change feed is read once per interval, not once per
                # interval plus the time a refresh took.
                pause = max(0.0, started + self._refresh_s - loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
        finally:
            commands.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commands
            await self.shutdown()

    async def refresh(self) -> None:
        started = time.monotonic()
        try:
            subs = await self._control.poll()
        except StoreError as exc:
            # Keep running what we have; the table is only the source of *changes*.
            self.last_refresh_error = str(exc)
            log.warning("cannot read subscriptions (keeping current consumers): %s", exc)
            return
        self.last_refresh_error = None
        log.debug("change feed read in %.0f ms", (time.monotonic() - started) * 1000)
        # The clusters as the feed read them with these subscriptions, not as the catalog
        # holds them now: the in-process admin API reads and changes the same catalog.
        if self._control.follows_clusters:
            clusters = {**self._control.clusters, **self._settings.clusters}
        else:
            clusters = dict(self._clusters())
        settled = self._control.settled
        desired = {s.id: s for s in subs if not s.paused and self._runs_here(s)}
        # After _runs_here: it starts the shard map members, which listen for signals too.
        await self.change_listeners.follow({s.cluster for s in subs})
        now = time.monotonic()
        stopping: list[str] = []
        for sub_id, slot in self._slots.items():
            want = desired.get(sub_id)
            if want is None or want.revision != slot.subscription.revision:
                stopping.append(sub_id)
            elif clusters.get(want.cluster) == slot.cluster:
                slot.cluster_changed_at = None
            elif slot.cluster is None:
                stopping.append(sub_id)  # its cluster exists now: start it at once
            elif slot.cluster_changed_at is None:
                # A cluster update moves its subscriptions' revisions one by one after its
                # own write: wait for that, so each restarts once.
                slot.cluster_changed_at = now
            elif now - slot.cluster_changed_at >= self.cluster_restart_grace_s:
                # Changed without its subscriptions' revisions: created again after a forced
                # delete, or an update whose restarts were cut short.
                stopping.append(sub_id)
        # Together, not one after another: a consumer's stop may wait for the fetch the
        # broker holds (over TLS, up to 5 s for a quiet subscription), and the pass, with
        # every other change, waited that long for each subscription it stopped.
        await asyncio.gather(*(self._stop_slot(sub_id) for sub_id in stopping))
        if not settled:
            # Subscriptions or clusters kept changing while they were read: no state of them
            # was seen at one moment, and a runner started from a mixed one could pair a
            # subscription's secret with brokers it was not given for. Stopping is safe;
            # starting waits for a poll that settles.
            log.info("subscriptions and clusters kept changing while read; starting none yet")
            return
        for sub_id, sub in desired.items():
            # A stop still running (its pass was cancelled) would release what the new slot
            # takes (its token provider): the next pass starts it.
            if sub_id not in self._slots and sub_id not in self._stopping:
                self._start_slot(sub, clusters.get(sub.cluster))

    def _runs_here(self, sub: Subscription) -> bool:
        return self.shards is None or self.shards.owns(sub)

    async def shutdown(self) -> None:
        try:
            await self.change_listeners.aclose()
            # Leave the shard map first: other pollers take over while this one drains.
            if self.shards is not None:
                await self.shards.aclose()
            await asyncio.gather(*(self._stop_slot(s) for s in list(self._slots)))
            # Stops a cancelled pass had begun (the poller stopping meanwhile) run to their end.
            if self._stopping:
                await asyncio.wait(set(self._stopping.values()))
        except asyncio.CancelledError:
            # Cancelled (again): stop now, cutting the stops short as a cancel always did,
            # rather than leaving them running after the supervisor.
            for stopping in self._stopping.values():
                stopping.cancel()
            raise
        for producer in self._dead_letters.values():
            with contextlib.suppress(Exception):
                await producer.stop()
        self._dead_letters.clear()
        self._failure_destinations.close()
        for provider in self._token_providers.values():
            await provider.aclose()
        self._token_providers.clear()
        self._token_users.clear()

    # -- slots ------------------------------------------------------------------------------

    def _start_slot(self, sub: Subscription, cluster: KafkaCluster | None) -> None:
        slot = _Slot(subscription=sub, cluster=cluster)
        slot.task = asyncio.create_task(self._supervise(slot), name=f"subscription {sub.id}")
        self._slots[sub.id] = slot
        log.info("starting subscription %s: %s -> %s", sub.id, sub.source, sub.sink)

    async def _stop_slot(self, sub_id: str) -> None:
        slot = self._slots.pop(sub_id, None)
        if slot is None:
            return
        lost = sum(loss.count for loss in slot.retention_losses)
        if lost:
            self._lost_total[sub_id] = self._lost_total.get(sub_id, 0) + lost
        slot.stop.set()
        if slot.runner is not None:
            slot.runner.stop()
        # The rest runs to its end even if the pass that asked for it is cancelled (the
        # poller stopping): cut short, the runner's drain and commits were lost and its
        # consumer's connections left open. Shutdown waits for it.
        stopping = asyncio.create_task(self._finish_stop(sub_id, slot), name=f"stop {sub_id}")
        self._stopping[sub_id] = stopping
        stopping.add_done_callback(functools.partial(self._stop_ended, sub_id))
        await asyncio.shield(stopping)
        self._stop_ended(sub_id, stopping)  # now, not a callback later: the pass may restart it

    def _stop_ended(self, sub_id: str, stopping: asyncio.Task[None]) -> None:
        if self._stopping.get(sub_id) is not stopping:
            return  # seen already
        del self._stopping[sub_id]
        # Read here: a stop whose pass was cancelled has nobody else to read its error.
        if not stopping.cancelled() and stopping.exception() is not None:
            log.error("%s failed", stopping.get_name(), exc_info=stopping.exception())

    async def _finish_stop(self, sub_id: str, slot: _Slot) -> None:
        try:
            if slot.task is not None:
                await slot.task
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscription %s stopped with an error", sub_id)
        await self._release_token_provider(sub_id)
        # Deleted, paused, changed (a new slot follows) or no longer this poller's: its
        # histogram series go with its status counters, and a new slot starts them from
        # zero, as a restarted consumer's counters do. Only once the task is done: no runner
        # of this slot builds a dispatcher after that, and a late observation lands in a
        # series no longer collected (adapter.engine.timings). A new slot of the same ID
        # started meanwhile owns the series.
        if sub_id not in self._slots:
            TIMINGS.forget(sub_id)
        log.info("stopped subscription %s", sub_id)

    async def _supervise(self, slot: _Slot) -> None:
        delay = 1.0
        while not slot.stop.is_set():
            try:
                async with self._start_gate:
                    runner = await self._build_runner(slot)
                slot.runner = runner
                slot.state = RunnerState.RUNNING.value
                if slot.stop.is_set():
                    return
                await runner.run()
                if slot.stop.is_set():
                    return
                delay = 1.0
            except IngressError as exc:
                slot.failures += 1
                slot.last_error = str(exc)
                slot.state = RunnerState.BACKING_OFF.value
                if isinstance(exc, KafkaAuthError):
                    # The secret may have been rotated: fetch referenced ones again.
                    self.secret_refs.invalidate()
                    # A refused token must not be offered again: the next attempt gets a new one.
                    key = self._token_users.get(slot.subscription.id)
                    if key in self._token_providers:
                        self._token_providers[key].invalidate()
                log.warning(
                    "subscription %s failed (attempt %d), retrying in %.0fs: %s",
                    slot.subscription.id,
                    slot.failures,
                    delay,
                    exc,
                )
            except Exception as exc:
                slot.failures += 1
                slot.last_error = f"internal error: {exc!r}"
                slot.state = RunnerState.BACKING_OFF.value
                log.exception("subscription %s crashed", slot.subscription.id)
            slot.runner = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.stop.wait(), delay)
            delay = min(delay * 2, self._max_backoff_s)

    async def _build_runner(self, slot: _Slot) -> SubscriptionRunner:
        sub, retention_losses = slot.subscription, slot.retention_losses
        cluster = slot.cluster
        if cluster is None:
            raise ConfigError(f"unknown Kafka cluster {sub.cluster!r}")
        options = resolve_options(
            subscription_id=sub.id,
            bootstrap_servers=cluster.bootstrap_servers,
            cluster_options=await self.secret_refs.resolve_options(cluster.options),
            subscription_options=await self.secret_refs.resolve_options(sub.options),
        )
        target = await resolve_target(self._control.registry, sub.service, sub.handler)
        limits = self._settings.limits
        ingress = options.ingress
        settings = RunnerSettings(
            max_in_flight=ingress.max_in_flight or limits.max_in_flight,
            max_buffered_per_partition=limits.max_buffered_per_partition,
            max_record_bytes=limits.max_record_bytes,
            invocation_timeout_s=(ingress.invocation_timeout_ms or limits.invocation_timeout_ms)
            / 1000,
            drain_timeout_s=limits.drain_timeout_ms / 1000,
            session_timeout_s=int(options.consumer_kwargs.get("session_timeout_ms", 10_000)) / 1000,
            dead_letter_topic=ingress.dead_letter_topic,
            retry=RetryPolicy.from_options(ingress.retry_options),
            filter_criteria=ingress.filter_criteria,
        )
        security_kwargs = await self._security_kwargs(sub, options)
        dead_letters = None
        if ingress.dead_letter_topic:
            dead_letters = self._dead_letter_producer(sub.cluster, options, security_kwargs)
        batches = ingress.partition_batches(is_lambda=bool(target.deployment.arn))
        if batches and target.handler_type is HandlerType.WORKFLOW:
            # A workflow runs once per key (a claim before its invocation): per record only.
            if ingress.batch_mode == "partition":
                raise ConfigError(
                    f"subscription {sub.id}: batch.mode=partition cannot run the workflow "
                    f"handler {sub.service}/{sub.handler} (each key runs once); use "
                    "batch.mode=concurrent"
                )
            batches = False
        if batches:
            settings = replace(
                settings, batches=self._batch_settings(sub, options, security_kwargs)
            )
        return SubscriptionRunner(
            sub,
            target,
            consumer_factory=lambda watch: self._consumer(options, security_kwargs, watch),
            store=self._store,
            ledger=self._ledger,
            invoker=self._invoker_for(target, ingress),
            dead_letters=dead_letters,
            settings=settings,
            retention_losses=retention_losses,
        )

    def _batch_settings(
        self, sub: Subscription, options: ClientOptions, security_kwargs: dict[str, Any]
    ) -> BatchSettings:
        """ESM partition batches: the subscription's policy and on-failure destination."""
        ingress = options.ingress
        destination = None
        if ingress.destination_on_failure is not None:
            producer = None
            if ingress.destination_on_failure.kind is DestinationKind.KAFKA:
                producer = self._dead_letter_producer(sub.cluster, options, security_kwargs)
            destination = self._failure_destinations.build(ingress.destination_on_failure, producer)
        event_source = EventSource(
            bootstrap_servers=options.bootstrap_servers,
            msk_cluster_arn=ingress.msk_cluster_arn,
        )
        return BatchSettings(
            policy=BatchPolicy(
                # The records' shares are counted as they come; the rest of the event, once.
                max_bytes=MAX_PAYLOAD_BYTES
                - envelope_bytes(event_source, service=sub.service, handler=sub.handler),
                size=ingress.batch_size or 100,
                window_ms=ingress.batching_window_ms,
                bisect=ingress.bisect_on_error,
                max_retries=retries_for(
                    ingress.maximum_retry_attempts, has_destination=destination is not None
                ),
                max_age_ms=ingress.maximum_record_age_ms,
            ),
            report_batch_item_failures=ingress.report_batch_item_failures,
            destination=destination,
            event_source=event_source,
        )

    async def _security_kwargs(self, sub: Subscription, options: ClientOptions) -> dict[str, Any]:
        """aiokafka's security arguments for one runner: one TLS context (certificate files
        are read again on every attempt), the shared token provider, checked up front."""
        security = options.security
        context = f"subscription {sub.id}: cannot consume {sub.source}"
        problem = certificate_problem(security)
        if problem is not None:
            raise KafkaAuthError(f"{context}: {problem}")
        ssl_context = build_ssl_context(security)
        provider = None
        if security.uses_sasl and security.sasl_mechanism == "OAUTHBEARER":
            provider = await self._token_provider(sub, security)
            # aiokafka cannot tell a refused token from success; the broker's verdict is
            # asked for here, so a bad token fails with its reason instead of a stuck consumer.
            await check_token(
                options.bootstrap_servers,
                provider,
                security=security,
                ssl_context=ssl_context,
                request_timeout_ms=options.consumer_kwargs.get("request_timeout_ms", 30_000),
                context=context,
            )
        return consumer_security_kwargs(security, provider, ssl_context=ssl_context)

    async def _token_provider(
        self, sub: Subscription, security: SecuritySettings
    ) -> RefreshingTokenProvider:
        key = provider_key(sub.cluster, security)
        previous = self._token_users.get(sub.id)
        self._token_users[sub.id] = key
        if previous is not None and previous != key:
            await self._close_unused_provider(previous)
        provider = self._token_providers.get(key)
        if provider is None:
            provider = provider_for(security)
            self._token_providers[key] = provider
        return provider

    async def _release_token_provider(self, sub_id: str) -> None:
        key = self._token_users.pop(sub_id, None)
        if key is not None:
            await self._close_unused_provider(key)

    async def _close_unused_provider(self, key: tuple[str, ...]) -> None:
        if key in self._token_users.values():
            return
        provider = self._token_providers.pop(key, None)
        if provider is None:
            return
        for dlq_key in [k for k in self._dead_letters if k[-1] is provider]:
            with contextlib.suppress(Exception):
                await self._dead_letters.pop(dlq_key).stop()
        await provider.aclose()

    def _consumer(
        self, options: ClientOptions, security_kwargs: dict[str, Any], watch: ConnectionWatch
    ) -> AiokafkaConsumer:
        # consumer_kwargs already carry bootstrap servers, group.id and enable_auto_commit=False.
        kwargs = dict(options.consumer_kwargs)
        # aiokafka uses the session timeout as the rebalance timeout unless told otherwise;
        # a revocation that drains in-flight invocations and commits needs longer, or the
        # member is dropped mid-revocation and the group rebalances again and again.
        rebalance_ms = max(int(kwargs.get("session_timeout_ms", 10_000)), _REBALANCE_TIMEOUT_MS)
        kwargs["rebalance_timeout_ms"] = rebalance_ms
        # The broker may hold a JoinGroup request for the whole rebalance timeout.
        kwargs["request_timeout_ms"] = max(
            int(kwargs.get("request_timeout_ms", 40_000)), rebalance_ms + 5_000
        )
        return AiokafkaConsumer(
            watch=watch, start_gate=self._start_gate, **kwargs, **security_kwargs
        )

    async def cluster_client_kwargs(self, cluster_name: str) -> dict[str, Any]:
        """aiokafka's connection arguments for a cluster's own options (brokers, security):
        the shard map's control group uses them."""
        cluster = self._clusters().get(cluster_name)
        if cluster is None:
            raise ConfigError(f"unknown Kafka cluster {cluster_name!r}")
        options = resolve_options(
            subscription_id="kafka-ingress-poller",
            bootstrap_servers=cluster.bootstrap_servers,
            cluster_options=await self.secret_refs.resolve_options(cluster.options),
            subscription_options={},
        )
        security = options.security
        problem = certificate_problem(security)
        if problem is not None:
            raise KafkaAuthError(f"shard map of Kafka cluster {cluster_name!r}: {problem}")
        provider = None
        if security.uses_sasl and security.sasl_mechanism == "OAUTHBEARER":
            key = provider_key(cluster_name, security)
            self._token_users[f"shard map {cluster_name}"] = key
            provider = self._token_providers.get(key)
            if provider is None:
                provider = self._token_providers[key] = provider_for(security)
        return {
            "bootstrap_servers": options.bootstrap_servers,
            **consumer_security_kwargs(security, provider, ssl_context=build_ssl_context(security)),
        }

    def _dead_letter_producer(
        self, cluster: str, options: ClientOptions, security_kwargs: dict[str, Any]
    ) -> DeadLetterProducer:
        # Shared by the subscriptions of a cluster that reach it the same way; the client ID
        # is per subscription by default and does not matter to the producer.
        settings = {k: v for k, v in options.producer_kwargs.items() if k != "client_id"}
        provider = security_kwargs.get("sasl_oauth_token_provider")
        key = (cluster, options.security, repr(sorted(settings.items())), provider)
        producer = self._dead_letters.get(key)
        if producer is None:
            producer = DeadLetterProducer(**options.producer_kwargs, **security_kwargs)
            self._dead_letters[key] = producer
        return producer
