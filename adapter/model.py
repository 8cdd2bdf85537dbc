"""Core shapes shared by the engine, the store and the API.

Plain dataclasses (frozen, or held frozen by the type checker: :func:`value_type`) and enums:
no I/O, no framework. The admin API's pydantic request and response bodies live in
``adapter.api`` and convert to and from these.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, TypeVar, dataclass_transform

__all__ = [
    "FUNCTION_SINK_HANDLER",
    "LAMBDA_FUNCTION_ARN",
    "Deployment",
    "HandlerInfo",
    "HandlerType",
    "InputKind",
    "KafkaRecord",
    "LedgerEntry",
    "RetentionLoss",
    "ServiceInfo",
    "ServiceType",
    "Subscription",
    "Target",
    "TimestampType",
    "function_sink_arn",
    "sink_uri",
    "topic_key",
    "topic_name",
    "value_type",
]

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value_type(cls: type[_T]) -> type[_T]:
    """A dataclass that the type checker holds frozen but that is not frozen at run time.

    For the shapes made once per record (:class:`KafkaRecord`, the invocation request): a
    frozen dataclass sets each field through ``object.__setattr__``, which made building one
    about six times slower (0.75 against 0.12 us for a record's eight fields). mypy (run on
    ``adapter`` and ``bench``) rejects assigning a field of these classes; changes go through
    :func:`dataclasses.replace`, as for a frozen dataclass. What the type checker does not
    see (``setattr``, ``del``) is not refused at run time, and pickle protocols 0 and 1
    cannot copy them; nothing here does either.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


# Kafka's two timestamp kinds, spelled as AWS's Lambda Kafka event spells them.
TimestampType = Literal["CREATE_TIME", "LOG_APPEND_TIME"]


# A Lambda function ARN, optionally with a version or alias.
LAMBDA_FUNCTION_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"(?P<name>[A-Za-z0-9_-]{1,140})(?::(?P<qualifier>[A-Za-z0-9$_-]{1,128}))?$"
)

# A function sink (``lambda://<function ARN>``) is registered as a service named by the ARN
# with this one handler; discovered services may not take such names, so the two never meet.
FUNCTION_SINK_HANDLER = "handler"


@lru_cache(maxsize=1024)  # a few services per poller; asked for every record
def function_sink_arn(service: str) -> str | None:
    """The function ARN when ``service`` is a function sink's service, else None."""
    return service if LAMBDA_FUNCTION_ARN.match(service) else None


def sink_uri(service: str, handler: str) -> str:
    """How a sink is written and shown: ``lambda://<ARN>`` or ``service://<service>/<handler>``."""
    arn = function_sink_arn(service)
    return f"lambda://{arn}" if arn else f"service://{service}/{handler}"


class ServiceType(enum.StrEnum):
    SERVICE = "SERVICE"
    VIRTUAL_OBJECT = "VIRTUAL_OBJECT"
    WORKFLOW = "WORKFLOW"


class HandlerType(enum.StrEnum):
    """Handler type as in Restate's discovery manifest (``None`` there = service handler)."""

    SERVICE = "SERVICE"
    EXCLUSIVE = "EXCLUSIVE"
    SHARED = "SHARED"
    WORKFLOW = "WORKFLOW"


class InputKind(enum.StrEnum):
    JSON = "JSON"
    RAW = "RAW"


@value_type
class KafkaRecord:
    """One consumed Kafka record, decoupled from the client library's type."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    # A header's value may be null (Kafka allows it); kept apart from an empty value.
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_type: TimestampType = "CREATE_TIME"

    @property
    def size(self) -> int:
        size = len(self.key or b"") + len(self.value or b"")
        if self.headers:
            size += sum(len(k) + len(v or b"") for k, v in self.headers)
        return size


def topic_key(topic: str, topic_id: str | None) -> str:
    """What invocation IDs and the ledger key a topic by: its identity, not only its name.

    ``name@topic-id`` (Kafka topic names cannot contain ``@``), so a topic deleted and
    re-created under the same name gets new keys. The bare name only where the broker
    reports no topic ID.
    """
    return f"{topic}@{topic_id}" if topic_id else topic


def topic_name(key: str) -> str:
    """The topic name part of a :func:`topic_key`."""
    return key.partition("@")[0]


@dataclass(frozen=True, slots=True)
class RetentionLoss:
    """Records that retention deleted before the subscription processed them."""

    tp: tuple[str, int]
    first: int
    """First offset lost (the position the group had reached)."""
    last: int
    """Last offset lost (one before the log's start)."""

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def describe(self) -> str:
        topic, partition = self.tp
        return (
            f"{self.count} records of {topic}/{partition} (offsets {self.first}..{self.last}) "
            "were deleted by retention before they were processed"
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where a handler runs: an HTTP base URL or a Lambda function ARN (exactly one)."""

    id: str
    uri: str | None = None
    arn: str | None = None
    additional_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    """The handler a subscription's records go to, resolved from the registry."""

    service: str
    handler: str
    service_type: ServiceType
    handler_type: HandlerType
    input_kind: InputKind
    deployment: Deployment
    # Derived once here: the engine asks for them for every record.
    keyed: bool = field(init=False, repr=False, compare=False)
    ordered: bool = field(init=False, repr=False, compare=False)
    """One-at-a-time per key, in partition order (exclusive object handlers, workflow run)."""
    sink: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyed", self.service_type is not ServiceType.SERVICE)
        ordered = self.handler_type in (HandlerType.EXCLUSIVE, HandlerType.WORKFLOW)
        object.__setattr__(self, "ordered", ordered)
        object.__setattr__(self, "sink", sink_uri(self.service, self.handler))


@dataclass(frozen=True, slots=True)
class Subscription:
    """A Kafka topic of a cluster feeding one handler, with client options in librdkafka names."""

    id: str
    cluster: str
    topic: str
    service: str
    handler: str
    options: dict[str, str] = field(default_factory=dict)
    created_at_ms: int = 0
    paused: bool = False
    # Bumped on every change so pollers restart the consumer only when something changed.
    revision: int = 1

    @property
    def source(self) -> str:
        return f"kafka://{self.cluster}/{self.topic}"

    @property
    def sink(self) -> str:
        return sink_uri(self.service, self.handler)


@dataclass(frozen=True, slots=True)
class HandlerInfo:
    name: str
    handler_type: HandlerType
    input_kind: InputKind = InputKind.JSON


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A service in the registry: which deployment serves it and its handlers."""

    name: str
    service_type: ServiceType
    deployment_id: str
    handlers: tuple[HandlerInfo, ...] = ()
    revision: int = 1

    def handler(self, name: str) -> HandlerInfo | None:
        return next((h for h in self.handlers if h.name == name), None)


@dataclass(slots=True)
class LedgerEntry:
    """One invocation's row in the ledger (DynamoDB ``invocations`` table)."""

    id: str
    subscription_id: str
    topic: str
    partition: int
    offset: int
    key: str | None
    target: str
    status: str
    attempts: int = 0
    last_error: str | None = None
    created_at_ms: int = 0
    updated_at_ms: int = 0
    completed_at_ms: int | None = None
    next_retry_at_ms: int | None = None
    dead_letter_topic: str | None = None
    key_sha256: str | None = field(default=None, compare=False)
    """Set when ``key`` was cut shorter than the store cuts keys (a row written reduced,
    adapter.engine.ledger): the whole key's hash, by which a lookup by key still finds it."""
    # Not stored: a row of this invocation exists already (an earlier owner's progress), so
    # this state must replace it rather than go into a success page.
    replaces_row: bool = field(default=False, compare=False)
