"""What a subscription runner is given and what it reports.

:class:`RunnerSettings` — its limits and timeouts (built by the supervisor from the settings
file and the subscription's options); :class:`RunnerStore` — the DynamoDB reads it needs;
:class:`RunnerState` and :class:`RunnerStats` — what the admin API and the metrics show.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from adapter.engine.retry import RetryPolicy

if TYPE_CHECKING:
    from adapter.engine.batch_dispatch import BatchSettings
    from adapter.filters import FilterCriteria

__all__ = ["RunnerSettings", "RunnerState", "RunnerStats", "RunnerStore"]


class RunnerStore(Protocol):
    async def get_statuses(self, ids: Iterable[str]) -> dict[str, str]: ...

    async def paged_offsets(
        self, subscription_id: str, topic: str, partition: int, lo: int, hi: int
    ) -> set[int]: ...

    async def highest_recorded_offset(
        self, subscription_id: str, topic: str, partition: int
    ) -> int | None: ...

    async def remember_topic(self, subscription_id: str, topic: str) -> bool: ...

    async def claim_workflow(self, service: str, key: str, invocation_id: str) -> bool: ...


class RunnerState(enum.StrEnum):
    STARTING = "starting"
    WAITING_FOR_TOPIC = "waiting-for-topic"
    RUNNING = "running"
    BACKING_OFF = "backing-off"  # could not reach the cluster; retrying
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    max_in_flight: int = 256
    max_buffered_per_partition: int | None = None
    """Unfinished records per partition before fetching is held back; None: the default
    (``runner.pause_bound``)."""
    max_record_bytes: int = 6 * 1024 * 1024
    invocation_timeout_s: float = 30.0
    fetch_max_records: int = 500
    commit_interval_s: float = 0.2
    revoke_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    close_timeout_s: float = 10.0
    session_timeout_s: float = 10.0
    topic_poll_s: float = 1.0
    """How often a subscription without partitions looks for its topic."""
    topic_check_s: float = 30.0
    """How often a consuming subscription checks that its topic was not re-created."""
    index_lag_s: float = 5.0
    """How long after an assignment the ledger's index is taken to show every row the previous
    owner wrote (DynamoDB updates a global secondary index asynchronously, typically well
    within a second): a fence read sooner is read again then, before it may be handed on."""
    standby_check_s: float = 120.0
    """How often a member holding no partition of an existing topic looks at it (should it
    lead the group, this is how it sees added partitions). Rarely: each look opens the fetch
    connection that it otherwise lets close (``IDLE_CONNECTION_MS``)."""
    dead_letter_topic: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    filter_criteria: FilterCriteria | None = None
    """Only matching records are invoked (``filter.criteria``); the rest are committed."""
    batches: BatchSettings | None = None
    """ESM partition batches (``batch.mode=partition``); None: one work item per record."""


@dataclass(slots=True)
class RunnerStats:
    consumed: int = 0
    skipped_completed: int = 0
    filtered: int = 0
    """Records ``filter.criteria`` excluded: committed, never invoked."""
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    retries: int = 0
    commits: int = 0
    rebalances: int = 0
    abandoned: int = 0
    held: int = 0
    unsent: int = 0
    """Attempts an invoker did not send: the proof of ownership lapsed while it waited."""
    records_lost_to_retention: int = 0
    topic_recreations: int = 0
