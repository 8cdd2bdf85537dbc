"""serverless.yml: parses, every function's handler imports and answers, the tables come from
the one definition (adapter/store/tables.json), and it deploys without the poller (whose stack
is tests/unit/test_poller_stack.py's)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapter.local.lambda_server import (
    SERVERLESS_FILE,
    LocalLambda,
    load_serverless,
    load_serverless_functions,
)
from adapter.store.tables import TABLES_FILE, table_definitions

ROOT = SERVERLESS_FILE.parent
POLLER_RESOURCES = ROOT / "infra" / "poller" / "poller-resources.yml"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_serverless()


def test_the_file_parses_and_declares_every_example(document: dict[str, Any]) -> None:
    assert document["service"] == "kafka-ingress"
    assert document["provider"]["name"] == "aws"
    assert document["provider"]["runtime"] == "python3.11"
    assert set(document["functions"]) == {"greeter", "account", "signup", "audit"}
    assert document["resources"] == ["${file(infra/poller/dynamodb-resources.js)}"]
    # The handlers and tables deploy alone: nothing needs a VPC, an image or a parameter
    # without a default.
    assert set(document["params"]["default"]) == {"tablePrefix", "identityKeys"}
    # Only the SDK and the handlers are packaged into the functions.
    patterns = document["package"]["patterns"]
    assert patterns[0] == "!**"
    assert "adapter/sdk/**" in patterns
    assert "handlers/**" in patterns


def test_every_function_handler_imports_and_answers_discovery(document: dict[str, Any]) -> None:
    for name, spec in document["functions"].items():
        path, _, attr = spec["handler"].rpartition(".")
        module = importlib.import_module(path.replace("/", "."))
        handler = getattr(module, attr)
        assert callable(handler), name
        manifest = handler({"protocol": "kafka-ingress/v1", "type": "discover"}, None)
        assert len(manifest["services"]) == 1, name
        assert (ROOT / f"{path}.py").is_file()


def test_the_local_lambda_endpoint_runs_the_same_functions(document: dict[str, Any]) -> None:
    specs = {s.name: s for s in load_serverless_functions(stage="dev")}
    assert set(specs) == set(document["functions"])
    assert specs["account"].handler == "handlers.accounts.handler"
    assert "kafka-ingress-dev-account" in specs["account"].aliases
    assert specs["account"].reserved_concurrency == 50
    assert specs["audit"].timeout_s == 30
    local = LocalLambda(list(specs.values()))
    try:
        assert local.function_names == sorted(document["functions"])
    finally:
        local.close()


def _node_tables(prefix: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node (Node.js) is needed to evaluate the serverless.yml include"
    script = (
        "const m = require(process.argv[1]);"
        "console.log(JSON.stringify(m.tableResources(process.argv[2])));"
    )
    out = subprocess.run(
        [node, "-e", script, str(ROOT / "infra" / "poller" / "dynamodb-resources.js"), prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    resources: dict[str, Any] = json.loads(out.stdout)["Resources"]
    return resources


def test_table_resources_are_generated_from_the_one_definition() -> None:
    resources = _node_tables("kafka-ingress-prod-")
    definitions = table_definitions()
    assert len(resources) == len(definitions)
    for logical, spec in definitions.items():
        resource = resources[f"{logical.capitalize()}Table"]
        assert resource["Type"] == "AWS::DynamoDB::Table"
        assert resource["DeletionPolicy"] == "Retain"
        properties = dict(resource["Properties"])
        assert properties.pop("TableName") == f"kafka-ingress-prod-{logical}"
        assert properties == spec
    # The JSON is the source: nothing table-shaped is written anywhere else.
    raw = json.loads(TABLES_FILE.read_text())
    assert set(raw) - {"_comment"} == set(definitions)
    assert "AWS::DynamoDB::Table" not in SERVERLESS_FILE.read_text()
    assert "AWS::DynamoDB::Table" not in POLLER_RESOURCES.read_text()


def test_missing_or_broken_files_are_reported(tmp_path: Path) -> None:
    from adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be read"):
        load_serverless(tmp_path / "missing.yml")
    broken = tmp_path / "serverless.yml"
    broken.write_text("functions:\n  f: {handler: 1}\n")
    with pytest.raises(ConfigError, match="handler"):
        load_serverless_functions(broken)
