"""Option translation: librdkafka names → aiokafka arguments, security settings, ingress options."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from hypothesis import assume, given
from hypothesis import strategies as st

from adapter.engine.retry import RetryPolicy
from adapter.errors import ConfigError
from adapter.kafka.options import (
    OPTION_TABLE,
    REFUSED_OPTIONS,
    SECRET_MASK,
    SUPPORTED_OPTIONS,
    ClientOptions,
    IngressOptions,
    Kind,
    SecuritySettings,
    cluster_change_may_take_secrets,
    holds_own_secrets,
    is_secret,
    mask_options,
    resolve_options,
    restore_masked,
    secret_routing_changed,
    secrets_following_cluster,
    validate_options,
)
from adapter.masking import forget_secrets, mask_secrets

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SASL_SCRAM = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "alice",
    "sasl.password": "hunter2-hunter2",
}
OIDC = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.oauthbearer.method": "oidc",
    "sasl.oauthbearer.client.id": "ingress",
    "sasl.oauthbearer.client.secret": "s3cr3t-s3cr3t",
    "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
}


def resolve(
    sub: Mapping[str, str] | None = None,
    cluster: Mapping[str, str] | None = None,
    *,
    brokers: tuple[str, ...] = ("broker-1:9092",),
    subscription_id: str = "sub_1",
) -> ClientOptions:
    return resolve_options(
        subscription_id=subscription_id,
        bootstrap_servers=list(brokers),
        cluster_options=cluster or {},
        subscription_options=sub or {},
    )


def error_of(sub: Mapping[str, Any] | None = None, cluster: Mapping[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        resolve(sub, cluster)
    return str(info.value)


def specs(kind: Kind) -> list[str]:
    return [name for name, spec in OPTION_TABLE.items() if spec.kind is kind]


# --------------------------------------------------------------------------------------------
# The table itself


def kwargs_of(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self", "topics", "loop"}


@pytest.mark.parametrize("name", specs(Kind.CLIENT))
def test_client_option_targets_a_real_aiokafka_keyword(name: str) -> None:
    spec = OPTION_TABLE[name]
    assert spec.target is not None
    if spec.applies_to in ("consumer", "both"):
        assert spec.target in kwargs_of(AIOKafkaConsumer)
    if spec.applies_to in ("producer", "both"):
        assert spec.target in kwargs_of(AIOKafkaProducer)


@pytest.mark.parametrize("name", specs(Kind.SECURITY))
def test_security_option_targets_a_security_field(name: str) -> None:
    assert OPTION_TABLE[name].target in SecuritySettings.__dataclass_fields__


@pytest.mark.parametrize("name", specs(Kind.INGRESS))
def test_ingress_option_targets_an_ingress_field(name: str) -> None:
    assert OPTION_TABLE[name].target in IngressOptions.__dataclass_fields__


def test_aliases_point_at_supported_canonical_options() -> None:
    aliases = {name: spec.alias_of for name, spec in OPTION_TABLE.items() if spec.alias_of}
    assert aliases == {
        "metadata.broker.list": "bootstrap.servers",
        "sasl.mechanisms": "sasl.mechanism",
        "fetch.message.max.bytes": "max.partition.fetch.bytes",
        "socket.timeout.ms": "request.timeout.ms",
        "compression.codec": "compression.type",
    }
    for alias, canonical in aliases.items():
        assert canonical in SUPPORTED_OPTIONS
        assert OPTION_TABLE[canonical].alias_of is None
        assert OPTION_TABLE[alias].target == OPTION_TABLE[canonical].target


def test_supported_and_refused_partition_the_table() -> None:
    assert SUPPORTED_OPTIONS.isdisjoint(REFUSED_OPTIONS)
    assert SUPPORTED_OPTIONS | set(REFUSED_OPTIONS) == set(OPTION_TABLE)
    assert list(OPTION_TABLE) == sorted(OPTION_TABLE)
    assert all(REFUSED_OPTIONS.values())
    assert all(spec.doc for spec in OPTION_TABLE.values())


def test_every_option_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [name for name in OPTION_TABLE if f"`{name}`" not in text]
    assert missing == []


# --------------------------------------------------------------------------------------------
# Defaults


def test_defaults_without_any_option() -> None:
    options = resolve()
    assert options.bootstrap_servers == ["broker-1:9092"]
    assert options.group_id == "sub_1"
    assert options.consumer_kwargs == {
        "bootstrap_servers": ["broker-1:9092"],
        "client_id": "kafka-ingress-sub_1",
        "group_id": "sub_1",
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        "isolation_level": "read_committed",
        "partition_assignment_strategy": (RoundRobinPartitionAssignor,),
    }
    assert options.producer_kwargs == {
        "bootstrap_servers": ["broker-1:9092"],
        "client_id": "kafka-ingress-sub_1",
    }
    assert options.security == SecuritySettings()
    assert options.ingress == IngressOptions(bootstrap_servers=("broker-1:9092",))


def test_kwargs_lists_are_copies() -> None:
    options = resolve()
    options.consumer_kwargs["bootstrap_servers"].append("x:1")
    assert options.bootstrap_servers == ["broker-1:9092"]
    assert options.producer_kwargs["bootstrap_servers"] == ["broker-1:9092"]


def test_no_security_argument_leaks_into_kwargs() -> None:
    options = resolve(SASL_SCRAM)
    security_keys = {
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_oauth_token_provider",
    }
    assert security_keys.isdisjoint(options.consumer_kwargs)
    assert security_keys.isdisjoint(options.producer_kwargs)


# --------------------------------------------------------------------------------------------
# Every client option → its keyword and value

CONSUMER_CASES: list[tuple[str, str, str, object]] = [
    ("client.rack", "use1-az1", "client_rack", "use1-az1"),
    ("client.rack", "  ", "client_rack", None),
    ("session.timeout.ms", "20000", "session_timeout_ms", 20000),
    ("heartbeat.interval.ms", "1000", "heartbeat_interval_ms", 1000),
    ("max.poll.interval.ms", "60000", "max_poll_interval_ms", 60000),
    (
        "partition.assignment.strategy",
        "roundrobin",
        "partition_assignment_strategy",
        (RoundRobinPartitionAssignor,),
    ),
    (
        "partition.assignment.strategy",
        " roundrobin , range ",
        "partition_assignment_strategy",
        (RoundRobinPartitionAssignor, RangePartitionAssignor),
    ),
    (
        "partition.assignment.strategy",
        "range,range",
        "partition_assignment_strategy",
        (RangePartitionAssignor,),
    ),
    ("auto.offset.reset", "earliest", "auto_offset_reset", "earliest"),
    ("auto.offset.reset", "smallest", "auto_offset_reset", "earliest"),
    ("auto.offset.reset", "beginning", "auto_offset_reset", "earliest"),
    ("auto.offset.reset", "EARLIEST", "auto_offset_reset", "earliest"),
    ("auto.offset.reset", "latest", "auto_offset_reset", "latest"),
    ("auto.offset.reset", "largest", "auto_offset_reset", "latest"),
    ("auto.offset.reset", " End ", "auto_offset_reset", "latest"),
    ("isolation.level", "read_uncommitted", "isolation_level", "read_uncommitted"),
    ("isolation.level", "READ_COMMITTED", "isolation_level", "read_committed"),
    ("fetch.min.bytes", "1024", "fetch_min_bytes", 1024),
    ("fetch.max.bytes", "1000000", "fetch_max_bytes", 1_000_000),
    ("fetch.wait.max.ms", "100", "fetch_max_wait_ms", 100),
    ("fetch.wait.max.ms", "0", "fetch_max_wait_ms", 0),
    ("max.partition.fetch.bytes", "2097152", "max_partition_fetch_bytes", 2_097_152),
    ("fetch.message.max.bytes", "2097152", "max_partition_fetch_bytes", 2_097_152),
    ("check.crcs", "false", "check_crcs", False),
    ("check.crcs", "F", "check_crcs", False),
    ("check.crcs", "0", "check_crcs", False),
    ("check.crcs", "TRUE", "check_crcs", True),
    ("check.crcs", "t", "check_crcs", True),
    ("check.crcs", "1", "check_crcs", True),
]
SHARED_CASES: list[tuple[str, str, str, object]] = [
    ("client.id", "orders-ingress", "client_id", "orders-ingress"),
    ("request.timeout.ms", "60000", "request_timeout_ms", 60000),
    ("socket.timeout.ms", "60000", "request_timeout_ms", 60000),
    ("metadata.max.age.ms", "1000", "metadata_max_age_ms", 1000),
    ("connections.max.idle.ms", "1000", "connections_max_idle_ms", 1000),
    ("connections.max.idle.ms", "0", "connections_max_idle_ms", None),
    ("retry.backoff.ms", "250", "retry_backoff_ms", 250),
    ("retry.backoff.ms", " +250 ", "retry_backoff_ms", 250),
]
PRODUCER_CASES: list[tuple[str, str, str, object]] = [
    ("compression.type", "gzip", "compression_type", "gzip"),
    ("compression.codec", "GZIP", "compression_type", "gzip"),
    ("compression.type", "none", "compression_type", None),
    ("message.max.bytes", "2000000", "max_request_size", 2_000_000),
]


@pytest.mark.parametrize(("option", "value", "kwarg", "expected"), CONSUMER_CASES)
def test_consumer_option(option: str, value: str, kwarg: str, expected: object) -> None:
    options = resolve({option: value})
    assert options.consumer_kwargs[kwarg] == expected
    assert kwarg not in options.producer_kwargs


@pytest.mark.parametrize(("option", "value", "kwarg", "expected"), SHARED_CASES)
def test_shared_option(option: str, value: str, kwarg: str, expected: object) -> None:
    options = resolve({option: value})
    assert options.consumer_kwargs[kwarg] == expected
    assert options.producer_kwargs[kwarg] == expected


@pytest.mark.parametrize(("option", "value", "kwarg", "expected"), PRODUCER_CASES)
def test_producer_option(option: str, value: str, kwarg: str, expected: object) -> None:
    options = resolve({option: value})
    assert options.producer_kwargs[kwarg] == expected
    assert kwarg not in options.consumer_kwargs


def test_cases_cover_every_client_option() -> None:
    covered = {case[0] for case in CONSUMER_CASES + SHARED_CASES + PRODUCER_CASES}
    covered |= {"bootstrap.servers", "metadata.broker.list", "group.id"}
    assert covered == set(specs(Kind.CLIENT))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("PLAINTEXT://a:9092", ["a:9092"]),
        ("a:9092,b:9093", ["a:9092", "b:9093"]),
        (" a:9092 , SASL_SSL://b:9093 ,", ["a:9092", "b:9093"]),
        ("kafka.internal", ["kafka.internal:9092"]),
        ("[::1]:9092", ["[::1]:9092"]),
        ("[::1]", ["[::1]:9092"]),
    ],
)
@pytest.mark.parametrize("name", ["bootstrap.servers", "metadata.broker.list"])
def test_bootstrap_servers_parsed_like_librdkafka(
    name: str, value: str, expected: list[str]
) -> None:
    options = resolve({name: value})
    assert options.bootstrap_servers == expected
    assert options.consumer_kwargs["bootstrap_servers"] == expected
    assert options.producer_kwargs["bootstrap_servers"] == expected


@pytest.mark.parametrize("value", ["", " , ", "a:b", "a:0", "a:65536", "a b:1", "http://a:1/x"])
def test_bad_bootstrap_servers(value: str) -> None:
    message = error_of({"bootstrap.servers": value})
    assert "'bootstrap.servers'" in message
    assert "host[:port]" in message


def test_cluster_brokers_are_the_default_and_an_option_replaces_them() -> None:
    assert resolve(brokers=("a:1", "b:2")).bootstrap_servers == ["a:1", "b:2"]
    assert resolve({"bootstrap.servers": "c:3"}, brokers=("a:1",)).bootstrap_servers == ["c:3"]


def test_no_brokers_at_all() -> None:
    with pytest.raises(ConfigError, match=r"no brokers.*bootstrap\.servers"):
        resolve(brokers=())


def test_client_id_and_group_id_set_on_both_kwargs() -> None:
    options = resolve({"client.id": "me", "group.id": "grp"})
    assert options.consumer_kwargs["client_id"] == options.producer_kwargs["client_id"] == "me"
    assert options.consumer_kwargs["group_id"] == options.group_id == "grp"
    assert "group_id" not in options.producer_kwargs


# --------------------------------------------------------------------------------------------
# Security options → SecuritySettings


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"security.protocol": "ssl"}, SecuritySettings(protocol="SSL")),
        ({"security.protocol": "Sasl_Plaintext", "sasl.mechanism": "PLAIN",
          "sasl.username": "u", "sasl.password": "p"},
         SecuritySettings(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                          sasl_username="u", sasl_password="p")),
        ({"security.protocol": "plaintext"}, SecuritySettings()),
        (SASL_SCRAM, SecuritySettings(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                      sasl_username="alice", sasl_password="hunter2-hunter2")),
        ({**SASL_SCRAM, "sasl.mechanism": "SCRAM-SHA-256"},
         SecuritySettings(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                          sasl_username="alice", sasl_password="hunter2-hunter2")),
        ({"ssl.ca.location": "/etc/ca.pem", "ssl.certificate.location": "/etc/c.pem",
          "ssl.key.location": "/etc/k.pem", "ssl.key.password": " pw "},
         SecuritySettings(ssl_ca_location="/etc/ca.pem", ssl_certificate_location="/etc/c.pem",
                          ssl_key_location="/etc/k.pem", ssl_key_password=" pw ")),
        ({"ssl.ca.location": "probe"}, SecuritySettings(ssl_ca_location="probe")),
        ({"ssl.ca.pem": "-----BEGIN CERTIFICATE-----"},
         SecuritySettings(ssl_ca_pem="-----BEGIN CERTIFICATE-----")),
        ({"ssl.endpoint.identification.algorithm": "none"},
         SecuritySettings(ssl_check_hostname=False)),
        ({"ssl.endpoint.identification.algorithm": "HTTPS"},
         SecuritySettings(ssl_check_hostname=True)),
        ({"enable.ssl.certificate.verification": "false"}, SecuritySettings(ssl_verify=False)),
        ({"enable.ssl.certificate.verification": "True"}, SecuritySettings(ssl_verify=True)),
        (OIDC, SecuritySettings(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                                oauthbearer_method="oidc", oauthbearer_client_id="ingress",
                                oauthbearer_client_secret="s3cr3t-s3cr3t",
                                oauthbearer_token_endpoint_url="https://idp.example/token")),
        ({**OIDC, "sasl.oauthbearer.scope": "kafka", "sasl.oauthbearer.method": "OIDC",
          "sasl.oauthbearer.extensions": "logicalCluster=lkc-1, identityPoolId=pool-2,"},
         SecuritySettings(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                          oauthbearer_method="oidc", oauthbearer_client_id="ingress",
                          oauthbearer_client_secret="s3cr3t-s3cr3t",
                          oauthbearer_token_endpoint_url="https://idp.example/token",
                          oauthbearer_scope="kafka",
                          oauthbearer_extensions=(("logicalCluster", "lkc-1"),
                                                  ("identityPoolId", "pool-2")))),
    ],
)  # fmt: skip
def test_security_options(options: dict[str, str], expected: SecuritySettings) -> None:
    assert resolve(options).security == expected


def test_sasl_mechanisms_is_an_alias() -> None:
    options = {**SASL_SCRAM}
    options["sasl.mechanisms"] = options.pop("sasl.mechanism")
    assert resolve(options).security.sasl_mechanism == "SCRAM-SHA-512"


def test_sasl_mechanism_is_case_sensitive_like_librdkafka() -> None:
    message = error_of({**SASL_SCRAM, "sasl.mechanism": "scram-sha-512"})
    assert "'sasl.mechanism'" in message
    assert "case-sensitive" in message
    assert "did you mean 'SCRAM-SHA-512'" in message


@pytest.mark.promise("p-sec-gssapi-refused")
def test_gssapi_is_refused_with_a_reason() -> None:
    message = error_of({"sasl.mechanism": "GSSAPI"})
    assert "'GSSAPI' is not supported" in message
    assert "Kerberos" in message


def test_security_settings_properties() -> None:
    assert not SecuritySettings().uses_ssl
    assert not SecuritySettings().uses_sasl
    assert SecuritySettings(protocol="SSL").uses_ssl
    assert SecuritySettings(protocol="SASL_SSL").uses_ssl
    assert SecuritySettings(protocol="SASL_SSL").uses_sasl
    assert SecuritySettings(protocol="SASL_PLAINTEXT").uses_sasl
    assert not SecuritySettings(protocol="SASL_PLAINTEXT").uses_ssl


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"security.protocol": "SASL_SSL"}, "security.protocol=SASL_SSL needs sasl.mechanism"),
        ({"security.protocol": "SASL_PLAINTEXT"}, "GSSAPI, is not supported"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},
         "sasl.mechanism=PLAIN needs sasl.username and sasl.password"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
          "sasl.username": "u"}, "sasl.mechanism=SCRAM-SHA-256 needs sasl.password"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
         "needs a token source: sasl.oauthbearer.method=oidc"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
          "sasl.oauthbearer.method": "oidc"},
         "needs sasl.oauthbearer.client.id, sasl.oauthbearer.client.secret, "
         "sasl.oauthbearer.token.endpoint.url"),
        ({"ssl.key.location": "/k.pem"}, "ssl.key.location needs ssl.certificate.location"),
    ],
)  # fmt: skip
def test_security_rules_across_options(options: dict[str, str], fragment: str) -> None:
    assert fragment in error_of(options)


def test_sasl_settings_ignored_without_a_sasl_protocol_like_librdkafka() -> None:
    options = resolve({"sasl.mechanism": "PLAIN", "security.protocol": "SSL"})
    assert options.security.protocol == "SSL"
    assert options.security.sasl_mechanism == "PLAIN"


def test_security_rules_span_cluster_and_subscription() -> None:
    cluster = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u"}
    assert "needs sasl.password" in error_of({}, cluster)
    security = resolve({"sasl.password": "p"}, cluster).security
    assert (security.sasl_username, security.sasl_password) == ("u", "p")


# --------------------------------------------------------------------------------------------
# Timeouts that depend on each other


@pytest.mark.promise("p-config-heartbeat")
def test_heartbeat_must_be_below_session_timeout() -> None:
    message = error_of({"session.timeout.ms": "2000"})
    assert "heartbeat.interval.ms (3000) must be less than session.timeout.ms (2000)" in message
    resolve({"session.timeout.ms": "2000", "heartbeat.interval.ms": "500"})


def test_request_timeout_raised_above_a_long_session_timeout() -> None:
    options = resolve({"session.timeout.ms": "45000"})
    assert options.consumer_kwargs["request_timeout_ms"] == 50_000
    assert options.producer_kwargs["request_timeout_ms"] == 50_000
    assert "request_timeout_ms" not in resolve({"session.timeout.ms": "30000"}).consumer_kwargs


def test_request_timeout_raised_above_a_long_fetch_wait() -> None:
    options = resolve({"fetch.wait.max.ms": "60000"})
    assert options.consumer_kwargs["request_timeout_ms"] == 65_000


def test_explicit_request_timeout_must_exceed_the_broker_side_waits() -> None:
    message = error_of({"session.timeout.ms": "45000", "request.timeout.ms": "40000"})
    assert "request.timeout.ms (40000) must be greater than session.timeout.ms (45000)" in message
    message = error_of({"fetch.wait.max.ms": "20000", "socket.timeout.ms": "15000"})
    assert "socket.timeout.ms (15000) must be greater than fetch.wait.max.ms (20000)" in message
    options = resolve({"session.timeout.ms": "45000", "request.timeout.ms": "46000"})
    assert options.consumer_kwargs["request_timeout_ms"] == 46_000


# --------------------------------------------------------------------------------------------
# Precedence


@pytest.mark.parametrize(
    ("option", "cluster_value", "sub_value", "kwarg", "expected"),
    [
        ("fetch.min.bytes", "10", "20", "fetch_min_bytes", 20),
        ("auto.offset.reset", "earliest", "latest", "auto_offset_reset", "latest"),
        ("client.id", "cluster", "sub", "client_id", "sub"),
    ],
)
@pytest.mark.promise("p-config-precedence")
def test_subscription_options_override_cluster_options(
    option: str, cluster_value: str, sub_value: str, kwarg: str, expected: object
) -> None:
    assert resolve({option: sub_value}, {option: cluster_value}).consumer_kwargs[kwarg] == expected
    assert resolve({}, {option: cluster_value}).consumer_kwargs[kwarg] != expected


@pytest.mark.promise("p-config-precedence")
def test_override_across_alias_names() -> None:
    options = resolve({"metadata.broker.list": "sub:1"}, {"bootstrap.servers": "cluster:1"})
    assert options.bootstrap_servers == ["sub:1"]
    options = resolve({"fetch.message.max.bytes": "7"}, {"max.partition.fetch.bytes": "9"})
    assert options.consumer_kwargs["max_partition_fetch_bytes"] == 7


def test_security_from_cluster_with_subscription_override() -> None:
    options = resolve({"sasl.username": "bob"}, SASL_SCRAM)
    assert options.security.sasl_username == "bob"
    assert options.security.sasl_password == "hunter2-hunter2"


def test_ingress_options_from_cluster_with_subscription_override() -> None:
    cluster = {"dead.letter.topic": "dlq-all", "retry.max.attempts": "3", "max.in.flight": "8"}
    ingress = resolve({"retry.max.attempts": "9", "retry.jitter": "0"}, cluster).ingress
    assert ingress.dead_letter_topic == "dlq-all"
    assert ingress.retry_options == {"retry.max.attempts": "9", "retry.jitter": "0"}
    assert ingress.max_in_flight == 8


@pytest.mark.parametrize(
    ("cluster", "sub", "expected"),
    [
        ({}, {}, "sub_1"),
        ({"group.id": "cluster-group"}, {}, "cluster-group"),
        ({"group.id": "cluster-group"}, {"group.id": "sub-group"}, "sub-group"),
        ({}, {"group.id": "sub-group"}, "sub-group"),
    ],
)
@pytest.mark.promise("p-config-group")
def test_effective_group_id(cluster: dict[str, str], sub: dict[str, str], expected: str) -> None:
    options = resolve(sub, cluster)
    assert options.group_id == expected
    assert options.consumer_kwargs["group_id"] == expected


@pytest.mark.promise("p-config-alias-conflict")
def test_alias_conflict_in_one_mapping() -> None:
    message = error_of({"sasl.mechanism": "PLAIN", "sasl.mechanisms": "SCRAM-SHA-256"})
    assert "'sasl.mechanism' and 'sasl.mechanisms' are the same option" in message
    message = error_of({}, {"bootstrap.servers": "a:1", "metadata.broker.list": "b:1"})
    assert message.startswith("cluster options 'bootstrap.servers' and 'metadata.broker.list'")


def test_alias_repeated_with_the_same_value_is_fine() -> None:
    options = resolve({"bootstrap.servers": "a:1", "metadata.broker.list": "PLAINTEXT://a:1"})
    assert options.bootstrap_servers == ["a:1"]


# --------------------------------------------------------------------------------------------
# Refused and unknown options


@pytest.mark.parametrize("name", sorted(REFUSED_OPTIONS))
@pytest.mark.promise("p-config-refused")
def test_refused_option_explains_why(name: str) -> None:
    message = error_of({name: "x"})
    assert message.startswith(f"subscription option {name!r} is not allowed: ")
    assert REFUSED_OPTIONS[name] in message
    assert error_of({}, {name: "x"}).startswith(f"cluster option {name!r} is not allowed")
    with pytest.raises(ConfigError, match=f"^option {re.escape(repr(name))} is not allowed"):
        validate_options({name: "x"})


@pytest.mark.parametrize("value", ["true", "false"])
@pytest.mark.promise("p-config-refused")
def test_auto_commit_refused_whatever_its_value(value: str) -> None:
    assert "commits explicit offsets" in error_of({"enable.auto.commit": value})


@pytest.mark.promise("p-config-refused")
def test_group_instance_id_refused_because_instances_share_the_group() -> None:
    assert "fence" in error_of({"group.instance.id": "poller-1"})


@pytest.mark.promise("p-config-unknown-option")
def test_unknown_option_lists_every_supported_name_sorted() -> None:
    message = error_of({"no.such.option": "1"})
    assert message.startswith("unknown subscription option 'no.such.option'; supported options: ")
    listed = message.split("supported options: ", 1)[1].split(", ")
    assert listed == sorted(SUPPORTED_OPTIONS)


@pytest.mark.promise("p-config-unknown-option")
def test_unknown_options_all_named_with_suggestions() -> None:
    message = error_of({"sesion.timeout.ms": "1", "Group.Id": "g", "zzz": "1"})
    assert message.startswith(
        "unknown subscription options 'Group.Id' (did you mean 'group.id'?), "
        "'sesion.timeout.ms' (did you mean 'session.timeout.ms'?), 'zzz'; supported options:"
    )


def test_every_problem_reported_at_once() -> None:
    message = error_of({"enable.auto.commit": "false", "fetch.min.bytes": "x", "typo": "1"})
    assert "'enable.auto.commit' is not allowed" in message
    assert "'fetch.min.bytes': expected" in message
    assert "unknown subscription option 'typo'" in message
    assert message.index("fetch.min.bytes") < message.index("unknown")


def test_cluster_and_subscription_problems_are_labelled() -> None:
    message = error_of({"fetch.min.bytes": "x"}, {"fetch.max.bytes": "y"})
    assert "cluster option 'fetch.max.bytes'" in message
    assert "subscription option 'fetch.min.bytes'" in message


def test_option_names_are_case_sensitive() -> None:
    assert "unknown" in error_of({"Security.Protocol": "SSL"})


# --------------------------------------------------------------------------------------------
# Bad values

BAD_VALUES: list[tuple[str, object, str]] = [
    ("fetch.min.bytes", "abc", "expected an integer in 1..100000000, got 'abc'"),
    ("fetch.min.bytes", "0", "expected an integer in 1..100000000, got '0'"),
    ("fetch.min.bytes", "100000001", "in 1..100000000"),
    ("fetch.min.bytes", "1.5", "expected an integer"),
    ("fetch.min.bytes", "1e3", "expected an integer"),
    ("fetch.min.bytes", "1_000", "expected an integer"),
    ("fetch.min.bytes", "", "expected an integer"),
    ("fetch.min.bytes", "9" * 5000, "expected an integer"),
    ("session.timeout.ms", "-1", "in 1..3600000"),
    ("fetch.wait.max.ms", "300001", "in 0..300000"),
    ("connections.max.idle.ms", "-1", "in 0..2147483647"),
    ("message.max.bytes", "999", "in 1000..1000000000"),
    ("check.crcs", "yes", "expected true or false, got 'yes'"),
    ("enable.ssl.certificate.verification", "2", "expected true or false"),
    ("auto.offset.reset", "first", "expected one of earliest, smallest, beginning, latest"),
    ("auto.offset.reset", "error", "'error' is not supported: the poller would stop"),
    ("auto.offset.reset", "ERROR", "not supported"),
    ("isolation.level", "serializable", "one of read_committed, read_uncommitted"),
    ("security.protocol", "TLS", "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'TLS'"),
    ("sasl.mechanism", "DIGEST-MD5", "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"),
    ("sasl.oauthbearer.method", "jwt", "one of default, oidc"),
    ("ssl.endpoint.identification.algorithm", "http", "one of https, none"),
    ("partition.assignment.strategy", "sticky", "comma-separated list of range, roundrobin"),
    ("partition.assignment.strategy", ",", "comma-separated list of range, roundrobin"),
    ("partition.assignment.strategy", "range,cooperative-sticky", "only eager rebalancing"),
    ("allow.auto.create.topics", "false", "disable auto.create.topics.enable on the broker"),
    ("allow.auto.create.topics", "maybe", "expected true or false"),
    ("reconnect.backoff.ms", "soon", "in 0..3600000"),
    ("compression.type", "brotli", "one of none, gzip, snappy, lz4, zstd"),
    ("sasl.oauthbearer.token.endpoint.url", "idp.example/token", "http:// or https:// URL"),
    ("sasl.oauthbearer.extensions", "a=1,b", "comma-separated key=value pairs"),
    ("sasl.oauthbearer.extensions", "=1", "comma-separated key=value pairs"),
    ("group.id", " ", "a non-empty string"),
    ("client.id", "", "a non-empty string"),
    ("ssl.ca.location", "", "a non-empty string"),
    ("dead.letter.topic", "", "a Kafka topic name"),
    ("dead.letter.topic", "has space", "a Kafka topic name"),
    ("dead.letter.topic", "t" * 250, "a Kafka topic name"),
    ("dead.letter.topic", ".", "not '.' or '..'"),
    ("dead.letter.topic", "..", "not '.' or '..'"),
    ("dead.letter.topic", "topic/1", "a Kafka topic name"),
    ("dead.letter.topic", "__consumer_offsets", "reserved for Kafka's own topics"),
    ("retry.initial.interval.ms", "soon", "expected a number, got 'soon'"),
    ("retry.max.interval.ms", "nan", "expected a number"),
    ("retry.backoff.multiplier", "inf", "expected a number"),
    ("retry.backoff.multiplier", "1e999", "expected a number"),
    ("retry.jitter", "", "expected a number"),
    ("retry.max.attempts", "1.5", "an integer in 1..2147483647, or 'unlimited'"),
    ("retry.max.attempts", "-5", "an integer in 1..2147483647, or 'unlimited'"),
    ("client.id", "x" * 300, "a string of at most 255 characters"),
    ("max.in.flight", "0", "in 1..100000"),
    ("invocation.timeout.ms", "0", "in 1..2147483647"),
    ("batch.size", "0", "in 1..10000"),
    ("batch.size", "10001", "in 1..10000"),
    ("event.format", "cloudevents", "one of ingress, msk"),
    ("fetch.min.bytes", ["1"], "expected a string, number or boolean"),
]


@pytest.mark.parametrize(("option", "value", "fragment"), BAD_VALUES)
@pytest.mark.promise("p-config-unknown-option")
def test_bad_value_names_option_and_expectation(option: str, value: Any, fragment: str) -> None:
    message = error_of({option: value})
    assert message.startswith(f"subscription option {option!r}: ")
    assert fragment in message
    with pytest.raises(ConfigError, match=f"^option {re.escape(repr(option))}: "):
        validate_options({option: value})


def test_long_bad_values_are_shortened() -> None:
    message = error_of({"fetch.min.bytes": "x" * 500})
    assert "x" * 77 + "..." in message
    assert "x" * 81 not in message


def test_numbers_and_booleans_accepted_as_toml_and_json_give_them() -> None:
    raw: dict[str, Any] = {"fetch.min.bytes": 10, "check.crcs": False, "retry.jitter": 0.5}
    options = resolve(raw)
    assert options.consumer_kwargs["fetch_min_bytes"] == 10
    assert options.consumer_kwargs["check_crcs"] is False
    assert options.ingress.retry_options == {"retry.jitter": "0.5"}


@pytest.mark.parametrize("codec", ["snappy", "lz4", "zstd"])
def test_compression_codec_needs_its_library(codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapter.kafka import options as module

    _, package = module._COMPRESSION_LIBS[codec]
    monkeypatch.setitem(module._COMPRESSION_LIBS, codec, (lambda: False, package))
    assert f"{codec!r} needs the Python package" in error_of({"compression.type": codec})
    monkeypatch.setitem(module._COMPRESSION_LIBS, codec, (lambda: True, package))
    assert resolve({"compression.type": codec}).producer_kwargs["compression_type"] == codec


# --------------------------------------------------------------------------------------------
# Ingress options and options accepted without effect


def test_ingress_options_typed() -> None:
    ingress = resolve(
        {
            "dead.letter.topic": " orders.dlq_v-1 ",
            "retry.initial.interval.ms": " 100 ",
            "retry.max.interval.ms": "60000",
            "retry.max.attempts": "unlimited",
            "retry.backoff.multiplier": "1.5",
            "retry.jitter": ".1",
            "max.in.flight": "32",
            "invocation.timeout.ms": "5000",
            "batch.size": "100",
            "event.format": "MSK",
        }
    ).ingress
    assert ingress == IngressOptions(
        dead_letter_topic="orders.dlq_v-1",
        retry_options={
            "retry.initial.interval.ms": "100",
            "retry.max.interval.ms": "60000",
            "retry.max.attempts": "unlimited",
            "retry.backoff.multiplier": "1.5",
            "retry.jitter": ".1",
        },
        max_in_flight=32,
        invocation_timeout_ms=5000,
        batch_size=100,
        event_format="msk",
        bootstrap_servers=("broker-1:9092",),
    )


def test_lambda_events_name_the_brokers_actually_used() -> None:
    assert resolve(brokers=("b-1:9092", "b-2:9092")).ingress.bootstrap_servers == (
        "b-1:9092",
        "b-2:9092",
    )
    # bootstrap.servers replaces the cluster's brokers, in the event too.
    overridden = resolve({"bootstrap.servers": "b-3:9094"}, brokers=("b-1:9092",))
    assert overridden.ingress.bootstrap_servers == ("b-3:9094",)


def test_ingress_options_stay_out_of_the_kafka_kwargs() -> None:
    options = resolve({"dead.letter.topic": "dlq", "batch.size": "10", "max.in.flight": "2"})
    assert options.consumer_kwargs == resolve().consumer_kwargs
    assert options.producer_kwargs == resolve().producer_kwargs


def test_retry_options_feed_the_retry_policy() -> None:
    ingress = resolve(
        {"retry.initial.interval.ms": "100", "retry.max.attempts": "3"},
        {"retry.backoff.multiplier": "3"},
    ).ingress
    policy = RetryPolicy.from_options(ingress.retry_options)
    assert policy.schedule() == pytest.approx([0.1, 0.3])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("allow.auto.create.topics", "true"),
        ("reconnect.backoff.ms", "50"),
        ("reconnect.backoff.max.ms", "10000"),
        ("retry.backoff.max.ms", "1000"),
    ],
)
def test_ignored_options_are_accepted_without_effect(option: str, value: str) -> None:
    options = resolve({option: value})
    assert options.consumer_kwargs == resolve().consumer_kwargs
    assert options.producer_kwargs == resolve().producer_kwargs


# --------------------------------------------------------------------------------------------
# validate_options


def test_validate_options_accepts_every_supported_kind() -> None:
    validate_options({})
    validate_options({**SASL_SCRAM, "fetch.min.bytes": "1", "dead.letter.topic": "dlq"})
    validate_options({"reconnect.backoff.ms": "5", "sasl.mechanisms": "PLAIN"})


def test_validate_options_checks_options_one_by_one() -> None:
    # Rules spanning options need the cluster's options too; resolve_options applies them.
    validate_options({"security.protocol": "SASL_SSL"})
    validate_options({"session.timeout.ms": "1000"})


def test_validate_options_reports_unknown_options() -> None:
    with pytest.raises(ConfigError, match=r"^unknown option 'nope'; supported options: "):
        validate_options({"nope": "1"})


# --------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize(
    "name",
    [
        "sasl.username",
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.truststore.password",
        "sasl.jaas.config",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "ssl.key.pem",
        "my.PASSWORD",
        "some.passphrase",
        "api.Secret.value",
    ],
)
def test_is_secret(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize(
    "name",
    ["group.id", "sasl.mechanism", "sasl.oauthbearer.client.id", "ssl.key.location", "x"],
)
def test_is_not_secret(name: str) -> None:
    assert not is_secret(name)


def test_spec_secret_flag_follows_is_secret() -> None:
    for name, spec in OPTION_TABLE.items():
        assert spec.secret is is_secret(name)


@pytest.mark.promise("p-sec-secrets-masked")
def test_mask_options() -> None:
    masked = mask_options({**SASL_SCRAM, "sasl.jaas.config": "x", "unknown.secret": "y"})
    assert masked == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": SECRET_MASK,
        "sasl.password": SECRET_MASK,
        "sasl.jaas.config": SECRET_MASK,
        "unknown.secret": SECRET_MASK,
    }
    assert mask_options({}) == {}
    # Credentials inside other values (a token endpoint URL) are masked too.
    shown = mask_options({"sasl.oauthbearer.token.endpoint.url": "https://id:pw-123@idp/token"})
    assert shown == {"sasl.oauthbearer.token.endpoint.url": "https://***@idp/token"}


def test_options_written_back_as_shown_keep_the_stored_secrets() -> None:
    stored = {
        **SASL_SCRAM,
        "sasl.oauthbearer.token.endpoint.url": "https://id:pw-123@idp/token",
    }
    assert restore_masked(mask_options(stored), stored) == stored
    # A new value is a new value, even for a secret.
    assert restore_masked({"sasl.password": "new-one"}, stored) == {"sasl.password": "new-one"}
    with pytest.raises(ConfigError, match=r"'sasl\.password'.*no stored value"):
        restore_masked({"sasl.password": SECRET_MASK}, {})


def test_security_repr_masks_every_secret_field() -> None:
    options = resolve({**OIDC, "ssl.key.password": "keypass-keypass"})
    text = repr(options.security)
    for secret in ("s3cr3t-s3cr3t", "keypass-keypass"):
        assert secret not in text
        assert secret not in str(options.security)
        assert secret not in repr(options)
    assert "oauthbearer_client_secret='***'" in text
    assert "ssl_key_password='***'" in text
    assert "oauthbearer_client_id='ingress'" in text
    assert "sasl_username=None" in text


def test_client_options_repr_has_no_credentials() -> None:
    text = repr(resolve(SASL_SCRAM))
    assert "alice" not in text
    assert "hunter2" not in text
    assert "sasl_password='***'" in text


SECRET_OPTIONS = sorted(
    name for name in OPTION_TABLE if is_secret(name) and OPTION_TABLE[name].kind is Kind.SECURITY
)
REFUSED_SECRETS = sorted(name for name in REFUSED_OPTIONS if is_secret(name))
secret_values = st.text(min_size=6, max_size=40).filter(lambda s: s.strip() == s)


def all_messages(options: dict[str, Any], cluster: dict[str, Any] | None = None) -> list[str]:
    """Every error message produced for these options, by both entry points."""
    messages = []
    for call in (lambda: resolve(options, cluster), lambda: validate_options(options)):
        try:
            call()
        except ConfigError as exc:
            messages.append(str(exc))
    return messages


SCENARIOS: list[dict[str, str]] = [
    {"no.such.option": "1"},  # unknown option beside the secret
    {"fetch.min.bytes": "many"},  # bad value beside the secret
    {"enable.auto.commit": "true"},  # refused option beside the secret
    {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"},  # rule across options
    {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"},
    {"session.timeout.ms": "1000"},  # timeout rule
]


@given(secret=secret_values, name=st.sampled_from(SECRET_OPTIONS), extra=st.sampled_from(SCENARIOS))
def test_secret_values_never_appear_in_errors(
    secret: str, name: str, extra: dict[str, str]
) -> None:
    baseline = all_messages({name: "PLACEHOLDER-VALUE", **extra})
    cluster_baseline = all_messages(extra, {name: "PLACEHOLDER-VALUE"})
    # A "secret" that is a piece of the messages' own words ("cluste") proves nothing.
    assume(all(secret not in message for message in baseline + cluster_baseline))
    messages = all_messages({name: secret, **extra})
    assert messages, "every scenario is an error"
    # Not only absent: the messages do not depend on the secret at all.
    assert messages == baseline
    cluster_messages = all_messages(extra, {name: secret})
    assert all(secret not in message for message in cluster_messages)


@given(secret=secret_values, name=st.sampled_from(REFUSED_SECRETS))
def test_refused_secret_option_values_never_appear(secret: str, name: str) -> None:
    baseline = all_messages({name: "PLACEHOLDER-VALUE"})
    assume(all(secret not in message for message in baseline))
    assert all_messages({name: secret}) == baseline


@given(secret=secret_values, typo=st.sampled_from(["sasl.pasword", "ssl.key.passwd", "secret"]))
def test_unknown_option_values_never_appear(secret: str, typo: str) -> None:
    baseline = all_messages({typo: "PLACEHOLDER-VALUE"})
    assume(all(secret not in message for message in baseline))
    assert all_messages({typo: secret}) == baseline


@pytest.mark.parametrize("name", SECRET_OPTIONS)
def test_empty_secret_rejected_without_echo(name: str) -> None:
    message = error_of({name: ""})
    assert message == f"subscription option {name!r}: expected a non-empty string"


def test_secrets_kept_verbatim() -> None:
    security = resolve({**SASL_SCRAM, "sasl.password": "  padded  "}).security
    assert security.sasl_password == "  padded  "


# --------------------------------------------------------------------------------------------
# Where the cluster's credentials go


EVIL_BROKERS = {
    "bootstrap.servers": "evil.example:9092",
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
}


@pytest.mark.parametrize("name", ["bootstrap.servers", "metadata.broker.list"])
@pytest.mark.promise("p-sec-credentials-stay")
def test_subscription_naming_other_brokers_does_not_inherit_the_clusters_secrets(
    name: str,
) -> None:
    sub = {**EVIL_BROKERS, name: EVIL_BROKERS["bootstrap.servers"]}
    if name != "bootstrap.servers":
        del sub["bootstrap.servers"]
    message = error_of(sub, SASL_SCRAM)
    assert f"subscription option {name!r}" in message
    assert "sasl.password" in message
    assert "sasl.username" in message
    assert "hunter2" not in message
    # With credentials of its own, it sends only those.
    own = resolve({**sub, "sasl.username": "mallory", "sasl.password": "own-pw-123"}, SASL_SCRAM)
    assert own.security.sasl_password == "own-pw-123"
    assert own.bootstrap_servers == ["evil.example:9092"]


@pytest.mark.parametrize(
    "weakening",
    [
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"},
        {"enable.ssl.certificate.verification": "false"},
        {"ssl.endpoint.identification.algorithm": "none"},
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
def test_subscription_weakening_tls_does_not_inherit_the_clusters_secrets(
    weakening: dict[str, str],
) -> None:
    # The same brokers, but the password would travel in clear or to whoever answers.
    cluster = {**SASL_SCRAM, "security.protocol": "SASL_SSL"}
    message = error_of(weakening, cluster)
    assert f"subscription option {next(iter(weakening))!r} weakens" in message
    assert "sasl.password" in message
    assert "hunter2" not in message
    own = resolve({**weakening, "sasl.username": "u", "sasl.password": "own-pw-123"}, cluster)
    assert own.security.sasl_password == "own-pw-123"


def test_subscription_naming_the_clusters_own_brokers_inherits_its_secrets() -> None:
    options = resolve(
        {"bootstrap.servers": "BROKER-2:9092, broker-1"},
        SASL_SCRAM,
        brokers=("broker-1:9092", "broker-2:9092"),
    )
    assert options.security.sasl_password == "hunter2-hunter2"
    cluster = {**SASL_SCRAM, "bootstrap.servers": "c:1"}
    assert resolve({"metadata.broker.list": "c:1"}, cluster).security.sasl_password


def test_subscription_naming_other_brokers_does_not_inherit_an_oidc_secret() -> None:
    # The token the cluster's client secret buys would go to the subscription's brokers.
    message = error_of({"bootstrap.servers": "evil.example:9092"}, OIDC)
    assert "sasl.oauthbearer.client.secret" in message


@pytest.mark.promise("p-sec-credentials-stay")
def test_subscription_naming_another_token_endpoint_does_not_inherit_the_client_secret() -> None:
    sub = {"sasl.oauthbearer.token.endpoint.url": "https://evil.example/token"}
    message = error_of(sub, OIDC)
    assert "subscription option 'sasl.oauthbearer.token.endpoint.url'" in message
    assert "sasl.oauthbearer.client.secret" in message
    assert "s3cr3t" not in message
    own = resolve({**sub, "sasl.oauthbearer.client.secret": "mine-mine"}, OIDC)
    assert own.security.oauthbearer_client_secret == "mine-mine"
    # The cluster's own endpoint, repeated, is no change.
    same = {"sasl.oauthbearer.token.endpoint.url": OIDC["sasl.oauthbearer.token.endpoint.url"]}
    assert resolve(same, OIDC).security.oauthbearer_client_secret == "s3cr3t-s3cr3t"


def test_a_cluster_without_secrets_lets_subscriptions_name_any_brokers() -> None:
    assert resolve({"bootstrap.servers": "other:9092"}, {"client.id": "c"}).bootstrap_servers


# Where a subscription's own credentials go when its cluster changes

CLUSTER = {"bootstrap.servers": "broker-1:9092,broker-2:9092", **SASL_SCRAM}
OWN_SECRETS = {"sasl.username": "bob", "sasl.password": "own-pw-own-pw"}


def _changed(change: Mapping[str, str | None], base: Mapping[str, str] = CLUSTER) -> dict[str, str]:
    """``base`` with ``change``: None leaves an option out, the alias replaces its option."""
    out: dict[str, str | None] = dict(base)
    if "metadata.broker.list" in change:
        del out["bootstrap.servers"]
    out.update(change)
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("change", "moves"),
    [
        ({"bootstrap.servers": "evil.example:9092"}, True),
        ({"bootstrap.servers": "broker-1:9092,evil.example:9092"}, True),  # one broker more
        ({"metadata.broker.list": "evil.example:9092"}, True),
        ({"security.protocol": "SASL_PLAINTEXT"}, False),
        ({"security.protocol": None}, False),  # left out: PLAINTEXT
        ({"enable.ssl.certificate.verification": "false"}, False),
        ({"ssl.endpoint.identification.algorithm": "none"}, False),
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
def test_cluster_change_takes_a_subscriptions_own_secrets_along(
    change: dict[str, str | None], moves: bool
) -> None:
    new = _changed(change)
    (following,) = secrets_following_cluster(CLUSTER, new, {**OWN_SECRETS, "client.id": "x"})
    assert following.option == next(iter(change))
    assert following.moves is moves
    assert following.secrets == ("sasl.password", "sasl.username")
    # Nothing of its own: nothing to take along.
    assert secrets_following_cluster(CLUSTER, new, {"client.id": "x"}) == []


@pytest.mark.parametrize(
    "change",
    [
        {"bootstrap.servers": "BROKER-2:9092, broker-1"},  # the same brokers, spelled otherwise
        {"metadata.broker.list": "broker-1:9092"},  # some of the same brokers
        {"client.id": "other"},
        {"sasl.password": "new-password-1"},
        {"security.protocol": "sasl_ssl"},
        {"enable.ssl.certificate.verification": "true"},
        {"ssl.endpoint.identification.algorithm": "https"},
    ],
)
def test_cluster_change_that_moves_and_weakens_nothing_takes_nothing_along(
    change: dict[str, str],
) -> None:
    assert secrets_following_cluster(CLUSTER, _changed(change), OWN_SECRETS) == []


@pytest.mark.parametrize(
    ("own", "change"),
    [
        ({"bootstrap.servers": "mine:9092"}, {"bootstrap.servers": "evil.example:9092"}),
        ({"metadata.broker.list": "mine:9092"}, {"bootstrap.servers": "evil.example:9092"}),
        ({"security.protocol": "SASL_SSL"}, {"security.protocol": "SASL_PLAINTEXT"}),
        ({"security.protocol": "SASL_SSL"}, {"security.protocol": None}),
        (
            {"enable.ssl.certificate.verification": "true"},
            {"enable.ssl.certificate.verification": "false"},
        ),
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
def test_an_address_or_protection_the_subscription_sets_itself_stays_its_own(
    own: dict[str, str], change: dict[str, str | None]
) -> None:
    subscription = {**own, **OWN_SECRETS}
    assert secrets_following_cluster(CLUSTER, _changed(change), subscription) == []


def test_a_subscription_with_its_own_brokers_still_inherits_the_clusters_tls() -> None:
    subscription = {"bootstrap.servers": "mine:9092", **OWN_SECRETS}
    (following,) = secrets_following_cluster(
        CLUSTER, _changed({"security.protocol": "SASL_PLAINTEXT"}), subscription
    )
    assert following.option == "security.protocol"
    assert not following.moves


def test_another_token_endpoint_takes_only_the_client_secret_along() -> None:
    cluster = {"bootstrap.servers": "broker-1:9092", **OIDC}
    moved = {**cluster, "sasl.oauthbearer.token.endpoint.url": "https://evil.example/token"}
    subscription = {
        "bootstrap.servers": "mine:9092",  # its own brokers: they are not moved
        "sasl.oauthbearer.client.secret": "own-client-secret",
        "ssl.key.password": "own-key-password",
    }
    (following,) = secrets_following_cluster(cluster, moved, subscription)
    assert following.option == "sasl.oauthbearer.token.endpoint.url"
    assert following.secrets == ("sasl.oauthbearer.client.secret",)
    # Its own endpoint too: nothing follows.
    endpoint = {"sasl.oauthbearer.token.endpoint.url": "https://mine.example/token"}
    assert secrets_following_cluster(cluster, moved, {**subscription, **endpoint}) == []


def test_a_new_cluster_under_a_used_name_is_a_new_address() -> None:
    (following,) = secrets_following_cluster({}, CLUSTER, OWN_SECRETS)
    assert (following.option, following.moves) == ("bootstrap.servers", True)
    assert secrets_following_cluster({}, CLUSTER, {"client.id": "x"}) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam",
        "http://user:pw@169.254.169.254/token",
        "http://[::ffff:169.254.169.254]/token",
        "http://2852039166/token",
        "http://0xa9fea9fe:80/token",
        "http://[fd00:ec2::254]/token",
        "http://100.100.100.200/token",
        "https://169.254.1.1/token",
    ],
)
def test_token_endpoint_on_a_link_local_or_metadata_address_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_options({"sasl.oauthbearer.token.endpoint.url": url})
    message = str(info.value)
    assert "'sasl.oauthbearer.token.endpoint.url'" in message
    assert "metadata" in message or "link-local" in message
    assert "pw@" not in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/token", "https://10.0.0.5/token", "https://idp.example/t"]
)
def test_token_endpoint_on_a_private_or_named_host_is_accepted(url: str) -> None:
    validate_options({"sasl.oauthbearer.token.endpoint.url": url})


@pytest.mark.promise("p-sec-credentials-stay")
def test_masked_secret_not_kept_when_the_brokers_change() -> None:
    stored = {"bootstrap.servers": "broker-1:9092", **SASL_SCRAM}
    shown = mask_options(stored)
    moved = {**shown, "bootstrap.servers": "evil.example:9092"}
    with pytest.raises(ConfigError) as info:
        restore_masked(moved, stored, replaces=True)
    message = str(info.value)
    assert "'bootstrap.servers'" in message
    assert "sasl.password" in message
    assert "hunter2" not in message
    # The same brokers (another spelling, a subset), or secrets given again, are fine.
    same = {**shown, "metadata.broker.list": "BROKER-1"}
    assert restore_masked(same, stored, replaces=True)["sasl.password"] == "hunter2-hunter2"
    fresh = {**moved, "sasl.username": "u2", "sasl.password": "pw-2-pw-2"}
    assert restore_masked(fresh, stored, replaces=True)["sasl.password"] == "pw-2-pw-2"


def test_masked_secret_not_kept_when_the_token_endpoint_changes() -> None:
    stored = dict(OIDC)
    moved = {**mask_options(stored), "sasl.oauthbearer.token.endpoint.url": "https://evil/t"}
    with pytest.raises(ConfigError, match=r"'sasl\.oauthbearer\.token\.endpoint\.url'.*client"):
        restore_masked(moved, stored, replaces=True)


@pytest.mark.promise("p-sec-credentials-stay")
def test_patched_address_does_not_keep_the_secrets_left_out() -> None:
    # A PATCH keeps what it does not name: a new address must come with the secrets again.
    stored = dict(SASL_SCRAM)
    with pytest.raises(ConfigError, match=r"'bootstrap\.servers'.*sasl\.password"):
        restore_masked({"bootstrap.servers": "evil.example:9092"}, stored)
    restore_masked({"bootstrap.servers": "b:1", "sasl.username": "u", "sasl.password": "p"}, stored)
    assert restore_masked({"client.id": "x"}, stored) == {"client.id": "x"}


@pytest.mark.promise("p-sec-credentials-stay")
@pytest.mark.parametrize(
    "weaken",
    [
        {"security.protocol": "SASL_PLAINTEXT"},
        {"enable.ssl.certificate.verification": "false"},
        {"ssl.endpoint.identification.algorithm": "none"},
    ],
)
def test_masked_secret_not_kept_when_its_protection_is_weakened(weaken: dict[str, str]) -> None:
    """The same brokers, but readable by anyone in the middle: as a new address."""
    stored = {"bootstrap.servers": "broker-1:9092", **SASL_SCRAM}
    (option,) = weaken
    with pytest.raises(ConfigError) as info:
        restore_masked({**mask_options(stored), **weaken}, stored, replaces=True)
    message = str(info.value)
    assert f"'{option}'" in message
    assert "sasl.password" in message
    assert "hunter2" not in message
    with pytest.raises(ConfigError, match=rf"'{re.escape(option)}'.*sasl\.password"):
        restore_masked(weaken, stored)  # a PATCH keeps the secrets it leaves out
    given_again = {**weaken, "sasl.username": "u2", "sasl.password": "pw-2-pw-2"}
    assert restore_masked(given_again, stored)["sasl.password"] == "pw-2-pw-2"
    # A cluster that leaves the protocol out falls back to PLAINTEXT.
    unprotected = {k: v for k, v in mask_options(stored).items() if k != "security.protocol"}
    with pytest.raises(ConfigError, match=r"security\.protocol"):
        restore_masked(unprotected, stored, replaces=True)


# What a PATCH does in effect: the cluster's options overlaid with the subscription's

INHERITED = {"bootstrap.servers": "evil.example:9092", **SASL_SCRAM}
PEM = "-----BEGIN CERTIFICATE-----\nMIIBevil\n-----END CERTIFICATE-----"


@pytest.mark.parametrize("name", ["bootstrap.servers", "metadata.broker.list"])
@pytest.mark.promise("p-sec-credentials-stay")
def test_removing_its_own_brokers_is_a_move_to_the_inherited_ones(name: str) -> None:
    stored = {name: "broker-1:9092", **OWN_SECRETS}
    with pytest.raises(ConfigError) as info:
        restore_masked({name: None}, stored, inherited=INHERITED)
    message = str(info.value)
    assert f"removing option {name!r}" in message
    assert "sasl.password" in message
    assert "own-pw-own-pw" not in message
    # Given again, or the cluster's brokers are its own ones: nothing moves behind its back.
    given_again = {name: None, "sasl.username": "u", "sasl.password": "pw-2-pw-2"}
    assert restore_masked(given_again, stored, inherited=INHERITED)[name] is None
    same = {**INHERITED, "bootstrap.servers": "BROKER-1:9092"}
    assert restore_masked({name: None}, stored, inherited=same) == {name: None}


@pytest.mark.promise("p-sec-credentials-stay")
def test_removing_its_own_token_endpoint_is_a_move_to_the_inherited_one() -> None:
    endpoint = "sasl.oauthbearer.token.endpoint.url"
    stored = {endpoint: "https://idp.example/token", "sasl.oauthbearer.client.secret": "mine-mine"}
    inherited = {**OIDC, endpoint: "https://evil.example/token"}
    with pytest.raises(ConfigError, match=r"'sasl\.oauthbearer\.token\.endpoint\.url'.*client"):
        restore_masked({endpoint: None}, stored, inherited=inherited)
    assert restore_masked({endpoint: None}, stored, inherited=OIDC) == {endpoint: None}


def test_naming_the_inherited_address_is_no_move() -> None:
    stored = dict(OWN_SECRETS)
    inherited = {"bootstrap.servers": "broker-1:9092,broker-2:9092", **SASL_SCRAM}
    given = {"metadata.broker.list": "broker-2:9092"}
    assert restore_masked(given, stored, inherited=inherited) == given


@pytest.mark.parametrize(
    ("inherited", "stored", "given"),
    [
        # The TLS it inherits, taken away by a protocol of its own.
        (SASL_SCRAM, {}, {"security.protocol": "SASL_PLAINTEXT"}),
        # Its own TLS removed: the cluster's clear text applies.
        (
            {**SASL_SCRAM, "security.protocol": "SASL_PLAINTEXT"},
            {"security.protocol": "SASL_SSL"},
            {"security.protocol": None},
        ),
        (
            {**SASL_SCRAM, "enable.ssl.certificate.verification": "false"},
            {"enable.ssl.certificate.verification": "true"},
            {"enable.ssl.certificate.verification": None},
        ),
        (SASL_SCRAM, {}, {"ssl.endpoint.identification.algorithm": "NONE"}),
    ],
)
@pytest.mark.promise("p-sec-credentials-stay")
def test_a_patch_cannot_weaken_the_protection_it_inherits(
    inherited: dict[str, str], stored: dict[str, str], given: dict[str, str | None]
) -> None:
    stored = {**stored, **OWN_SECRETS}
    (option,) = given
    with pytest.raises(ConfigError) as info:
        restore_masked(given, stored, inherited=inherited)
    message = str(info.value)
    assert f"option {option!r}" in message
    assert "weakens" in message
    assert "sasl.password" in message
    assert "own-pw-own-pw" not in message
    # What it sets or removes without changing the protection in effect is fine.
    assert restore_masked({"client.id": "x"}, stored, inherited=inherited) == {"client.id": "x"}


@pytest.mark.parametrize("spelling", ["f", "F", "0", " False "])
@pytest.mark.promise("p-sec-credentials-stay")
def test_every_spelling_of_false_turns_verification_off(spelling: str) -> None:
    off = {"enable.ssl.certificate.verification": spelling}
    # A subscription turning it off inherits no secret.
    message = error_of(off, SASL_SCRAM)
    assert "subscription option 'enable.ssl.certificate.verification' weakens" in message
    # A cluster turning it off keeps neither its masked secrets nor takes its subscriptions'.
    stored = {"bootstrap.servers": "broker-1:9092", **SASL_SCRAM}
    with pytest.raises(ConfigError, match=r"'enable\.ssl\.certificate\.verification'"):
        restore_masked({**mask_options(stored), **off}, stored, replaces=True)
    with pytest.raises(ConfigError, match=r"'enable\.ssl\.certificate\.verification'"):
        restore_masked(off, stored)
    (following,) = secrets_following_cluster(CLUSTER, _changed(off), OWN_SECRETS)
    assert following.option == "enable.ssl.certificate.verification"


def _with(base: Mapping[str, str], change: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``change``; ``sasl.mechanisms`` replaces ``sasl.mechanism``."""
    out = {
        k: v for k, v in base.items() if not (k == "sasl.mechanism" and "sasl.mechanisms" in change)
    }
    return {**out, **change}


WEAKER_TRUST_OR_MECHANISM = [
    (CLUSTER, {"ssl.ca.pem": PEM}),
    (CLUSTER, {"ssl.ca.location": "/tmp/evil-ca.pem"}),
    ({**CLUSTER, "ssl.ca.location": "/etc/kafka/ca.pem"}, {"ssl.ca.location": "/tmp/evil.pem"}),
    ({**CLUSTER, "security.protocol": "SASL_PLAINTEXT"}, {"sasl.mechanism": "PLAIN"}),
    ({**CLUSTER, "security.protocol": "SASL_PLAINTEXT"}, {"sasl.mechanisms": "PLAIN"}),
]


@pytest.mark.parametrize(("cluster", "change"), WEAKER_TRUST_OR_MECHANISM)
@pytest.mark.promise("p-sec-credentials-stay")
def test_another_trust_anchor_or_plain_in_clear_weakens_the_protection(
    cluster: dict[str, str], change: dict[str, str]
) -> None:
    (option,) = change
    # A cluster change takes a subscription's own secrets along.
    (following,) = secrets_following_cluster(cluster, _with(cluster, change), OWN_SECRETS)
    assert (following.option, following.moves) == (option, False)
    # Masked secrets are not kept, for a cluster nor a PATCH.
    with pytest.raises(ConfigError, match=rf"'{re.escape(option)}' weakens.*sasl\.password"):
        restore_masked(_with(mask_options(cluster), change), cluster, replaces=True)
    with pytest.raises(ConfigError, match=rf"'{re.escape(option)}' weakens.*sasl\.password"):
        restore_masked(change, cluster)
    # A subscription setting it inherits none of the cluster's secrets.
    message = error_of(change, cluster)
    assert f"subscription option {option!r} weakens" in message


@pytest.mark.parametrize(
    ("cluster", "change"),
    [
        (CLUSTER, {"sasl.mechanism": "PLAIN"}),  # PLAIN under TLS
        # A CA means nothing without TLS (and the protocol is not changed).
        ({**CLUSTER, "security.protocol": "SASL_PLAINTEXT"}, {"ssl.ca.pem": PEM}),
        (
            {**CLUSTER, "ssl.ca.location": "/etc/kafka/ca.pem"},
            {"ssl.ca.location": " /etc/kafka/ca.pem"},
        ),
        ({**CLUSTER, "sasl.mechanism": "PLAIN"}, {"sasl.mechanisms": "PLAIN"}),
    ],
)
def test_a_trust_anchor_or_mechanism_change_that_weakens_nothing_takes_nothing_along(
    cluster: dict[str, str], change: dict[str, str]
) -> None:
    assert secrets_following_cluster(cluster, _with(cluster, change), OWN_SECRETS) == []
    kept = restore_masked(_with(mask_options(cluster), change), cluster, replaces=True)
    assert kept["sasl.password"] == cluster["sasl.password"]


def test_thirty_thousand_unknown_options_are_refused_quickly_and_briefly() -> None:
    options = {f"sesion.timeout.m{i}": "1" for i in range(30_000)}
    started = time.process_time()
    with pytest.raises(ConfigError) as info:
        validate_options(options)
    assert time.process_time() - started < 0.5
    message = str(info.value)
    assert len(message) < 6_000
    assert "29,990 more" in message
    assert "did you mean 'session.timeout.ms'?" in message


def test_rejected_options_do_not_reach_the_masker() -> None:
    forget_secrets()
    rejected = "rejected-pw-7Qz"
    with pytest.raises(ConfigError):
        validate_options({"sasl.password": rejected, "no.such.option": "1"})
    with pytest.raises(ConfigError):
        resolve({"sasl.password": rejected}, {"no.such.option": "1"})
    url = "https://id:rejected-url-pw-4Kd@idp/token"
    with pytest.raises(ConfigError):
        validate_options({"sasl.oauthbearer.token.endpoint.url": url, "fetch.min.bytes": "x"})
    assert mask_secrets(f"x {rejected} rejected-url-pw-4Kd") == (
        f"x {rejected} rejected-url-pw-4Kd"
    )
    accepted = "accepted-pw-9Vb"
    resolve({"sasl.password": accepted})
    assert mask_secrets(f"x {accepted}") == "x ***"
    forget_secrets()


class TestWhichWritesAreGuarded:
    """Which admin writes are made only against what their check read
    (adapter/api/checked_writes.py): the ones a concurrent write could turn into a secret
    sent elsewhere."""

    def test_a_subscription_holds_secrets_by_name_or_in_a_url(self) -> None:
        assert holds_own_secrets({"sasl.password": "p"})
        assert holds_own_secrets({"sasl.oauthbearer.token.endpoint.url": "https://id:pw@idp"})
        assert not holds_own_secrets({"client.id": "a", "group.id": "g"})

    @pytest.mark.parametrize(
        ("before", "after", "routed"),
        [
            ({}, {"sasl.password": "p"}, True),
            ({"sasl.password": "p"}, {"sasl.password": "q"}, True),
            ({"bootstrap.servers": "a:9092"}, {}, True),  # now the cluster's brokers
            ({}, {"metadata.broker.list": "b:9092"}, True),
            ({}, {"ssl.ca.location": "/ca.pem"}, True),
            ({"security.protocol": "SASL_SSL"}, {}, True),
            ({}, {"client.id": "a"}, False),
            ({"max.poll.records": "5"}, {"max.poll.records": "6"}, False),
            ({"sasl.password": "p"}, {"sasl.password": "p", "client.id": "a"}, False),
        ],
    )
    def test_what_a_subscription_change_touches(
        self, before: dict[str, str], after: dict[str, str], routed: bool
    ) -> None:
        assert secret_routing_changed(before, after) is routed

    def test_cluster_changes_of_an_address_or_protection_may_take_secrets(self) -> None:
        base = {"bootstrap.servers": "a:9092", "security.protocol": "SASL_SSL"}
        assert cluster_change_may_take_secrets(base, {**base, "bootstrap.servers": "b:9092"})
        assert cluster_change_may_take_secrets(
            base, {**base, "security.protocol": "SASL_PLAINTEXT"}
        )
        assert not cluster_change_may_take_secrets(base, {**base, "client.id": "renamed"})
