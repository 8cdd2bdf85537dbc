"""Account: a virtual object keyed by account ID, fed from a ``payments`` topic.

``apply`` is exclusive: the payments of one account are applied one at a time, in the order
they were produced (records of other accounts run concurrently). It is idempotent on the
payment ID, refuses what can never succeed (wrong currency, overdraft) with a TerminalError so
the record is dead-lettered, and asks for a later retry while an account is frozen for review.
``balance`` is shared: it reads without waiting for the exclusive handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, Field

from adapter.sdk import Context, Endpoint, RetryableError, TerminalError, VirtualObject
from handlers.state import MemoryTable

__all__ = ["AccountState", "Payment", "account", "balances", "endpoint", "frozen", "handler"]


class Payment(BaseModel):
    payment_id: str = Field(min_length=1)
    amount_cents: int = Field(gt=0)
    direction: Literal["credit", "debit"]
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")


@dataclass(frozen=True)
class AccountState:
    currency: str
    balance_cents: int = 0
    applied: tuple[str, ...] = field(default=())


account = VirtualObject("Account", description="Per-account balance from the payments topic.")
balances: MemoryTable[AccountState] = MemoryTable()
# Accounts under review: their payments are retried until the review ends.
frozen: MemoryTable[bool] = MemoryTable()


@account.handler()
async def apply(ctx: Context, payment: Payment) -> dict[str, object]:
    account_id = ctx.key
    assert account_id is not None  # keyed: the ingress always sends the record key
    if frozen.get(account_id):
        raise RetryableError(f"account {account_id} is under review", retry_after=1)
    state = balances.get(account_id) or AccountState(currency=payment.currency)
    if payment.payment_id in state.applied:
        return {"account": account_id, "balance_cents": state.balance_cents, "duplicate": True}
    if payment.currency != state.currency:
        raise TerminalError(
            f"account {account_id} is kept in {state.currency}, payment {payment.payment_id} "
            f"is in {payment.currency}",
            status_code=422,
        )
    delta = payment.amount_cents if payment.direction == "credit" else -payment.amount_cents
    if state.balance_cents + delta < 0:
        raise TerminalError(
            f"payment {payment.payment_id} would overdraw account {account_id}", status_code=409
        )
    state = replace(
        state,
        balance_cents=state.balance_cents + delta,
        applied=(*state.applied, payment.payment_id),
    )
    balances.put(account_id, state)
    return {"account": account_id, "balance_cents": state.balance_cents}


@account.handler(kind="shared")
def balance(ctx: Context) -> dict[str, object]:
    assert ctx.key is not None
    state = balances.get(ctx.key)
    return {
        "account": ctx.key,
        "balance_cents": state.balance_cents if state else 0,
        "payments": len(state.applied) if state else 0,
    }


# kafka_target: the same function also runs behind AWS's own Kafka trigger (MSK events).
endpoint = Endpoint([account], kafka_target="Account/apply")
handler = endpoint.lambda_handler()
