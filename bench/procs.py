"""Child processes of the benchmark and what they cost (CPU seconds, peak RSS).

Every server and consumer runs in its own process so that none shares a GIL with another and
each one's CPU and memory can be read from outside with psutil, the same way for our poller as
for the reference loop. Output goes to a log file per process under the run's work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import psutil

__all__ = ["Child", "Meter"]


class Child:
    """One child process; ``start()`` returns what it printed after ``READY `` (if asked to)."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[str] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, *, wait_ready: bool = False, timeout: float = 60) -> str:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self._ready = asyncio.get_running_loop().create_future()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        self._reader = asyncio.create_task(self._read(), name=f"{self.name} output")
        if not wait_ready:
            return ""
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except (TimeoutError, EOFError) as exc:
            await self.stop()
            tail = self.log_tail()
            raise RuntimeError(f"{self.name} did not become ready: {exc!r}\n{tail}") from exc

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        assert self._ready is not None
        with self.log_path.open("ab") as log:
            while line := await self.proc.stdout.readline():
                log.write(line)
                log.flush()
                if line.startswith(b"READY ") and not self._ready.done():
                    self._ready.set_result(line[6:].decode().strip())
        if not self._ready.done():
            self._ready.set_exception(EOFError(f"{self.name} exited before it was ready"))
            self._ready.exception()  # retrieved: a child nobody waits for must not warn

    async def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM), then SIGKILL after ``timeout``; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            await self._reader
        return proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Meter:
    """CPU seconds and peak resident memory of one process, read from outside."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._process = psutil.Process(pid)
        self._max_rss = 0

    def cpu_s(self) -> float:
        """User + system CPU seconds of every thread of the process so far (0 once gone)."""
        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._max_rss = max(self._max_rss, self._process.memory_info().rss)

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark (VmHWM) where there is one, else the sampled maximum."""
        self.sample()
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return self._max_rss
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return max(self._max_rss, int(line.split()[1]) * 1024)
        return self._max_rss
