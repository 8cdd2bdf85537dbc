"""Readiness: can this poller reach DynamoDB and the brokers of every known Kafka cluster?

Each cluster is checked by bootstrapping a short-lived aiokafka client (a metadata request,
so TLS and SASL are exercised too) with a deadline. Results are cached briefly, because probes
come every few seconds and a broker round trip per probe per cluster adds up.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError

from adapter.api.catalog import ClusterCatalog
from adapter.config import KafkaCluster
from adapter.errors import IngressError
from adapter.kafka.options import resolve_options
from adapter.kafka.security import consumer_security_kwargs
from adapter.secrets import SecretResolver

__all__ = ["KafkaReadiness"]


class KafkaReadiness:
    """``await check(catalog)`` → ``{cluster name: "ok" | "unreachable: ..."}``."""

    def __init__(
        self,
        *,
        timeout_s: float = 3.0,
        cache_s: float = 5.0,
        secret_refs: SecretResolver | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        # secretsmanager:/ssm: references in cluster options are connected with as values.
        self._secret_refs = secret_refs
        self._cache_s = cache_s
        self._cached: tuple[float, dict[str, str]] | None = None

    async def __call__(self, catalog: ClusterCatalog) -> dict[str, str]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._cache_s:
            return self._cached[1]
        clusters = catalog.snapshot()
        names = sorted(clusters)
        results = await asyncio.gather(*(self._check(clusters[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        self._cached = (time.monotonic(), checks)
        return checks

    async def _check(self, cluster: KafkaCluster) -> str:
        try:
            cluster_options = cluster.options
            if self._secret_refs is not None:
                cluster_options = await self._secret_refs.resolve_options(cluster_options)
            options = resolve_options(
                subscription_id="sub_readiness",
                bootstrap_servers=cluster.bootstrap_servers,
                cluster_options=cluster_options,
                subscription_options={},
            )
            client = AIOKafkaClient(
                bootstrap_servers=options.bootstrap_servers,
                client_id="kafka-ingress-readiness",
                request_timeout_ms=int(self._timeout_s * 1000),
                **consumer_security_kwargs(options.security),
            )
        except IngressError as exc:
            return f"misconfigured: {exc}"
        try:
            await asyncio.wait_for(client.bootstrap(), self._timeout_s)
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            if self._secret_refs is not None and cluster_options != cluster.options:
                # Maybe refused with a rotated secret: the next probe fetches it again.
                self._secret_refs.invalidate()
            return f"unreachable: {exc or type(exc).__name__}"
        finally:
            await client.close()
        return "ok"
