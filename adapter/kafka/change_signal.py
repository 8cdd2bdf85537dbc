"""Wake-ups for the change feed: a record on a cluster's signal topic makes pollers read it now.

Pollers read the change feed in DynamoDB once a second (adapter.engine.control) — the request
budget allows no more — so without help a subscription created through one poller's admin API
reaches another poller up to a second later, plus its consumer's start. So after each write of a
subscription the admin API produces one empty record to :data:`SIGNAL_TOPIC` on that
subscription's cluster (:class:`ChangeSignaller`), and every poller long-polls that topic on each
cluster its subscriptions use (:class:`ChangeListener`: one partition, no consumer group, from
the end, fetches held by the broker for up to :data:`FETCH_WAIT_MS`, so an idle listener costs
one request per 5 s; over TLS two a second, :data:`TLS_FETCH_WAIT_MS`). A record wakes the
supervisor, which reads the feed at once.

The record carries nothing: the feed stays the only source of truth, and a signal that is lost,
late or sent by another deployment on the same cluster only costs one early read of the feed.
Neither side ever fails a request or a poller: errors are logged once and the regular poll
covers the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import TopicAlreadyExistsError

__all__ = [
    "FETCH_WAIT_MS",
    "SIGNAL_TOPIC",
    "STOP_TIMEOUT_S",
    "TLS_FETCH_WAIT_MS",
    "ChangeListener",
    "ChangeSignaller",
    "connection_kwargs",
    "ensure_signal_topic",
    "listener_fetch_wait_ms",
]

log = logging.getLogger(__name__)

SIGNAL_TOPIC = "__kafka_ingress_changes"
FETCH_WAIT_MS = 5_000
TLS_FETCH_WAIT_MS = 500
"""The hold over TLS. Closing a TLS connection waits for the broker's own close, and the
broker reads the client's close only once it has answered the request in flight: with the
5 s hold, a listener took up to 5 s to stop (a poller's shutdown, a cluster's last
subscription gone). Two idle fetches a second per cluster is the price."""
SEND_TIMEOUT_S = 2.0
RETRY_S = 30.0
STOP_TIMEOUT_S = 5.0
RETRY_AFTER_FAILURE_S = 10.0
"""After a signal failed, its cluster's next signals are dropped this long (the pollers read
the feed every second anyway)."""


def connection_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The broker connection part of a consumer's arguments (servers, security, timeouts)."""
    keep = (
        "bootstrap_servers",
        "client_id",
        "request_timeout_ms",
        "metadata_max_age_ms",
        "connections_max_idle_ms",
        "api_version",
    )
    return {
        k: v for k, v in kwargs.items() if k in keep or k.startswith(("security_", "sasl_", "ssl_"))
    }


def listener_fetch_wait_ms(connection: Mapping[str, Any]) -> int:
    """How long the broker may hold a listener's fetch on ``connection`` (aiokafka's
    arguments): :data:`TLS_FETCH_WAIT_MS` when it uses TLS, else :data:`FETCH_WAIT_MS`."""
    return TLS_FETCH_WAIT_MS if connection.get("ssl_context") is not None else FETCH_WAIT_MS


async def ensure_signal_topic(connection: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(**connection)
    await admin.start()
    try:
        if SIGNAL_TOPIC in await admin.list_topics():
            return
        brokers = len(admin._client.cluster.brokers())
        with contextlib.suppress(TopicAlreadyExistsError):  # another poller was first
            await admin.create_topics([NewTopic(SIGNAL_TOPIC, 1, max(1, min(3, brokers)))])
            log.info("created change signal topic %s", SIGNAL_TOPIC)
    finally:
        with contextlib.suppress(AIOKafkaError):
            await admin.close()


class ChangeListener:
    """Long-polls one cluster's signal topic and calls ``on_signal`` for each batch of records."""

    def __init__(
        self, cluster: str, consumer_kwargs: dict[str, Any], on_signal: Callable[[], None]
    ) -> None:
        self.cluster = cluster
        self._connection = connection_kwargs(consumer_kwargs)
        self._on_signal = on_signal
        self.signals = 0
        self.ready = asyncio.Event()
        """Set once the listener fetches from the end of the topic (tests wait for it)."""

    async def run(self) -> None:
        warned = False
        while True:
            consumer = AIOKafkaConsumer(
                **self._connection,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=listener_fetch_wait_ms(self._connection),
            )
            try:
                await ensure_signal_topic(self._connection)
                await consumer.start()
                tp = TopicPartition(SIGNAL_TOPIC, 0)
                consumer.assign([tp])
                await consumer.seek_to_end(tp)
                await consumer.position(tp)
                self.ready.set()
                log.info("listening for change signals on cluster %s", self.cluster)
                while True:
                    batch = await consumer.getmany(tp, timeout_ms=60_000)
                    if batch.get(tp):
                        self.signals += 1
                        log.debug("change signal heard on cluster %s", self.cluster)
                        self._on_signal()
            except AIOKafkaError as exc:
                if not warned:
                    warned = True
                    log.warning(
                        "cluster %s: no change signals (%s); changes are seen by the poll of "
                        "the change feed instead, retrying every %.0f s",
                        self.cluster,
                        exc,
                        RETRY_S,
                    )
            finally:
                self.ready.clear()
                # Bounded: a poller's shutdown must not wait on a signal listener.
                with contextlib.suppress(AIOKafkaError, TimeoutError):
                    await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)
            await asyncio.sleep(RETRY_S)


class ChangeSignaller:
    """Produces the wake-up records, one producer per cluster, created on first use."""

    def __init__(self) -> None:
        self._producers: dict[str, AIOKafkaProducer] = {}
        # One producer made at a time per cluster: the first signals of a cluster arrive
        # together (an /apply of many subscriptions), and each would make its own.
        self._making: dict[str, asyncio.Lock] = {}
        # Signals of a cluster that could not be reached wait this long before trying again,
        # instead of each queueing for its own connection timeout.
        self._failed_until: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()

    def signal(self, cluster: str, connect: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Send a wake-up for ``cluster`` in the background; ``connect`` gives the consumer
        arguments of the cluster (called only when its producer is first made)."""
        task = asyncio.get_running_loop().create_task(self._send(cluster, connect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, cluster: str, connect: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        producer = None
        try:
            async with self._making.setdefault(cluster, asyncio.Lock()):
                if time.monotonic() < self._failed_until.get(cluster, 0.0):
                    return  # it just failed: the pollers' poll of the feed covers the change
                producer = self._producers.get(cluster)
                if producer is None:
                    producer = AIOKafkaProducer(
                        **connection_kwargs(await connect()), acks=1, linger_ms=0
                    )
                    self._producers[cluster] = producer
                    await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
            await asyncio.wait_for(producer.send_and_wait(SIGNAL_TOPIC, b""), SEND_TIMEOUT_S)
        except Exception as exc:  # never fails the admin request: the poll covers the change
            if cluster not in self._warned:
                self._warned.add(cluster)
                log.warning(
                    "cluster %s: cannot send a change signal (%s); pollers see the change at "
                    "their next poll of the change feed",
                    cluster,
                    exc,
                )
            # Not the cluster's producer if another signal replaced it meanwhile: that one
            # stays, and the cluster is not taken for unreachable.
            ours = producer is not None and self._producers.get(cluster) is producer
            if ours:
                del self._producers[cluster]
            if producer is None or ours:
                self._failed_until[cluster] = time.monotonic() + RETRY_AFTER_FAILURE_S
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for producer in self._producers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)
        self._producers.clear()
