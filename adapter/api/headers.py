"""A deployment's ``additional_headers``: validated on the way in, masked on the way out.

The headers go on every request to the deployment, so a value with CR or LF would let an
admin request smuggle headers (or a whole request) into the handler traffic; names must be
HTTP tokens (RFC 9110) and values visible ASCII, space or tab. Credentials are usually
carried in these headers (``authorization``, API keys), so the API never shows such values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from adapter.errors import ValidationError
from adapter.kafka.options import SECRET_MASK, is_secret

__all__ = ["is_secret_header", "mask_headers", "validate_headers"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "apikey"}
)
_SECRET_WORDS = ("token", "auth", "key", "credential", "signature")


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS
        or is_secret(lowered)
        or any(word in lowered for word in _SECRET_WORDS)
    )


def validate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers unchanged, or ValidationError naming the first bad one (never its value)."""
    seen: dict[str, str] = {}
    for name, value in headers.items():
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
        if lowered in seen:
            raise ValidationError(
                f"additional_headers: {seen[lowered]!r} and {name!r} are the same header "
                "(names are case-insensitive)"
            )
        seen[lowered] = name
    return dict(headers)


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: SECRET_MASK if is_secret_header(k) else v for k, v in headers.items()}
