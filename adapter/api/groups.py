"""Resetting a subscription's consumer-group offsets: the Kafka I/O.

Kafka only accepts offsets for a group from outside the group while the group is *empty*, and
that is also the only safe moment: a member still consuming would commit its own positions
over ours. So :func:`reset_group_offsets` first waits until the broker reports no member in
the group — whichever poller instances ran the subscription — and then commits explicit
offsets from a consumer that is not a member (manual assignment, generation -1). If a member
joins in between, the broker rejects the commit and the reset fails with a conflict instead of
half-applying.

aiokafka errors are translated here: a group that does not empty in time or a rejected commit
is a :class:`~adapter.errors.ConflictError`, an unknown topic a
:class:`~adapter.errors.ValidationError`, anything else a :class:`~adapter.errors.KafkaError`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.structs import OffsetAndMetadata

from adapter.errors import ConflictError, KafkaError, ValidationError
from adapter.kafka.options import ClientOptions
from adapter.kafka.security import consumer_security_kwargs
from adapter.kafka.topics import describe_topics
from adapter.model import topic_key

__all__ = ["ResetTarget", "reset_group_offsets"]

ResetTarget = Literal["earliest", "latest"] | int
"""Where to move: the beginning, the end, or the first record at/after epoch milliseconds."""

_POLL_S = 0.25


def _members(description: Any, group: str) -> int:
    for response in description:
        for entry in response.groups:
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            if entry[1] == group:
                return len(entry[5])
    return 0


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    described = await admin.describe_topics([topic])
    found = described[0] if described else {}
    if found.get("error_code", 0) != 0 or not found.get("partitions"):
        raise ValidationError(f"topic {topic!r} does not exist on the cluster")
    return sorted(int(p["partition"]) for p in found["partitions"])


async def reset_group_offsets(
    options: ClientOptions,
    topic: str,
    to: ResetTarget,
    *,
    timeout_s: float,
) -> dict[tuple[str, int], int]:
    """Commit the offsets of ``to`` for every partition of ``topic`` in the subscription's
    group, once the group has no member. Returns ``{(topic key, partition): offset}``, the
    topic keyed by its identity (``adapter.model.topic_key``), as the ledger keys it.

    Each commit carries the topic's ID as metadata, like the engine's own commits, so the
    positions are known to belong to this topic and not to a later one of the same name."""
    group = options.group_id
    security = consumer_security_kwargs(options.security)
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(
        bootstrap_servers=options.bootstrap_servers,
        client_id=options.consumer_kwargs.get("client_id", "kafka-ingress-admin"),
        request_timeout_ms=int(max(1.0, min(timeout_s, 30.0)) * 1000),
        **security,
    )
    try:
        try:
            await admin.start()
            partitions = await _partitions(admin, topic)
            while (members := _members(await admin.describe_consumer_groups([group]), group)) > 0:
                if time.monotonic() >= deadline:
                    raise ConflictError(
                        f"consumer group {group!r} still has {members} active member(s) after "
                        f"{timeout_s:g}s; stop every consumer of the group (other pollers, other "
                        "tools) and try again"
                    )
                await asyncio.sleep(_POLL_S)
        except AIOKafkaError as exc:
            raise KafkaError(f"cannot inspect consumer group {group!r}: {exc}") from exc
    finally:
        await admin.close()

    kwargs = dict(options.consumer_kwargs)
    kwargs.update(security)
    consumer = AIOKafkaConsumer(**kwargs)
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        if to == "earliest":
            offsets = await consumer.beginning_offsets(tps)
        elif to == "latest":
            offsets = await consumer.end_offsets(tps)
        else:
            ends = await consumer.end_offsets(tps)
            found = await consumer.offsets_for_times(dict.fromkeys(tps, to))
            offsets = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        info = (await describe_topics(consumer._client, [topic])).get(topic)
        topic_id = info.topic_id if info is not None else None
        await consumer.commit(
            {tp: OffsetAndMetadata(int(offset), topic_id or "") for tp, offset in offsets.items()}
        )
    except CommitFailedError as exc:
        raise ConflictError(
            f"consumer group {group!r} got a member while its offsets were being reset; "
            "nothing was changed, try again"
        ) from exc
    except AIOKafkaError as exc:
        raise KafkaError(f"cannot reset the offsets of group {group!r}: {exc}") from exc
    finally:
        await consumer.stop()
    key = topic_key(topic, topic_id)
    return {(key, tp.partition): int(offset) for tp, offset in offsets.items()}
