"""The command poller's core: who carries out a queued admin command, and when it is done."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapter.engine.commands import CommandPoller
from adapter.engine.lifecycle import InvocationStatus
from adapter.errors import StoreError
from adapter.store.commands import Command


@dataclass
class Store:
    commands: list[Command] = field(default_factory=list)
    finished: list[tuple[str, str]] = field(default_factory=list)
    queries: int = 0
    down: bool = False

    async def pending_commands(self, since_ms: int) -> list[Command]:
        self.queries += 1
        if self.down:
            raise StoreError("read admin commands: unreachable")
        return [c for c in self.commands if c.requested_at_ms >= since_ms]

    async def finish_command(self, command: Command, outcome: str, done_at_ms: int) -> bool:
        self.finished.append((command.invocation_id, outcome))
        return True


@dataclass
class Runner:
    holds: set[str] = field(default_factory=set)
    killed: dict[str, InvocationStatus] = field(default_factory=dict)
    retried: list[str] = field(default_factory=list)

    def retry_now(self, inv_id: str) -> bool:
        if inv_id in self.holds:
            self.retried.append(inv_id)
            return True
        return False

    async def kill(self, inv_id: str, status: InvocationStatus) -> bool:
        if inv_id in self.holds:
            self.killed[inv_id] = status
            return True
        return False


def command(inv_id: str, action: str, sub: str = "sub_a", at_ms: int = 1_000_000) -> Command:
    return Command(inv_id, sub, action, at_ms)


async def test_the_runner_that_holds_the_invocation_carries_the_command_out() -> None:
    store = Store(
        [
            command("inv_r", "retry-now"),
            command("inv_k", "kill"),
            command("inv_c", "cancel"),
            command("inv_elsewhere", "kill"),  # held by another poller's runner
            command("inv_other_sub", "kill", sub="sub_b"),  # a subscription not run here
            command("inv_new", "pause"),  # an action this version does not know
            command("inv_old", "kill", at_ms=1),  # outside the window
        ]
    )
    runner = Runner(holds={"inv_r", "inv_k", "inv_c", "inv_other_sub", "inv_new", "inv_old"})
    poller = CommandPoller(store, lambda: {"sub_a": runner}, clock=lambda: 1_000.5)

    assert await poller.poll() == 3

    assert runner.retried == ["inv_r"]
    assert runner.killed == {"inv_k": InvocationStatus.KILLED, "inv_c": InvocationStatus.CANCELLED}
    assert store.finished == [("inv_r", "PENDING"), ("inv_k", "KILLED"), ("inv_c", "CANCELLED")]
    assert store.queries == 1


async def test_no_query_without_runners_and_a_store_outage_is_survived() -> None:
    store = Store([command("inv_k", "kill")])
    assert await CommandPoller(store, dict).poll() == 0
    assert store.queries == 0
    store.down = True
    runner = Runner(holds={"inv_k"})
    assert await CommandPoller(store, lambda: {"sub_a": runner}).poll() == 0
    assert runner.killed == {}
