"""The invoker edge: one request in, one outcome out.

An invoker never raises for a handler's failure; it returns an :class:`Outcome` whose kind
says what the engine must do next. Only programming errors escape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from adapter.model import KafkaRecord, Target, value_type

__all__ = ["InvocationRequest", "Invoker", "Outcome", "OutcomeKind"]


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

    @classmethod
    def ack(cls, response: bytes = b"") -> Outcome:
        if not response:
            return _ACK  # immutable: one instance serves every record acknowledged empty
        return cls(OutcomeKind.ACK, response=response)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> Outcome:
        return cls(OutcomeKind.RETRY, error=error, retry_after=retry_after)

    @classmethod
    def terminal(cls, error: str) -> Outcome:
        return cls(OutcomeKind.TERMINAL, error=error)


class Invoker(Protocol):
    async def invoke(self, request: InvocationRequest) -> Outcome: ...

    async def aclose(self) -> None: ...


_ACK = Outcome(OutcomeKind.ACK)
