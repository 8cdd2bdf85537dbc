"""The clock that dates evidence of group membership keeps counting through a suspend."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
import time

import pytest

from adapter import clocks
from adapter.engine.ownership import OwnershipGate
from adapter.engine.runner import SubscriptionRunner

SUSPENDED_S = 3600

# Run in a Linux time namespace whose boot-time clock is SUSPENDED_S ahead of its monotonic
# clock: to the processes inside it, the machine spent that long suspended since boot.
_PROBE = (
    "import time; from adapter.clocks import suspend_aware; "
    "print(suspend_aware() - time.monotonic())"
)


@pytest.mark.promise("p-ops-paused-starts-nothing")
def test_time_spent_suspended_counts_on_the_evidence_clock() -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is needed to simulate a suspend"
    probe = subprocess.run(
        [unshare, "--time", "--boottime", str(SUSPENDED_S), "--fork", sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    # time.monotonic() leaves the suspend out; the evidence clock must not.
    assert float(probe.stdout) == pytest.approx(SUSPENDED_S, abs=1.0)


def test_the_evidence_clock_never_goes_back_and_moves_with_time() -> None:
    readings = [clocks.suspend_aware() for _ in range(1000)]
    assert readings == sorted(readings)
    before, started = clocks.suspend_aware(), time.monotonic()
    while time.monotonic() - started < 0.05:
        pass
    assert clocks.suspend_aware() - before == pytest.approx(0.05, abs=0.02)


def test_the_gate_and_the_runner_read_the_evidence_clock_by_default() -> None:
    # The consumer shell dates heartbeats with clocks.suspend_aware
    # (tests/integration/test_membership_evidence.py); the age must be read on the same clock.
    for shell in (OwnershipGate, SubscriptionRunner):
        default = inspect.signature(shell).parameters["clock"].default
        assert default is clocks.suspend_aware, shell.__name__
