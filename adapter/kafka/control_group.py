"""The shard map's coordination: a control consumer group whose partition assignment *is* it.

Every poller of a poller group joins the consumer group ``<table prefix>pollers.<group>``
(``kafka-ingress-pollers.default`` by default) on
the control topic (``__kafka_ingress_shards``, one partition per shard, created by the first
poller that finds it missing). Kafka's group membership — heartbeats, session timeouts,
rebalances, static membership — decides who is alive; the group leader's assignor only
splits the shards among the members that Kafka says are there. No consensus of our own.

The assignor is sticky: its leader starts from the previous map (every member receives the
whole map with its assignment, so whoever leads next knows it) and moves only the shards a
new balance needs — adding a poller to ``n`` moves about ``1/(n+1)`` of the shards, removing
one moves only its shards. The member metadata carries just the poller's name, unchanged
across restarts, so a static member (``group.instance.id``) that comes back within the
session timeout rejoins without a rebalance and keeps its shards.

Nothing is ever produced to or consumed from the control topic: its partitions only name
the shards. The member pauses every control partition it is assigned.

The member is also the poller's change signal listener on its cluster
(``adapter.kafka.change_signal``): it subscribes to the signal topic as well, and the
assignor hands every signal partition to *every* member (Kafka does not check that a
partition goes to one member only; the group never commits, so each member reads from the
end). One client thus does both jobs — two broker connections (fetches and metadata; the
group coordinator) instead of three with a listener of its own. Its fetch is held up to
:func:`~adapter.kafka.change_signal.listener_fetch_wait_ms` (5 s, over TLS 0.5 s), so a
partition count request may queue that long behind it: counts only widen a subscription's
pollers beyond the minimum, which runs meanwhile (``adapter.engine.shards``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import IllegalStateError, TopicAlreadyExistsError
from aiokafka.errors import KafkaError as AIOKafkaError

from adapter.errors import KafkaError
from adapter.kafka.change_signal import (
    SIGNAL_TOPIC,
    connection_kwargs,
    ensure_signal_topic,
    listener_fetch_wait_ms,
)
from adapter.kafka.errors import translate
from adapter.kafka.topics import describe_topics

__all__ = ["CONTROL_TOPIC", "ControlGroup", "balance", "control_group_id"]

log = logging.getLogger(__name__)

CONTROL_TOPIC = "__kafka_ingress_shards"
ASSIGNOR_NAME = "kafka-ingress-shards"
# Without signals, fetches happen only between an assignment and its pause: keep them short.
_FETCH_WAIT_MS = 100
# A member without its signal partition asks for fresh metadata this often (doubling), at
# most as rarely as aiokafka's own refresh: a topic that cannot be created (no ACL) makes
# aiokafka log an error at each look.
_SIGNALS_RECHECK_S = 1.0
_SIGNALS_RECHECK_MAX_S = 300.0
_POLL_TIMEOUT_MS = 30_000
# aiokafka's fetch task wakes on every event it acts on; its 200 ms timer only costs CPU.
_FETCHER_TIMEOUT_MS = 2_000


def control_group_id(table_prefix: str, poller_group: str) -> str:
    """The control group of one deployment's poller group. The table prefix names the
    deployment: two deployments sharing a Kafka cluster must not share a shard map."""
    return f"{table_prefix}pollers.{poller_group}"


def balance(shards: int, pollers: Iterable[str], previous: Sequence[str] = ()) -> list[str]:
    """Owners of ``shards`` shards among ``pollers``: as even as possible (counts differ by at
    most one), keeping every shard of ``previous`` (owner per shard) whose owner is still
    there and under its quota. Deterministic: every leader computes the same map."""
    members = sorted(set(pollers))
    if shards <= 0 or not members:
        return []
    held = Counter(owner for owner in previous[:shards] if owner in members)
    base, extra = divmod(shards, len(members))
    # The pollers holding most get the extra shards: fewer moves.
    order = sorted(members, key=lambda p: (-held[p], p))
    quota = {p: base + (1 if i < extra else 0) for i, p in enumerate(order)}
    owners: list[str | None] = [None] * shards
    taken: Counter[str] = Counter()
    for shard, owner in enumerate(previous[:shards]):
        if owner in quota and taken[owner] < quota[owner]:
            owners[shard] = owner
            taken[owner] += 1
    hungry = [p for p in order if taken[p] < quota[p]]
    turn = 0
    for shard in range(shards):
        if owners[shard] is not None:
            continue
        # Round robin over the pollers still under quota spreads a newcomer's shards
        # over the ring instead of handing it one contiguous block.
        while taken[hungry[turn % len(hungry)]] >= quota[hungry[turn % len(hungry)]]:
            turn += 1
        owner = hungry[turn % len(hungry)]
        owners[shard] = owner
        taken[owner] += 1
        turn += 1
    return [o for o in owners if o is not None]


def _encode(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _decode(raw: bytes | None) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _assignor(poller: str, on_map: Callable[[list[str]], None]) -> type[AbstractPartitionAssignor]:
    """An assignor class of this member's own: aiokafka calls assignors through the class,
    so state (the last map) lives on a class made for this consumer."""

    class ShardAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
        name = ASSIGNOR_NAME
        version = 0
        last_map: list[str] = []  # one class per consumer, see above

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(
                cls.version, sorted(topics), _encode({"poller": poller})
            )

        @classmethod
        def assign(
            cls, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            names = {
                m: str(_decode(meta.user_data).get("poller") or m) for m, meta in members.items()
            }
            partitions = sorted(cluster.partitions_for_topic(CONTROL_TOPIC) or ())
            signals = sorted(cluster.partitions_for_topic(SIGNAL_TOPIC) or ())
            owners = balance(len(partitions), names.values(), cls.last_map)
            shared = _encode({"owners": owners})
            out = {}
            for member_id, name in names.items():
                mine = [p for p, owner in zip(partitions, owners, strict=True) if owner == name]
                assigned = [(CONTROL_TOPIC, mine)]
                # Every listening member reads every signal partition (see the module doc).
                if signals and SIGNAL_TOPIC in (members[member_id].subscription or ()):
                    assigned.append((SIGNAL_TOPIC, signals))
                out[member_id] = ConsumerProtocolMemberAssignment(cls.version, assigned, shared)
            return out

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            owners = _decode(assignment.user_data).get("owners")
            if isinstance(owners, list) and all(isinstance(o, str) for o in owners):
                cls.last_map = list(owners)
                on_map(cls.last_map)

    return ShardAssignor


class ControlGroup:
    """One poller's member of the control group of one Kafka cluster.

    ``on_map`` receives the whole map (owner name per shard) after every rebalance.
    ``client_kwargs`` are aiokafka's connection arguments for the cluster (brokers, security).
    ``on_signal``, if given, is called for each batch of change signals (the member listens
    on the signal topic too, see the module doc).
    """

    def __init__(
        self,
        *,
        cluster: str,
        group_id: str,
        poller: str,
        shards: int,
        client_kwargs: Mapping[str, Any],
        on_map: Callable[[list[str]], None],
        instance_id: str | None = None,
        session_timeout_ms: int = 10_000,
        on_signal: Callable[[], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.poller = poller
        self._shards = shards
        # A held fetch must not outlive an OAUTHBEARER token (adapter.kafka.consumer): such a
        # cluster's changes arrive by the poll of the change feed, as without a listener.
        oauth = client_kwargs.get("sasl_mechanism") == "OAUTHBEARER"
        self._on_signal = None if oauth else on_signal
        self.signals = 0
        self._client_kwargs = dict(client_kwargs)
        self._context = f"shard map of Kafka cluster {cluster!r}"
        self._consumer = AIOKafkaConsumer(
            group_id=group_id,
            group_instance_id=instance_id,
            client_id=f"kafka-ingress-poller-{poller}",
            enable_auto_commit=False,
            partition_assignment_strategy=(_assignor(poller, on_map),),
            fetch_max_wait_ms=(
                listener_fetch_wait_ms(client_kwargs)
                if self._on_signal is not None
                else _FETCH_WAIT_MS
            ),
            consumer_timeout_ms=_FETCHER_TIMEOUT_MS,
            session_timeout_ms=session_timeout_ms,
            # Nothing to process: never leave the group for not polling often enough.
            max_poll_interval_ms=_POLL_TIMEOUT_MS * 4,
            request_timeout_ms=40_000,
            **self._client_kwargs,
        )
        self._started = False
        self.ready = asyncio.Event()
        """Set once the member's client is up (:meth:`partition_counts` can answer)."""
        self._listener: _PauseAssigned | None = None
        self.listening = asyncio.Event()
        """Set once change signals are heard (the signal partition assigned and positioned)."""

    async def run(self) -> None:
        """Create the control topic if missing, join, and stay a member until cancelled."""
        announce: asyncio.Task[None] | None = None
        try:
            await self._ensure_topic()
            topics = [CONTROL_TOPIC]
            if self._on_signal is not None:
                await ensure_signal_topic(connection_kwargs(self._client_kwargs))
                topics.append(SIGNAL_TOPIC)
            await self._consumer.start()
            self._started = True
            self.ready.set()
            listener = self._listener = _PauseAssigned(self._consumer)
            self._consumer.subscribe(topics, listener=listener)
            if self._on_signal is not None:
                announce = asyncio.create_task(self._announce(listener.signals_assigned))
            while True:
                batches = await self._consumer.getmany(timeout_ms=_POLL_TIMEOUT_MS)
                if self._on_signal is not None and any(
                    records and tp.topic == SIGNAL_TOPIC for tp, records in batches.items()
                ):
                    self.signals += 1
                    log.debug("change signal heard on cluster %s", self.cluster)
                    self._on_signal()
        except AIOKafkaError as exc:
            raise translate(exc, context=self._context) from exc
        finally:
            if announce is not None:
                announce.cancel()
            # Also when it never started: an unclosed aiokafka consumer warns when collected.
            with contextlib.suppress(AIOKafkaError, TimeoutError):
                await asyncio.wait_for(self._consumer.stop(), 10)

    @property
    def assignments(self) -> int:
        """Assignments received so far (tests wait for the first)."""
        return self._listener.assignments if self._listener is not None else 0

    async def _announce(self, assigned: asyncio.Event) -> None:
        """Say so once signals are heard: the signal partition is assigned and positioned
        (at its end; a signal sent before that is seen by the poll of the change feed).

        The group's leader assigns what its metadata shows, and a signal topic created a
        moment before (by this poller, on a busy broker) may not be in it yet; aiokafka would
        see it only at its next metadata refresh, minutes later. So while no signal partition
        is assigned, the member asks for fresh metadata (after 1 s, doubling up to 5 minutes):
        a leader that then finds the topic rebalances the group, and every member gets the
        signals (a member that is not the leader only spends a metadata request)."""
        wait_s = _SIGNALS_RECHECK_S
        while not assigned.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(assigned.wait(), wait_s)
            if not assigned.is_set():
                self._consumer._client.force_metadata_update()
                wait_s = min(wait_s * 2, _SIGNALS_RECHECK_MAX_S)
        with contextlib.suppress(AIOKafkaError, IllegalStateError):
            await self._consumer.position(TopicPartition(SIGNAL_TOPIC, 0))
            self.listening.set()
            log.info("listening for change signals on cluster %s (shard map)", self.cluster)

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """Partition count of each topic that exists (one metadata request)."""
        if not self._started:
            return {}
        found = await describe_topics(self._consumer._client, topics)
        return {name: info.partitions for name, info in found.items() if info is not None}

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._client_kwargs)
        try:
            await admin.start()
            if CONTROL_TOPIC in await admin.list_topics():
                return
            brokers = len(admin._client.cluster.brokers())
            topic = NewTopic(CONTROL_TOPIC, self._shards, max(1, min(3, brokers)))
            with contextlib.suppress(TopicAlreadyExistsError):  # another poller was first
                response = await admin.create_topics([topic])
                _raise_topic_errors(response)
                log.info("created control topic %s with %d shards", CONTROL_TOPIC, self._shards)
            # Join only once the brokers serve it: a leader that does not see the topic's
            # partitions yet would hand out an empty map.
            for _ in range(100):
                described = await admin.describe_topics([CONTROL_TOPIC])
                partitions = described[0].get("partitions") if described else None
                if partitions and all(p.get("leader", -1) >= 0 for p in partitions):
                    return
                await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(AIOKafkaError):
                await admin.close()


class _PauseAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Pause the control partitions assigned: the shards are never read (signals are)."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.signals_assigned = asyncio.Event()
        self.assignments = 0

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assignments += 1
        self._consumer.pause(*(tp for tp in assigned if tp.topic == CONTROL_TOPIC))
        if any(tp.topic == SIGNAL_TOPIC for tp in assigned):
            self.signals_assigned.set()


def _raise_topic_errors(response: Any) -> None:
    for entry in getattr(response, "topic_errors", ()):
        code = entry[1]
        if code == TopicAlreadyExistsError.errno:
            continue
        if code:
            raise KafkaError(
                f"cannot create control topic {CONTROL_TOPIC}: broker error {code} "
                f"({entry[2] if len(entry) > 2 else ''})"
            )
