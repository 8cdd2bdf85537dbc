"""librdkafka option names → aiokafka keyword arguments, plus the ingress's own options.

Users configure Kafka the way they do for librdkafka (and for Restate's Kafka ingress): flat
string options on the cluster (``[[ingress.kafka-clusters]]``) and on each subscription. The
poller runs aiokafka, so this module translates. Everything hangs off one table,
:data:`OPTION_TABLE`, where each option has a :class:`Kind`:

- ``CLIENT``   becomes an aiokafka keyword argument (consumer, dead-letter producer, or both);
- ``SECURITY`` becomes a :class:`SecuritySettings` field; the I/O shell
  (:mod:`adapter.kafka.security`) turns those into ``ssl_context``/``sasl_*`` arguments;
- ``INGRESS``  is not a Kafka option at all but a per-subscription setting of the ingress,
  returned typed in :class:`IngressOptions`;
- ``IGNORED``  is accepted (and its value checked) for librdkafka compatibility, but aiokafka
  has nothing to map it to;
- ``REFUSED``  is rejected with the reason, because the poller owns that behaviour.

Anything else is rejected as unknown, naming the option and listing the supported names, so a
typo never silently falls back to a default. Precedence: cluster options < subscription
options; the consumer group is the subscription's ``group.id``, else the cluster's, else the
subscription ID.

Pure: no file reads, no sockets. A secret value (see :func:`is_secret`) never appears in an
error message or a ``repr``.
"""

from __future__ import annotations

import difflib
import enum
import heapq
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from aiokafka import codec as _codec
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from adapter.errors import ConfigError
from adapter.failure_destination import Destination, parse_destination
from adapter.filters import FilterCriteria, FilterCriteriaError, parse_filter_criteria
from adapter.invokers.targets import literal_address, refusal
from adapter.masking import mask_secrets, remember_secret, remember_uri_credentials

__all__ = [
    "CREDENTIAL_ADDRESSES",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_VALUE_LENGTH",
    "OPTION_TABLE",
    "REFUSED_OPTIONS",
    "SECRET_MASK",
    "SUPPORTED_OPTIONS",
    "ClientOptions",
    "FollowingSecrets",
    "IngressOptions",
    "Kind",
    "MskIamSettings",
    "OptionSpec",
    "SecuritySettings",
    "cluster_change_may_take_secrets",
    "holds_own_secrets",
    "is_secret",
    "joined",
    "mask_options",
    "resolve_options",
    "restore_masked",
    "secrets_following_cluster",
    "validate_options",
]

SECRET_MASK = "***"
MAX_NAME_LENGTH = 256
"""Longest option name: every real one is far shorter, and names are echoed in errors."""
MAX_VALUE_LENGTH = 16 * 1024
"""Longest option value: room for an inline PEM certificate chain, not for a stored blob."""
MAX_ID_LENGTH = 255
"""Longest ``client.id``/``group.id``: sent to the broker in every request header."""

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
EventFormat = Literal["ingress", "msk"]
BatchMode = Literal["partition", "concurrent"]
Applies = Literal["consumer", "producer", "both"]

_INT_MAX = 2**31 - 1
# librdkafka's port when a broker is given without one.
_DEFAULT_PORT = 9092
# aiokafka's own defaults for the settings that the cross-checks below compare.
_AIOKAFKA_SESSION_TIMEOUT_MS = 10_000
_AIOKAFKA_HEARTBEAT_INTERVAL_MS = 3_000
_AIOKAFKA_REQUEST_TIMEOUT_MS = 40_000
_AIOKAFKA_FETCH_MAX_WAIT_MS = 500
# Head-room between a broker-side wait and the client's request timeout around it.
_REQUEST_TIMEOUT_MARGIN_MS = 5_000


# --------------------------------------------------------------------------------------------
# Secrets


_SECRET_WORDS = ("password", "secret", "passphrase")
_SECRET_NAMES = frozenset(
    {
        "sasl.username",
        "sasl.jaas.config",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "ssl.key.pem",
    }
)


def is_secret(name: str) -> bool:
    """Whether the value of option ``name`` must never be shown (logs, errors, API output).

    Decided by name alone, so it also covers options this module does not know.
    """
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


def mask_options(options: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``options`` as shown: secret values replaced by ``"***"``, credentials in
    other values (``https://user:pw@idp/token``) masked."""
    return {
        name: SECRET_MASK if is_secret(name) else mask_secrets(value)
        for name, value in options.items()
    }


def restore_masked(
    given: Mapping[str, Any],
    stored: Mapping[str, str],
    *,
    replaces: bool = False,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``given`` with every value that is exactly what :func:`mask_options` shows for the
    stored one replaced by the stored value (the Kubernetes convention: writing back what a
    GET returned keeps the secrets). A mask with nothing stored to keep is refused.

    A stored secret is kept only for the same address and protection: when ``given`` changes
    where credentials are sent (:data:`CREDENTIAL_ADDRESSES`), or weakens the TLS they travel
    under (:func:`_weakened_protection`), keeping one is refused, as deployments keep a masked
    header only for the same URL. ``replaces``: ``given`` replaces ``stored`` (a cluster's
    properties), an option it leaves out takes librdkafka's default; otherwise it is merged
    into it (a subscription's ``PATCH``), a None value removes that option, and the stored
    secrets it leaves out are kept too. ``inherited``: the options ``stored`` is overlaid on
    (a subscription's cluster's, its brokers as ``bootstrap.servers``); what is compared is
    then what applies in effect, so removing an address or TLS option of its own is a change
    to the inherited one.
    """
    shown = mask_options(stored)
    out: dict[str, Any] = {}
    kept: list[str] = []
    for name, value in given.items():
        if value is not None and name in stored and value == shown[name] and value != stored[name]:
            out[name] = stored[name]
            kept.append(name)
        elif value == SECRET_MASK and is_secret(name):
            raise ConfigError(
                f"option {name!r}: {SECRET_MASK!r} stands for a stored secret, but there is no "
                "stored value to keep; give the value itself"
            )
        else:
            out[name] = value
    if not replaces:
        kept += [n for n, v in stored.items() if n not in given and _holds_secret(n, v)]
    if not kept:
        return out
    own = {n: v for n, v in out.items() if v is not None} if replaces else _overlay(stored, out)
    before = _overlay(inherited or {}, stored)
    after = _overlay(inherited or {}, own)
    removed = {_canonical(n): n for n, v in given.items() if v is None}

    def change(written: str) -> str:
        if written not in own and _canonical(written) in removed:
            return f"removing option {removed[_canonical(written)]!r}"
        if written not in after:
            return f"leaving option {written!r} out"
        return f"option {written!r}"

    for written, canonical in _moved_addresses(after, before):
        carried = CREDENTIAL_ADDRESSES[canonical]
        lost = sorted(n for n in kept if carried is None or n in carried)
        if lost:
            raise ConfigError(
                f"{change(written)} changes where credentials are sent, so the stored "
                f"{', '.join(lost)} cannot be kept: give {'it' if len(lost) == 1 else 'them'} "
                f"again with the new address (not {SECRET_MASK!r})"
            )
    # The same address under weaker TLS is as good as another one to a man in the middle.
    weakening = _weakened_protection(_protection(before), _protection(after))
    if weakening is not None:
        raise ConfigError(
            f"{change(weakening)} weakens the protection credentials travel under, so "
            f"the stored {', '.join(sorted(kept))} cannot be kept: give "
            f"{'it' if len(kept) == 1 else 'them'} again (not {SECRET_MASK!r})"
        )
    return out


def _canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def _overlay(base: Mapping[str, str], top: Mapping[str, str | None]) -> dict[str, str]:
    """``base`` with ``top`` applied as a subscription applies to its cluster, or a ``PATCH``
    to what is stored: a value replaces ``base``'s option under any of its names (alias or
    not), None removes that name."""
    covered = {_canonical(n) for n, v in top.items() if v is not None}
    out = {
        n: v
        for n, v in base.items()
        if _canonical(n) not in covered and not (n in top and top[n] is None)
    }
    out.update({n: v for n, v in top.items() if v is not None})
    return out


# Options that name where credentials are sent, and which secrets go there (None: every one;
# the brokers also receive the tokens that an OIDC client secret buys).
CREDENTIAL_ADDRESSES: Mapping[str, frozenset[str] | None] = MappingProxyType(
    {
        "bootstrap.servers": None,
        "sasl.oauthbearer.token.endpoint.url": frozenset({"sasl.oauthbearer.client.secret"}),
    }
)
"""Options naming an address that secrets are sent to; a secret stays with its address."""

_ADDRESS_ALIASES = {"metadata.broker.list": "bootstrap.servers"}
_USERINFO_RE = re.compile(r"://[^/?#\s@]*@")


def _holds_secret(name: str, value: str) -> bool:
    """A secret option, or a value with credentials in a URL (``https://id:pw@idp``)."""
    return is_secret(name) or _USERINFO_RE.search(value) is not None


def _address(canonical: str, raw: object) -> frozenset[str] | str:
    """An address option's value, comparable across spellings (brokers: as a set)."""
    text = str(raw).strip()
    if canonical != "bootstrap.servers":
        return text
    try:
        return frozenset(broker.lower() for broker in _brokers(text))
    except _Invalid:
        return text


def _same_place(canonical: str, new: frozenset[str] | str, old: frozenset[str] | str) -> bool:
    if isinstance(new, frozenset) and isinstance(old, frozenset):
        return new <= old  # some of the same brokers are still the same cluster
    return new == old


def _moved_addresses(given: Mapping[str, Any], stored: Mapping[str, str]) -> list[tuple[str, str]]:
    """The options ``given`` sets to another address than ``stored``'s: (as written, canonical)."""

    def of(options: Mapping[str, Any], canonical: str) -> tuple[str, object] | None:
        for name, value in options.items():
            if _ADDRESS_ALIASES.get(name, name) == canonical and value is not None:
                return name, value
        return None

    moved = []
    for canonical in CREDENTIAL_ADDRESSES:
        new, old = of(given, canonical), of(stored, canonical)
        if new is None:
            continue
        if old is None or not _same_place(
            canonical, _address(canonical, new[1]), _address(canonical, old[1])
        ):
            moved.append((new[0], canonical))
    return moved


# --------------------------------------------------------------------------------------------
# Value parsers. Each takes the raw string and returns the typed value or raises _Invalid with
# what was expected; the caller adds the option name and, unless secret, the value given.


class _Invalid(Exception):
    """The value is malformed; ``expected`` says what would be accepted."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


class _Unsupported(Exception):
    """The value is well-formed but refused; ``reason`` says why and what to use instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Parser = Callable[[str], Any]

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def _int(lo: int, hi: int) -> Parser:
    def parse(raw: str) -> int:
        text = raw.strip()
        # The length bound keeps int() away from its digit limit on hostile input.
        if len(text) > 20 or not _INT_RE.match(text) or not lo <= int(text) <= hi:
            raise _Invalid(f"an integer in {lo}..{hi}")
        return int(text)

    return parse


def _bool(raw: str) -> bool:
    # librdkafka's spelling: true/t/1 and false/f/0, case-insensitive.
    text = raw.strip().lower()
    if text in ("true", "t", "1"):
        return True
    if text in ("false", "f", "0"):
        return False
    raise _Invalid("true or false")


def _enum(
    choices: Mapping[str, str],
    *,
    case_sensitive: bool = False,
    refused: Mapping[str, str] | None = None,
) -> Parser:
    """Map accepted spellings to canonical values; ``refused`` values get their own reason."""
    listed = ", ".join(dict.fromkeys(choices))

    def parse(raw: str) -> str:
        text = raw.strip()
        key = text if case_sensitive else text.lower()
        table = choices if case_sensitive else {k.lower(): v for k, v in choices.items()}
        if key in table:
            return table[key]
        refusals = {k if case_sensitive else k.lower(): v for k, v in (refused or {}).items()}
        if key in refusals:
            raise _Unsupported(f"{text!r} is not supported: {refusals[key]}")
        hint = ""
        if case_sensitive:
            folded = {k.lower(): k for k in choices}
            if key.lower() in folded:
                hint = f" (values are case-sensitive: did you mean {folded[key.lower()]!r}?)"
        raise _Invalid(f"one of {listed}{hint}")

    return parse


def _text(*, strip: bool = True, max_length: int | None = None) -> Parser:
    # librdkafka left-trims string values; secrets are kept byte for byte.
    def parse(raw: str) -> str:
        text = raw.strip() if strip else raw
        if not text:
            raise _Invalid("a non-empty string")
        if max_length is not None and len(text) > max_length:
            raise _Invalid(f"a string of at most {max_length} characters")
        return text

    return parse


_any_text = _text()


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


_HOST_RE = re.compile(
    r"^(?:[A-Za-z_]+://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>\d+))?$"
)


def _brokers(raw: str) -> list[str]:
    """``[proto://]host[:port]`` entries separated by commas, as librdkafka reads them."""
    out: list[str] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        match = _HOST_RE.match(entry)
        port = int(match["port"]) if match and match["port"] else _DEFAULT_PORT
        if match is None or not 0 < port < 65536:
            raise _Invalid("a comma-separated list of [PROTOCOL://]host[:port]")
        out.append(f"{match['host']}:{port}")
    if not out:
        raise _Invalid("at least one broker as [PROTOCOL://]host[:port]")
    return out


_ASSIGNORS: Mapping[str, Any] = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}


def _assignors(raw: str) -> tuple[Any, ...]:
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if not names:
        raise _Invalid("a comma-separated list of range, roundrobin")
    for name in names:
        if name == "cooperative-sticky":
            raise _Unsupported(
                "'cooperative-sticky' is not supported: aiokafka implements only eager "
                "rebalancing; use range or roundrobin"
            )
        if name not in _ASSIGNORS:
            raise _Invalid("a comma-separated list of range, roundrobin")
    return tuple(_ASSIGNORS[name] for name in dict.fromkeys(names))


_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


_POLLER_GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _poller_group(raw: str) -> str:
    text = raw.strip()
    if not _POLLER_GROUP_RE.match(text):
        raise _Invalid("1 to 64 letters, digits, '.', '_' or '-'")
    return text


def _topic(raw: str) -> str:
    text = raw.strip()
    if not _TOPIC_RE.match(text) or text in (".", ".."):
        raise _Invalid(
            "a Kafka topic name: 1 to 249 of the characters a-z A-Z 0-9 . _ -, not '.' or '..'"
        )
    if text.startswith("__"):
        raise _Invalid("a topic name not starting with '__' (reserved for Kafka's own topics)")
    return text


def _number(raw: str) -> str:
    # Only checked here; RetryPolicy.from_options parses and range-checks these.
    text = raw.strip()
    if not _NUMBER_RE.match(text) or not math.isfinite(float(text)):
        raise _Invalid("a number")
    return text


def _attempts(raw: str) -> str:
    text = raw.strip()
    if text.lower() in ("unlimited", "none"):
        return text
    if len(text) <= 20 and _INT_RE.match(text) and 1 <= int(text) <= _INT_MAX:
        return text
    raise _Invalid(f"an integer in 1..{_INT_MAX}, or 'unlimited'")


def _url(raw: str) -> str:
    text = raw.strip()
    if not re.match(r"^https?://[^\s/]+", text):
        raise _Invalid("an http:// or https:// URL")
    return text


def _token_url(raw: str) -> str:
    """The token endpoint receives the client secret: never a link-local or metadata address."""
    text = _url(raw)
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        raise _Invalid("an http:// or https:// URL") from None
    address = literal_address(host)
    reason = refusal(address, deny_private=False) if address is not None else None
    if reason:
        raise _Unsupported(
            f"the token endpoint's address is not allowed: {reason}; link-local and cloud "
            "metadata addresses are always refused (docs/security.md#threat-model)"
        )
    return text


def _extensions(raw: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise _Invalid("comma-separated key=value pairs")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _filter_criteria(raw: str) -> FilterCriteria | None:
    try:
        criteria = parse_filter_criteria(raw.strip())
    except FilterCriteriaError as exc:
        raise _Invalid(
            f'AWS Lambda\'s FilterCriteria JSON {{"Filters": [{{"Pattern": "…"}}]}}: {exc}'
        ) from None
    # AWS removes filtering with an empty FilterCriteria ({} or no filters); so do we.
    return criteria if criteria.filters else None


# MSK cluster ARNs: arn:<partition>:kafka:<region>:<account>:cluster/<name>/<uuid>.
_MSK_ARN_RE = re.compile(
    r"^arn:aws(?:-[a-z]+)*:kafka:[a-z0-9-]{1,32}:\d{12}:cluster/[A-Za-z0-9-]{1,64}/[A-Za-z0-9-]{1,64}$"
)


def _retry_attempts(raw: str) -> int | None:
    """``maximum.retry.attempts``: -1 (until the record expires, as AWS) or 0..10,000."""
    value = _int(-1, 10_000)(raw)
    return None if value == -1 else int(value)


_DAY_MS = 86_400_000


def _record_age(raw: str) -> int | None:
    """``maximum.record.age.ms``: -1 (no limit, AWS's default) or 60 s..7 days (AWS's range)."""
    try:
        value = int(_int(-1, 7 * _DAY_MS)(raw))
    except _Invalid:
        value = 0
    if value == -1:
        return None
    if not 60_000 <= value <= 7 * _DAY_MS:
        raise _Invalid(f"-1 (no limit) or an integer in 60000..{7 * _DAY_MS} (60 s to 7 days)")
    return value


def _destination(raw: str) -> Destination:
    try:
        return parse_destination(raw)
    except ConfigError as exc:
        raise _Unsupported(str(exc)) from exc


def _msk_cluster_arn(raw: str) -> str:
    text = raw.strip()
    if not _MSK_ARN_RE.match(text):
        raise _Invalid(
            "an MSK cluster ARN, arn:aws:kafka:<region>:<account id>:cluster/<name>/<uuid>"
        )
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class MskIamSettings:
    """``sasl.oauthbearer.config = "provider=msk-iam,region=…"``: Restate's spelling for AWS MSK
    IAM tokens, plus ``role_arn``/``role_session_name`` to assume a role first.

    ``region=None`` means the AWS SDK's own (AWS_REGION, the profile), else us-east-1 as Restate.
    """

    region: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    role_session_name: str | None = None


_MSK_IAM_PROVIDER = "msk-iam"
_MSK_IAM_KEYS = ("provider", "region", "profile", "role_arn", "role_session_name")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")
_SESSION_NAME_RE = re.compile(r"^[\w+=,.@-]{2,64}$")


def _msk_iam_config(raw: str) -> MskIamSettings:
    # The option is masked like any sasl.oauthbearer.config, so no message quotes the value.
    pairs = f"comma-separated key=value pairs with the keys {', '.join(_MSK_IAM_KEYS)}"
    if not raw.strip():
        raise _Invalid("a non-empty string")
    values: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value or key not in _MSK_IAM_KEYS:
            raise _Invalid(pairs)
        values[key] = value
    if values.get("provider") != _MSK_IAM_PROVIDER:
        raise _Unsupported(
            f"only provider={_MSK_IAM_PROVIDER} (AWS MSK IAM) is supported, e.g. "
            '"provider=msk-iam,region=us-east-1"; unsecured JWTs are not, and OIDC is '
            "sasl.oauthbearer.method=oidc"
        )
    region = values.get("region")
    if region is not None and not _REGION_RE.match(region):
        raise _Invalid("region=<an AWS region such as us-east-1>")
    role_arn = values.get("role_arn")
    if role_arn is not None and not _ROLE_ARN_RE.match(role_arn):
        raise _Invalid("role_arn=arn:aws:iam::<account>:role/<name>")
    session = values.get("role_session_name")
    if session is not None and not _SESSION_NAME_RE.match(session):
        raise _Invalid("role_session_name of 2-64 letters, digits or +=,.@_-")
    if session is not None and role_arn is None:
        raise _Invalid("role_session_name only together with role_arn")
    return MskIamSettings(
        region=region, profile=values.get("profile"), role_arn=role_arn, role_session_name=session
    )


def _idle_ms(raw: str) -> int | None:
    # librdkafka disables the idle check with 0; aiokafka with None.
    value: int = _int(0, _INT_MAX)(raw)
    return value or None


def _auto_create(raw: str) -> bool:
    if not _bool(raw):
        raise _Unsupported(
            "false cannot be honoured: aiokafka always lets the broker create a missing topic "
            "on a metadata request; disable auto.create.topics.enable on the broker instead"
        )
    return True


def _endpoint_identification(raw: str) -> bool:
    return bool(_enum({"https": "https", "none": "none"})(raw) == "https")


_COMPRESSION_LIBS = {
    "snappy": (_codec.has_snappy, "python-snappy (pip install 'aiokafka[snappy]')"),
    "lz4": (_codec.has_lz4, "lz4 (pip install 'aiokafka[lz4]')"),
    "zstd": (_codec.has_zstd, "zstandard (pip install 'aiokafka[zstd]')"),
}


def _compression(raw: str) -> str | None:
    codec: str = _enum({name: name for name in ("none", "gzip", "snappy", "lz4", "zstd")})(raw)
    if codec == "none":
        return None
    if codec in _COMPRESSION_LIBS:
        available, package = _COMPRESSION_LIBS[codec]
        if not available():
            raise _Unsupported(f"{codec!r} needs the Python package {package}")
    return codec


# --------------------------------------------------------------------------------------------
# The table


class Kind(enum.Enum):
    """What an option turns into."""

    CLIENT = "client"
    SECURITY = "security"
    INGRESS = "ingress"
    IGNORED = "ignored"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionSpec:
    """One row of :data:`OPTION_TABLE`.

    ``target`` is the aiokafka keyword (``CLIENT``), the :class:`SecuritySettings` field
    (``SECURITY``) or the :class:`IngressOptions` field (``INGRESS``). ``default`` is the
    effective value when the option is not set, as shown in the documentation.
    """

    name: str
    kind: Kind
    doc: str
    target: str | None = None
    applies_to: Applies = "both"
    parse: Parser = _any_text
    default: str | None = None
    alias_of: str | None = None
    reason: str | None = None

    @property
    def secret(self) -> bool:
        return is_secret(self.name)


def _client(
    name: str, target: str, parse: Parser, doc: str, *, applies_to: Applies = "both", default: str
) -> OptionSpec:
    return OptionSpec(
        name=name,
        kind=Kind.CLIENT,
        target=target,
        parse=parse,
        doc=doc,
        applies_to=applies_to,
        default=default,
    )


def _security(name: str, target: str, parse: Parser, doc: str, default: str = "-") -> OptionSpec:
    return OptionSpec(
        name=name, kind=Kind.SECURITY, target=target, parse=parse, doc=doc, default=default
    )


def _ingress(name: str, target: str, parse: Parser, doc: str, default: str) -> OptionSpec:
    return OptionSpec(
        name=name, kind=Kind.INGRESS, target=target, parse=parse, doc=doc, default=default
    )


def _ignored(name: str, parse: Parser, doc: str) -> OptionSpec:
    return OptionSpec(name=name, kind=Kind.IGNORED, parse=parse, doc=doc, default="-")


def _refused(name: str, reason: str) -> OptionSpec:
    return OptionSpec(name=name, kind=Kind.REFUSED, doc=reason, reason=reason)


_AUTO_COMMIT_REASON = (
    "the ingress commits explicit offsets itself, and only once the handler has acknowledged "
    "the record (or it was dead-lettered); automatic commits would lose records on a crash"
)
_DESERIALIZER_REASON = (
    "records reach the ingress as raw bytes; how the payload is decoded follows the "
    "handler's declared input (JSON or raw)"
)
_JAVA_STORE_REASON = (
    "Java key/trust stores are not supported; use PEM files with ssl.ca.location, "
    "ssl.certificate.location and ssl.key.location"
)

_SPECS: tuple[OptionSpec, ...] = (
    # -- connection and client identity
    _client(
        "bootstrap.servers",
        "bootstrap_servers",
        _brokers,
        "Brokers as comma-separated [PROTOCOL://]host[:port] (port 9092 if omitted); the "
        "cluster's `brokers` are the default.",
        default="cluster `brokers`",
    ),
    _client(
        "client.id",
        "client_id",
        _text(max_length=MAX_ID_LENGTH),
        "Client identifier sent to the broker (logs, quotas).",
        default="`kafka-ingress-<subscription id>`",
    ),
    _client(
        "client.rack",
        "client_rack",
        _optional_text,
        "Rack (e.g. availability zone) of this client: fetch from the closest replica (KIP-392).",
        applies_to="consumer",
        default="none",
    ),
    _client(
        "request.timeout.ms",
        "request_timeout_ms",
        _int(1, 900_000),
        "Timeout of any request to a broker. Raised automatically above session.timeout.ms "
        "and fetch.wait.max.ms unless set.",
        default="40000 (aiokafka)",
    ),
    _client(
        "metadata.max.age.ms",
        "metadata_max_age_ms",
        _int(1, 86_400_000),
        "Refresh cluster metadata at least this often.",
        default="300000 (aiokafka)",
    ),
    _client(
        "connections.max.idle.ms",
        "connections_max_idle_ms",
        _idle_ms,
        "Close connections idle this long; 0 disables the check.",
        default="30000 for subscriptions' consumers, 540000 (aiokafka) otherwise",
    ),
    _client(
        "retry.backoff.ms",
        "retry_backoff_ms",
        _int(1, 300_000),
        "Back-off before retrying a failed protocol request (also a reconnect).",
        default="100",
    ),
    # -- consumer group
    _client(
        "group.id",
        "group_id",
        _text(max_length=MAX_ID_LENGTH),
        "Consumer group; all poller instances of a subscription share it.",
        applies_to="consumer",
        default="the subscription ID",
    ),
    _client(
        "session.timeout.ms",
        "session_timeout_ms",
        _int(1, 3_600_000),
        "A member that sends no heartbeat for this long is removed from the group. aiokafka "
        "also uses it as the rebalance timeout.",
        applies_to="consumer",
        default="10000 (aiokafka)",
    ),
    _client(
        "heartbeat.interval.ms",
        "heartbeat_interval_ms",
        _int(1, 3_600_000),
        "Heartbeat interval; must be below session.timeout.ms.",
        applies_to="consumer",
        default="3000",
    ),
    _client(
        "max.poll.interval.ms",
        "max_poll_interval_ms",
        _int(1, 86_400_000),
        "A consumer that does not poll for this long leaves the group.",
        applies_to="consumer",
        default="300000",
    ),
    _client(
        "partition.assignment.strategy",
        "partition_assignment_strategy",
        _assignors,
        "Comma-separated assignors in order of preference: range, roundrobin. "
        "cooperative-sticky is refused (aiokafka rebalances eagerly only).",
        applies_to="consumer",
        default="roundrobin",
    ),
    _client(
        "auto.offset.reset",
        "auto_offset_reset",
        _enum(
            {
                "earliest": "earliest",
                "smallest": "earliest",
                "beginning": "earliest",
                "latest": "latest",
                "largest": "latest",
                "end": "latest",
            },
            refused={
                "error": "the poller would stop on a partition without a committed offset; "
                "choose earliest or latest"
            },
        ),
        "Where to start without a committed offset: earliest (smallest, beginning) or "
        "latest (largest, end). `error` is refused.",
        applies_to="consumer",
        default="latest",
    ),
    _client(
        "isolation.level",
        "isolation_level",
        _enum({"read_committed": "read_committed", "read_uncommitted": "read_uncommitted"}),
        "read_committed skips records of aborted transactions.",
        applies_to="consumer",
        default="read_committed (librdkafka)",
    ),
    # -- fetching
    _client(
        "fetch.min.bytes",
        "fetch_min_bytes",
        _int(1, 100_000_000),
        "The broker waits for this much data (or fetch.wait.max.ms).",
        applies_to="consumer",
        default="1",
    ),
    _client(
        "fetch.max.bytes",
        "fetch_max_bytes",
        _int(1, _INT_MAX - 512),
        "Upper bound of one fetch response (a larger first batch still comes through).",
        applies_to="consumer",
        default="52428800",
    ),
    _client(
        "fetch.wait.max.ms",
        "fetch_max_wait_ms",
        _int(0, 300_000),
        "How long the broker may hold a fetch to reach fetch.min.bytes. Unset, a consumer "
        "quiet for 10 s with no partition paused uses 5000 until records flow again.",
        applies_to="consumer",
        default="500; 5000 once quiet",
    ),
    _client(
        "max.partition.fetch.bytes",
        "max_partition_fetch_bytes",
        _int(1, 1_000_000_000),
        "Upper bound of data per partition in one fetch.",
        applies_to="consumer",
        default="1048576",
    ),
    _client(
        "check.crcs",
        "check_crcs",
        _bool,
        "Verify the CRC32 of fetched records.",
        applies_to="consumer",
        default="true (aiokafka)",
    ),
    # -- the dead-letter producer
    _client(
        "compression.type",
        "compression_type",
        _compression,
        "Compression of dead-letter records: none, gzip, snappy, lz4, zstd (the last three "
        "need their Python library).",
        applies_to="producer",
        default="none",
    ),
    _client(
        "message.max.bytes",
        "max_request_size",
        _int(1000, 1_000_000_000),
        "Largest produce request (bounds the size of a dead-letter record).",
        applies_to="producer",
        default="1048576 (aiokafka)",
    ),
    # -- security
    _security(
        "security.protocol",
        "protocol",
        _enum(
            {
                "PLAINTEXT": "PLAINTEXT",
                "SSL": "SSL",
                "SASL_PLAINTEXT": "SASL_PLAINTEXT",
                "SASL_SSL": "SASL_SSL",
            }
        ),
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (case-insensitive).",
        default="PLAINTEXT",
    ),
    _security(
        "sasl.mechanism",
        "sasl_mechanism",
        _enum(
            {
                "PLAIN": "PLAIN",
                "SCRAM-SHA-256": "SCRAM-SHA-256",
                "SCRAM-SHA-512": "SCRAM-SHA-512",
                "OAUTHBEARER": "OAUTHBEARER",
            },
            case_sensitive=True,
            refused={"GSSAPI": "Kerberos is not supported by the ingress"},
        ),
        "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; required with SASL_*. GSSAPI "
        "(librdkafka's default) is refused.",
    ),
    _security("sasl.username", "sasl_username", _text(strip=False), "SASL PLAIN/SCRAM user."),
    _security("sasl.password", "sasl_password", _text(strip=False), "SASL PLAIN/SCRAM password."),
    _security(
        "ssl.ca.location",
        "ssl_ca_location",
        _text(),
        "CA certificate file or directory (PEM) to verify brokers; `probe` = system store.",
        default="system CA store",
    ),
    _security("ssl.ca.pem", "ssl_ca_pem", _text(), "CA certificate(s) as a PEM string."),
    _security(
        "ssl.certificate.location",
        "ssl_certificate_location",
        _text(),
        "Client certificate (PEM) for mutual TLS.",
    ),
    _security(
        "ssl.key.location",
        "ssl_key_location",
        _text(),
        "Client private key (PEM); needs ssl.certificate.location.",
    ),
    _security(
        "ssl.key.password",
        "ssl_key_password",
        _text(strip=False),
        "Passphrase of ssl.key.location.",
    ),
    _security(
        "ssl.endpoint.identification.algorithm",
        "ssl_check_hostname",
        _endpoint_identification,
        "https checks the broker's host name against its certificate; none does not.",
        default="https",
    ),
    _security(
        "enable.ssl.certificate.verification",
        "ssl_verify",
        _bool,
        "Verify the broker's certificate chain; false also disables the host name check.",
        default="true",
    ),
    _security(
        "sasl.oauthbearer.method",
        "oauthbearer_method",
        _enum({"default": "default", "oidc": "oidc"}),
        "`oidc`: client credentials against the token endpoint; `default` with "
        "sasl.oauthbearer.config=provider=msk-iam: AWS MSK IAM.",
        default="default",
    ),
    _security(
        "sasl.oauthbearer.config",
        "oauthbearer_msk_iam",
        _msk_iam_config,
        "AWS MSK IAM tokens (Restate's spelling): `provider=msk-iam,region=us-east-1`, "
        "optionally `profile=…`, `role_arn=arn:aws:iam::…:role/…`, `role_session_name=…`. "
        "Credentials: the AWS default chain.",
    ),
    _security(
        "sasl.oauthbearer.client.id",
        "oauthbearer_client_id",
        _text(),
        "OIDC client ID.",
    ),
    _security(
        "sasl.oauthbearer.client.secret",
        "oauthbearer_client_secret",
        _text(strip=False),
        "OIDC client secret.",
    ),
    _security(
        "sasl.oauthbearer.token.endpoint.url",
        "oauthbearer_token_endpoint_url",
        _token_url,
        "OIDC token endpoint (http:// or https://); not a link-local or metadata address.",
    ),
    _security(
        "sasl.oauthbearer.scope", "oauthbearer_scope", _text(), "Scope requested with the token."
    ),
    _security(
        "sasl.oauthbearer.extensions",
        "oauthbearer_extensions",
        _extensions,
        "SASL extensions sent to the broker, as comma-separated key=value pairs.",
    ),
    # -- the ingress's own options
    _ingress(
        "dead.letter.topic",
        "dead_letter_topic",
        _topic,
        "Topic that records failing terminally are written to; without it they are only "
        "recorded as failed.",
        default="none",
    ),
    _ingress(
        "retry.initial.interval.ms",
        "retry_options",
        _number,
        "First retry delay of a failed invocation.",
        default="50",
    ),
    _ingress(
        "retry.max.interval.ms",
        "retry_options",
        _number,
        "Upper bound of the retry delay.",
        default="30000",
    ),
    _ingress(
        "retry.max.attempts",
        "retry_options",
        _attempts,
        "Attempts including the first, or `unlimited`.",
        default="20",
    ),
    _ingress(
        "retry.backoff.multiplier",
        "retry_options",
        _number,
        "Factor between consecutive retry delays.",
        default="2",
    ),
    _ingress(
        "retry.jitter",
        "retry_options",
        _number,
        "Fraction in [0, 1] by which a retry delay may be shortened at random.",
        default="0.2",
    ),
    _ingress(
        "max.in.flight",
        "max_in_flight",
        _int(1, 100_000),
        "Invocations of this subscription running at once (not librdkafka's "
        "max.in.flight.requests.per.connection).",
        default="`[limits] max-in-flight`",
    ),
    _ingress(
        "invocation.timeout.ms",
        "invocation_timeout_ms",
        _int(1, _INT_MAX),
        "Timeout of one handler invocation.",
        default="`[limits] invocation-timeout-ms`",
    ),
    _ingress(
        "batch.size",
        "batch_size",
        _int(1, 10_000),
        "Records per Lambda invocation in batch mode (not librdkafka's producer batch.size).",
        default="none (one record per invocation)",
    ),
    _ingress(
        "batch.mode",
        "batch_mode",
        _enum({"partition": "partition", "concurrent": "concurrent"}),
        "How records reach a Lambda sink in batches: `partition` (one batch in flight per "
        "partition, in offset order, as AWS's event source mapping) or `concurrent` (records "
        "of a partition in concurrent calls, exclusive handlers ordered per key).",
        default="`partition` for Lambda sinks with event.format=msk or batch.size > 1",
    ),
    _ingress(
        "maximum.batching.window.ms",
        "batching_window_ms",
        _int(0, 300_000),
        "How long a partition batch waits for more records before it is invoked "
        "(ESM MaximumBatchingWindowInSeconds).",
        default="500",
    ),
    _ingress(
        "bisect.batch.on.function.error",
        "bisect_on_error",
        _bool,
        "Split a batch that fails as a whole in halves to isolate a failing record "
        "(ESM BisectBatchOnFunctionError).",
        default="false",
    ),
    _ingress(
        "maximum.retry.attempts",
        "maximum_retry_attempts",
        _retry_attempts,
        "Retries of a failing partition batch before its records go to destination.on.failure; "
        "-1 retries until they are older than maximum.record.age.ms "
        "(ESM MaximumRetryAttempts).",
        default="-1",
    ),
    _ingress(
        "maximum.record.age.ms",
        "maximum_record_age_ms",
        _record_age,
        "Records older than this are sent to destination.on.failure instead of being invoked; "
        "-1: no limit (ESM MaximumRecordAgeInSeconds).",
        default="-1",
    ),
    _ingress(
        "report.batch.item.failures",
        "report_batch_item_failures",
        _bool,
        "Read the function's `batchItemFailures` answer: the batch resumes at the first "
        "failed record (ESM FunctionResponseTypes=ReportBatchItemFailures).",
        default="false",
    ),
    _ingress(
        "destination.on.failure",
        "destination_on_failure",
        _destination,
        "Where records of a partition batch that failed for good go, in AWS's failure record "
        "format: an SQS queue, SNS topic or S3 bucket ARN, or kafka://<topic> "
        "(ESM DestinationConfig.OnFailure).",
        default="none",
    ),
    _ingress(
        "event.format",
        "event_format",
        _enum({"ingress": "ingress", "msk": "msk"}),
        "Shape of the Lambda event: `ingress` or `msk` (the AWS MSK event source's).",
        default="ingress",
    ),
    _ingress(
        "filter.criteria",
        "filter_criteria",
        _filter_criteria,
        "Invoke only records matching AWS Lambda's FilterCriteria JSON "
        '(`{"Filters": [{"Pattern": "…"}]}`), the same JSON an event source mapping takes; '
        "see docs/protocol.md.",
        default="none (every record)",
    ),
    _ingress(
        "pollers.count",
        "pollers_count",
        _int(1, 1024),
        "On how many pollers of its poller group the subscription runs (docs/operations.md"
        "#capacity).",
        default="the topic's partition count, at least 2",
    ),
    _ingress(
        "poller.group",
        "poller_group",
        _poller_group,
        "The poller group that runs the subscription (like Lambda's PollerGroupName); a "
        "cluster option sets it for the cluster's subscriptions.",
        default="default",
    ),
    _ingress(
        "msk.cluster.arn",
        "msk_cluster_arn",
        _msk_cluster_arn,
        "The Amazon MSK cluster's ARN (a cluster option): Lambda Kafka events then say "
        "`eventSource: aws:kafka` with this `eventSourceArn`, as AWS's MSK trigger does.",
        default="none (self-managed Kafka)",
    ),
    # -- accepted, no effect
    _ignored(
        "allow.auto.create.topics",
        _auto_create,
        "Only `true` is accepted: aiokafka always allows the broker to auto-create topics.",
    ),
    _ignored(
        "reconnect.backoff.ms",
        _int(0, 3_600_000),
        "aiokafka reconnects after retry.backoff.ms.",
    ),
    _ignored(
        "reconnect.backoff.max.ms",
        _int(0, 3_600_000),
        "aiokafka reconnects after retry.backoff.ms.",
    ),
    _ignored(
        "retry.backoff.max.ms",
        _int(1, 300_000),
        "aiokafka backs off a constant retry.backoff.ms.",
    ),
    # -- refused
    _refused("enable.auto.commit", _AUTO_COMMIT_REASON),
    _refused("auto.commit.enable", _AUTO_COMMIT_REASON),
    _refused("auto.commit.interval.ms", _AUTO_COMMIT_REASON),
    _refused(
        "enable.auto.offset.store",
        "the ingress decides which offsets are committable (the highest contiguous "
        "acknowledged offset per partition)",
    ),
    _refused(
        "enable.partition.eof",
        "the poller consumes continuously and has no use for end-of-partition events",
    ),
    _refused(
        "group.instance.id",
        "every poller instance of a subscription would present the same static member ID "
        "and fence the others out of the group",
    ),
    _refused(
        "max.poll.records",
        "the ingress bounds work with max.in.flight and pauses partitions instead",
    ),
    _refused("key.deserializer", _DESERIALIZER_REASON),
    _refused("value.deserializer", _DESERIALIZER_REASON),
    _refused("key.serializer", _DESERIALIZER_REASON),
    _refused("value.serializer", _DESERIALIZER_REASON),
    _refused("transactional.id", "the dead-letter producer is not transactional"),
    _refused(
        "sasl.jaas.config",
        "Java JAAS configuration is not supported; use sasl.mechanism, sasl.username and "
        "sasl.password",
    ),
    _refused(
        "enable.sasl.oauthbearer.unsecure.jwt",
        "unsecured JWTs are not supported; use sasl.oauthbearer.method=oidc",
    ),
    _refused("ssl.truststore.location", _JAVA_STORE_REASON),
    _refused("ssl.truststore.password", _JAVA_STORE_REASON),
    _refused("ssl.keystore.location", _JAVA_STORE_REASON),
    _refused("ssl.keystore.password", _JAVA_STORE_REASON),
    _refused(
        "ssl.certificate.pem",
        "Python's TLS stack loads client certificates from files; use ssl.certificate.location",
    ),
    _refused(
        "ssl.key.pem",
        "Python's TLS stack loads private keys from files; use ssl.key.location",
    ),
)

_ALIASES: Mapping[str, str] = {
    "metadata.broker.list": "bootstrap.servers",
    "sasl.mechanisms": "sasl.mechanism",
    "fetch.message.max.bytes": "max.partition.fetch.bytes",
    # librdkafka's socket.timeout.ms is its network request timeout; aiokafka has only one.
    "socket.timeout.ms": "request.timeout.ms",
    "compression.codec": "compression.type",
}


def _build_table() -> Mapping[str, OptionSpec]:
    table = {spec.name: spec for spec in _SPECS}
    assert len(table) == len(_SPECS), "duplicate option in _SPECS"
    for alias, canonical in _ALIASES.items():
        table[alias] = replace(
            table[canonical], name=alias, alias_of=canonical, doc=f"Alias of {canonical}."
        )
    return MappingProxyType(dict(sorted(table.items())))


OPTION_TABLE: Mapping[str, OptionSpec] = _build_table()
"""Every option this module knows, by name (aliases included), sorted."""

SUPPORTED_OPTIONS: frozenset[str] = frozenset(
    name for name, spec in OPTION_TABLE.items() if spec.kind is not Kind.REFUSED
)
"""Options that may be set, aliases included."""

REFUSED_OPTIONS: Mapping[str, str] = MappingProxyType(
    {name: spec.reason or "" for name, spec in OPTION_TABLE.items() if spec.kind is Kind.REFUSED}
)
"""librdkafka/Java options that are rejected, with the reason shown to the user."""


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SecuritySettings:
    """How to reach the brokers securely; turned into aiokafka arguments by the I/O shell.

    ``repr`` masks credentials, so logging this object is safe.
    """

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_ca_pem: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = None
    ssl_check_hostname: bool = True
    ssl_verify: bool = True
    oauthbearer_method: Literal["default", "oidc"] = "default"
    oauthbearer_client_id: str | None = None
    oauthbearer_client_secret: str | None = None
    oauthbearer_token_endpoint_url: str | None = None
    oauthbearer_scope: str | None = None
    oauthbearer_extensions: tuple[tuple[str, str], ...] = ()
    oauthbearer_msk_iam: MskIamSettings | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = repr(SECRET_MASK) if f.name in _SECRET_FIELDS and value is not None else None
            parts.append(f"{f.name}={shown or repr(value)}")
        return f"SecuritySettings({', '.join(parts)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressOptions:
    """The ingress's own per-subscription options (``None`` = the ``[limits]`` default).

    ``retry_options`` holds the ``retry.*`` options as given, for
    :meth:`adapter.engine.retry.RetryPolicy.from_options`.
    """

    dead_letter_topic: str | None = None
    retry_options: dict[str, str] = field(default_factory=dict)
    max_in_flight: int | None = None
    invocation_timeout_ms: int | None = None
    batch_size: int | None = None
    event_format: EventFormat = "ingress"
    filter_criteria: FilterCriteria | None = None
    msk_cluster_arn: str | None = None
    bootstrap_servers: tuple[str, ...] = ()  # the cluster's, as Lambda Kafka events name it
    batch_mode: BatchMode | None = None
    batching_window_ms: int = 500
    bisect_on_error: bool = False
    maximum_retry_attempts: int | None = None
    maximum_record_age_ms: int | None = None
    report_batch_item_failures: bool = False
    destination_on_failure: Destination | None = None

    pollers_count: int | None = None
    poller_group: str | None = None

    def partition_batches(self, *, is_lambda: bool) -> bool:
        """Do this subscription's records go in ESM partition batches (``batch.mode``)?"""
        if self.batch_mode is not None:
            return self.batch_mode == "partition"
        batching = self.event_format == "msk" or (self.batch_size or 1) > 1
        return is_lambda and batching


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """Everything the consumer of one subscription (and its dead-letter producer) needs.

    ``consumer_kwargs`` and ``producer_kwargs`` hold no security arguments and no secrets:
    merge them with :func:`adapter.kafka.security.consumer_security_kwargs` (which builds the
    ``ssl_context`` and SASL arguments from ``security``) before calling aiokafka.
    """

    bootstrap_servers: list[str]
    consumer_kwargs: dict[str, Any]
    producer_kwargs: dict[str, Any]
    security: SecuritySettings
    ingress: IngressOptions
    group_id: str


_SECRET_FIELDS = frozenset(
    spec.target
    for spec in OPTION_TABLE.values()
    if spec.kind is Kind.SECURITY and spec.secret and spec.target
)


# --------------------------------------------------------------------------------------------
# Parsing one mapping


@dataclass(frozen=True, slots=True)
class _Setting:
    written: str  # the name as the user wrote it (may be an alias)
    raw: str
    value: Any


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= 80 else raw[:77] + "...")


def _as_text(raw: object) -> str | None:
    # TOML and JSON can carry numbers and booleans; render them as librdkafka would read them.
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str | int | float):
        return str(raw)
    return None


def _parse_mapping(options: Mapping[str, str], label: str) -> tuple[dict[str, _Setting], list[str]]:
    """Parse one mapping; return settings by canonical name and every problem found."""
    settings: dict[str, _Setting] = {}
    problems: list[str] = []
    unknown: list[str] = []
    too_long: list[int] = []
    for name in options:
        raw_value: object = options[name]
        if len(name) > MAX_NAME_LENGTH:
            too_long.append(len(name))
            continue
        if isinstance(raw_value, str) and len(raw_value) > MAX_VALUE_LENGTH:
            problems.append(
                f"{label} {name!r}: values are at most {MAX_VALUE_LENGTH} characters, this one "
                f"has {len(raw_value)}"
            )
            continue
        spec = OPTION_TABLE.get(name)
        if spec is None:
            unknown.append(name)
            continue
        if spec.kind is Kind.REFUSED:
            problems.append(f"{label} {name!r} is not allowed: {spec.reason}")
            continue
        raw = _as_text(raw_value)
        if raw is None:
            problems.append(f"{label} {name!r}: expected a string, number or boolean")
            continue
        try:
            value = spec.parse(raw)
        except _Unsupported as exc:
            problems.append(f"{label} {name!r}: {exc.reason}")
            continue
        except _Invalid as exc:
            got = "" if spec.secret else f", got {_show(raw)}"
            problems.append(f"{label} {name!r}: expected {exc.expected}{got}")
            continue
        canonical = spec.alias_of or name
        previous = settings.get(canonical)
        if previous is not None and previous.value != value:
            problems.append(
                f"{label}s {previous.written!r} and {name!r} are the same option with "
                f"different values; set only one"
            )
            continue
        settings[canonical] = _Setting(written=name, raw=raw, value=value)
    if too_long:
        some = "one has" if len(too_long) == 1 else f"{len(too_long):,} have up to"
        problems.insert(
            0, f"{label} names are at most {MAX_NAME_LENGTH} characters; {some} {max(too_long)}"
        )
    if unknown:
        problems.append(_unknown_message(unknown, label))
    return settings, problems


_UNKNOWN_NAMED = 10
"""Unknown option names quoted in one error; the rest are counted (bounded work and text)."""
_UNKNOWN_SUGGESTED = 5
"""Of those, how many get a "did you mean" (difflib is the costly part)."""
_SORTED_SUPPORTED = sorted(SUPPORTED_OPTIONS)


def _unknown_message(unknown: Sequence[str], label: str) -> str:
    first = heapq.nsmallest(_UNKNOWN_NAMED, unknown)
    described = []
    for index, name in enumerate(first):
        close = (
            difflib.get_close_matches(name.lower(), _SORTED_SUPPORTED, n=1, cutoff=0.8)
            if index < _UNKNOWN_SUGGESTED
            else []
        )
        described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    more = len(unknown) - len(first)
    if more:
        described.append(f"{more:,} more")
    plural = "s" if len(unknown) > 1 else ""
    listed = ", ".join(described[:-1]) + " and " + described[-1] if more else ", ".join(described)
    return f"unknown {label}{plural} {listed}; supported options: {', '.join(_SORTED_SUPPORTED)}"


def _remember_secrets(options: Mapping[str, object]) -> None:
    """Mask the secret values of accepted options by value from now on, in whatever text they
    may turn up (logs, errors). Only accepted ones: the masker keeps a bounded number of
    values, and a refused request must not push out the ones in use."""
    for name, value in options.items():
        if isinstance(value, str):
            if is_secret(name):
                remember_secret(value)
            remember_uri_credentials(value)


def validate_options(options: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` if any option is unknown, refused or has a bad value.

    Checks each option on its own (and aliases against each other). Rules that span options
    — SASL credentials, timeouts that depend on each other — need the cluster's options too:
    :func:`resolve_options` applies them.
    """
    _, problems = _parse_mapping(options, "option")
    if problems:
        raise ConfigError(_joined(problems))


_MAX_PROBLEMS = 20


def joined(items: Sequence[str], *, limit: int, separator: str, counted: str = "") -> str:
    """``items`` joined for a message, bounded: past ``limit`` they are only counted
    (``…; and 12 more problems``), so no request makes an error message without bound."""
    shown = separator.join(items[:limit])
    more = len(items) - limit
    return f"{shown}{separator}and {more:,} more{counted}" if more > 0 else shown


def _joined(problems: Sequence[str]) -> str:
    return joined(problems, limit=_MAX_PROBLEMS, separator="; ", counted=" problems")


# --------------------------------------------------------------------------------------------
# Resolving cluster + subscription options


def resolve_options(
    *,
    subscription_id: str,
    bootstrap_servers: Sequence[str],
    cluster_options: Mapping[str, str],
    subscription_options: Mapping[str, str],
) -> ClientOptions:
    """Merge cluster and subscription options (the subscription wins) and translate them.

    ``bootstrap_servers`` are the cluster's brokers (``host:port``), used unless an option
    sets ``bootstrap.servers``. Raises :class:`ConfigError` listing every problem found.
    """
    cluster, problems = _parse_mapping(cluster_options, "cluster option")
    subscription, more = _parse_mapping(subscription_options, "subscription option")
    problems += more
    if problems:
        raise ConfigError(_joined(problems))
    problems = _check_credential_addresses(cluster, subscription, bootstrap_servers)
    merged = {**cluster, **subscription}
    values = {name: setting.value for name, setting in merged.items()}

    def written(name: str) -> str:
        return merged[name].written if name in merged else name

    servers: list[str] = values.get("bootstrap.servers") or list(bootstrap_servers)
    if not servers:
        raise ConfigError("no brokers: give the cluster `brokers` or set bootstrap.servers")
    group_id: str = values.get("group.id") or subscription_id
    client_id: str = values.get("client.id") or f"kafka-ingress-{subscription_id}"

    consumer: dict[str, Any] = {
        "bootstrap_servers": list(servers),
        "client_id": client_id,
        "group_id": group_id,
        # The ingress owns commits: explicit offsets, after acknowledgement only.
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        # librdkafka's defaults, where aiokafka's differ in behaviour rather than tuning.
        "isolation_level": "read_committed",
        # One assignor, not librdkafka's "range,roundrobin": with two, every rejoin of an
        # aiokafka member makes a Kafka 4.x coordinator see "changed metadata" and start one
        # more rebalance, and a group with churn never settles (measured in the chaos suite).
        "partition_assignment_strategy": (RoundRobinPartitionAssignor,),
    }
    producer: dict[str, Any] = {"bootstrap_servers": list(servers), "client_id": client_id}
    security: dict[str, Any] = {}
    ingress: dict[str, Any] = {"retry_options": {}}
    for name, value in values.items():
        spec = OPTION_TABLE[name]
        if spec.kind is Kind.CLIENT and spec.target is not None:
            if name in ("bootstrap.servers", "group.id", "client.id"):
                continue
            if spec.applies_to in ("consumer", "both"):
                consumer[spec.target] = value
            if spec.applies_to in ("producer", "both"):
                producer[spec.target] = value
        elif spec.kind is Kind.SECURITY and spec.target is not None:
            security[spec.target] = value
        elif spec.kind is Kind.INGRESS and spec.target == "retry_options":
            ingress["retry_options"][name] = value
        elif spec.kind is Kind.INGRESS and spec.target is not None:
            ingress[spec.target] = value

    settings = SecuritySettings(**security)
    problems += _check_security(settings, written)
    problems += _check_timeouts(values, written, consumer, producer)
    if problems:
        raise ConfigError(_joined(problems))
    _remember_secrets(cluster_options)
    _remember_secrets(subscription_options)
    return ClientOptions(
        bootstrap_servers=list(servers),
        consumer_kwargs=consumer,
        producer_kwargs=producer,
        security=settings,
        ingress=IngressOptions(**ingress, bootstrap_servers=tuple(servers)),
        group_id=group_id,
    )


def _check_credential_addresses(
    cluster: Mapping[str, _Setting],
    subscription: Mapping[str, _Setting],
    cluster_brokers: Sequence[str],
) -> list[str]:
    """A subscription that sends credentials elsewhere than the cluster does (other brokers,
    another token endpoint) inherits none of the cluster's secrets that would go there: it
    must give them itself. Otherwise anyone who may create subscriptions could have the
    cluster's password sent to a broker of their choosing."""
    problems: list[str] = []
    for canonical, carried in CREDENTIAL_ADDRESSES.items():
        mine = subscription.get(canonical)
        if mine is None:
            continue
        theirs: object = cluster[canonical].raw if canonical in cluster else None
        if theirs is None and canonical == "bootstrap.servers":
            theirs = ",".join(cluster_brokers)
        if theirs is not None and _same_place(
            canonical, _address(canonical, mine.raw), _address(canonical, theirs)
        ):
            continue
        inherited = sorted(
            name
            for name, setting in cluster.items()
            if name not in subscription
            and (carried is None or name in carried)
            and _holds_secret(name, setting.raw)
        )
        if inherited:
            where = "other brokers" if canonical == "bootstrap.servers" else "another endpoint"
            problems.append(
                f"subscription option {mine.written!r} sends credentials to {where} than the "
                f"cluster's, so it does not inherit the cluster's {', '.join(inherited)}: set "
                f"{'it' if len(inherited) == 1 else 'them'} in the subscription too, or create a "
                "Kafka cluster for that address"
            )
    weakening = _weakened_protection(cluster, {**cluster, **subscription})
    if weakening is not None:
        inherited = sorted(
            name
            for name, setting in cluster.items()
            if name not in subscription and _holds_secret(name, setting.raw)
        )
        if inherited:
            problems.append(
                f"subscription option {weakening!r} weakens the protection the cluster's "
                f"credentials travel under, so it does not inherit the cluster's "
                f"{', '.join(inherited)}: set {'it' if len(inherited) == 1 else 'them'} in the "
                "subscription too, or leave the cluster's TLS settings as they are"
            )
    return problems


# What an option of :data:`_PROTECTION` is when not set: librdkafka's defaults, parsed.
_PROTECTION_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {
        "security.protocol": "PLAINTEXT",
        "enable.ssl.certificate.verification": True,
        "ssl.endpoint.identification.algorithm": True,  # https
        "ssl.ca.location": None,  # the system store
        "ssl.ca.pem": None,
        "sasl.mechanism": None,
    }
)


def _weakened_protection(
    before: Mapping[str, _Setting], after: Mapping[str, _Setting]
) -> str | None:
    """The option (as written in ``after``, else its canonical name) by which the protection
    credentials travel under is weaker in ``after`` than in ``before``, if any: the same
    address, but a man in the middle could then read them. Weaker is: TLS taken away
    (``security.protocol`` without SSL), certificate verification or host identification
    turned off, another trust anchor while TLS is in use (``ssl.ca.location``, ``ssl.ca.pem``
    changed, added or removed: an attacker's CA is as good as no verification), or
    ``sasl.mechanism`` PLAIN without TLS where it was not (SCRAM and OAUTHBEARER never send
    the password). Values are compared parsed, so every spelling counts (``f`` is false).

    Both are effective options by canonical name (parsed by :func:`_parse_mapping`), an
    option not set taking librdkafka's default: a subscription's against its cluster's, the
    options after a change against before it.
    """

    def value(options: Mapping[str, _Setting], name: str) -> Any:
        setting = options.get(name)
        return _PROTECTION_DEFAULTS[name] if setting is None else setting.value

    def written(name: str) -> str:
        setting = after.get(name)
        return name if setting is None else setting.written

    tls_after = "SSL" in value(after, "security.protocol")
    if "SSL" in value(before, "security.protocol") and not tls_after:
        return written("security.protocol")
    for name in ("enable.ssl.certificate.verification", "ssl.endpoint.identification.algorithm"):
        if value(before, name) and not value(after, name):
            return written(name)
    if tls_after:
        for name in ("ssl.ca.location", "ssl.ca.pem"):
            if value(after, name) != value(before, name):
                return written(name)
    mechanism = "sasl.mechanism"
    if not tls_after and value(after, mechanism) == "PLAIN" != value(before, mechanism):
        return written(mechanism)
    return None


# --------------------------------------------------------------------------------------------
# A cluster change and the secrets its subscriptions give themselves


@dataclass(frozen=True, slots=True)
class FollowingSecrets:
    """Secret options a subscription gives itself that a change of its cluster would take
    along (:func:`secrets_following_cluster`)."""

    option: str
    """The cluster option that changes, as written in the new properties."""
    moves: bool
    """True: it changes where credentials are sent; False: it weakens their protection."""
    secrets: tuple[str, ...]
    """The subscription's options holding secrets that would go along, sorted."""

    @property
    def canonical(self) -> str:
        """The option's canonical name: what a subscription sets to have its own."""
        return _ADDRESS_ALIASES.get(self.option, self.option)


_PROTECTION_PREFIXES = ("security.", "ssl.", "enable.ssl.")
"""Names of the options the TLS credentials travel under may depend on (a superset)."""

_ANY_SECRETS = _SECRET_NAMES | {"sasl.password", "ssl.key.password", "ssl.keystore.password"}
"""Every secret option a subscription could hold, for :func:`cluster_change_may_take_secrets`."""

_PROTECTION = frozenset(_PROTECTION_DEFAULTS)
"""The options :func:`_weakened_protection` compares (by canonical name)."""


def _protection(options: Mapping[str, str]) -> dict[str, _Setting]:
    """The options of ``options`` that :func:`_weakened_protection` reads, parsed (one that
    does not parse is left out: it is refused where the options are validated)."""
    settings, _ = _parse_mapping(
        {n: v for n, v in options.items() if _canonical(n) in _PROTECTION}, "option"
    )
    return settings


def holds_own_secrets(options: Mapping[str, str]) -> bool:
    """Do these (a subscription's own) options hold a secret?"""
    return any(_holds_secret(name, value) for name, value in options.items())


def secret_routing_changed(before: Mapping[str, str], after: Mapping[str, str]) -> bool:
    """Does a subscription's change from ``before`` to ``after`` touch a secret, an address
    secrets are sent to, or the TLS they travel under (what its cluster check is about)?"""
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    return any(
        _holds_secret(name, before.get(name, "") + " " + after.get(name, ""))
        or _ADDRESS_ALIASES.get(name, name) in CREDENTIAL_ADDRESSES
        or name.startswith(_PROTECTION_PREFIXES)
        for name in changed
    )


def cluster_change_may_take_secrets(stored: Mapping[str, str], given: Mapping[str, str]) -> bool:
    """Could a cluster's properties going from ``stored`` to ``given`` take some subscription's
    own secrets elsewhere or under weaker protection, whichever secrets it holds?"""
    probe = dict.fromkeys(_ANY_SECRETS, "x")
    return bool(secrets_following_cluster(stored, given, probe))


def secrets_following_cluster(
    stored: Mapping[str, str], given: Mapping[str, str], subscription: Mapping[str, str]
) -> list[FollowingSecrets]:
    """What a cluster's properties going from ``stored`` to ``given`` (``stored`` empty: a
    cluster new under that name) do to the secrets ``subscription`` gives itself: for each
    change that sends credentials elsewhere (other brokers, another token endpoint, as
    :data:`CREDENTIAL_ADDRESSES` says which secrets go where) or weakens the TLS they travel
    under, the subscription's own secret options that would go along. Empty: none.

    The counterpart of :func:`resolve_options`'s rule that a subscription does not take its
    cluster's secrets elsewhere: here the cluster would take the subscription's. What the
    subscription sets itself is its own: an address it names does not move with the cluster,
    a TLS option it sets is not weakened by it. Protection is compared as for a subscription
    (:func:`_weakened_protection`); an option the new properties leave out is librdkafka's
    default (``security.protocol`` PLAINTEXT).
    """
    own = sorted(name for name, value in subscription.items() if _holds_secret(name, value))
    if not own:
        return []
    named = {_ADDRESS_ALIASES.get(name, name) for name in subscription}
    out: list[FollowingSecrets] = []
    for written, canonical in _moved_addresses(given, stored):
        carried = CREDENTIAL_ADDRESSES[canonical]
        following = tuple(name for name in own if carried is None or name in carried)
        if canonical not in named and following:
            out.append(FollowingSecrets(written, moves=True, secrets=following))
    before = _protection(_overlay(stored, subscription))
    after = _protection(_overlay(given, subscription))
    weakening = _weakened_protection(before, after)
    if weakening is not None:
        out.append(FollowingSecrets(weakening, moves=False, secrets=tuple(own)))
    return out


def _check_security(security: SecuritySettings, written: Callable[[str], str]) -> list[str]:
    """Rules across the security options; messages name options, never values of secrets."""
    problems: list[str] = []
    mechanism = security.sasl_mechanism
    if security.uses_sasl and mechanism is None:
        problems.append(
            f"security.protocol={security.protocol} needs {written('sasl.mechanism')}: one "
            "of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (librdkafka's default, "
            "GSSAPI, is not supported)"
        )
    if security.uses_sasl and mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        missing = [
            option
            for option, value in (
                ("sasl.username", security.sasl_username),
                ("sasl.password", security.sasl_password),
            )
            if value is None
        ]
        if missing:
            problems.append(f"sasl.mechanism={mechanism} needs {' and '.join(missing)}")
    if security.uses_sasl and mechanism == "OAUTHBEARER":
        msk_iam = security.oauthbearer_msk_iam is not None
        oidc = security.oauthbearer_method == "oidc"
        if msk_iam and oidc:
            problems.append(
                "sasl.oauthbearer.config=provider=msk-iam and sasl.oauthbearer.method=oidc "
                "are two token sources; set only one"
            )
        elif not msk_iam and not oidc:
            problems.append(
                "sasl.mechanism=OAUTHBEARER needs a token source: "
                "sasl.oauthbearer.method=oidc (an OIDC token endpoint) or "
                'sasl.oauthbearer.config="provider=msk-iam,region=<region>" (AWS MSK IAM); '
                "unsecured JWTs cannot be configured here"
            )
        elif oidc:
            missing = [
                option
                for option, value in (
                    ("sasl.oauthbearer.client.id", security.oauthbearer_client_id),
                    ("sasl.oauthbearer.client.secret", security.oauthbearer_client_secret),
                    (
                        "sasl.oauthbearer.token.endpoint.url",
                        security.oauthbearer_token_endpoint_url,
                    ),
                )
                if value is None
            ]
            if missing:
                problems.append(f"sasl.oauthbearer.method=oidc needs {', '.join(missing)}")
    if security.ssl_key_location is not None and security.ssl_certificate_location is None:
        problems.append("ssl.key.location needs ssl.certificate.location (the client certificate)")
    return problems


def _check_timeouts(
    values: Mapping[str, Any],
    written: Callable[[str], str],
    consumer: dict[str, Any],
    producer: dict[str, Any],
) -> list[str]:
    """Timeouts aiokafka needs in a given order; fills in the request timeout if unset."""
    problems: list[str] = []
    session = values.get("session.timeout.ms", _AIOKAFKA_SESSION_TIMEOUT_MS)
    heartbeat = values.get("heartbeat.interval.ms", _AIOKAFKA_HEARTBEAT_INTERVAL_MS)
    if heartbeat >= session:
        problems.append(
            f"{written('heartbeat.interval.ms')} ({heartbeat}) must be less than "
            f"{written('session.timeout.ms')} ({session}), or the group drops the member "
            "between heartbeats"
        )
    # aiokafka sends JoinGroup with the session timeout as rebalance timeout, and the broker
    # may hold that request (and a fetch, for fetch.wait.max.ms) before answering; a shorter
    # request timeout would abort them.
    fetch_wait = values.get("fetch.wait.max.ms", _AIOKAFKA_FETCH_MAX_WAIT_MS)
    longest_wait = max(session, fetch_wait)
    if "request.timeout.ms" in values:
        request = values["request.timeout.ms"]
        if request <= longest_wait:
            which = "session.timeout.ms" if session >= fetch_wait else "fetch.wait.max.ms"
            problems.append(
                f"{written('request.timeout.ms')} ({request}) must be greater than "
                f"{written(which)} ({longest_wait}): the broker may hold a request that long"
            )
    elif longest_wait >= _AIOKAFKA_REQUEST_TIMEOUT_MS:
        floor = longest_wait + _REQUEST_TIMEOUT_MARGIN_MS
        consumer["request_timeout_ms"] = floor
        producer["request_timeout_ms"] = floor
    return problems
