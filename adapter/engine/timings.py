"""Per-attempt handler time and record age at acknowledgement, as Prometheus histograms.

Two histograms that only the dispatcher can measure, since they need the moment an attempt
starts and ends:

- ``kafka_ingress_invocation_duration_seconds{subscription, outcome}``: handler time of each
  attempt, ``outcome`` being the attempt's :class:`~adapter.invokers.base.OutcomeKind`
  (``ack``, ``retry``, ``terminal``);
- ``kafka_ingress_record_age_at_ack_seconds{subscription}``: from the record's Kafka timestamp
  to the handler's acknowledgement — end-to-end latency as the producer sees it.

Labels are bounded: one series set per subscription, never keys or offsets. The histograms
are process-wide (one poller process, one set), registered on no registry here; the admin
API's ``/metrics`` registry collects them. :class:`AttemptTimings` binds a subscription's
children once, so an observation on the hot path is a dictionary lookup and ``observe``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Histogram

from adapter.invokers.base import OutcomeKind

__all__ = ["INVOCATION_DURATION", "RECORD_AGE_AT_ACK", "AttemptTimings"]

# Handlers run from milliseconds (HTTP) to minutes (Lambda's 15-minute ceiling).
_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)
# A record may wait behind its key, a retry or a backlog: up to days when a consumer was off.
_AGE_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
)

INVOCATION_DURATION = Histogram(
    "kafka_ingress_invocation_duration_seconds",
    "Handler time per invocation attempt, by outcome of the attempt (ack, retry, terminal).",
    ("subscription", "outcome"),
    buckets=_DURATION_BUCKETS,
    registry=None,
)
RECORD_AGE_AT_ACK = Histogram(
    "kafka_ingress_record_age_at_ack_seconds",
    "From the record's Kafka timestamp to the handler's acknowledgement.",
    ("subscription",),
    buckets=_AGE_BUCKETS,
    registry=None,
)


class AttemptTimings:
    """One subscription's children of the two histograms."""

    __slots__ = ("_age", "_by_kind", "_subscription_id", "_wall_clock")

    def __init__(self, subscription_id: str, wall_clock: Callable[[], float] = time.time) -> None:
        self._subscription_id = subscription_id
        self._wall_clock = wall_clock
        self._by_kind = {
            kind: INVOCATION_DURATION.labels(subscription_id, kind.value) for kind in OutcomeKind
        }
        self._age = RECORD_AGE_AT_ACK.labels(subscription_id)

    def attempt(self, kind: OutcomeKind, seconds: float) -> None:
        self._by_kind[kind].observe(seconds)

    def acked(self, timestamp_ms: int) -> None:
        """A record of ``timestamp_ms`` acknowledged now. Records without a timestamp (-1)
        are not counted; a producer clock ahead of ours counts as zero, not negative."""
        if timestamp_ms > 0:
            self._age.observe(max(0.0, self._wall_clock() - timestamp_ms / 1000))
