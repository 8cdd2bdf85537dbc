"""Function sinks: a Lambda function subscribed as ``lambda://<function ARN>``, no discovery.

An unchanged AWS Kafka consumer cannot answer the discovery event, so subscribing one
registers it implicitly: a Lambda deployment whose ID is derived from the ARN
(:func:`adapter.ids.derived_deployment_id`, the same in every admin process) and one service
named by the ARN with the single handler :data:`~adapter.model.FUNCTION_SINK_HANDLER`. The
engine then resolves the subscription's target like any other.

Both rows are written idempotently (same content, same keys), so two admin processes
subscribing the same function at once agree. When the last subscription of a function is
deleted, both rows go: nothing is left behind that listings or a later registration of the
same ARN by discovery would trip over.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from adapter.ids import derived_deployment_id
from adapter.model import (
    FUNCTION_SINK_HANDLER,
    HandlerInfo,
    HandlerType,
    InputKind,
    ServiceInfo,
    ServiceType,
    Subscription,
    function_sink_arn,
)

__all__ = [
    "FUNCTION_SINK_MARK",
    "RegistryStore",
    "ensure_function_sink",
    "function_sink_service",
    "is_function_sink_deployment",
    "release_function_sink",
]

# The deployment row's marker: registered for a function sink, not by discovery.
FUNCTION_SINK_MARK = "function_sink"


class RegistryStore(Protocol):
    """The registry part of :class:`~adapter.store.dynamo.DynamoStore` used here."""

    async def get_deployment(self, dep_id: str) -> dict[str, Any] | None: ...

    async def put_deployment(self, data: dict[str, Any]) -> None: ...

    async def delete_deployment(self, dep_id: str) -> bool: ...

    async def get_service(self, name: str) -> ServiceInfo | None: ...

    async def put_service(self, svc: ServiceInfo) -> None: ...

    async def delete_service(self, name: str) -> None: ...

    async def list_subscriptions(self) -> list[Subscription]: ...


def is_function_sink_deployment(dep: dict[str, Any]) -> bool:
    """True for a deployment registered implicitly for a ``lambda://`` sink."""
    return bool(dep.get(FUNCTION_SINK_MARK))


def function_sink_service(arn: str) -> ServiceInfo:
    """The service a function sink is registered as (pure)."""
    return ServiceInfo(
        name=arn,
        service_type=ServiceType.SERVICE,
        deployment_id=derived_deployment_id(arn),
        # RAW: the event carries the record's bytes as AWS sends them, never parsed here.
        handlers=(HandlerInfo(FUNCTION_SINK_HANDLER, HandlerType.SERVICE, InputKind.RAW),),
    )


def _deployment_row(arn: str, now_ms: int) -> dict[str, Any]:
    return {
        "id": derived_deployment_id(arn),
        "arn": arn,
        "additional_headers": {},
        "created_at": now_ms,
        "min_protocol_version": 1,
        "max_protocol_version": 1,
        "metadata": {"registered.by": "lambda:// sink"},
        FUNCTION_SINK_MARK: True,
    }


async def ensure_function_sink(store: RegistryStore, arn: str) -> ServiceInfo:
    """Register ``arn`` as a function sink unless it is already (idempotent)."""
    service = function_sink_service(arn)
    if await store.get_deployment(service.deployment_id) is None:
        await store.put_deployment(_deployment_row(arn, int(time.time() * 1000)))
    stored = await store.get_service(arn)
    if stored is None or (stored.deployment_id, stored.handlers) != (
        service.deployment_id,
        service.handlers,
    ):
        await store.put_service(service)
    return service


async def release_function_sink(store: RegistryStore, service: str) -> bool:
    """Remove a function sink's rows once no subscription uses ``service``; True if removed.

    Call it after deleting a subscription. Not a function sink's service: nothing happens.
    """
    arn = function_sink_arn(service)
    if arn is None or any(s.service == service for s in await store.list_subscriptions()):
        return False
    await store.delete_service(arn)
    await store.delete_deployment(derived_deployment_id(arn))
    # A subscription of the same function created meanwhile by another admin process
    # re-registers it, so it never runs without its target.
    if any(s.service == service for s in await store.list_subscriptions()):
        await ensure_function_sink(store, arn)
        return False
    return True
