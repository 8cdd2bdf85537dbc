"""Which port ``kafka-ingress dev`` gives the admin API: flag, then environment, then 9070."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.cli import _parser
from adapter.errors import ConfigError
from adapter.local.stack import ADMIN_PORT_ENV, _dev_config, dev_admin_port


def test_the_default_is_9070() -> None:
    assert dev_admin_port(None, {}) == 9070
    assert dev_admin_port(None, {ADMIN_PORT_ENV: " "}) == 9070


def test_the_environment_moves_it_and_the_flag_wins() -> None:
    assert dev_admin_port(None, {ADMIN_PORT_ENV: "9171"}) == 9171
    assert dev_admin_port(9272, {ADMIN_PORT_ENV: "9171"}) == 9272
    assert dev_admin_port(0, {}) == 0


@pytest.mark.parametrize(
    ("flag", "env", "named"),
    [
        (None, {ADMIN_PORT_ENV: "http"}, ADMIN_PORT_ENV),
        (None, {ADMIN_PORT_ENV: "70000"}, ADMIN_PORT_ENV),
        (70000, {}, "--admin-port"),
        (-1, {}, "--admin-port"),
    ],
)
def test_a_bad_port_names_where_it_came_from(
    flag: int | None, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=f"{named}.*not a port number"):
        dev_admin_port(flag, env)


def test_the_cli_flag_reaches_the_dev_config(tmp_path: Path) -> None:
    args = _parser().parse_args(["dev", "--no-demo", "--admin-port", "9373"])
    port = dev_admin_port(args.admin_port, {})
    text = _dev_config(
        "127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3", tmp_path, "alias/dev", port
    )
    assert 'bind-address = "127.0.0.1:9373"' in text
    assert "9070" not in text
