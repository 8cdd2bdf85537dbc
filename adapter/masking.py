"""Masking secrets in free text (log lines, error messages, ``last_error``), in linear time.

Three passes, each a single left-to-right scan with no backtracking, so the cost is
proportional to the length of the text whatever it contains (a 1 MB option name costs what
1 MB of prose costs; see ``python -m bench masking``):

1. **Known secret values.** Every secret the process handles (secret options, credentials in
   URIs, deployment header values that are not on the harmless list, the admin token) is
   registered with :func:`remember_secret`. Each occurrence of the value, of its URL-encoded
   forms and of its base64 forms (also inside a longer base64 text such as an HTTP Basic
   credential, at any alignment) is replaced by ``***``.
2. **URI userinfo.** ``scheme://user:password@host`` becomes ``scheme://***@host`` wherever a
   URI appears.
3. **Secret-named pairs.** ``key=value``, ``key: value``, ``"key": "value"`` where the key names
   a secret (``password``, ``secret``, ``token``, ``authorization`` ...) keep the key and lose
   the value; an authorisation scheme (``Bearer``, ``Basic`` ...) loses the credential after it.

The scans use :mod:`re` only for single character classes matched at a given position (``[...]+``
cannot backtrack into anything) and ``str.find``/``str.replace`` for literal needles.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "forget_secrets",
    "mask_secrets",
    "mask_userinfo",
    "remember_secret",
    "remember_uri_credentials",
    "secret_forms",
]

MASK = "***"
MIN_SECRET_LENGTH = 6
"""Shorter values are not masked by value (they would hide ordinary words); names still mask
them in ``key=value`` pairs."""

_MAX_REMEMBERED = 256
_MIN_BASE64_FRAGMENT = 8

# Words that make a key (option, field, header or variable name) name a secret.
_SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "passphrase",
    "token",
    "sasl.username",
    "sasl.jaas.config",
    "sasl.oauthbearer.config",
    "authorization",
    "cookie",
    "credential",
    "api-key",
    "api_key",
    "apikey",
    "private-key",
    "private_key",
)
_AUTH_SCHEMES = frozenset({"basic", "bearer", "digest", "negotiate", "token", "aws4-hmac-sha256"})

# Single character classes, matched at a position: linear, nothing to backtrack into.
_KEY_CHARS = re.compile(r"[\w.\-]+")
_SPACES = re.compile(r"[ \t]*")
_BARE_VALUE = re.compile(r"[^\s,}\]]+")
_AUTHORITY = re.compile(r"[^/?#\s\"'<>\\]*")
_INTERESTING = re.compile(r"://|[:=]")
_ESCAPE = re.compile(r"%[0-9A-F]{2}")


class _Registry:
    """The secret values seen so far and the needles derived from them (longest first).

    Each value's forms are derived once, when it is first remembered, and counted (two values
    can share a form): adding or evicting one costs its own forms plus a sort of the needles,
    not every value's forms again. The least recently remembered value is evicted first, and
    remembering a value again makes it the most recent, so a value still in use (parsed again
    whenever its configuration is) is not pushed out by a stream of one-off values.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, frozenset[str]] = {}  # in order of last remembering
        self._counts: dict[str, int] = {}  # needle -> how many remembered values have it
        self.needles: tuple[str, ...] = ()

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH or value == MASK:
            return
        with self._lock:
            forms = self._values.pop(value, None)
            if forms is not None:
                self._values[value] = forms  # most recent again; needles unchanged
                return
        forms = frozenset(secret_forms(value))  # outside the lock: the costly part
        with self._lock:
            if value in self._values:
                return
            self._values[value] = forms
            for form in forms:
                self._counts[form] = self._counts.get(form, 0) + 1
            while len(self._values) > _MAX_REMEMBERED:
                for form in self._values.pop(next(iter(self._values))):
                    left = self._counts[form] - 1
                    if left:
                        self._counts[form] = left
                    else:
                        del self._counts[form]
            self.needles = tuple(sorted(self._counts, key=len, reverse=True))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._counts.clear()
            self.needles = ()


_REGISTRY = _Registry()


def remember_secret(value: str | None) -> None:
    """Mask ``value`` (and its encodings) in every text masked from now on."""
    if value:
        _REGISTRY.add(value)


def remember_uri_credentials(text: str) -> None:
    """Remember the userinfo (``user:password``) and password of every URI in ``text``."""
    start = text.find("://")
    while start >= 0:
        authority = _AUTHORITY.match(text, start + 3)
        end = authority.end() if authority else start + 3
        at = text.rfind("@", start + 3, end)
        if at >= 0:
            userinfo = text[start + 3 : at]
            remember_secret(userinfo)
            remember_secret(userinfo.partition(":")[2])
        start = text.find("://", end)


def forget_secrets() -> None:
    """Drop every remembered value (tests use it to start clean)."""
    _REGISTRY.clear()


def _base64_fragments(raw: bytes) -> set[str]:
    """The base64 characters that depend on ``raw`` alone, for each of the 3 alignments."""
    out: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        start = -(-8 * shift // 6)  # first character whose bits all come from raw
        end = (8 * (shift + len(raw))) // 6  # one past the last such character
        fragment = encoded[start:end]
        if len(fragment) >= _MIN_BASE64_FRAGMENT:
            out.add(fragment)
            out.add(fragment.replace("+", "-").replace("/", "_"))
    return out


def secret_forms(value: str) -> set[str]:
    """The value as written, URL-encoded, JSON-escaped, and base64-encoded (any alignment)."""
    raw = value.encode("utf-8", "surrogatepass")
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value), json.dumps(value)[1:-1]}
    forms |= {_ESCAPE.sub(lambda m: m.group().lower(), f) for f in forms}
    encoded = base64.b64encode(raw).decode()
    forms |= {encoded, encoded.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    forms |= _base64_fragments(raw)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def _mask_known(text: str) -> str:
    for needle in _REGISTRY.needles:
        if needle in text:
            text = text.replace(needle, MASK)
    return text


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS)


def _key_before(text: str, end: int, floor: int) -> str:
    """The key that ends at ``end`` (after optional spaces and one quote), not before ``floor``."""
    i = end
    while i > floor and text[i - 1] in " \t":
        i -= 1
    if i > floor and text[i - 1] in "\"'":
        i -= 1
    stop = i
    while i > floor and (text[i - 1].isalnum() or text[i - 1] in "_.-"):
        i -= 1
    if i > 0 and text[i - 1] == "/":
        return ""  # a path segment ("http://idp/token: refused"), not a key
    return text[i:stop]


def _value_end(text: str, start: int) -> int:
    """Where the value starting at ``start`` ends: a quoted string or a bare run."""
    if start < len(text) and text[start] in "\"'":
        close = text.find(text[start], start + 1)
        return len(text) if close < 0 else close + 1
    match = _BARE_VALUE.match(text, start)
    return match.end() if match else start


def _masked_value(text: str, start: int, end: int) -> str:
    value = text[start:end]
    if value[:1] in ("'", '"') and len(value) >= 2 and value[-1] == value[0]:
        return f"{value[0]}{MASK}{value[0]}"
    return MASK


def _scan(text: str) -> str:
    """Passes 2 and 3: one walk over the separators ``:``, ``=`` and ``://``."""
    out: list[str] = []
    copied = 0  # text[:copied] is in out (masked as needed)
    floor = 0  # keys are never looked for before this (already consumed)
    pos = 0
    length = len(text)
    while True:
        match = _INTERESTING.search(text, pos)
        if match is None:
            break
        sep_start, sep_end = match.span()
        if match.group() == "://":
            authority = _AUTHORITY.match(text, sep_end)
            auth_end = authority.end() if authority else sep_end
            at = text.rfind("@", sep_end, auth_end)
            if at >= 0:
                out.append(text[copied:sep_end])
                out.append(MASK)
                copied = at
            pos = floor = auth_end if at >= 0 else sep_end
            continue
        key = _key_before(text, sep_start, floor)
        if key and _is_secret_key(key):
            spaces = _SPACES.match(text, sep_end)
            value_start = spaces.end() if spaces else sep_end
            value_end = _value_end(text, value_start)
            # A URL after a secret-named word ("no token: https://idp/token") is what failed,
            # not the secret; the credentials a URL may carry are masked by the URI pass.
            if value_end > value_start and "://" not in text[value_start:value_end]:
                end = value_end
                word = text[value_start:value_end].lower()
                if word in _AUTH_SCHEMES:
                    # "Authorization: Bearer abc": the credential is the next word.
                    after = _SPACES.match(text, value_end)
                    credential_start = after.end() if after else value_end
                    credential = _BARE_VALUE.match(text, credential_start)
                    if credential:
                        out.append(text[copied:credential_start])
                        out.append(MASK)
                        copied = pos = floor = credential.end()
                        continue
                out.append(text[copied:value_start])
                out.append(_masked_value(text, value_start, end))
                copied = pos = floor = end
                continue
        pos = sep_end
        floor = max(floor, sep_start)
        if pos >= length:
            break
    if not out:
        return text
    out.append(text[copied:])
    return "".join(out)


def mask_userinfo(text: str) -> str:
    """Pass 2 alone: ``scheme://user:password@host`` becomes ``scheme://***@host``, the rest
    of ``text`` is left as it is (texts without any secret-named word, labels, names)."""
    start = text.find("://")
    if start < 0:
        return text
    out: list[str] = []
    copied = 0
    while start >= 0:
        authority = _AUTHORITY.match(text, start + 3)
        end = authority.end() if authority else start + 3
        at = text.rfind("@", start + 3, end)
        if at >= 0:
            out.append(text[copied : start + 3])
            out.append(MASK)
            copied = at
        start = text.find("://", end)
    if not out:
        return text
    out.append(text[copied:])
    return "".join(out)


def mask_secrets(text: str) -> str:
    """``text`` with every secret it contains replaced by ``***`` (see the module docstring)."""
    text = _mask_known(text)
    lowered = text.lower()
    # Most texts name no secret: one C-speed search per word spares the walk over separators.
    if not any(word in lowered for word in _SECRET_KEY_WORDS):
        return mask_userinfo(text)
    return _scan(text)
