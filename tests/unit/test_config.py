"""Settings: restate.toml-style files, the environment variable, and bad input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from adapter.config import CLUSTERS_ENV, load_settings
from adapter.engine.batch_dispatch import BatchSettings
from adapter.engine.batches import BatchPolicy
from adapter.engine.partition import Growth
from adapter.engine.runner import pause_bound, pause_growth
from adapter.engine.settings import RunnerSettings
from adapter.errors import ConfigError

RESTATE_TOML = """
[[ingress.kafka-clusters]]
name = "my-cluster"
brokers = ["PLAINTEXT://broker-1:9092", "broker-2:9092"]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "alice"
"sasl.password" = "s3cret"

[[ingress.kafka-clusters]]
name = "other"
brokers = ["PLAINTEXT://localhost:9093"]
"enable.ssl.certificate.verification" = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kafka-ingress.toml"
    path.write_text(text)
    return path


def test_restate_toml_cluster_section_works_unchanged(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, RESTATE_TOML), env={})
    cluster = settings.clusters["my-cluster"]
    assert cluster.bootstrap_servers == ["broker-1:9092", "broker-2:9092"]
    assert cluster.options == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "s3cret",
    }
    assert settings.clusters["other"].options == {"enable.ssl.certificate.verification": "false"}


@pytest.mark.promise("p-config-ledger-default")
def test_defaults_without_any_file() -> None:
    settings = load_settings(None, env={})
    assert settings.clusters == {}
    assert settings.admin.bind_address == "127.0.0.1:9070"
    assert settings.dynamodb.table_prefix == "kafka-ingress-"
    assert settings.limits.max_in_flight > 0
    assert settings.ledger.successes == "pages"


def test_full_file_with_every_section(tmp_path: Path) -> None:
    text = (
        'log-level = "DEBUG"\n'
        + RESTATE_TOML
        + """
[dynamodb]
endpoint-url = "http://127.0.0.1:5000"
region = "eu-west-1"
table-prefix = "prod-"
[admin]
bind-address = "0.0.0.0:9070"
token = "0123456789abcdef0123"
[limits]
max-in-flight = 64
invocation-timeout-ms = 5000
"""
    )
    s = load_settings(write(tmp_path, text), env={})
    assert s.dynamodb.endpoint_url == "http://127.0.0.1:5000"
    assert s.dynamodb.region == "eu-west-1"
    assert s.admin.token == "0123456789abcdef0123"
    assert s.limits.max_in_flight == 64
    assert s.log_level == "DEBUG"


def test_clusters_from_env_variable_in_toml_inline_syntax() -> None:
    env = {
        CLUSTERS_ENV: '[{name="local", brokers=["PLAINTEXT://127.0.0.1:9092"], '
        '"sasl.mechanism"="PLAIN", "sasl.username"="u", "sasl.password"="p"}]'
    }
    s = load_settings(None, env=env)
    assert s.clusters["local"].bootstrap_servers == ["127.0.0.1:9092"]
    assert s.clusters["local"].options["sasl.mechanism"] == "PLAIN"


def test_env_variable_replaces_file_clusters(tmp_path: Path) -> None:
    env = {CLUSTERS_ENV: '[{name="env-only", brokers=["h:1"]}]'}
    s = load_settings(write(tmp_path, RESTATE_TOML), env=env)
    assert list(s.clusters) == ["env-only"]


def test_restate_env_variable_is_accepted() -> None:
    env = {"RESTATE_INGRESS__KAFKA_CLUSTERS": '[{name="r", brokers=["PLAINTEXT://h:9092"]}]'}
    assert list(load_settings(None, env=env).clusters) == ["r"]


def test_scalar_env_overrides() -> None:
    env = {
        "KAFKA_INGRESS_DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:1234",
        "KAFKA_INGRESS_ADMIN_TOKEN": "a-long-enough-token",
        "KAFKA_INGRESS_LEDGER_SUCCESSES": "rows",
    }
    s = load_settings(None, env=env)
    assert s.dynamodb.endpoint_url == "http://127.0.0.1:1234"
    assert s.admin.token == "a-long-enough-token"
    assert s.ledger.successes == "rows"


def test_config_file_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, RESTATE_TOML)
    s = load_settings(None, env={"KAFKA_INGRESS_CONFIG_FILE": str(path)})
    assert "my-cluster" in s.clusters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[[ingress.kafka-clusters]]\nbrokers=['h:1']\n",
            "'ingress.kafka-clusters[0].name': required",
        ),
        ("[[ingress.kafka-clusters]]\nname='a'\n", "'ingress.kafka-clusters[0].brokers': required"),
        (
            "[[ingress.kafka-clusters]]\nname='a'\nbrokers=['no-port']\n",
            "not of the form [PROTOCOL://]host:port",
        ),
        ("[dynamodb]\nregoin='x'\n", "'dynamodb.regoin': unknown key"),
        ("[limits]\nmax-in-flight=0\n", "'limits.max-in-flight'"),
        ("[limits]\nmax-in-flight='lots'\n", "'limits.max-in-flight'"),
        ("[admin]\nbind-address='nowhere'\n", "'admin.bind-address'"),
        ("[admin]\ntoken='short'\n", "'admin.token'"),
        ("log-level = 'LOUD'\n", "'log-level'"),
        ("dynamodb = 3\n", "'dynamodb'"),
        ("this is = not toml [\n", "not valid TOML"),
        (
            "[[ingress.kafka-clusters]]\nname='a'\nbrokers=['h:1']\n"
            "[[ingress.kafka-clusters]]\nname='a'\nbrokers=['h:2']\n",
            "duplicate cluster name 'a'",
        ),
        (
            "[[ingress.kafka-clusters]]\nname='a'\nbrokers=['h:1']\n\"x.y\"=[1,2]\n",
            "option 'x.y' must be a string",
        ),
    ],
)
@pytest.mark.promise("p-config-one-message", "p-config-unknown-keys")
def test_bad_files_get_one_message_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "kafka-ingress.toml" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize("value", ["{name='a'}", "[1, 2]", "not toml at all ["])
@pytest.mark.promise("p-config-one-message")
def test_bad_env_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=CLUSTERS_ENV):
        load_settings(None, env={CLUSTERS_ENV: value})


@pytest.mark.promise("p-config-dynamodb-defaults", "p-config-admin-defaults")
@pytest.mark.promise("p-config-limits-defaults")
def test_documented_defaults_are_the_defaults() -> None:
    settings = load_settings(None, env={})
    dynamodb, admin, limits = settings.dynamodb, settings.admin, settings.limits
    assert (dynamodb.endpoint_url, dynamodb.region, dynamodb.table_prefix) == (
        None,
        "us-east-1",
        "kafka-ingress-",
    )
    assert (admin.bind_address, admin.token, admin.allow_open) == ("127.0.0.1:9070", None, False)
    assert (admin.max_body_bytes, admin.max_header_bytes, admin.max_headers) == (
        1048576,
        16384,
        100,
    )
    assert (admin.header_timeout_s, admin.max_connections) == (10.0, 256)
    assert (limits.max_in_flight, limits.max_buffered_per_partition) == (256, None)
    # Unset, as the runner applies it: 1,000 records; partition batches of 100 grow to 4,000.
    runner = RunnerSettings(max_buffered_per_partition=limits.max_buffered_per_partition)
    batches = BatchSettings(policy=BatchPolicy(size=100))
    assert pause_bound(runner) == 1000
    assert pause_growth(replace(runner, batches=batches)) == Growth(4000, 4 * 1024 * 1024)
    assert limits.max_record_bytes == 6291456
    assert (limits.invocation_timeout_ms, limits.drain_timeout_ms) == (30000, 30000)
    assert (limits.ledger_retention_days, limits.subscription_refresh_ms) == (7, 1000)
    assert settings.ledger.successes == "pages"
