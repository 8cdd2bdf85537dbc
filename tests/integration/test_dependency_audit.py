"""``make audit`` gives one of three verdicts per lock file and never calls an unchecked lock
clean: run against an advisory service on loopback (OSV's API, served here) that answers
"nothing known", "vulnerable", and not at all."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests._http_fixtures import HandlerServer

ROOT = Path(__file__).resolve().parents[2]


def _tiny_lock(tmp_path: Path) -> Path:
    """One package of the real lock file, with its hashes."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("idna=="))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.strip().startswith("--hash="):
            break
        block.append(line)
    path = tmp_path / "tiny.lock"
    path.write_text("\n".join(block) + "\n")
    return path


def _advisories(vulnerable: bool) -> Starlette:
    async def query(request: Request) -> JSONResponse:
        asked = await request.json()
        if not vulnerable:
            return JSONResponse({})
        name = asked["package"]["name"]
        return JSONResponse(
            {
                "vulns": [
                    {
                        "id": "GHSA-test-0001",
                        "summary": "planted for the audit test",
                        "affected": [
                            {
                                "package": {"name": name, "ecosystem": "PyPI"},
                                "ranges": [
                                    {
                                        "type": "ECOSYSTEM",
                                        "events": [{"introduced": "0"}, {"fixed": "999.0"}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
        )

    return Starlette(routes=[Route("/v1/query", query, methods=["POST"])])


async def _make_audit(lock: Path, osv_url: str, cache: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "make",
        "-s",
        "-o",
        ".venv/.installed",  # the virtualenv is there: never rebuild it from a test
        "audit",
        f"LOCK={lock}",
        f"DEV_LOCK={lock}",
        f"AUDIT_ARGS=-s osv --osv-url {osv_url} --cache-dir {cache}",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.timeout(180)
async def test_make_audit_says_clean_vulnerable_or_not_checked(
    tmp_path: Path, handler_server: HandlerServer
) -> None:
    lock = _tiny_lock(tmp_path)
    clean_url = await handler_server(_advisories(vulnerable=False))
    code, out = await _make_audit(lock, f"{clean_url}/v1/query", tmp_path / "c1")
    assert code == 0, out
    assert "every package checked, no known vulnerabilities" in out

    vulnerable_url = await handler_server(_advisories(vulnerable=True))
    code, out = await _make_audit(lock, f"{vulnerable_url}/v1/query", tmp_path / "c2")
    assert code != 0, out
    assert "GHSA-test-0001" in out
    assert "VULNERABLE" in out
    assert "NOT CHECKED" not in out

    # Nothing answers on this port: the data cannot be fetched, so nothing was checked.
    code, out = await _make_audit(lock, "http://127.0.0.1:9/v1/query", tmp_path / "c3")
    assert code != 0, out
    assert "NOT CHECKED" in out
    assert "no known vulnerabilities" not in out.lower()
