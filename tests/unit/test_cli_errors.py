"""The CLI's error messages name what is wrong without showing what was given: an argument
or a document line may hold a secret (docs/security.md, "Secrets")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapter.cli import EXIT_UNREACHABLE, EXIT_USAGE, _list_invocations, _parser, main

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.SECRETSIG42"
PASSWORD = "hunter2hunter2"


def _stderr(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = EXIT_USAGE) -> str:
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert out == ""
    return err


@pytest.mark.parametrize(
    ("argv", "named", "secret"),
    [
        (
            ["deployments", "register", "http://h", "--header", f"Authorization Bearer {TOKEN}"],
            "--header #1 (70 characters, starting 'Authorization'): expected NAME:VALUE",
            TOKEN,
        ),
        (
            ["deployments", "register", "http://h", "--header", "X-A:b", "--header", TOKEN],
            "--header #2 (49 characters): expected NAME:VALUE",
            TOKEN,
        ),
        (
            ["deployments", "register", "http://h", "--header", f":{TOKEN}"],
            "--header #1 (50 characters): expected NAME:VALUE",
            TOKEN,
        ),
        (
            [
                "subscriptions",
                "create",
                "kafka://c/t",
                "service://S/h",
                "-o",
                f"sasl.password {PASSWORD}",
            ],
            "--option #1 (28 characters, starting 'sasl.password'): expected NAME=VALUE",
            PASSWORD,
        ),
        (
            ["subscriptions", "update", "sub_1", "-o", "a=b", "-o", f"{PASSWORD} more"],
            "--option #2 (19 characters): expected NAME=VALUE",
            PASSWORD,
        ),
        (
            ["subscriptions", "update", "sub_1", "-o", f"sasl.password:{PASSWORD}"],
            "--option #1 (28 characters, starting 'sasl.password'): expected NAME=VALUE",
            PASSWORD,
        ),
    ],
)
def test_a_malformed_pair_is_named_by_position_never_by_its_value(
    capsys: pytest.CaptureFixture[str], argv: list[str], named: str, secret: str
) -> None:
    err = _stderr(capsys, argv)
    assert named in err
    assert secret not in err
    assert secret[:8] not in err


def test_a_yaml_error_says_where_without_quoting_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = tmp_path / "apply.yaml"
    document.write_text(
        "clusters:\n  - name: prod\n    properties:\n      sasl.password: Hunter2Secret: oops\n"
    )
    err = _stderr(capsys, ["apply", "-f", str(document)])
    assert f"{document}: not valid YAML or JSON: line 4, column 35: mapping values" in err
    assert "Hunter2Secret" not in err
    assert "sasl.password" not in err

    document.write_text("subscriptions: [{name: a, source: 'kafka://u:FlowSecret9@c/t'}\n")
    err = _stderr(capsys, ["apply", "-f", str(document)])
    assert "while parsing a flow sequence (from line 1, column 16); line 2, column 1:" in err
    assert "FlowSecret9" not in err


def test_an_unreachable_admin_url_is_named_without_its_credentials(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["health", "--admin-url", f"http://admin:{PASSWORD}@127.0.0.1:1", "--timeout", "5"]
    err = _stderr(capsys, argv, EXIT_UNREACHABLE)
    assert "cannot reach the admin API at http://***@127.0.0.1:1" in err
    assert PASSWORD not in err


def test_a_listing_that_keeps_finding_nothing_stops_after_max_requests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A key that matches nothing on a large ledger: every page empty, always a token.
    requests: list[dict[str, Any]] = []

    def call(method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        requests.append(params)
        return {"invocations": [], "next_page_token": f"t{len(requests)}"}

    args = _parser().parse_args(["invocations", "list", "--key", "nothing"])
    result = _list_invocations(call, args)
    assert len(requests) == 10
    assert result == {"invocations": [], "next_page_token": "t10"}
    assert "stopped after 10 requests" in capsys.readouterr().err
    args = _parser().parse_args(["invocations", "list", "--max-requests", "3"])
    requests.clear()
    _list_invocations(call, args)
    assert len(requests) == 3


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_max_requests_must_be_a_positive_whole_number(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        main(["invocations", "list", "--max-requests", value])
    assert exited.value.code == EXIT_USAGE
    assert "argument --max-requests: " in capsys.readouterr().err
