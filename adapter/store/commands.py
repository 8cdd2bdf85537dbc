"""Admin commands for the poller that holds an invocation: items in the invocations table. Pure.

Cancel, kill and retry act on the consumer that holds the invocation, which only the Kafka
group knows. An admin API that does not hold it writes a command item (``cmd#<invocation
ID>``, a conditional put: one pending command per invocation); every poller reads the pending
commands once a second with one Query and the one whose runner holds the invocation carries it
out and marks it done (a conditional update: only a pending command is finished, once).

Commands are indexed under one fixed key of the ``by_subscription`` index
(:data:`COMMANDS_KEY`, never a subscription ID) by ``<requested at, ms>|<invocation ID>``, so a
poller reads only the recent ones; they carry no ``created_at`` or ``sub_status`` (no other
index holds them) and expire after :data:`COMMAND_TTL_S`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMANDS_KEY",
    "COMMAND_PREFIX",
    "COMMAND_TTL_S",
    "DONE",
    "PENDING",
    "Command",
    "command_from_item",
    "command_id",
    "command_item",
    "command_position",
]

COMMAND_PREFIX = "cmd#"
COMMANDS_KEY = "~commands"
COMMAND_TTL_S = 86_400
PENDING = "pending"
DONE = "done"


@dataclass(frozen=True, slots=True)
class Command:
    invocation_id: str
    subscription_id: str
    action: str  # cancel | kill | retry (adapter.engine.lifecycle.AdminAction values)
    requested_at_ms: int
    state: str = PENDING
    outcome: str | None = None  # the invocation's status once carried out
    done_at_ms: int | None = None


def command_id(invocation_id: str) -> str:
    return COMMAND_PREFIX + invocation_id


def command_position(requested_at_ms: int, invocation_id: str = "") -> str:
    return f"{requested_at_ms:015d}|{invocation_id}"


def command_item(command: Command, expires_at: int) -> dict[str, Any]:
    return {
        "id": {"S": command_id(command.invocation_id)},
        "subscription_id": {"S": COMMANDS_KEY},
        "position": {"S": command_position(command.requested_at_ms, command.invocation_id)},
        "for_subscription": {"S": command.subscription_id},
        "action": {"S": command.action},
        "cmd_state": {"S": command.state},
        "requested_at": {"N": str(command.requested_at_ms)},
        "expires_at": {"N": str(expires_at)},
    }


def command_from_item(item: dict[str, Any]) -> Command:
    return Command(
        invocation_id=item["id"]["S"][len(COMMAND_PREFIX) :],
        subscription_id=item["for_subscription"]["S"],
        action=item["action"]["S"],
        requested_at_ms=int(item["requested_at"]["N"]),
        state=item["cmd_state"]["S"],
        outcome=item["outcome"]["S"] if "outcome" in item else None,
        done_at_ms=int(item["done_at"]["N"]) if "done_at" in item else None,
    )
