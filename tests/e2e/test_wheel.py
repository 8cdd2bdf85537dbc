"""The package as a user gets it: build the wheel, install it into a fresh virtualenv outside
the checkout with the image's own install script (infra/poller/install.sh), then run the
installed ``kafka-ingress init-tables`` and ``kafka-ingress serve`` against a moto server until
the installed ``kafka-ingress health`` (the container health check) answers.

The wheel is built from a copy holding only what the image's build stage copies (pyproject.toml,
README.md, adapter/, handlers/), so a runtime file left outside the package fails here. pip's
cache is used; the first run on a machine downloads the dependencies from PyPI.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from adapter.local.moto import MotoServer
from adapter.store.dynamo import make_client
from adapter.store.tables import table_definitions
from tests._dockerfile import dockerfile_runs

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "infra" / "poller" / "install.sh"
LOCK_FILE = ROOT / "requirements.lock"

pytestmark = pytest.mark.timeout(420)


def _run(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the image's build stage copies, and nothing else, outside the checkout."""
    copy = tmp_path_factory.mktemp("wheel") / "src"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy)
    for name in ("adapter", "handlers"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="module")
def installed(source: Path) -> Path:
    """bin/ of a fresh virtualenv holding the built wheel, installed as the image installs it."""
    work = source.parent
    assert not work.resolve().is_relative_to(ROOT), "the virtualenv must be outside the checkout"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheels = work / "wheels"
    # The image's build stage, word for word, with the wheel directory moved here.
    build, install = (shlex.split(run.split("&&")[0]) for run in dockerfile_runs()[:2])
    assert build[:2] == ["pip", "wheel"]
    build = [sys.executable, "-m", *[str(wheels) if w == "/wheels" else w for w in build]]
    _run(build, env=env, cwd=source)
    (wheel,) = wheels.glob("kafka_ingress-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=work)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The image's install step: the same script with the wheel and, once the project has
    # one, the lock file (without it the script resolves the wheel's own bounds).
    assert install[:2] == ["sh", "/tmp/install.sh"]
    lock = [str(LOCK_FILE)] if LOCK_FILE.exists() else []
    _run(["sh", str(INSTALL_SCRIPT), str(wheel), *lock], env=env, cwd=work)
    return venv / "bin"


def _env(bin_dir: Path, moto: MotoServer, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_INGRESS_")}
    env.pop("PYTHONPATH", None)
    return {
        **env,
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(bin_dir.parent),
        "PYTHONUNBUFFERED": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "KAFKA_INGRESS_DYNAMODB_ENDPOINT_URL": moto.endpoint_url,
        "KAFKA_INGRESS_DYNAMODB_TABLE_PREFIX": prefix,
        "KAFKA_INGRESS_ADMIN_BIND_ADDRESS": "127.0.0.1:0",
        "KAFKA_INGRESS_ADMIN_TOKEN": secrets.token_urlsafe(24),
    }


def test_the_sdist_carries_the_runtime_files(source: Path, tmp_path: Path) -> None:
    _run(
        [
            sys.executable,
            "-c",
            "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
            str(tmp_path),
        ],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd=source,
    )
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert "adapter/store/tables.json" in names
    assert {"adapter/api/ui/static/index.html", "adapter/api/ui/static/app.js"} <= names


def test_the_installed_package_imports_from_site_packages(installed: Path, tmp_path: Path) -> None:
    where = _run(
        [str(installed / "python"), "-c", "import adapter.store.tables as t; print(t.__file__)"],
        env={"PATH": os.environ.get("PATH", "")},
        cwd=tmp_path,
    ).strip()
    assert "site-packages" in where, where
    assert not Path(where).resolve().is_relative_to(ROOT)


def test_serve_names_the_fast_http_extra_when_pyreqwest_is_asked_for_without_it(
    installed: Path, moto_server: MotoServer, tmp_path: Path
) -> None:
    env = {**_env(installed, moto_server, "wheelx-"), "KAFKA_INGRESS_HTTP_CLIENT": "pyreqwest"}
    result = subprocess.run(
        [str(installed / "kafka-ingress"), "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "configuration error: [http] client = 'pyreqwest'" in result.stderr
    assert "install kafka-ingress[fast-http]" in result.stderr


@pytest.mark.promise("p-deploy-image")
async def test_the_installed_wheel_creates_tables_and_serves(
    installed: Path, moto_server: MotoServer, tmp_path: Path
) -> None:
    prefix = f"wheel{secrets.token_hex(4)}-"
    env = _env(installed, moto_server, prefix)
    cli = str(installed / "kafka-ingress")

    out = await asyncio.to_thread(_run, [cli, "init-tables"], env=env, cwd=tmp_path, timeout=120)
    assert f"created {len(table_definitions())} table(s)" in out, out
    client = make_client(moto_server.endpoint_url, "us-east-1")
    try:
        # Paginated: the shared moto server holds every test's tables, more than one page.
        pages = client.get_paginator("list_tables").paginate()
        tables = set(pages.build_full_result()["TableNames"])
    finally:
        client.close()
    assert {f"{prefix}{name}" for name in table_definitions()} <= tables

    proc = await asyncio.create_subprocess_exec(
        cli,
        "serve",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while (match := re.search(rb"admin API listening on (http://\S+)", output)) is None:
                chunk = await proc.stdout.read(4096)
                assert chunk, f"serve exited: {output.decode(errors='replace')[-4000:]}"
                output += chunk
        admin_url = match.group(1).decode()
        health = [cli, "health", "--admin-url", admin_url, "--timeout", "3"]
        deadline = time.monotonic() + 60
        while (
            answer := await asyncio.to_thread(
                subprocess.run, health, env=env, cwd=tmp_path, capture_output=True, timeout=30
            )
        ).returncode != 0:
            assert time.monotonic() < deadline, answer.stderr.decode(errors="replace")
        assert b"ok" in answer.stdout, answer.stdout
        # The dashboard's files come from the installed package.
        async with httpx.AsyncClient(base_url=admin_url, timeout=10) as http:
            page, script = await http.get("/ui/"), await http.get("/ui/app.js")
        assert page.status_code == 200
        assert "app.js" in page.text, page.text[:300]
        assert script.status_code == 200
        assert "overviewPage" in script.text
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
        async with asyncio.timeout(60):
            rest, _ = await proc.communicate()
        output += rest
    assert proc.returncode == 0, output.decode(errors="replace")[-4000:]
    # The default install invokes handlers through aiohttp, and says so at start-up.
    assert b"HTTP invoker client: aiohttp (asked for auto)" in output, output[-4000:]
    # serve collects the young generation less often (adapter.gc_tuning), and says so.
    assert b"garbage collector: young generation every 50000 allocations" in output
    # The health check is refused once the poller is gone: it really asked the poller.
    gone = await asyncio.to_thread(
        subprocess.run, health, env=env, cwd=tmp_path, capture_output=True, timeout=30
    )
    assert gone.returncode == 6, gone.stderr
