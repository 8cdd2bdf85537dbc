"""The supervisor's bookkeeping of its subscriptions, with a fake change feed and no cluster:
every runner fails to build (unknown cluster) and backs off, which is enough to start and stop
slots."""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import generate_latest

from adapter.api.metrics import OldestAge, Snapshot, metrics_registry
from adapter.config import KafkaCluster, Settings
from adapter.engine import supervisor as supervisor_module
from adapter.engine.supervisor import Supervisor
from adapter.engine.timings import AttemptTimings
from adapter.invokers.base import OutcomeKind
from adapter.kafka.options import ClientOptions
from adapter.model import ServiceInfo, Subscription
from tests.harness import eventually


class _Feed:
    """The change feed: the subscriptions it returns are the table's. Its registry knows no
    service, so every runner fails to build after its options were resolved."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self.subscriptions = subscriptions
        self.registry = self
        self.settled = True

    async def get_service(self, name: str) -> ServiceInfo | None:
        return None

    async def poll(self) -> list[Subscription]:
        return list(self.subscriptions)


def _subscription(sub_id: str, **changes: Any) -> Subscription:
    return Subscription(sub_id, "nowhere", "t", "svc", "h", **changes)


async def test_a_deleted_subscription_s_histograms_leave_metrics_and_others_stay() -> None:
    gone, kept, paused = "sub_sup_gone", "sub_sup_kept", "sub_sup_paused"
    feed = _Feed([_subscription(gone), _subscription(kept), _subscription(paused)])
    supervisor = Supervisor(Settings(), cast(Any, None), cast(Any, None), cast(Any, None))
    supervisor._control = cast(Any, feed)
    registry = metrics_registry(Snapshot, OldestAge())
    try:
        await supervisor.refresh()
        assert set(supervisor.status()) == {gone, kept, paused}
        for sub_id in (gone, kept, paused):
            # What each runner's dispatcher observes (the process-wide histograms).
            AttemptTimings(sub_id).attempt(OutcomeKind.ACK, 0.1)
        feed.subscriptions = [_subscription(kept), _subscription(paused, paused=True)]
        await supervisor.refresh()
        assert set(supervisor.status()) == {kept}
        text = generate_latest(registry).decode()
        assert f'subscription="{gone}"' not in text
        assert f'subscription="{paused}"' not in text
        duration = "kafka_ingress_invocation_duration_seconds_count"
        assert f'{duration}{{outcome="ack",subscription="{kept}"}} 1.0' in text
    finally:
        await supervisor.shutdown()


def _cluster(brokers: str) -> KafkaCluster:
    return KafkaCluster.model_validate(
        {
            "name": "c",
            "brokers": [brokers],
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "ingress",
            "sasl.password": "cluster-pw",
        }
    )


async def test_a_slot_rebuilt_after_a_failure_pairs_its_subscription_with_its_cluster_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its own password removed, the cluster moved (allowed now): a slot still holding the
    subscription as it was, rebuilt after a failure before the change feed replaced it, sent
    the removed password to the new brokers."""
    own = {"sasl.username": "own-user", "sasl.password": "own-pw"}
    feed = _Feed([Subscription("sub_pair", "c", "t", "svc", "h", own)])
    clusters = {"c": _cluster("127.0.0.1:9")}
    built: list[tuple[list[str], str | None]] = []
    resolve = supervisor_module.resolve_options

    def spied(**kwargs: Any) -> ClientOptions:
        options = resolve(**kwargs)
        built.append((options.bootstrap_servers, options.security.sasl_password))
        return options

    monkeypatch.setattr(supervisor_module, "resolve_options", spied)
    supervisor = Supervisor(
        Settings(), cast(Any, None), cast(Any, None), cast(Any, None), clusters=lambda: clusters
    )
    supervisor._control = cast(Any, feed)

    async def builds(count: int) -> None:
        await eventually(lambda: len(built) >= count, timeout=10, message=f"build {count}")

    try:
        await supervisor.refresh()
        await builds(1)
        assert built == [(["127.0.0.1:9"], "own-pw")]
        # The password removed, then the cluster moved; the feed has not replaced the slot
        # yet when its backoff ends.
        feed.subscriptions = [Subscription("sub_pair", "c", "t", "svc", "h", {}, revision=2)]
        clusters["c"] = _cluster("evil.example:9092")
        await builds(2)
        assert built[1] == (["127.0.0.1:9"], "own-pw")  # the pair as it was read
        await supervisor.refresh()  # the new revision: a new slot, from the pair as it is now
        await builds(3)
        assert built[2] == (["evil.example:9092"], "cluster-pw")
    finally:
        await supervisor.shutdown()


async def test_a_feed_that_kept_changing_while_read_stops_but_starts_nothing() -> None:
    feed = _Feed([_subscription("sub_sup_a")])
    supervisor = Supervisor(Settings(), cast(Any, None), cast(Any, None), cast(Any, None))
    supervisor._control = cast(Any, feed)
    try:
        await supervisor.refresh()
        assert set(supervisor.status()) == {"sub_sup_a"}
        feed.subscriptions = [_subscription("sub_sup_b")]
        feed.settled = False
        await supervisor.refresh()
        assert set(supervisor.status()) == set()  # a deleted one stops all the same
        feed.settled = True
        await supervisor.refresh()
        assert set(supervisor.status()) == {"sub_sup_b"}
    finally:
        await supervisor.shutdown()


async def test_a_cluster_changed_without_its_subscriptions_revisions_restarts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Created again under its name after a forced delete, or updated by a request cut short
    before it moved its subscriptions' revisions: the slots still follow the cluster."""
    feed = _Feed([Subscription("sub_moved", "c", "t", "svc", "h", {})])
    clusters = {"c": _cluster("old.example:9092")}
    built: list[list[str]] = []
    resolve = supervisor_module.resolve_options

    def spied(**kwargs: Any) -> ClientOptions:
        options = resolve(**kwargs)
        built.append(options.bootstrap_servers)
        return options

    monkeypatch.setattr(supervisor_module, "resolve_options", spied)
    supervisor = Supervisor(
        Settings(), cast(Any, None), cast(Any, None), cast(Any, None), clusters=lambda: clusters
    )
    supervisor._control = cast(Any, feed)
    try:
        await supervisor.refresh()
        await eventually(lambda: len(built) >= 1, timeout=10, message="the first build")
        clusters["c"] = _cluster("new.example:9092")
        await supervisor.refresh()
        await eventually(lambda: len(built) >= 2, timeout=10, message="the second build")
        assert built == [["old.example:9092"], ["new.example:9092"]]
    finally:
        await supervisor.shutdown()


async def test_a_slot_starts_with_the_clusters_as_the_feed_saw_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a slot comes after stopping others, which waits for their runners: the admin
    API in the same process may meanwhile take the subscription's password away and move the
    cluster in the catalog the supervisor shares. The subscription as the feed read it must
    not meet the cluster as it is after that."""
    own = {"sasl.username": "own-user", "sasl.password": "own-pw"}
    feed = _Feed([Subscription("sub_shared", "c", "t", "svc", "h", own)])
    clusters = {"c": _cluster("127.0.0.1:9")}
    built: list[tuple[list[str], str | None]] = []
    resolve = supervisor_module.resolve_options

    def spied(**kwargs: Any) -> ClientOptions:
        options = resolve(**kwargs)
        built.append((options.bootstrap_servers, options.security.sasl_password))
        return options

    monkeypatch.setattr(supervisor_module, "resolve_options", spied)
    supervisor = Supervisor(
        Settings(), cast(Any, None), cast(Any, None), cast(Any, None), clusters=lambda: clusters
    )
    supervisor._control = cast(Any, feed)
    stop = supervisor._stop_slot

    async def stop_while_the_admin_moves_the_cluster(sub_id: str) -> None:
        await stop(sub_id)
        clusters["c"] = _cluster("evil.example:9092")

    monkeypatch.setattr(supervisor, "_stop_slot", stop_while_the_admin_moves_the_cluster)
    try:
        await supervisor.refresh()
        await eventually(lambda: len(built) >= 1, timeout=10, message="the first build")
        feed.subscriptions = [Subscription("sub_shared", "c", "t", "svc", "h", own, revision=2)]
        await supervisor.refresh()  # restarts it: a new revision
        await eventually(lambda: len(built) >= 2, timeout=10, message="the second build")
        assert built[1] == (["127.0.0.1:9"], "own-pw")
    finally:
        await supervisor.shutdown()
