"""The Serverless Framework (v3, from npm) packages serverless.yml offline, and cfn-lint
accepts the CloudFormation it produces.

The CLI and the Python requirements plugin are installed once into ``.cache/serverless``
(like the Kafka jars in ``.cache/kafka``); the first run downloads them from the npm registry
and the handlers' wheels from PyPI, later runs reuse them. No AWS account is used: packaging
needs no credentials beyond placeholders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "serverless"
PACKAGES = ["serverless@3.40.0", "serverless-python-requirements@6.1.2"]

pytestmark = pytest.mark.timeout(600)


def _serverless_cli() -> Path:
    cli = CACHE / "node_modules" / ".bin" / "serverless"
    if not cli.exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm (Node.js) is needed to run the Serverless Framework"
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", *PACKAGES],
            check=True,
            timeout=540,
            capture_output=True,
        )
    return cli


def test_serverless_packages_offline_and_the_template_lints(tmp_path: Path) -> None:
    cli = _serverless_cli()
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "serverless.yml", project)
    for part in ("handlers", "infra"):
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "adapter" / "store").mkdir(parents=True)
    shutil.copy(ROOT / "adapter" / "__init__.py", project / "adapter")
    # The table definitions, read by infra/poller/dynamodb-resources.js when resolving.
    shutil.copy(ROOT / "adapter" / "store" / "tables.json", project / "adapter" / "store")
    shutil.copytree(
        ROOT / "adapter" / "sdk",
        project / "adapter" / "sdk",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (project / "node_modules").symlink_to(CACHE / "node_modules")
    out = tmp_path / "package"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "packaging-only",
        "AWS_SECRET_ACCESS_KEY": "packaging-only",
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
    }
    result = subprocess.run(
        [
            str(cli),
            "package",
            "--stage",
            "prod",
            # No --param: the handlers and tables deploy alone, with every default.
            "--package",
            str(out),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    template_path = out / "cloudformation-template-update-stack.json"
    template = json.loads(template_path.read_text())
    resources = template["Resources"]
    types = {name: r["Type"] for name, r in resources.items()}
    for fn in ("Greeter", "Account", "Signup", "Audit"):
        assert types[f"{fn}LambdaFunction"] == "AWS::Lambda::Function"
    assert (
        resources["InvocationsTable"]["Properties"]["TableName"] == "kafka-ingress-prod-invocations"
    )
    # The poller is a stack of its own (infra/poller/poller-resources.yml).
    assert not [t for t in types.values() if t.startswith(("AWS::ECS::", "AWS::EC2::"))]
    assert (
        resources["AccountLambdaFunction"]["Properties"]["Handler"] == "handlers/accounts.handler"
    )

    lint = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            str(template_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

    with zipfile.ZipFile(out / "kafka-ingress.zip") as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {"handlers", "adapter", "pydantic", "pydantic_core", "jwt"} <= tops
    assert not {"aiokafka", "boto3", "botocore", "tests"} & tops
    assert not [
        n
        for n in names
        if n.startswith("adapter/")
        and not n.startswith("adapter/sdk")
        and n != "adapter/__init__.py"
    ]
