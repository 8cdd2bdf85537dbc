"""Topic identity: a topic's ID and partition count, asked of the broker by name.

A topic deleted and created again under the same name is a new topic: its records, offsets
and partition count start over. Kafka tells the two apart by the *topic ID*, a UUID the
controller assigns when it creates the topic. Only Metadata v10 and later carry it, and
aiokafka speaks Metadata up to v5, so the request and response of those versions are
defined here, on aiokafka's protocol types (the connection negotiates the version, frames
the request and decodes the response with them).

Versions, from Kafka's ``MetadataRequest.json`` / ``MetadataResponse.json``:

    v10  topic IDs in the response (and, unused by brokers, in the request)
    v11  drops IncludeClusterAuthorizedOperations / ClusterAuthorizedOperations
    v12  topics may be asked for by ID (we ask by name)
    v13  top-level ErrorCode in the response (Kafka 4.0+)

The highest the broker accepts is sent; every broker that speaks v10 (Kafka 2.8+) answers
with topic IDs. The request never creates a topic (AllowAutoTopicCreation is false), so
asking about a missing topic leaves it missing.

Pure: the structs, :func:`render_topic_id` and :func:`topics_from_response`. The I/O shell
is :func:`describe_topics`.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from aiokafka import errors as ak
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from adapter.errors import KafkaAuthError, KafkaError
from adapter.kafka.errors import translate

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ZERO_TOPIC_ID",
    "MetadataRequest",
    "MetadataRequest_v10",
    "MetadataRequest_v11",
    "MetadataRequest_v12",
    "MetadataRequest_v13",
    "MetadataResponse_v10",
    "MetadataResponse_v11",
    "MetadataResponse_v12",
    "MetadataResponse_v13",
    "TopicInfo",
    "Uuid",
    "describe_topics",
    "render_topic_id",
    "topics_from_response",
]

_API_KEY = 3
_UUID_SIZE = 16
# Kafka's Uuid.ZERO_UUID: "no ID" (a topic the broker does not know, a request by name).
ZERO_TOPIC_ID = bytes(_UUID_SIZE)
DEFAULT_TIMEOUT_S = 30.0

_NO_ERROR = 0
_AUTH_ERRORS = frozenset(
    {
        ak.TopicAuthorizationFailedError.errno,
        ak.ClusterAuthorizationFailedError.errno,
    }
)


class Uuid(AbstractType[bytes]):  # type: ignore[misc]
    """Kafka's ``uuid`` wire type: 16 raw bytes, most significant first."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        if len(value) != _UUID_SIZE:
            raise ValueError(f"a UUID is {_UUID_SIZE} bytes, not {len(value)}")
        return bytes(value)

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(_UUID_SIZE)
        if len(value) != _UUID_SIZE:
            raise ValueError("Buffer underrun decoding UUID")
        return value

    @classmethod
    def repr(cls, value: bytes) -> str:
        return render_topic_id(value)


def render_topic_id(raw: bytes) -> str:
    """A topic ID as Kafka's tools show it (``kafka-topics.sh --describe``, ``Uuid.toString``).

    URL-safe base64 without padding: 22 characters for the 16 bytes.
    """
    if len(raw) != _UUID_SIZE:
        raise ValueError(f"a topic ID is {_UUID_SIZE} bytes, not {len(raw)}")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------------------------
# Wire structs. In flexible versions every struct, nested ones included, ends in tagged fields.

_STRING = CompactString("utf-8")

_REQUEST_TOPICS = (
    "topics",
    CompactArray(("topic_id", Uuid), ("name", _STRING), ("tags", TaggedFields)),
)

_BROKERS = (
    "brokers",
    CompactArray(
        ("node_id", Int32),
        ("host", _STRING),
        ("port", Int32),
        ("rack", _STRING),
        ("tags", TaggedFields),
    ),
)

_TOPICS = (
    "topics",
    CompactArray(
        ("error_code", Int16),
        ("name", _STRING),
        ("topic_id", Uuid),
        ("is_internal", Boolean),
        (
            "partitions",
            CompactArray(
                ("error_code", Int16),
                ("partition_index", Int32),
                ("leader_id", Int32),
                ("leader_epoch", Int32),
                ("replica_nodes", CompactArray(Int32)),
                ("isr_nodes", CompactArray(Int32)),
                ("offline_replicas", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("topic_authorized_operations", Int32),
        ("tags", TaggedFields),
    ),
)


class MetadataResponse_v10(Response):  # type: ignore[misc]
    API_KEY = _API_KEY
    API_VERSION = 10
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _BROKERS,
        ("cluster_id", _STRING),
        ("controller_id", Int32),
        _TOPICS,
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields),
    )


class MetadataResponse_v11(Response):  # type: ignore[misc]
    API_KEY = _API_KEY
    API_VERSION = 11
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _BROKERS,
        ("cluster_id", _STRING),
        ("controller_id", Int32),
        _TOPICS,
        ("tags", TaggedFields),
    )


class MetadataResponse_v12(Response):  # type: ignore[misc]
    API_KEY = _API_KEY
    API_VERSION = 12
    SCHEMA = MetadataResponse_v11.SCHEMA


class MetadataResponse_v13(Response):  # type: ignore[misc]
    API_KEY = _API_KEY
    API_VERSION = 13
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _BROKERS,
        ("cluster_id", _STRING),
        ("controller_id", Int32),
        _TOPICS,
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class MetadataRequest_v10(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = _API_KEY
    API_VERSION = 10
    RESPONSE_TYPE = MetadataResponse_v10
    SCHEMA = Schema(
        _REQUEST_TOPICS,
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


_REQUEST_V11_SCHEMA = Schema(
    _REQUEST_TOPICS,
    ("allow_auto_topic_creation", Boolean),
    ("include_topic_authorized_operations", Boolean),
    ("tags", TaggedFields),
)


class MetadataRequest_v11(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = _API_KEY
    API_VERSION = 11
    RESPONSE_TYPE = MetadataResponse_v11
    SCHEMA = _REQUEST_V11_SCHEMA


class MetadataRequest_v12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = _API_KEY
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = _REQUEST_V11_SCHEMA


class MetadataRequest_v13(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = _API_KEY
    API_VERSION = 13
    RESPONSE_TYPE = MetadataResponse_v13
    SCHEMA = _REQUEST_V11_SCHEMA


_RequestStruct = (
    MetadataRequest_v10 | MetadataRequest_v11 | MetadataRequest_v12 | MetadataRequest_v13
)


class MetadataRequest(Request[_RequestStruct]):  # type: ignore[misc]
    """Metadata of the named topics, never creating them; aiokafka picks the version.

    The connection sends the highest of v10..v13 the broker accepts (its ApiVersions).
    """

    API_KEY = _API_KEY

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = list(topics)

    def build(self, request_struct_class: type[_RequestStruct]) -> _RequestStruct:
        # By name, so the ID is the zero UUID (v10/v11 brokers ignore it; v12+ read it).
        no_tags: dict[int, bytes] = {}
        topics = [(ZERO_TOPIC_ID, name, no_tags) for name in self.topics]
        if request_struct_class is MetadataRequest_v10:
            return MetadataRequest_v10(topics, False, False, False, no_tags)
        return request_struct_class(topics, False, False, no_tags)


# --------------------------------------------------------------------------------------------
# Response -> answer


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What identifies one existing topic.

    ``topic_id`` is rendered as Kafka's tools show it (see :func:`render_topic_id`).
    """

    name: str
    topic_id: str
    partitions: int


def _broker_error(code: int) -> str:
    error = ak.for_code(code)
    name = getattr(error, "message", error.__name__)
    description = getattr(error, "description", "")
    return f"{name} (error {code}): {description}" if description else f"{name} (error {code})"


def topics_from_response(response: Any, topics: Sequence[str]) -> dict[str, TopicInfo | None]:
    """Each of ``topics`` as the broker described it; ``None`` for a topic that does not exist.

    Raises :class:`KafkaAuthError` if the principal may not describe a topic, and
    :class:`KafkaError` for any other error or for a topic missing from the answer.
    """
    top_level = getattr(response, "error_code", _NO_ERROR)
    if top_level != _NO_ERROR:
        names = ", ".join(repr(t) for t in topics)
        cls = KafkaAuthError if top_level in _AUTH_ERRORS else KafkaError
        raise cls(f"cannot describe topics {names}: the broker answered {_broker_error(top_level)}")
    described = {entry[1]: entry for entry in response.topics}
    found: dict[str, TopicInfo | None] = {}
    for name in topics:
        entry = described.get(name)
        if entry is None:
            raise KafkaError(f"cannot describe topic {name!r}: the broker's answer left it out")
        error_code, _, raw_id, _, partitions = entry[:5]
        if error_code == ak.UnknownTopicOrPartitionError.errno:
            found[name] = None
            continue
        if error_code != _NO_ERROR:
            cls = KafkaAuthError if error_code in _AUTH_ERRORS else KafkaError
            raise cls(
                f"cannot describe topic {name!r}: the broker answered {_broker_error(error_code)}"
            )
        if raw_id == ZERO_TOPIC_ID:
            raise KafkaError(f"cannot describe topic {name!r}: the broker gave it no topic ID")
        # Partition-level errors (a leader being elected) say nothing about the topic's identity.
        found[name] = TopicInfo(
            name=name, topic_id=render_topic_id(raw_id), partitions=len(partitions)
        )
    return found


# --------------------------------------------------------------------------------------------
# I/O shell


async def describe_topics(
    client: AIOKafkaClient,
    topics: Sequence[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, TopicInfo | None]:
    """The ID and partition count of each of ``topics`` (``None``: the topic does not exist).

    ``client`` is a started aiokafka client; for a consumer that is ``consumer._client``,
    a private attribute, because aiokafka offers no public way to send a request it does not
    define itself, and using the consumer's own client reuses its connections and security
    settings instead of bootstrapping a second client. The request goes to a broker the
    client knows, trying the next one if a broker cannot be reached, like aiokafka's own
    metadata refresh; ``timeout_s`` bounds the whole call.
    """
    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    context = (
        "cannot describe topic"
        + ("s " if len(names) > 1 else " ")
        + ", ".join(repr(n) for n in names)
    )
    try:
        async with asyncio.timeout(timeout_s):
            response = await _send_to_any_broker(client, MetadataRequest(names), context)
    except TimeoutError as exc:
        raise KafkaError(f"{context}: no broker answered within {timeout_s:g} s") from exc
    return topics_from_response(response, names)


def _connected(client: AIOKafkaClient, node_id: int) -> bool:
    conn = client._conns.get((node_id, ConnectionGroup.DEFAULT))
    return conn is not None and bool(conn.connected())


async def _send_to_any_broker(
    client: AIOKafkaClient, request: MetadataRequest, context: str
) -> Any:
    node_ids = [broker.nodeId for broker in client.cluster.brokers()]
    if not node_ids:
        raise KafkaError(f"{context}: the client knows no broker (is it started?)")
    random.shuffle(node_ids)
    # Brokers this client is connected to first: a new connection costs a handshake (and an
    # authentication), and one opened only for this look-up closes again when idle.
    node_ids.sort(key=lambda node_id: not _connected(client, node_id))
    last: BaseException | None = None
    for node_id in node_ids:
        try:
            return await client.send(node_id, request)
        except (ak.IncompatibleBrokerVersion, NotImplementedError) as exc:
            # Raised while choosing the version: the broker speaks no Metadata v10..v13.
            raise KafkaError(
                f"{context}: the broker does not return topic IDs (Metadata v10+, "
                "Kafka 2.8 or later, is needed)"
            ) from exc
        except (ak.KafkaConnectionError, ak.NodeNotReadyError, ak.RequestTimedOutError) as exc:
            last = exc
        except ak.KafkaError as exc:
            raise translate(exc, context=context) from exc
    assert last is not None
    raise translate(last, context=context) from last
