"""Cluster options are translated at start-up with the consumers' table: a typo, a refused
option or a bad value stops ``kafka-ingress serve`` with one line naming the cluster and the
option, before anything starts (docs/configuration.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapter.api.catalog import cluster_from_properties
from adapter.config import CLUSTERS_ENV, load_settings
from adapter.errors import ConfigError, ValidationError

ROOT = Path(__file__).resolve().parents[2]

# (option, value, what the one line must say besides the option's name)
BAD_OPTIONS = [
    pytest.param("auto.ofset.reset", "earliest", "did you mean 'auto.offset.reset'?", id="typo"),
    pytest.param("sasl.mechanism", "GSSAPI", "not supported", id="refused-mechanism"),
    pytest.param("session.timeout.ms", "soon", "got 'soon'", id="bad-value"),
]


def cluster_toml(option: str, value: str, brokers: str = "127.0.0.1:9092") -> str:
    return (
        "[[ingress.kafka-clusters]]\n"
        'name = "orders-cluster"\n'
        f'brokers = ["PLAINTEXT://{brokers}"]\n'
        f'"{option}" = "{value}"\n'
    )


@pytest.mark.promise("p-config-one-message")
@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
@pytest.mark.promise("p-sec-gssapi-refused")
def test_serve_stops_at_once_naming_cluster_and_option(
    tmp_path: Path, option: str, value: str, expected: str
) -> None:
    # Everything the poller would reach points at one listening socket: if serve started
    # anything (DynamoDB ping, admin API, a consumer), a connection would be waiting there.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.setblocking(False)
        address = f"127.0.0.1:{trap.getsockname()[1]}"
        config = tmp_path / "kafka-ingress.toml"
        config.write_text(
            cluster_toml(option, value, brokers=address)
            + f'[dynamodb]\nendpoint-url = "http://{address}"\n'
        )
        env = {
            key: val
            for key, val in os.environ.items()
            if not key.startswith(("KAFKA_INGRESS_", "RESTATE_"))
        }
        env["KAFKA_INGRESS_ADMIN_BIND_ADDRESS"] = "127.0.0.1:0"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "adapter", "--config-file", str(config), "serve"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
        with pytest.raises(BlockingIOError):
            trap.accept()

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("kafka-ingress: configuration error: ")
    assert "ingress.kafka-clusters[0]" in line
    assert "'orders-cluster'" in line
    assert repr(option) in line
    assert expected in line
    assert done.stdout == ""
    # Only the interpreter and the imports: nothing waited on a network.
    assert elapsed < 15, elapsed


@pytest.mark.promise("p-config-one-message")
@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
@pytest.mark.promise("p-config-unknown-option")
def test_settings_file_cluster_option_is_checked(
    tmp_path: Path, option: str, value: str, expected: str
) -> None:
    config = tmp_path / "kafka-ingress.toml"
    config.write_text(cluster_toml(option, value))
    with pytest.raises(ConfigError) as error:
        load_settings(config, env={})
    message = str(error.value)
    assert "key 'ingress.kafka-clusters[0]' (Kafka cluster 'orders-cluster')" in message
    assert repr(option) in message
    assert expected in message
    assert "\n" not in message


@pytest.mark.promise("p-config-one-message")
@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
def test_environment_cluster_option_is_checked(option: str, value: str, expected: str) -> None:
    clusters = f'[{{name="env-cluster", brokers=["127.0.0.1:9092"], "{option}"="{value}"}}]'
    with pytest.raises(ConfigError) as error:
        load_settings(None, env={CLUSTERS_ENV: clusters})
    message = str(error.value)
    assert f"environment variable {CLUSTERS_ENV}" in message
    assert "(Kafka cluster 'env-cluster')" in message
    assert repr(option) in message
    assert expected in message


@pytest.mark.parametrize(("option", "value", "expected"), BAD_OPTIONS)
@pytest.mark.promise("p-api-cluster-validated")
def test_posted_cluster_is_checked_by_the_same_table(
    option: str, value: str, expected: str
) -> None:
    # POST /kafka-clusters and PATCH build the cluster with this function (a 400 on error).
    with pytest.raises(ValidationError) as error:
        cluster_from_properties("dyn", {"bootstrap.servers": "127.0.0.1:9092", option: value})
    message = str(error.value)
    assert "Kafka cluster 'dyn'" in message
    assert repr(option) in message
    assert expected in message


@pytest.mark.promise("p-sec-reference-malformed")
def test_secret_references_are_checked_not_fetched(tmp_path: Path) -> None:
    # No AWS endpoint is reachable here: a fetch would fail, so success means none was made.
    good = tmp_path / "good.toml"
    good.write_text(
        "[[ingress.kafka-clusters]]\n"
        'name = "c"\nbrokers = ["127.0.0.1:9092"]\n'
        '"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "SCRAM-SHA-512"\n'
        '"sasl.username" = "ssm:/prod/kafka/user"\n'
        '"sasl.password" = "secretsmanager:prod/kafka/ingress:password"\n'
        '[secrets]\nendpoint-url = "http://127.0.0.1:9"\n'
    )
    settings = load_settings(good, env={})
    assert settings.clusters["c"].options["sasl.password"].startswith("secretsmanager:")

    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[[ingress.kafka-clusters]]\n"
        'name = "c"\nbrokers = ["127.0.0.1:9092"]\n'
        '"sasl.password" = "secretsmanager:"\n'
    )
    with pytest.raises(ConfigError, match=r"'sasl.password': invalid secret reference"):
        load_settings(bad, env={})


@pytest.mark.promise("p-config-heartbeat")
def test_cross_option_rules_apply_to_the_cluster(tmp_path: Path) -> None:
    config = tmp_path / "kafka-ingress.toml"
    config.write_text(
        "[[ingress.kafka-clusters]]\n"
        'name = "c"\nbrokers = ["127.0.0.1:9092"]\n'
        '"session.timeout.ms" = "6000"\n"heartbeat.interval.ms" = "7000"\n'
    )
    with pytest.raises(ConfigError, match=r"Kafka cluster 'c'.*heartbeat.interval.ms"):
        load_settings(config, env={})
