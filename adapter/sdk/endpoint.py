"""An endpoint: the services one deployment serves, as an ASGI app or a Lambda function.

    endpoint = Endpoint([greeter, account], identity_keys=["publickeyv1_…"])
    app = endpoint.asgi_app()           # uvicorn module:app
    handler = endpoint.lambda_handler() # serverless.yml: handler: module.handler

``identity_keys`` (or, when not given, the environment variable
``KAFKA_INGRESS_IDENTITY_KEYS``, comma-separated) turns on signature verification: requests
without a valid signature from the poller get 401, and so do replayed ones. ``replay_store``
remembers the token IDs seen (default: in this process's memory; give several instances a
shared one, see :mod:`adapter.sdk.replay`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from adapter.sdk.aws_lambda import LambdaHandler, make_lambda_handler
from adapter.sdk.identity import IdentityVerifier
from adapter.sdk.protocol import HEADER_ATTEMPT, HEADER_IDEMPOTENCY_KEY, HEADER_INVOCATION_ID
from adapter.sdk.replay import ReplayStore
from adapter.sdk.runtime import Registry, Response, run_invocation
from adapter.sdk.service import ServiceDefinition

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["IDENTITY_KEYS_ENV", "Endpoint"]

IDENTITY_KEYS_ENV = "KAFKA_INGRESS_IDENTITY_KEYS"


def _env_keys() -> list[str]:
    return [k for k in re.split(r"[,\s]+", os.environ.get(IDENTITY_KEYS_ENV, "")) if k]


class Endpoint:
    def __init__(
        self,
        services: Iterable[ServiceDefinition],
        *,
        identity_keys: Iterable[str] | None = None,
        kafka_target: str | None = None,
        replay_store: ReplayStore | None = None,
    ) -> None:
        self.registry = Registry(services)
        keys = list(identity_keys) if identity_keys is not None else _env_keys()
        self.verifier = IdentityVerifier(keys, replay_store=replay_store) if keys else None
        if kafka_target is not None:
            service, sep, handler = kafka_target.partition("/")
            definition = self.registry.services.get(service)
            if not sep or definition is None or handler not in definition.handlers:
                raise ValueError(f"kafka_target {kafka_target!r} is not a Service/handler here")
        self.kafka_target = kafka_target

    def __repr__(self) -> str:
        return (
            f"Endpoint(services={sorted(self.registry.services)}, "
            f"signed={'yes' if self.verifier else 'no'})"
        )

    def manifest(self) -> dict[str, Any]:
        return self.registry.manifest()

    def asgi_app(self) -> ASGIApp:
        from adapter.sdk.asgi import build_asgi_app

        return build_asgi_app(self.registry, self.verifier)

    def lambda_handler(self) -> LambdaHandler:
        return make_lambda_handler(self.registry, self.verifier, kafka_target=self.kafka_target)

    async def invoke(
        self,
        service: str,
        handler: str,
        body: bytes = b"",
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        invocation_id: str = "inv_test",
        attempt: int = 1,
    ) -> Response:
        """Call a handler directly, without transport or signature check (for tests)."""
        merged = {
            HEADER_INVOCATION_ID: invocation_id,
            HEADER_IDEMPOTENCY_KEY: invocation_id,
            HEADER_ATTEMPT: str(attempt),
            **{k.lower(): v for k, v in (headers or {}).items()},
        }
        return await run_invocation(
            self.registry, service=service, handler=handler, key=key, headers=merged, body=body
        )
