"""Record → request and response → outcome: the wire mapping, as pure functions.

Nothing here touches a socket. The HTTP invoker (and later the Lambda invoker) is a thin shell
around these functions, so every rule of the handler protocol (``docs/protocol.md``) is decided
and tested in this one module:

* :func:`build_request` turns one Kafka record into an :class:`InvocationRequest` (body, headers,
  key) or raises :class:`~adapter.errors.TerminalInvokeError` when the record can never be
  delivered (missing/non-UTF-8 key for a keyed handler, invalid JSON, too large);
  :func:`with_attempt` turns it into a later attempt of the same invocation.
* :func:`outcome_from_http` turns a handler's HTTP response into an :class:`Outcome`.
* :func:`invoke_url` / :func:`discover_url` build the handler routes under a deployment's base URL.

Header decisions, in short (the protocol document has the long form):

* Our metadata headers always win: a record header whose name collides with one of ours, with a
  hop-by-hop or framing header, or that would not survive HTTP unchanged, is never sent as a
  header of its own.
* A record header is *passed through* as its own HTTP header only when that is lossless: the
  name is an RFC 9110 token, not reserved, unique in the record (case-insensitively), and the
  value is non-empty printable ASCII without leading/trailing spaces.
* If even one record header is not passed through, ``x-kafka-headers`` carries the complete
  record header list, in record order: compact ASCII JSON ``[[name, base64(value)], ...]``.
  Handlers that need the exact Kafka headers read that header when present, else the plain ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from urllib.parse import quote

import orjson

from adapter.errors import TerminalInvokeError
from adapter.ids import invocation_id as derive_invocation_id
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.model import InputKind, KafkaRecord, ServiceType, Target

# The wire names are the handler protocol's (the SDK reads them): one definition for both sides.
from adapter.sdk.protocol import (
    HEADER_ATTEMPT,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INVOCATION_ID,
    HEADER_KAFKA_HEADERS,
    HEADER_KAFKA_KEY,
    HEADER_KAFKA_OFFSET,
    HEADER_KAFKA_PARTITION,
    HEADER_KAFKA_TIMESTAMP,
    HEADER_KAFKA_TOPIC,
    HEADER_SUBSCRIPTION_ID,
    HEADER_TRACEPARENT,
    invoke_path,
)

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_RAW",
    "HEADER_ATTEMPT",
    "HEADER_IDEMPOTENCY_KEY",
    "HEADER_INVOCATION_ID",
    "HEADER_KAFKA_HEADERS",
    "HEADER_KAFKA_KEY",
    "HEADER_KAFKA_OFFSET",
    "HEADER_KAFKA_PARTITION",
    "HEADER_KAFKA_TIMESTAMP",
    "HEADER_KAFKA_TOPIC",
    "HEADER_SUBSCRIPTION_ID",
    "HEADER_TRACEPARENT",
    "HEADER_TRACESTATE",
    "build_request",
    "decode_kafka_headers",
    "derive_trace_id",
    "discover_url",
    "encode_kafka_headers",
    "fresh_traceparent",
    "invoke_url",
    "is_valid_traceparent",
    "outcome_from_http",
    "parse_retry_after",
    "with_attempt",
]

HEADER_TRACESTATE = "tracestate"

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_RAW = "application/octet-stream"

# Names a record header may never take over. Hop-by-hop and framing headers would change how
# the request itself is transported or how its body is read; accept-encoding would change how
# the invoker decodes the response; our own names carry the invocation's identity.
_RESERVED_NAMES = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "expect",
        "accept-encoding",
        HEADER_SUBSCRIPTION_ID,
        HEADER_KAFKA_OFFSET,
        HEADER_KAFKA_PARTITION,
        HEADER_KAFKA_TIMESTAMP,
        HEADER_KAFKA_TOPIC,
        HEADER_KAFKA_KEY,
        HEADER_IDEMPOTENCY_KEY,
        HEADER_KAFKA_HEADERS,
    }
)
# content-* describe the body we build; proxy-* are hop-by-hop; x-kafka-ingress-* is our
# namespace, reserved whole so future metadata can never collide with a record header.
_RESERVED_PREFIXES = ("content-", "proxy-", "x-kafka-ingress-")

# RFC 9110 token (ASCII only: re's [A-Za-z0-9] does not match other scripts).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Non-empty printable ASCII, no leading/trailing space: HTTP parsers strip surrounding
# whitespace, aiohttp encodes non-ASCII as UTF-8 while servers decode latin-1, and some
# intermediaries drop empty fields -- any of those would alter the value in transit.
_SAFE_VALUE = re.compile(rb"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
_TRACE_PERSON = b"kafka-ingress-tp"  # blake2b personalisation: keeps trace IDs domain-separated
# Copying a personalised hash is cheaper than making one with its parameters (per record).
_TRACE_HASH = hashlib.blake2b(digest_size=16, person=_TRACE_PERSON)

# Everything printable except '%' (the escape itself) and space (unsafe at the ends).
_KEY_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")

_ERROR_TEXT_LIMIT = 500
_DELTA_SECONDS = re.compile(r"[0-9]+")


def build_request(
    *,
    subscription_id: str,
    record: KafkaRecord,
    target: Target,
    max_body_bytes: int,
    attempt: int = 1,
    invocation_id: str | None = None,
    timeout_s: float | None = None,
) -> InvocationRequest:
    """Map one Kafka record to the request that invokes ``target``.

    ``invocation_id`` saves computing the record's ID again when the caller already has it;
    ``timeout_s`` is the subscription's invocation timeout. The request keeps ``record``.

    Raises :class:`TerminalInvokeError` when this record can never be delivered; the caller
    fails (dead-letters) that one record and carries on.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    size = record.size
    if size > max_body_bytes:
        raise TerminalInvokeError(
            f"{_where(record)} is {size} bytes (key + value + headers), above the limit of "
            f"{max_body_bytes} bytes (max_body_bytes)"
        )

    key = _decode_key(record.key)
    if target.keyed:
        kind = "workflow ID" if target.service_type is ServiceType.WORKFLOW else "object key"
        if record.key is None or record.key == b"":
            raise TerminalInvokeError(
                f"{_where(record)} has {'no' if record.key is None else 'an empty'} key, but "
                f"{target.service}/{target.handler} is keyed: the record key is its {kind}"
            )
        if key is None:
            raise TerminalInvokeError(
                f"{_where(record)} has a key that is not valid UTF-8 "
                f"({len(record.key)} bytes), but "
                f"{target.service}/{target.handler} is keyed: the {kind} must be UTF-8 text"
            )

    value = record.value or b""
    if target.input_kind is InputKind.JSON:
        content_type = CONTENT_TYPE_JSON
        # Validate only; the handler gets the producer's bytes untouched. An empty value is
        # treated like a null one (empty body) since HTTP cannot tell them apart anyway.
        if value:
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise TerminalInvokeError(
                    f"{_where(record)} value is not valid JSON ({exc}), but "
                    f"{target.service}/{target.handler} takes JSON input"
                ) from exc
    else:
        content_type = CONTENT_TYPE_RAW

    inv_id = invocation_id or derive_invocation_id(
        subscription_id, record.topic, record.partition, record.offset
    )
    headers: dict[str, str] = {
        "content-type": content_type,
        HEADER_SUBSCRIPTION_ID: subscription_id,
        HEADER_KAFKA_TOPIC: record.topic,
        HEADER_KAFKA_PARTITION: str(record.partition),
        HEADER_KAFKA_OFFSET: str(record.offset),
        HEADER_KAFKA_TIMESTAMP: str(record.timestamp_ms),
        HEADER_IDEMPOTENCY_KEY: inv_id,
        HEADER_INVOCATION_ID: inv_id,
        HEADER_ATTEMPT: str(attempt),
    }
    if key is not None:
        headers[HEADER_KAFKA_KEY] = _key_header(key)
    traceparent = ""
    if record.headers:
        # A null header value travels as an empty one over HTTP.
        traceparent = _add_record_headers(tuple((k, v or b"") for k, v in record.headers), headers)
    headers[HEADER_TRACEPARENT] = traceparent or fresh_traceparent(inv_id)
    return InvocationRequest(
        invocation_id=inv_id,
        target=target,
        key=key,
        body=value,
        headers=headers,
        attempt=attempt,
        timeout_s=timeout_s,
        record=record,
    )


def with_attempt(request: InvocationRequest, attempt: int) -> InvocationRequest:
    """The same invocation as attempt number ``attempt``: a retry without re-mapping the record.

    Updates ``x-kafka-ingress-attempt`` and, if the trace was started here (not propagated from
    the record), gives the attempt a span ID of its own in the same trace.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    headers = dict(request.headers)
    headers[HEADER_ATTEMPT] = str(attempt)
    traceparent = headers.get(HEADER_TRACEPARENT, "")
    if traceparent[3:35] == derive_trace_id(request.invocation_id):
        headers[HEADER_TRACEPARENT] = fresh_traceparent(request.invocation_id)
    return replace(request, attempt=attempt, headers=headers)


def _where(record: KafkaRecord) -> str:
    return f"record topic={record.topic} partition={record.partition} offset={record.offset}"


def _key_header(key: str) -> str:
    # Most keys are printable ASCII without '%' or spaces, which quote() returns unchanged;
    # this runs for every record.
    if key.isascii() and key.isprintable() and "%" not in key and " " not in key:
        return key
    return quote(key, safe=_KEY_HEADER_SAFE)


def _decode_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _fold(name: str) -> str:
    # HTTP names are case-insensitive in ASCII only; Unicode lower() could fold a non-token
    # name (e.g. one with a Kelvin sign) onto a real one. Non-ASCII names are never tokens.
    return name.lower() if name.isascii() else name


def _add_record_headers(record_headers: tuple[tuple[str, bytes], ...], out: dict[str, str]) -> str:
    """Add the passable record headers to ``out``; return the propagated traceparent or ``""``.

    Adds ``x-kafka-headers`` with the whole list when any header could not be passed through.
    """
    if not record_headers:
        return ""
    counts = Counter(_fold(name) for name, _ in record_headers)
    traceparent = ""
    if counts[HEADER_TRACEPARENT] == 1:
        for name, value in record_headers:
            if _fold(name) == HEADER_TRACEPARENT:
                if _SAFE_VALUE.fullmatch(value):
                    candidate = value.decode("ascii")
                    if is_valid_traceparent(candidate):
                        traceparent = candidate
                break

    complete = True
    for name, value in record_headers:
        lname = _fold(name)
        if lname == HEADER_TRACEPARENT:
            # Sent as our own traceparent header, verbatim, when valid; else replaced.
            complete = complete and bool(traceparent)
            continue
        if (
            counts[lname] == 1
            and _TOKEN.fullmatch(name)
            and _SAFE_VALUE.fullmatch(value)
            and lname not in _RESERVED_NAMES
            and not lname.startswith(_RESERVED_PREFIXES)
            # tracestate belongs to the record's trace; alongside a fresh trace it would lie.
            and (lname != HEADER_TRACESTATE or traceparent)
        ):
            out[name] = value.decode("ascii")
        else:
            complete = False
    if not complete:
        out[HEADER_KAFKA_HEADERS] = encode_kafka_headers(record_headers)
    return traceparent


def encode_kafka_headers(record_headers: tuple[tuple[str, bytes], ...]) -> str:
    """The ``x-kafka-headers`` value: compact, ASCII-only JSON ``[[name, base64(value)], ...]``."""
    # Stdlib json, not orjson: ensure_ascii keeps the header value ASCII, and it escapes
    # rather than rejects names holding lone surrogates. Only unusual records get here.
    return json.dumps(
        [[name, base64.b64encode(value).decode("ascii")] for name, value in record_headers],
        ensure_ascii=True,
        separators=(",", ":"),
    )


def decode_kafka_headers(value: str) -> list[tuple[str, bytes]]:
    """Inverse of the ``x-kafka-headers`` encoding, for handlers and tests."""
    return [(name, base64.b64decode(data, validate=True)) for name, data in json.loads(value)]


# --- tracing ---------------------------------------------------------------------------------


def is_valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a W3C trace-context ``traceparent`` we may propagate unchanged.

    Version 00 must be exactly 55 characters; higher versions may append ``-``-prefixed fields,
    as the specification requires receivers to accept. Version ``ff`` and all-zero IDs are
    invalid.
    """
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return False
    version, trace_id, parent_id, _flags, tail = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_SPAN_ID:
        return False
    return not (version == "00" and tail is not None)


def derive_trace_id(inv_id: str) -> str:
    """The trace ID for an invocation without a usable traceparent: stable across retries."""
    digest = _TRACE_HASH.copy()
    digest.update(inv_id.encode())
    trace_id = digest.hexdigest()
    # All-zero is invalid in W3C trace context; astronomically unlikely, but keep it total.
    return trace_id if trace_id != _ZERO_TRACE_ID else "0" * 31 + "1"


def fresh_traceparent(inv_id: str) -> str:
    """A new sampled ``traceparent``: the derived trace ID and a random span ID."""
    # A span ID is unique, not secret (OpenTelemetry's SDK draws it the same way); the
    # module's generator is reseeded in a forked child, and this runs for every record.
    span_id = f"{random.getrandbits(64) or 1:016x}"
    return f"00-{derive_trace_id(inv_id)}-{span_id}-01"


# --- URLs -----------------------------------------------------------------------------------


def invoke_url(base_url: str, target: Target, key: str | None) -> str:
    """``POST`` URL of ``target`` under ``base_url`` (which may have a path and trailing slash).

    Service handlers: ``{base}/invoke/{service}/{handler}``; keyed (virtual object, workflow):
    ``{base}/invoke/{service}/{key}/{handler}`` with every segment percent-encoded.
    """
    base = base_url.rstrip("/")
    if not target.keyed:
        return base + invoke_path(target.service, target.handler, None)
    if not key:
        raise TerminalInvokeError(
            f"{target.service}/{target.handler} is keyed but the invocation has no key"
        )
    return base + invoke_path(target.service, target.handler, key)


def discover_url(base_url: str) -> str:
    """``GET`` URL of the deployment's discovery manifest."""
    return f"{base_url.rstrip('/')}/discover"


# --- responses ------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts are case-sensitive; aiohttp's CIMultiDictProxy is not and answered above.
    for candidate, candidate_value in headers.items():
        if candidate.lower() == name:
            return candidate_value
    return None


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), or ``None``.

    A date in the past means "now" (0.0). Anything unparseable is ignored (``None``), as RFC
    9110 lets a recipient do, so a malformed header never turns a retry into something else.
    """
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            # "-0000" parses as naive; HTTP-dates are always GMT, never local time.
            when = when.replace(tzinfo=UTC)
        timestamp = when.timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    current = time.time() if now is None else now
    return max(0.0, timestamp - current)


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _error_text(body: bytes) -> str:
    if not body.strip():
        return "(empty body)"
    text: str | None = None
    if body.lstrip()[:1] == b"{":
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            text = parsed["message"]
    if text is None:
        # 4 bytes per character at most: decoding more than that can never be shown.
        text = body[: _ERROR_TEXT_LIMIT * 4].decode("utf-8", "replace")
    text = text.strip()
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[:_ERROR_TEXT_LIMIT] + "…"
    return text


def outcome_from_http(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Outcome:
    """Map a handler's HTTP response to an :class:`Outcome`.

    2xx ack; 408, 429 and 5xx retry (honouring ``Retry-After``); other 4xx terminal; anything
    else (1xx, 3xx, out of range) terminal, since redirects are not followed.
    """
    if 200 <= status < 300:
        return Outcome.ack(body)
    if status in (408, 429) or 500 <= status < 600:
        retry_after_header = _header(headers, "retry-after")
        retry_after = (
            None if retry_after_header is None else parse_retry_after(retry_after_header, now=now)
        )
        return Outcome.retry(
            f"handler returned {_status_text(status)}: {_error_text(body)}", retry_after
        )
    if 400 <= status < 500:
        return Outcome.terminal(f"handler returned {_status_text(status)}: {_error_text(body)}")
    detail = "only 2xx acknowledges an invocation"
    if 300 <= status < 400:
        location = _header(headers, "location")
        detail = "redirects are not followed; point the deployment at the final URL" + (
            f" (Location: {location})" if location else ""
        )
    return Outcome.terminal(f"handler returned unexpected {_status_text(status)}: {detail}")
