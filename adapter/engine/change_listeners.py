"""One :class:`~adapter.kafka.change_signal.ChangeListener` per cluster the subscriptions use.

The supervisor hands over the clusters of every subscription in the change feed (not only those
this poller runs: a subscription created next on a cluster may land here); listeners start for
new clusters and stop for clusters no subscription uses any more. A cluster whose options cannot
be resolved, or that needs an OAUTHBEARER token, gets no listener: its changes arrive by the
regular poll of the feed. A cluster whose signals another client already hears (``covered``:
the shard map's control group member, which listens too) gets none either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from adapter.config import KafkaCluster
from adapter.errors import IngressError
from adapter.kafka.change_signal import SIGNAL_TOPIC, STOP_TIMEOUT_S, ChangeListener
from adapter.kafka.options import resolve_options
from adapter.kafka.security import consumer_security_kwargs
from adapter.secrets import SecretResolver

__all__ = ["ChangeListeners"]

log = logging.getLogger(__name__)


class ChangeListeners:
    def __init__(
        self,
        clusters: Callable[[], dict[str, KafkaCluster]],
        secret_refs: SecretResolver,
        on_signal: Callable[[], None],
    ) -> None:
        self._clusters = clusters
        self._secret_refs = secret_refs
        self._on_signal = on_signal
        self.listeners: dict[str, ChangeListener] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._skipped: set[str] = set()
        self.covered: Callable[[str], bool] = lambda cluster: False

    async def follow(self, names: Collection[str]) -> None:
        names = {n for n in names if not self.covered(n)}
        for name in [n for n in self._tasks if n not in names]:
            self._stop(name)
        for name in names:
            if name in self._tasks or name in self._skipped:
                continue
            listener = await self._listener(name)
            if listener is None:
                self._skipped.add(name)
                continue
            self.listeners[name] = listener
            self._tasks[name] = asyncio.create_task(listener.run(), name=f"changes:{name}")

    async def _listener(self, name: str) -> ChangeListener | None:
        cluster = self._clusters().get(name)
        if cluster is None:
            return None
        try:
            options = resolve_options(
                subscription_id=SIGNAL_TOPIC,
                bootstrap_servers=cluster.bootstrap_servers,
                cluster_options=await self._secret_refs.resolve_options(cluster.options),
                subscription_options={},
            )
            if options.security.sasl_mechanism == "OAUTHBEARER":
                log.info("cluster %s: OAUTHBEARER, changes arrive by the poll only", name)
                return None
            kwargs = {**options.consumer_kwargs, **consumer_security_kwargs(options.security)}
        except IngressError as exc:
            log.info("cluster %s: no change signals (%s)", name, exc)
            return None
        return ChangeListener(name, kwargs, self._on_signal)

    def _stop(self, name: str) -> None:
        """Cancel a cluster's listener without waiting for it to end: over TLS, closing its
        consumer waits for the fetch in flight (the broker reads the close only after
        answering it, up to TLS_FETCH_WAIT_MS), which would hold up the supervisor's pass."""
        task = self._tasks.pop(name)
        self.listeners.pop(name, None)
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        for name in list(self._tasks):
            self._stop(name)
        if self._stopping:
            # All at once. Each listener bounds its own clean-up; this bounds the wait again.
            await asyncio.wait(set(self._stopping), timeout=STOP_TIMEOUT_S + 1)
        self._skipped.clear()
