"""The invoker edge: one request in, one outcome out.

An invoker never raises for a handler's failure; it returns an :class:`Outcome` whose kind
says what the engine must do next. Only programming errors escape, and :class:`NotSent`.

**The send fence.** The engine decides that an attempt may start (its poller provably still
owns the partition, ``adapter.engine.ownership``) before it calls the invoker. An invoker that
then waits — a target address check resolving the host, a batch lingering for more records,
AWS credentials being refreshed — may wake from that wait after a pause of the whole process,
when the proof has lapsed. The engine therefore also installs a fence for the task that
calls the invoker (:func:`fence_sends`); after any such wait, before the request goes out, an
invoker calls :func:`check_fence`, which raises :class:`NotSent` if the fence no longer holds.
The engine then holds the attempt as if it had not started (it has not).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from adapter.errors import InvokeError
from adapter.model import KafkaRecord, Target, value_type

__all__ = [
    "InvocationRequest",
    "Invoker",
    "NotSent",
    "Outcome",
    "OutcomeKind",
    "SendFence",
    "check_fence",
    "current_fence",
    "fence_sends",
]

SendFence = Callable[[], bool]
"""True while requests of the current task may still go out."""

_FENCE: ContextVar[SendFence | None] = ContextVar("kafka_ingress_send_fence", default=None)


class NotSent(InvokeError):
    """The request was not sent: the send fence no longer held after a wait (see above)."""


def fence_sends(fence: SendFence | None) -> None:
    """Fence every request the current task (and tasks it starts) sends from now on."""
    _FENCE.set(fence)


def current_fence() -> SendFence | None:
    return _FENCE.get()


def check_fence() -> None:
    """Raise :class:`NotSent` unless the current task's fence (if any) holds. Called after an
    invoker waited for anything, right before its request goes out."""
    fence = _FENCE.get()
    if fence is not None and not fence():
        raise NotSent("not sent: this poller's ownership of the partition lapsed meanwhile")


@value_type
class InvocationRequest:
    """Everything needed to call a handler once, independent of the transport."""

    invocation_id: str
    target: Target
    key: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1
    # Per-subscription override of the invoker's default timeout.
    timeout_s: float | None = None
    # The source record, for invokers whose wire format carries it whole (Lambda MSK events).
    record: KafkaRecord | None = None


class OutcomeKind(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    TERMINAL = "terminal"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    error: str | None = None
    retry_after: float | None = None
    response: bytes = b""
    maybe_ran: bool = False
    """A retry whose request went out with no answer back (timed out, connection lost): the
    handler may have run it. Partition batches count it as an attempt, as AWS counts a
    function's timeout; a call that never went out is made again as the same attempt."""

    @classmethod
    def ack(cls, response: bytes = b"") -> Outcome:
        if not response:
            return _ACK  # immutable: one instance serves every record acknowledged empty
        return cls(OutcomeKind.ACK, response=response)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> Outcome:
        return cls(OutcomeKind.RETRY, error=error, retry_after=retry_after)

    @classmethod
    def unanswered(cls, error: str) -> Outcome:
        """A retry of a request that went out and got no answer (see :attr:`maybe_ran`)."""
        return cls(OutcomeKind.RETRY, error=error, maybe_ran=True)

    @classmethod
    def terminal(cls, error: str) -> Outcome:
        return cls(OutcomeKind.TERMINAL, error=error)


class Invoker(Protocol):
    async def invoke(self, request: InvocationRequest) -> Outcome: ...

    async def aclose(self) -> None: ...


_ACK = Outcome(OutcomeKind.ACK)
