"""``kafka-ingress dev`` on another port: the whole stack (its own broker, moto, local Lambda,
poller) started as ``make dev`` starts it, with the admin API moved by
$KAFKA_INGRESS_DEV_ADMIN_PORT; the port is printed at start, the API answers there, and SIGTERM
stops everything."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from adapter.local.stack import ADMIN_PORT_ENV

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_dev_runs_its_admin_api_on_the_port_asked_for(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_INGRESS_")}
    # Its own directory: a developer's `make dev` may be running in this checkout.
    env |= {
        ADMIN_PORT_ENV: str(port),
        "PYTHONUNBUFFERED": "1",
        "KAFKA_INGRESS_DEV_DIR": str(tmp_path / "dev"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapter",
        "dev",
        "--no-demo",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    assert proc.stdout is not None
    up = f"admin API        http://127.0.0.1:{port}".encode()
    dashboard = f"dashboard        http://127.0.0.1:{port}/ui/".encode()
    try:
        async with asyncio.timeout(150):
            while up not in output or dashboard not in output:
                chunk = await proc.stdout.read(4096)
                assert chunk, f"dev exited: {output.decode(errors='replace')[-4000:]}"
                output += chunk
        # Said before anything starts, so a port clash is understood at once.
        first_line = output.decode().splitlines()[0]
        assert first_line.startswith(f"admin API port {port} on 127.0.0.1"), first_line
        assert ADMIN_PORT_ENV in first_line
        assert f"KAFKA_INGRESS_ADMIN_URL=http://127.0.0.1:{port}" in output.decode()
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        # The dashboard the banner names, open like the API it reads (loopback only).
        async with httpx.AsyncClient(timeout=10) as client:
            page = await client.get(f"http://127.0.0.1:{port}/ui/")
            data = await client.get(f"http://127.0.0.1:{port}/subscriptions")
        assert page.status_code == 200
        assert "app.js" in page.text
        assert data.status_code == 200
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
        async with asyncio.timeout(90):
            rest, _ = await proc.communicate()
        output += rest
    assert proc.returncode == 0, output.decode(errors="replace")[-4000:]
    assert b"dev stack stopped." in output
