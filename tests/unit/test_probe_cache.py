"""SharedCheck: one readiness check at a time, its result shared for a while."""

from __future__ import annotations

import asyncio

import pytest

from adapter.api.probe_cache import SharedCheck
from adapter.testing import ManualClock


async def test_callers_during_a_check_share_it_and_later_ones_get_its_result() -> None:
    clock = ManualClock()
    shared = SharedCheck(ttl_s=1.0, clock=clock)
    runs = 0
    release = asyncio.Event()

    async def check() -> dict[str, str]:
        nonlocal runs
        runs += 1
        await release.wait()
        return {"dynamodb": "ok", "run": str(runs)}

    callers = [asyncio.create_task(shared.get(check)) for _ in range(50)]
    await asyncio.sleep(0)
    callers[0].cancel()  # a probe gives up: the check goes on for the others
    release.set()
    results = await asyncio.gather(*callers[1:])
    assert runs == 1
    assert all(r == {"dynamodb": "ok", "run": "1"} for r in results)
    clock.advance(0.5)
    assert (await shared.get(check))["run"] == "1"
    clock.advance(0.6)
    assert (await shared.get(check))["run"] == "2"


async def test_a_check_that_fails_is_not_kept() -> None:
    shared = SharedCheck(ttl_s=1.0, clock=ManualClock())

    async def broken() -> dict[str, str]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await shared.get(broken)

    async def ok() -> dict[str, str]:
        return {"dynamodb": "ok"}

    assert await shared.get(ok) == {"dynamodb": "ok"}
