"""What every route module shares: the admin state, the endpoint table entry, body helpers.

Each route module exports ``ENDPOINTS``, a list of :class:`Endpoint`. The app builds its
Starlette routes from them and the OpenAPI document from the same list, so the document can
not drift from what is served.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pydantic
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapter import __version__
from adapter.api.catalog import ClusterCatalog
from adapter.api.metrics import OldestAge, Snapshot, metrics_registry
from adapter.api.probe_cache import SharedCheck
from adapter.config import KafkaCluster, Settings
from adapter.engine.ledger import LedgerWriter
from adapter.engine.supervisor import Supervisor
from adapter.errors import ConflictError, UnknownResourceError, ValidationError
from adapter.kafka.change_signal import SIGNAL_TOPIC, ChangeSignaller
from adapter.kafka.options import ClientOptions, resolve_options
from adapter.kafka.security import consumer_security_kwargs
from adapter.secrets import SecretResolver
from adapter.store.changes import ChangeKind
from adapter.store.dynamo import DynamoStore

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_STRING_LENGTH",
    "AdminState",
    "Discover",
    "Endpoint",
    "Handler",
    "QueryParam",
    "ResetOffsets",
    "api_version",
    "json_response",
    "query_bool",
    "query_int",
    "read_body",
]

M = TypeVar("M", bound=BaseModel)

Discover = Callable[..., Awaitable[dict[str, Any]]]
"""``await discover(uri=…, arn=…, headers=…)`` → the deployment's manifest document."""

ResetOffsets = Callable[..., Awaitable[dict[tuple[str, int], int]]]
"""Commits explicit offsets for a stopped consumer group (see :mod:`adapter.api.offsets`)."""

CheckKafka = Callable[[ClusterCatalog], Awaitable[dict[str, str]]]


@dataclass
class AdminState:
    """Everything the routes use. ``supervisor`` is None when no poller runs in-process."""

    settings: Settings
    store: DynamoStore
    catalog: ClusterCatalog
    supervisor: Supervisor | None = None
    ledger: LedgerWriter | None = None
    discover: Discover | None = None
    reset_offsets: ResetOffsets | None = None
    check_kafka: CheckKafka | None = None
    # Fetches secretsmanager:/ssm: references for the routes that connect to Kafka.
    secret_refs: SecretResolver | None = None
    # Wakes the other pollers through Kafka after a subscription write (None: they poll).
    signals: ChangeSignaller | None = None
    version: str = __version__
    oldest: OldestAge = field(default_factory=OldestAge)
    # One readiness check at a time, its result shared for a second (adapter.api.probe_cache).
    readiness: SharedCheck = field(default_factory=SharedCheck)
    # What /metrics serves; read at each scrape from this state (see adapter.api.metrics).
    registry: CollectorRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = metrics_registry(self.metrics_snapshot, self.oldest)

    def metrics_snapshot(self) -> Snapshot:
        ledger, supervisor = self.ledger, self.supervisor
        return Snapshot(
            status=supervisor.status() if supervisor else {},
            partitions={
                sub_id: runner.partition_status() for sub_id, runner in supervisor.runners().items()
            }
            if supervisor
            else {},
            ledger_pending=ledger.pending if ledger else 0,
            ledger_written=ledger.written if ledger else 0,
            ledger_failures=ledger.failures if ledger else 0,
            store_requests=self.store.requests,
        )

    @property
    def retention_s(self) -> float:
        return self.settings.limits.ledger_retention_days * 86400

    def wake(self) -> None:
        if self.supervisor is not None:
            self.supervisor.wake()

    def subscription_changed(self, cluster: str) -> None:
        """After a subscription write: this poller reads the change feed now, and the others
        are woken through a record on the cluster (adapter.kafka.change_signal)."""
        self.wake()
        if self.signals is not None:
            self.signals.signal(cluster, lambda: self._signal_connection(cluster))

    async def client_options(
        self, cluster_name: str, subscription_id: str | None = None
    ) -> ClientOptions:
        """Kafka client options of a subscription (or, with no ``subscription_id``, of a
        cluster alone) for the routes that connect to Kafka themselves.

        The subscription and its cluster are read as of one moment: read again while the
        change feed shows either changed between the feed's two reads around them. A
        subscription read earlier by the route, paired with its cluster as changed since,
        could send a secret the subscription gave for the old brokers to the new ones (or
        one given for the new to the old). A cluster alone is one item, read by name."""
        if subscription_id is None:
            cluster = await self.catalog.lookup(cluster_name)
            if cluster is None:
                raise UnknownResourceError(f"the Kafka cluster {cluster_name!r} does not exist")
            return await self._resolved(cluster, subscription_id, {})
        paired = {(ChangeKind.SUBSCRIPTION, subscription_id), (ChangeKind.CLUSTER, cluster_name)}
        for attempt in range(_CONSISTENT_READ_TRIES):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.01 * attempt))
            version = (await self.store.read_changes()).version
            sub = await self.store.get_subscription(subscription_id)
            if sub is None:
                raise UnknownResourceError(f"the subscription {subscription_id!r} does not exist")
            cluster = await self.catalog.lookup(cluster_name)
            if cluster is None:
                raise UnknownResourceError(f"the Kafka cluster {cluster_name!r} does not exist")
            changes = (await self.store.read_changes()).since(version)
            if changes is not None and not any((c.kind, c.key) in paired for c in changes):
                return await self._resolved(cluster, subscription_id, sub.options)
        raise ConflictError(
            f"the subscription {subscription_id!r} or its Kafka cluster {cluster_name!r} kept "
            "changing while this request read them; try again"
        )

    async def _resolved(
        self,
        cluster: KafkaCluster,
        subscription_id: str | None,
        subscription_options: Mapping[str, str],
    ) -> ClientOptions:
        cluster_options = cluster.options
        if self.secret_refs is not None:
            # Connecting needs the values of secretsmanager:/ssm: references, not their names.
            cluster_options = await self.secret_refs.resolve_options(cluster_options)
            subscription_options = await self.secret_refs.resolve_options(subscription_options)
        return resolve_options(
            subscription_id=subscription_id or SIGNAL_TOPIC,
            bootstrap_servers=cluster.bootstrap_servers,
            cluster_options=cluster_options,
            subscription_options=subscription_options,
        )

    async def _signal_connection(self, cluster_name: str) -> dict[str, Any]:
        options = await self.client_options(cluster_name)
        return {**options.consumer_kwargs, **consumer_security_kwargs(options.security)}


_CONSISTENT_READ_TRIES = 8


Handler = Callable[[Request, AdminState], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    responses: Mapping[int, Any]
    """Status → response model (a model class, a union of them, ``str`` for text, or None)."""
    body: type[BaseModel] | None = None
    query: tuple[QueryParam, ...] = ()
    public: bool = False
    """Served without the bearer token (health checks)."""


def api_version(request: Request) -> int | None:
    """The admin API version of the request's path prefix (``/v3/...`` → 3), if any."""
    version = request.scope.get("state", {}).get("admin_api_version")
    return int(version) if version is not None else None


MAX_JSON_DEPTH = 32
"""Deepest nesting of a request body: every body of this API is at most 3 levels deep."""
MAX_STRING_LENGTH = 64 * 1024
"""Longest string anywhere in a request body (fields have tighter limits of their own)."""
MAX_KEY_LENGTH = 1024
"""Longest object key (field, option or header name) anywhere in a request body."""


def _check_document(document: Any) -> None:
    """Depth, string lengths and encodability of a parsed body; iterative (no recursion)."""
    pending: list[tuple[Any, str, int]] = [(document, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if isinstance(value, str):
            if len(value) > MAX_STRING_LENGTH:
                raise ValidationError(
                    f"{where or '(body)'}: strings are at most {MAX_STRING_LENGTH} characters, "
                    f"this one has {len(value)}"
                )
            # JSON allows lone surrogates (\ud800), which cannot be stored or sent anywhere.
            value.encode("utf-8")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(
                f"the request body is nested more than {MAX_JSON_DEPTH} levels deep"
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                if len(key) > MAX_KEY_LENGTH:
                    raise ValidationError(
                        f"{where or '(body)'}: names are at most {MAX_KEY_LENGTH} characters, "
                        f"one has {len(key)}"
                    )
                key.encode("utf-8")
            # Paths name fields, never values; long keys are shortened.
            label = key if isinstance(key, int) else (key if len(key) <= 80 else key[:80] + "…")
            pending.append((item, f"{where}.{label}" if where else str(label), depth + 1))


def _pydantic_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        parts.append(f"{where}: {message}")
    more = len(exc.errors()) - 3
    suffix = f" (and {more} more)" if more > 0 else ""
    return "invalid request body: " + "; ".join(parts) + suffix


async def read_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if not raw.strip():
        raise ValidationError("a JSON request body is required")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValidationError(
            f"the request body is nested more than {MAX_JSON_DEPTH} levels deep"
        ) from None
    except (ValueError, UnicodeError) as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}") from None
    try:
        _check_document(data)
    except UnicodeError as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(_pydantic_message(exc)) from None


def json_response(
    body: BaseModel | Mapping[str, Any],
    status: int = 200,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    content = body.model_dump(mode="json") if isinstance(body, BaseModel) else dict(body)
    return JSONResponse(content, status_code=status, headers=dict(headers or {}))


def query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise ValidationError(f"query parameter {name!r} must be true or false, got {raw[:40]!r}")


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"query parameter {name!r} must be an integer") from None
    if not low <= value <= high:
        raise ValidationError(f"query parameter {name!r} must be between {low} and {high}")
    return value
