"""``GET /subscriptions/{id}/lag``: a subscription's lag as Kafka sees it, from any poller.

The consumer group is the subscription ID and its committed offsets live in Kafka, so any poller
can answer — including one that does not run the subscription (pollers share subscriptions) and
after restarts, when in-process figures start from nothing. Per partition the answer holds the
committed offset, the log's start and end, and ``lag = end - max(committed, start)``: the records
a consumer of the group has still to process (a committed offset below the log start counts
from the start: retention removed the rest; one committed for an earlier topic of the same name
counts as none, as the poller treats it). The dashboard uses it for its lag columns and for
what an offset reset would re-deliver or skip.

Kafka is asked through a consumer with the group's ID that never joins the group and never
commits (manual assignment), and the answer is cached for :data:`CACHE_S` per subscription, so
a page polling every 2 s costs the cluster at most one look-up per second per subscription.

:func:`partition_lag` is pure; :func:`read_group_lag` is the Kafka I/O (aiokafka errors become
:class:`~adapter.errors.KafkaError`, a 503).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from adapter.api.endpoint import AdminState, Endpoint, json_response
from adapter.api.subscriptions import find_subscription
from adapter.errors import KafkaError, UnknownResourceError
from adapter.kafka.commit_marks import parse_commit_metadata
from adapter.kafka.options import ClientOptions
from adapter.kafka.security import consumer_security_kwargs
from adapter.kafka.topics import describe_topics

__all__ = ["CACHE_S", "ENDPOINTS", "GroupLag", "PartitionLag", "partition_lag", "read_group_lag"]

CACHE_S = 1.0
READ_TIMEOUT_S = 10.0


class PartitionLag(BaseModel):
    model_config = ConfigDict(extra="forbid")
    partition: int
    committed: int | None
    """The group's committed offset (the next record to process); None before any commit."""
    log_start: int
    log_end: int
    lag: int


class GroupLag(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subscription: str
    group: str
    topic: str
    topic_exists: bool
    partitions: list[PartitionLag]
    lag: int
    """The sum over partitions."""


def partition_lag(partition: int, committed: int | None, start: int, end: int) -> PartitionLag:
    """Records left for the group on one partition (never negative)."""
    position = start if committed is None else max(committed, start)
    return PartitionLag(
        partition=partition,
        committed=committed,
        log_start=start,
        log_end=end,
        lag=max(0, end - position),
    )


@dataclass(frozen=True, slots=True)
class _Cached:
    at: float
    value: GroupLag


async def read_group_lag(options: ClientOptions, subscription: str, topic: str) -> GroupLag:
    kwargs = dict(options.consumer_kwargs)
    kwargs.update(consumer_security_kwargs(options.security))
    # The group's ID, to read its commits; manual assignment never joins it, nothing commits.
    kwargs.update(enable_auto_commit=False, auto_offset_reset="none")
    consumer = AIOKafkaConsumer(**kwargs)
    try:
        await consumer.start()
        info = (await describe_topics(consumer._client, [topic])).get(topic)
        if info is None or info.partitions == 0:
            return GroupLag(
                subscription=subscription,
                group=options.group_id,
                topic=topic,
                topic_exists=False,
                partitions=[],
                lag=0,
            )
        tps = [TopicPartition(topic, p) for p in range(info.partitions)]
        consumer.assign(tps)
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        # With their metadata (what consumer.committed() leaves out): the poller commits the
        # topic ID with each offset, which tells a commit for an earlier topic of this name.
        found = await consumer._coordinator.fetch_committed_offsets(set(tps))
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot read the lag of group {options.group_id!r}: {exc}") from exc
    finally:
        await consumer.stop()
    parts = [
        partition_lag(
            tp.partition,
            _current_commit(found.get(tp), info.topic_id),
            int(starts[tp]),
            int(ends[tp]),
        )
        for tp in tps
    ]
    return GroupLag(
        subscription=subscription,
        group=options.group_id,
        topic=topic,
        topic_exists=True,
        partitions=parts,
        lag=sum(p.lag for p in parts),
    )


def _current_commit(committed: Any, topic_id: str | None) -> int | None:
    """The committed offset, unless it was committed for an earlier topic of the same name
    (its metadata is another topic ID): the poller ignores such a commit and consumes the new
    topic from its beginning, so the lag counts from there."""
    offset = getattr(committed, "offset", -1)
    if committed is None or offset is None or offset < 0:
        return None
    recorded, _ = parse_commit_metadata(getattr(committed, "metadata", ""))
    if recorded and topic_id and recorded != topic_id:
        return None
    return int(offset)


_cache: dict[str, _Cached] = {}


async def get_lag(request: Request, state: AdminState) -> Response:
    sub = await find_subscription(state, request.path_params["subscription"])
    if sub is None:
        raise UnknownResourceError(
            f"the subscription {request.path_params['subscription']!r} does not exist"
        )
    cached = _cache.get(sub.id)
    if cached is not None and time.monotonic() - cached.at < CACHE_S:
        return json_response(cached.value)
    options = await state.client_options(sub.cluster, sub.id)
    try:
        lag = await asyncio.wait_for(
            read_group_lag(options, sub.id, sub.topic), timeout=READ_TIMEOUT_S
        )
    except TimeoutError as exc:
        raise KafkaError(
            f"the cluster {sub.cluster!r} did not answer within {READ_TIMEOUT_S:g}s"
        ) from exc
    _cache[sub.id] = _Cached(time.monotonic(), lag)
    if len(_cache) > 10_000:  # bounded: drop the oldest half
        for key in sorted(_cache, key=lambda k: _cache[k].at)[:5_000]:
            del _cache[key]
    return json_response(lag)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/subscriptions/{subscription}/lag",
        get_lag,
        "get_subscription_lag",
        "The subscription's lag per partition from its consumer group's committed offsets",
        "subscription",
        {200: GroupLag, 400: None, 404: None, 503: None},
    ),
]
