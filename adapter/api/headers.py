"""A deployment's ``additional_headers``: validated on the way in, masked on the way out.

The headers go on every request to the deployment, so a value with CR or LF would let an
admin request smuggle headers (or a whole request) into the handler traffic; names must be
HTTP tokens (RFC 9110) and values visible ASCII, space or tab. Credentials are usually
carried in these headers (``authorization``, API keys, or a custom ``X-Shared-Pw``), so the
API shows only the values of headers on a short list of harmless ones (:data:`SHOWN_HEADERS`);
every other value is shown as ``***`` and masked wherever it may appear in a log line.
Headers that would break the request itself (``Host``, ``Content-Length`` ...) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from adapter.errors import ValidationError
from adapter.kafka.options import SECRET_MASK
from adapter.masking import remember_secret

__all__ = [
    "SHOWN_HEADERS",
    "is_secret_header",
    "mask_headers",
    "remember_header_secrets",
    "restore_masked_headers",
    "validate_headers",
]

MAX_HEADERS = 64
MAX_NAME_LENGTH = 256
MAX_VALUE_LENGTH = 8 * 1024

SHOWN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "content-language",
        "content-type",
        "user-agent",
        "x-request-id",
        "x-correlation-id",
        "traceparent",
        "tracestate",
    }
)
"""Headers whose values are shown; every other value is treated as a credential."""

# Set by the HTTP client from the request itself; a second value would corrupt the request
# or smuggle another one in.
_REFUSED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-connection",
    }
)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


def is_secret_header(name: str) -> bool:
    return name.lower() not in SHOWN_HEADERS


def remember_header_secrets(headers: Mapping[str, str]) -> None:
    """Mask the values of credential headers in every log line and error from now on."""
    for name, value in headers.items():
        if is_secret_header(name):
            remember_secret(value)


def validate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers unchanged, or ValidationError naming the first bad one (never its value)."""
    seen: dict[str, str] = {}
    if len(headers) > MAX_HEADERS:
        raise ValidationError(f"additional_headers: at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if len(name) > MAX_NAME_LENGTH or len(value) > MAX_VALUE_LENGTH:
            raise ValidationError(
                f"additional_headers: names are at most {MAX_NAME_LENGTH} characters and values "
                f"at most {MAX_VALUE_LENGTH}"
                + ("" if len(name) > MAX_NAME_LENGTH else f" (header {name!r})")
            )
        if not _TOKEN.match(name):
            raise ValidationError(
                f"additional_headers: {name!r} is not a valid header name (letters, digits "
                "and !#$%&'*+-.^_`|~ only)"
            )
        if not _VALUE.match(value):
            raise ValidationError(
                f"additional_headers: the value of {name!r} contains a control character "
                "(CR, LF or similar) or non-ASCII text; header values must be printable ASCII"
            )
        lowered = name.lower()
        if lowered in _REFUSED_HEADERS:
            raise ValidationError(
                f"additional_headers: {name!r} cannot be set; the poller sets it from the "
                "request itself"
            )
        if lowered in seen:
            raise ValidationError(
                f"additional_headers: {seen[lowered]!r} and {name!r} are the same header "
                "(names are case-insensitive)"
            )
        seen[lowered] = name
    remember_header_secrets(headers)
    return dict(headers)


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    remember_header_secrets(headers)
    return {k: SECRET_MASK if is_secret_header(k) else v for k, v in headers.items()}


def restore_masked_headers(
    given: Mapping[str, str], stored: Mapping[str, str] | None
) -> dict[str, str]:
    """``given`` with each ``***`` of a credential header replaced by its stored value."""
    stored_by_name = {k.lower(): v for k, v in (stored or {}).items()}
    out: dict[str, str] = {}
    for name, value in given.items():
        if value == SECRET_MASK and is_secret_header(name):
            if name.lower() not in stored_by_name:
                raise ValidationError(
                    f"additional_headers: {name!r} is {SECRET_MASK!r}, the mask of a stored "
                    "value, but this deployment has no stored value to keep; give the value"
                )
            value = stored_by_name[name.lower()]
        out[name] = value
    return out
