"""The supervisor's bookkeeping of its subscriptions, with a fake change feed and no cluster:
every runner fails to build (unknown cluster) and backs off, which is enough to start and stop
slots."""

from __future__ import annotations

import asyncio
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

    def __init__(
        self,
        subscriptions: list[Subscription],
        clusters: dict[str, KafkaCluster] | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.registry = self
        self.settled = True
        self.follows_clusters = clusters is not None
        self.clusters = clusters or {}
        """The dynamic clusters as the feed read them with its subscriptions."""

    async def get_service(self, name: str) -> ServiceInfo | None:
        return None

    async def poll(self) -> list[Subscription]:
        return list(self.subscriptions)


def _supervising(feed: _Feed) -> Supervisor:
    """A supervisor reading ``feed`` (no store, ledger or metrics of its own)."""
    supervisor = Supervisor(Settings(), cast(Any, None), cast(Any, None), cast(Any, None))
    supervisor._control = cast(Any, feed)
    return supervisor


def _subscription(sub_id: str, **changes: Any) -> Subscription:
    return Subscription(sub_id, "nowhere", "t", "svc", "h", **changes)


async def test_a_deleted_subscription_s_histograms_leave_metrics_and_others_stay() -> None:
    gone, kept, paused = "sub_sup_gone", "sub_sup_kept", "sub_sup_paused"
    feed = _Feed([_subscription(gone), _subscription(kept), _subscription(paused)])
    supervisor = _supervising(feed)
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


OWN = {"sasl.username": "own-user", "sasl.password": "own-pw"}
Built = list[tuple[list[str], str | None]]


def _spied(
    monkeypatch: pytest.MonkeyPatch, feed: _Feed, catalog: dict[str, KafkaCluster]
) -> tuple[Supervisor, Built]:
    """A supervisor on ``feed`` whose shared catalog is ``catalog``, and what each runner it
    built connects to: brokers and SASL password."""
    built: Built = []
    resolve = supervisor_module.resolve_options

    def spied(**kwargs: Any) -> ClientOptions:
        options = resolve(**kwargs)
        built.append((options.bootstrap_servers, options.security.sasl_password))
        return options

    monkeypatch.setattr(supervisor_module, "resolve_options", spied)
    supervisor = Supervisor(
        Settings(), cast(Any, None), cast(Any, None), cast(Any, None), clusters=lambda: catalog
    )
    supervisor._control = cast(Any, feed)
    return supervisor, built


async def _builds(built: Built, count: int) -> None:
    await eventually(lambda: len(built) >= count, timeout=10, message=f"build {count}")


async def test_a_slot_rebuilt_after_a_failure_pairs_its_subscription_with_its_cluster_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its own password removed, the cluster moved (allowed now): a slot still holding the
    subscription as it was, rebuilt after a failure before the change feed replaced it, sent
    the removed password to the new brokers."""
    catalog = {"c": _cluster("127.0.0.1:9")}
    feed = _Feed([Subscription("sub_pair", "c", "t", "svc", "h", OWN)], dict(catalog))
    supervisor, built = _spied(monkeypatch, feed, catalog)
    try:
        await supervisor.refresh()
        await _builds(built, 1)
        assert built == [(["127.0.0.1:9"], "own-pw")]
        # The password removed, then the cluster moved, both read by the feed; the slot is
        # not replaced yet when its backoff ends.
        feed.subscriptions = [Subscription("sub_pair", "c", "t", "svc", "h", {}, revision=2)]
        catalog["c"] = feed.clusters["c"] = _cluster("evil.example:9092")
        await _builds(built, 2)
        assert built[1] == (["127.0.0.1:9"], "own-pw")  # the pair as it was read
        await supervisor.refresh()  # the new revision: a new slot, from the pair as it is now
        await _builds(built, 3)
        assert built[2] == (["evil.example:9092"], "cluster-pw")
    finally:
        await supervisor.shutdown()


async def test_a_feed_that_kept_changing_while_read_stops_but_starts_nothing() -> None:
    feed = _Feed([_subscription("sub_sup_a")])
    supervisor = _supervising(feed)
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


async def test_a_pass_stops_its_subscriptions_together(monkeypatch: pytest.MonkeyPatch) -> None:
    # A consumer's stop may wait for the fetch the broker holds (over TLS, up to 5 s for a
    # quiet subscription): one after another, deleting many held the pass that many times.
    feed = _Feed([_subscription("sub_sup_a"), _subscription("sub_sup_b")])
    supervisor = _supervising(feed)
    stop = supervisor._stop_slot
    stopping: set[str] = set()
    both = asyncio.Event()

    async def slow(sub_id: str) -> None:
        stopping.add(sub_id)
        if len(stopping) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 2)  # the other stop started meanwhile
        await stop(sub_id)

    try:
        await supervisor.refresh()
        assert set(supervisor.status()) == {"sub_sup_a", "sub_sup_b"}
        monkeypatch.setattr(supervisor, "_stop_slot", slow)
        feed.subscriptions = []
        await supervisor.refresh()
        assert stopping == {"sub_sup_a", "sub_sup_b"}
        assert supervisor.status() == {}
    finally:
        monkeypatch.undo()
        await supervisor.shutdown()


async def _stop_held_by_a_cancelled_pass(
    supervisor: Supervisor, feed: _Feed, monkeypatch: pytest.MonkeyPatch, sub_id: str
) -> asyncio.Event:
    """Stop ``sub_id`` in a pass that is cancelled while the stop waits for the returned
    event (the poller stopping meanwhile); the stop goes on."""
    finish = supervisor._finish_stop
    release = asyncio.Event()

    async def held(held_id: str, slot: Any) -> None:
        await release.wait()
        await finish(held_id, slot)

    monkeypatch.setattr(supervisor, "_finish_stop", held)
    feed.subscriptions = [s for s in feed.subscriptions if s.id != sub_id]
    refreshing = asyncio.create_task(supervisor.refresh())
    await eventually(lambda: sub_id in supervisor._stopping, timeout=5)
    refreshing.cancel()
    await asyncio.gather(refreshing, return_exceptions=True)
    return release


async def test_a_stop_whose_pass_was_cancelled_finishes_before_its_slot_starts_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Started meanwhile, the new slot took what the old stop released at its end (the
    # subscription's token provider).
    feed = _Feed([_subscription("sub_sup_r")])
    supervisor = _supervising(feed)
    try:
        await supervisor.refresh()
        first = supervisor._slots["sub_sup_r"]
        release = await _stop_held_by_a_cancelled_pass(supervisor, feed, monkeypatch, "sub_sup_r")
        feed.subscriptions = [_subscription("sub_sup_r", revision=2)]
        await supervisor.refresh()
        assert "sub_sup_r" not in supervisor._slots  # its stop still runs
        release.set()
        await eventually(lambda: "sub_sup_r" not in supervisor._stopping, timeout=5)
        await supervisor.refresh()
        assert supervisor._slots["sub_sup_r"] is not first
    finally:
        monkeypatch.undo()
        await supervisor.shutdown()


async def test_the_error_of_a_stop_whose_pass_was_cancelled_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    feed = _Feed([_subscription("sub_sup_e")])
    supervisor = _supervising(feed)

    async def failing(sub_id: str) -> None:
        raise RuntimeError("closing its token provider failed")

    try:
        await supervisor.refresh()
        monkeypatch.setattr(supervisor, "_release_token_provider", failing)
        release = await _stop_held_by_a_cancelled_pass(supervisor, feed, monkeypatch, "sub_sup_e")
        release.set()
        await eventually(lambda: "sub_sup_e" not in supervisor._stopping, timeout=5)
        assert "stop sub_sup_e failed" in caplog.text
        assert "closing its token provider failed" in caplog.text
    finally:
        monkeypatch.undo()
        await supervisor.shutdown()


async def test_shutdown_waits_for_stops_and_a_cancel_of_it_cuts_them_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = _Feed([_subscription("sub_sup_w")])
    supervisor = _supervising(feed)
    await supervisor.refresh()
    await _stop_held_by_a_cancelled_pass(supervisor, feed, monkeypatch, "sub_sup_w")
    stopping = supervisor._stopping["sub_sup_w"]
    shutting = asyncio.create_task(supervisor.shutdown())
    done, _ = await asyncio.wait({shutting}, timeout=0.3)
    assert not done  # it waits for the stop still running
    shutting.cancel()
    await asyncio.gather(shutting, return_exceptions=True)
    await asyncio.wait({stopping}, timeout=5)
    assert stopping.cancelled()  # not left running after the supervisor
    monkeypatch.undo()


async def test_a_cluster_changed_without_its_subscriptions_revisions_restarts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Created again under its name after a forced delete, or updated by a request cut short
    before it moved its subscriptions' revisions: the slots still follow the cluster."""
    catalog = {"c": _cluster("old.example:9092")}
    feed = _Feed([Subscription("sub_moved", "c", "t", "svc", "h", {})], dict(catalog))
    supervisor, built = _spied(monkeypatch, feed, catalog)
    supervisor.cluster_restart_grace_s = 0.0
    try:
        await supervisor.refresh()
        await _builds(built, 1)
        slot = supervisor._slots["sub_moved"]
        catalog["c"] = feed.clusters["c"] = _cluster("new.example:9092")
        await supervisor.refresh()  # seen: its revision may still follow
        assert supervisor._slots["sub_moved"] is slot
        await supervisor.refresh()  # it did not, within the grace: restarted
        assert supervisor._slots["sub_moved"] is not slot
        await eventually(
            lambda: ["new.example:9092"] in [brokers for brokers, _ in built],
            timeout=10,
            message="a build on the new brokers",
        )
    finally:
        await supervisor.shutdown()


async def test_a_cluster_update_restarts_each_of_its_subscriptions_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The update writes the cluster, then moves its subscriptions' revisions one by one: a
    # refresh in between saw the cluster change first, and restarted them twice.
    catalog = {"c": _cluster("old.example:9092")}
    feed = _Feed([Subscription("sub_once", "c", "t", "svc", "h", {})], dict(catalog))
    supervisor, _ = _spied(monkeypatch, feed, catalog)
    stopped: list[str] = []
    stop = supervisor._stop_slot

    async def counted(sub_id: str) -> None:
        stopped.append(sub_id)
        await stop(sub_id)

    monkeypatch.setattr(supervisor, "_stop_slot", counted)
    try:
        await supervisor.refresh()
        catalog["c"] = feed.clusters["c"] = _cluster("new.example:9092")
        await supervisor.refresh()  # the cluster written, its subscription not yet
        feed.subscriptions = [Subscription("sub_once", "c", "t", "svc", "h", {}, revision=2)]
        await supervisor.refresh()
        await supervisor.refresh()
        assert stopped == ["sub_once"]
    finally:
        monkeypatch.undo()
        await supervisor.shutdown()


async def test_slots_pair_subscriptions_with_the_clusters_the_feed_read_not_the_catalog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The admin API in the same process reads and changes the catalog the supervisor shares:
    it may be ahead of the feed (the password removed and the cluster moved while the feed's
    last read was on its way). Neither a slot restarted for its own change nor one started
    new may pair the subscription as the feed read it with the cluster as the catalog holds
    it now."""
    catalog = {"c": _cluster("127.0.0.1:9")}
    feed = _Feed([Subscription("sub_shared", "c", "t", "svc", "h", OWN)], dict(catalog))
    supervisor, built = _spied(monkeypatch, feed, catalog)
    try:
        await supervisor.refresh()
        await _builds(built, 1)
        slot = supervisor._slots["sub_shared"]
        catalog["c"] = _cluster("evil.example:9092")  # the admin's read, ahead of the feed
        await supervisor.refresh()  # the feed saw nothing new: nothing restarts
        assert supervisor._slots["sub_shared"] is slot
        feed.subscriptions = [Subscription("sub_shared", "c", "t", "svc", "h", OWN, revision=2)]
        await supervisor.refresh()  # its own change restarts it, with the cluster as read
        assert supervisor._slots["sub_shared"] is not slot
        await _builds(built, 2)
        assert all(b == (["127.0.0.1:9"], "own-pw") for b in built), built
    finally:
        await supervisor.shutdown()


async def test_a_subscription_waiting_for_its_cluster_starts_as_soon_as_the_feed_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog: dict[str, KafkaCluster] = {}
    feed = _Feed([Subscription("sub_waits", "c", "t", "svc", "h", {})], {})
    supervisor, built = _spied(monkeypatch, feed, catalog)
    try:
        await supervisor.refresh()  # no cluster "c": it backs off
        catalog["c"] = feed.clusters["c"] = _cluster("new.example:9092")
        await supervisor.refresh()  # not after the grace for a changed cluster
        await _builds(built, 1)
        assert built == [(["new.example:9092"], "cluster-pw")]
    finally:
        await supervisor.shutdown()
