"""Readiness: can this poller reach DynamoDB and the brokers of every known Kafka cluster?

Each cluster is checked by bootstrapping a short-lived aiokafka client (a metadata request,
so TLS and SASL are exercised too) with a deadline. An OAUTHBEARER cluster is checked the way
its consumers connect: with their token provider (the supervisor's, shared by identity; a
provider of the check's own while no consumer of that identity runs), and the broker is asked
once whether it accepts the token. So an OIDC cluster is ready exactly when its token is.
Results are cached briefly, because probes come every few seconds and a broker round trip per
probe per cluster adds up. Every result text is masked (it may quote a URL with credentials).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError as AIOKafkaError

from adapter.api.catalog import ClusterCatalog
from adapter.config import KafkaCluster
from adapter.errors import IngressError
from adapter.kafka.oidc import RefreshingTokenProvider, check_token, provider_for, provider_key
from adapter.kafka.options import ClientOptions, SecuritySettings, resolve_options
from adapter.kafka.security import build_ssl_context, consumer_security_kwargs
from adapter.masking import mask_secrets
from adapter.secrets import SecretResolver

__all__ = ["KafkaReadiness", "SharedTokenProvider"]

SharedTokenProvider = Callable[[str, SecuritySettings], RefreshingTokenProvider | None]
"""``(cluster name, security) → the provider its consumers use``, or None if none runs."""


class KafkaReadiness:
    """``await check(catalog)`` → ``{cluster name: "ok" | "unreachable: ..."}``."""

    def __init__(
        self,
        *,
        timeout_s: float = 3.0,
        cache_s: float = 5.0,
        shared_token_provider: SharedTokenProvider | None = None,
        secret_refs: SecretResolver | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        # secretsmanager:/ssm: references in cluster options are connected with as values.
        self._secret_refs = secret_refs
        self._cache_s = cache_s
        self._cached: tuple[float, dict[str, str]] | None = None
        self._shared = shared_token_provider
        self._own: dict[tuple[str, ...], RefreshingTokenProvider] = {}

    async def __call__(self, catalog: ClusterCatalog) -> dict[str, str]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._cache_s:
            return self._cached[1]
        clusters = catalog.snapshot()
        names = sorted(clusters)
        results = await asyncio.gather(*(self._check(clusters[n]) for n in names))
        checks = dict(zip(names, (mask_secrets(r) for r in results), strict=True))
        self._cached = (time.monotonic(), checks)
        return checks

    async def aclose(self) -> None:
        """Close the token providers of the check's own."""
        providers, self._own = list(self._own.values()), {}
        for provider in providers:
            await provider.aclose()

    def _provider(self, cluster: str, security: SecuritySettings) -> RefreshingTokenProvider:
        shared = self._shared(cluster, security) if self._shared is not None else None
        if shared is not None:
            return shared
        key = provider_key(cluster, security)
        own = self._own.get(key)
        if own is None:
            own = self._own[key] = provider_for(security)
        return own

    async def _check(self, cluster: KafkaCluster) -> str:
        cluster_options = cluster.options
        try:
            if self._secret_refs is not None:
                cluster_options = await self._secret_refs.resolve_options(cluster_options)
            options = resolve_options(
                subscription_id="sub_readiness",
                bootstrap_servers=cluster.bootstrap_servers,
                cluster_options=cluster_options,
                subscription_options={},
            )
        except IngressError as exc:
            return f"misconfigured: {exc}"
        result = await self._probe(cluster, options)
        if result != "ok" and self._secret_refs is not None and cluster_options != cluster.options:
            # Maybe refused with a rotated secret: the next probe fetches it again.
            self._secret_refs.invalidate()
        return result

    async def _probe(self, cluster: KafkaCluster, options: ClientOptions) -> str:
        if options.security.uses_sasl and options.security.sasl_mechanism == "OAUTHBEARER":
            return await self._check_token(cluster.name, options)
        try:
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
            return f"unreachable: {exc or type(exc).__name__}"
        finally:
            await client.close()
        return "ok"

    async def _check_token(self, name: str, options: ClientOptions) -> str:
        """A token from the consumers' provider, accepted by a broker: ready."""
        try:
            provider = self._provider(name, options.security)
            await asyncio.wait_for(
                check_token(
                    options.bootstrap_servers,
                    provider,
                    security=options.security,
                    ssl_context=build_ssl_context(options.security),
                    request_timeout_ms=int(self._timeout_s * 1000),
                    context=f"Kafka cluster {name!r}",
                ),
                self._timeout_s,
            )
        except TimeoutError:
            return f"unreachable: no answer within {self._timeout_s:g}s"
        except IngressError as exc:
            return f"unreachable: {exc}"
        return "ok"
