"""Settings: one TOML file plus environment variables, validated before any I/O.

The Kafka cluster tables use exactly the shape of Restate's ``restate.toml``::

    [[ingress.kafka-clusters]]
    name = "my-cluster"
    brokers = ["PLAINTEXT://broker:9092"]
    "security.protocol" = "SASL_SSL"      # any further librdkafka option, quoted

so an existing restate.toml Kafka section works unchanged. The same list can come from the
environment variable ``KAFKA_INGRESS_KAFKA_CLUSTERS`` (Restate's own
``RESTATE_INGRESS__KAFKA_CLUSTERS`` is accepted too) in TOML inline syntax::

    KAFKA_INGRESS_KAFKA_CLUSTERS='[{name="local", brokers=["PLAINTEXT://127.0.0.1:9092"]}]'

Every problem becomes one :class:`~adapter.errors.ConfigError` naming the key and what is
expected; no traceback from TOML or pydantic reaches the user.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapter.errors import ConfigError

__all__ = [
    "CLUSTERS_ENV",
    "AdminSettings",
    "DynamoSettings",
    "HttpSettings",
    "KafkaCluster",
    "LambdaSettings",
    "LimitSettings",
    "MetricsSettings",
    "PollerSettings",
    "SecretsSettings",
    "SecuritySettings",
    "Settings",
    "SigningSettings",
    "load_settings",
    "parse_clusters_env",
]

CLUSTERS_ENV = "KAFKA_INGRESS_KAFKA_CLUSTERS"
_RESTATE_CLUSTERS_ENV = "RESTATE_INGRESS__KAFKA_CLUSTERS"
CONFIG_FILE_ENV = "KAFKA_INGRESS_CONFIG_FILE"

_BROKER_RE = re.compile(
    r"^(?:(?P<scheme>[A-Za-z_]+)://)?(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)$"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class KafkaCluster(BaseModel):
    """One ``[[ingress.kafka-clusters]]`` table: a name, brokers and librdkafka options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    brokers: tuple[str, ...] = Field(min_length=1)

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, brokers: tuple[str, ...]) -> tuple[str, ...]:
        for broker in brokers:
            if not _BROKER_RE.match(broker):
                raise ValueError(f"broker {broker!r} is not of the form [PROTOCOL://]host:port")
        return brokers

    @property
    def bootstrap_servers(self) -> list[str]:
        """host:port pairs, the listener scheme stripped (as librdkafka does)."""
        out = []
        for broker in self.brokers:
            match = _BROKER_RE.match(broker)
            assert match is not None  # validated above
            out.append(f"{match['host']}:{match['port']}")
        return out

    @property
    def options(self) -> dict[str, str]:
        """The extra librdkafka options of this cluster, as strings."""
        extra = self.model_extra or {}
        return {k: _option_str(k, v) for k, v in extra.items()}


def _option_str(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"option {key!r} must be a string, number or boolean")


class IngressSection(_Section):
    kafka_clusters: tuple[KafkaCluster, ...] = Field(default=(), alias="kafka-clusters")


class DynamoSettings(_Section):
    endpoint_url: str | None = Field(default=None, alias="endpoint-url")
    region: str = "us-east-1"
    table_prefix: str = Field(
        default="kafka-ingress-", alias="table-prefix", pattern=r"^[A-Za-z0-9_.-]*$"
    )


class AdminSettings(_Section):
    bind_address: str = Field(default="127.0.0.1:9070", alias="bind-address")
    token: str | None = Field(default=None, min_length=16)
    # Without a token the API is open; that is only accepted silently in local dev.
    allow_open: bool = Field(default=False, alias="allow-open")
    # Request limits (docs/configuration.md#admin): everything a client sends is bounded.
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, alias="max-body-bytes"
    )
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, alias="max-header-bytes"
    )
    max_headers: int = Field(default=100, ge=8, le=1000, alias="max-headers")
    header_timeout_s: float = Field(default=10.0, gt=0, le=300, alias="header-timeout-seconds")
    max_connections: int = Field(default=256, ge=1, le=100_000, alias="max-connections")

    @field_validator("bind_address")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port")
        return value


class LimitSettings(_Section):
    max_in_flight: int = Field(default=256, ge=1, le=100_000, alias="max-in-flight")
    # None: 1000 records, more for partition batches (adapter.engine.runner.pause_bound).
    max_buffered_per_partition: int | None = Field(
        default=None, ge=1, le=1_000_000, alias="max-buffered-per-partition"
    )
    max_record_bytes: int = Field(default=6 * 1024 * 1024, ge=1, alias="max-record-bytes")
    invocation_timeout_ms: int = Field(default=30_000, ge=1, alias="invocation-timeout-ms")
    drain_timeout_ms: int = Field(default=30_000, ge=0, alias="drain-timeout-ms")
    ledger_retention_days: float = Field(default=7.0, gt=0, alias="ledger-retention-days")
    subscription_refresh_ms: int = Field(default=1_000, ge=100, alias="subscription-refresh-ms")


class PollerSettings(_Section):
    """How pollers share subscriptions (docs/operations.md#capacity)."""

    # Pollers and subscriptions of one group share work; other groups are isolated.
    group: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Partitions of the control topic; 0 = no shard map: every poller runs every subscription.
    # Off by default until takeovers are gap-free (docs/operations.md#capacity); 64 is typical.
    shards: int = Field(default=0, ge=0, le=4096)
    # Stable identity across restarts (e.g. a StatefulSet pod name): static membership of
    # the control group, so a restart within the session timeout moves no shard.
    instance_id: str | None = Field(
        default=None, alias="instance-id", pattern=r"^[A-Za-z0-9_.:-]{1,128}$"
    )
    # Subscriptions starting at once (store look-ups, consumer start-up): a poller taking
    # over many does not flood its event loop.
    start_concurrency: int = Field(default=16, ge=1, le=10_000, alias="start-concurrency")


class LedgerSettings(_Section):
    """How results are recorded. ``successes = "pages"`` (the default) records first-attempt
    successes many to a DynamoDB item, with no per-invocation row for them; ``"rows"`` gives
    every invocation a row. See docs/configuration.md."""

    successes: Literal["rows", "pages"] = "pages"


class MetricsSettings(_Section):
    """``cloudwatch-emf``: print consumer lag and errors as CloudWatch embedded-metric-format
    log lines every ``cloudwatch-emf-interval-s`` (the ECS service scales on them); ``service``
    is their ``Service`` dimension. See docs/operations.md and docs/deploy.md."""

    cloudwatch_emf: bool = Field(default=False, alias="cloudwatch-emf")
    cloudwatch_emf_interval_s: float = Field(
        default=60.0, ge=1.0, le=3600.0, alias="cloudwatch-emf-interval-s"
    )
    service: str = Field(default="kafka-ingress", min_length=1, max_length=255)


class LambdaSettings(_Section):
    """Where Lambda handlers are invoked: AWS (no endpoint) or the local Lambda endpoint."""

    endpoint_url: str | None = Field(default=None, alias="endpoint-url")
    region: str = "us-east-1"


class SigningSettings(_Section):
    """Request signing: every invocation carries a short-lived ed25519 JWT when a key is set."""

    private_key_file: str | None = Field(default=None, alias="private-key-file")
    key_id: str | None = Field(default=None, alias="key-id")
    ttl_s: int = Field(default=60, ge=1, le=3600, alias="ttl-seconds")


class SecuritySettings(_Section):
    """Where the poller may send requests; see docs/security.md#threat-model."""

    # Loopback and private addresses are allowed by default: handlers live in VPCs.
    deny_private_targets: bool = Field(default=False, alias="deny-private-targets")


class HttpSettings(_Section):
    """The HTTP invoker's client library: ``auto`` is pyreqwest when the ``fast-http`` extra
    is installed, else aiohttp (see adapter.invokers.http_clients)."""

    client: Literal["auto", "aiohttp", "pyreqwest"] = "auto"


class SecretsSettings(_Section):
    """Secrets at rest and by reference (docs/security.md, "Secrets at rest").

    ``kms-key-id``: the KMS key (ID, ARN or alias) whose data keys encrypt every secret value
    stored in DynamoDB. Without it, secret values are refused (400 naming the option) unless
    ``allow-plaintext`` is set, which stores them in clear and warns at start-up.
    ``endpoint-url``/``region`` reach KMS, Secrets Manager and SSM (default: the DynamoDB
    ones). ``reference-cache-seconds``: how long a value fetched for a ``secretsmanager:``
    or ``ssm:`` reference is reused; an authentication failure fetches it again sooner.
    """

    kms_key_id: str | None = Field(default=None, min_length=1, alias="kms-key-id")
    allow_plaintext: bool = Field(default=False, alias="allow-plaintext")
    endpoint_url: str | None = Field(default=None, alias="endpoint-url")
    region: str | None = None
    reference_cache_s: int = Field(default=300, ge=0, le=86_400, alias="reference-cache-seconds")


class Settings(_Section):
    ingress: IngressSection = IngressSection()
    security: SecuritySettings = SecuritySettings()
    http: HttpSettings = HttpSettings()
    dynamodb: DynamoSettings = DynamoSettings()
    lambda_: LambdaSettings = Field(default=LambdaSettings(), alias="lambda")
    signing: SigningSettings = SigningSettings()
    secrets: SecretsSettings = SecretsSettings()
    admin: AdminSettings = AdminSettings()
    limits: LimitSettings = LimitSettings()
    ledger: LedgerSettings = LedgerSettings()
    poller: PollerSettings = PollerSettings()
    metrics: MetricsSettings = MetricsSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="log-level"
    )
    # "json": one object a line for log pipelines (adapter.logs).
    log_format: Literal["text", "json"] = Field(default="text", alias="log-format")

    @property
    def clusters(self) -> dict[str, KafkaCluster]:
        return {c.name: c for c in self.ingress.kafka_clusters}


def _loc(loc: tuple[int | str, ...]) -> str:
    """Render an error location as the key the user wrote: ``ingress.kafka-clusters[0].name``."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(str(item).replace("_", "-") if "." not in str(item) else f'"{item}"')
    return ".".join(parts)


def _validation_message(source: str, exc: pydantic.ValidationError) -> str:
    first = exc.errors()[0]
    key = _loc(first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/configuration.md)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: key {key!r}: {msg}{suffix}"


def parse_clusters_env(value: str, *, name: str = CLUSTERS_ENV) -> list[dict[str, Any]]:
    """Parse a TOML inline array of tables, e.g. ``[{name="a", brokers=["h:1"]}]``."""
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"environment variable {name}: not a TOML inline array of tables ({exc}); "
            'expected e.g. [{name="local", brokers=["PLAINTEXT://127.0.0.1:9092"]}]'
        ) from exc
    if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
        raise ConfigError(
            f"environment variable {name}: expected an array of tables like "
            '[{name="local", brokers=["PLAINTEXT://127.0.0.1:9092"]}]'
        )
    return parsed


_ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "KAFKA_INGRESS_DYNAMODB_ENDPOINT_URL": ("dynamodb", "endpoint-url"),
    "KAFKA_INGRESS_DYNAMODB_REGION": ("dynamodb", "region"),
    "KAFKA_INGRESS_DYNAMODB_TABLE_PREFIX": ("dynamodb", "table-prefix"),
    "KAFKA_INGRESS_ADMIN_BIND_ADDRESS": ("admin", "bind-address"),
    "KAFKA_INGRESS_ADMIN_TOKEN": ("admin", "token"),
    "KAFKA_INGRESS_LOG_LEVEL": ("", "log-level"),
    "KAFKA_INGRESS_LOG_FORMAT": ("", "log-format"),
    "KAFKA_INGRESS_LAMBDA_ENDPOINT_URL": ("lambda", "endpoint-url"),
    "KAFKA_INGRESS_LAMBDA_REGION": ("lambda", "region"),
    "KAFKA_INGRESS_SIGNING_PRIVATE_KEY_FILE": ("signing", "private-key-file"),
    "KAFKA_INGRESS_LEDGER_SUCCESSES": ("ledger", "successes"),
    "KAFKA_INGRESS_METRICS_CLOUDWATCH_EMF": ("metrics", "cloudwatch-emf"),
    "KAFKA_INGRESS_METRICS_CLOUDWATCH_EMF_INTERVAL_S": ("metrics", "cloudwatch-emf-interval-s"),
    "KAFKA_INGRESS_METRICS_SERVICE": ("metrics", "service"),
    "KAFKA_INGRESS_SECURITY_DENY_PRIVATE_TARGETS": ("security", "deny-private-targets"),
    "KAFKA_INGRESS_HTTP_CLIENT": ("http", "client"),
    "KAFKA_INGRESS_ADMIN_MAX_BODY_BYTES": ("admin", "max-body-bytes"),
    "KAFKA_INGRESS_SECRETS_KMS_KEY_ID": ("secrets", "kms-key-id"),
    "KAFKA_INGRESS_SECRETS_ALLOW_PLAINTEXT": ("secrets", "allow-plaintext"),
    "KAFKA_INGRESS_SECRETS_ENDPOINT_URL": ("secrets", "endpoint-url"),
    "KAFKA_INGRESS_SECRETS_REGION": ("secrets", "region"),
    "KAFKA_INGRESS_POLLER_GROUP": ("poller", "group"),
    "KAFKA_INGRESS_POLLER_INSTANCE_ID": ("poller", "instance-id"),
    "KAFKA_INGRESS_POLLER_SHARDS": ("poller", "shards"),
}


def load_settings(
    config_file: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file (if any) and the environment; raise ConfigError on any problem."""
    env = os.environ if env is None else env
    config_file = config_file or env.get(CONFIG_FILE_ENV) or None
    data: dict[str, Any] = {}
    source = "configuration"
    if config_file is not None:
        path = Path(config_file)
        source = f"config file {str(path)!r}"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{source}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot be read ({exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from exc

    for var in (CLUSTERS_ENV, _RESTATE_CLUSTERS_ENV):
        if env.get(var):
            clusters = parse_clusters_env(env[var], name=var)
            ingress = data.setdefault("ingress", {})
            if not isinstance(ingress, dict):
                raise ConfigError(f"{source}: key 'ingress' must be a table")
            ingress["kafka-clusters"] = clusters
            source = f"{source} + environment variable {var}"
            break

    for var, (section, key) in _ENV_OVERRIDES.items():
        if var in env:
            target = data.setdefault(section, {}) if section else data
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: key {section!r} must be a table")
            target[key] = env[var]
            if section == "admin" and key == "token" and not env[var]:
                target.pop(key)

    try:
        settings = Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_validation_message(source, exc)) from None

    names = [c.name for c in settings.ingress.kafka_clusters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"{source}: key 'ingress.kafka-clusters': duplicate cluster name {duplicates[0]!r}"
        )
    for index, cluster in enumerate(settings.ingress.kafka_clusters):
        key = f"ingress.kafka-clusters[{index}]"
        try:
            _ = cluster.options
        except ValueError as exc:
            raise ConfigError(f"{source}: key {key!r}: {exc}") from None
        _check_cluster_options(f"{source}: key {key!r} (Kafka cluster {cluster.name!r})", cluster)
    return settings


def _check_cluster_options(where: str, cluster: KafkaCluster) -> None:
    """Translate the cluster's options as a consumer would, so a typo, a refused option or a
    bad value stops start-up here rather than surfacing later in ``/health/ready``.

    Secret references (``secretsmanager:``/``ssm:``) are checked as references, never
    fetched: start-up makes no AWS call.
    """
    # Imported here: adapter.secrets reads these settings (an import cycle at module level).
    from adapter.kafka.options import resolve_options, validate_options
    from adapter.secrets import check_references

    try:
        validate_options(cluster.options)
        check_references(cluster.options)
        resolve_options(
            subscription_id="sub_",
            bootstrap_servers=cluster.bootstrap_servers,
            cluster_options=cluster.options,
            subscription_options={},
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
