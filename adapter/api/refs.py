"""Parsing what users write to name things: source and sink URIs, resource IDs and names.

Pure. Every problem is a :class:`~adapter.errors.ValidationError` (400) whose message says
what was expected; a well-formed reference to something that does not exist is decided by the
caller (404, or 400 inside a request body). A message quotes what was given only through
:func:`shown`, which leaves out credentials (``user:password@``), and no reference accepts
credentials, so none reaches a later "unknown cluster/service" message either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from adapter.errors import ValidationError
from adapter.ids import is_invocation_id, parse_invocation_id
from adapter.masking import MASK
from adapter.model import FUNCTION_SINK_HANDLER, LAMBDA_FUNCTION_ARN

__all__ = [
    "EVENT_FORMAT",
    "Sink",
    "Source",
    "check_cluster_name",
    "check_invocation_id",
    "check_name",
    "parse_sink",
    "parse_source",
    "shown",
    "sink_options",
]

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_CLUSTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class Source:
    cluster: str
    topic: str


@dataclass(frozen=True, slots=True)
class Sink:
    service: str
    handler: str
    # Set for ``lambda://<ARN>``: the function, registered without discovery.
    function_arn: str | None = None


def shown(value: str, limit: int = 300) -> str:
    """``value`` quoted for an error message: at most ``limit`` characters, and everything from
    the scheme's ``://`` (or the start) to the last ``@`` replaced by ``***``, so credentials
    (``user:password@``, however many ``/`` or ``@`` the password holds) are never echoed."""
    text = value.strip()
    scheme_end = text.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    at = text.rfind("@", start)
    if at >= 0:
        text = f"{text[:start]}{MASK}{text[at:]}"
    return repr(text[:limit])


def _scheme(value: str, parts: SplitResult) -> str:
    # Only a scheme followed by "://" is named: in "user:password@host" urlsplit reads the
    # user name as the scheme.
    if parts.scheme and value.strip().lower().startswith(f"{parts.scheme.lower()}://"):
        return f"scheme {parts.scheme!r}"
    return "no scheme"


def _split(value: str, what: str, expected: str) -> SplitResult:
    try:
        return urlsplit(value.strip())
    except ValueError as exc:
        # urlsplit's message can quote the host part (NFKC check): only the IPv6 one is kept.
        reason = str(exc) if str(exc) == "Invalid IPv6 URL" else "not a valid URI"
        raise ValidationError(
            f"invalid {what} {shown(value)}: {reason}; expected {expected}"
        ) from None


def _no_credentials(value: str, what: str, expected: str) -> None:
    if "@" in value:
        raise ValidationError(
            f"invalid {what} {shown(value)}: credentials (user:password@) do not belong in a "
            f"{what}; expected {expected}"
        )


def parse_source(source: str) -> Source:
    """``kafka://<cluster>/<topic>``."""
    expected = "kafka://<cluster>/<topic>"
    parts = _split(source, "source", expected)
    if parts.scheme != "kafka":
        raise ValidationError(
            f"invalid source {shown(source)}: {_scheme(source, parts)}; the only supported "
            f"source is {expected}"
        )
    _no_credentials(source, "source", expected)
    cluster = parts.netloc
    if not cluster:
        raise ValidationError(
            f"invalid source {shown(source)}: no cluster name; expected {expected}"
        )
    if ":" in cluster:
        # Not a cluster name (none has ':'), and perhaps user:password: not quoted.
        raise ValidationError(
            f"invalid source {shown(f'kafka://{MASK}{parts.path}')}: the part after "
            "kafka:// names a cluster (letters, digits, '.', '_', '-'), not a broker address or "
            "credentials, which are set on the cluster"
        )
    if parts.query or parts.fragment:
        raise ValidationError(f"invalid source {shown(source)}: a query or fragment is not allowed")
    topic = unquote(parts.path.removeprefix("/"))
    if not topic:
        raise ValidationError(
            f"invalid source {shown(source)}: no topic; expected kafka://{cluster}/<topic>"
        )
    if not _TOPIC.match(topic) or topic in (".", ".."):
        raise ValidationError(
            f"invalid source {shown(source)}: topic {shown(topic)} is not a Kafka topic name "
            "(1 to 249 of a-z A-Z 0-9 . _ -)"
        )
    return Source(cluster=cluster, topic=topic)


_LAMBDA_SCHEME = "lambda://"
_SINK_FORMS = "service://<service>/<handler> or lambda://<Lambda function ARN>"


def _function_sink(sink: str) -> Sink:
    arn = sink.strip()[len(_LAMBDA_SCHEME) :]
    if not LAMBDA_FUNCTION_ARN.match(arn):
        raise ValidationError(
            f"invalid sink {shown(sink)}: {shown(arn, 250)} is not a Lambda function ARN; expected "
            "lambda://arn:aws:lambda:<region>:<12-digit account>:function:<name>[:<qualifier>]"
        )
    return Sink(service=arn, handler=FUNCTION_SINK_HANDLER, function_arn=arn)


def parse_sink(sink: str) -> Sink:
    """``service://<service>/<handler>`` or ``lambda://<function ARN>`` (a function sink)."""
    if sink.strip().lower().startswith(_LAMBDA_SCHEME):
        return _function_sink(sink)
    parts = _split(sink, "sink", _SINK_FORMS)
    if parts.scheme != "service":
        raise ValidationError(
            f"invalid sink {shown(sink)}: {_scheme(sink, parts)}; expected {_SINK_FORMS}"
        )
    if "@" in parts.netloc:
        raise ValidationError(
            f"invalid sink {shown(sink)}: credentials (user:password@) do not belong in a sink "
            "(write an '@' in a service name as %40)"
        )
    service = unquote(parts.netloc)
    handler = unquote(parts.path.removeprefix("/"))
    if not service or not handler or "/" in handler or parts.query or parts.fragment:
        raise ValidationError(
            f"invalid sink {shown(sink)}: expected service://<service>/<handler> with both names"
        )
    if LAMBDA_FUNCTION_ARN.match(service):
        raise ValidationError(
            f"invalid sink {shown(sink)}: a Lambda function ARN is subscribed as lambda://{service}"
        )
    return Sink(service=service, handler=handler)


EVENT_FORMAT = "event.format"


def sink_options(sink: Sink, options: dict[str, str]) -> dict[str, str]:
    """``options`` with what the sink implies: a function sink always gets AWS's Kafka event
    (``event.format=msk``), and refuses another format naming the option."""
    if sink.function_arn is None:
        return options
    given = options.get(EVENT_FORMAT, "msk").strip().lower()
    if given != "msk":
        raise ValidationError(
            f"option {EVENT_FORMAT}={options[EVENT_FORMAT]!r} does not apply to a lambda:// "
            "sink: a plain function gets AWS's Kafka event (event.format=msk); register the "
            "function as a deployment to receive the ingress format"
        )
    return {**options, EVENT_FORMAT: "msk"}


def check_invocation_id(value: str) -> str:
    if not is_invocation_id(value):
        parse_invocation_id(value)  # raises the error that says what is wrong
    return value


def check_cluster_name(value: str) -> str:
    if not _CLUSTER.match(value):
        raise ValidationError(
            f"{shown(value, 80)} is not a Kafka cluster name: letters, digits, '.', '_', '-', "
            "starting with a letter or digit, at most 255 characters"
        )
    return value


def check_name(value: str, what: str) -> str:
    """A service or handler name: non-empty, at most 255 characters, no control characters."""
    if not value or len(value) > _NAME_MAX or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValidationError(
            f"{value[:80]!r} is not a {what} name (1 to 255 printable characters)"
        )
    return value
