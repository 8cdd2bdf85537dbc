"""The supervisor's bookkeeping of its subscriptions, with a fake change feed and no cluster:
every runner fails to build (unknown cluster) and backs off, which is enough to start and stop
slots."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import generate_latest

from adapter.api.metrics import OldestAge, Snapshot, metrics_registry
from adapter.config import Settings
from adapter.engine.supervisor import Supervisor
from adapter.engine.timings import AttemptTimings
from adapter.invokers.base import OutcomeKind
from adapter.model import Subscription


class _Feed:
    """The change feed: the subscriptions it returns are the table's."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self.subscriptions = subscriptions

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
