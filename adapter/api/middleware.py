"""ASGI middleware of the admin API: version prefixes and the bearer token.

Restate's tooling calls ``/v2/...``, ``/v3/...`` or ``/v4/...`` depending on the version it
negotiated with ``/version``; the prefix is stripped here and the version kept in the request
state (registration defaults differ in v2). Then, when a token is configured, every request
but the public ones (health checks) must carry ``Authorization: Bearer <token>``; the token is
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from adapter.api.errors import error_response

__all__ = ["ADMIN_AUTHENTICATED", "UNAUTHORIZED_MESSAGE", "VERSION_PREFIXES", "AdminMiddleware"]

ADMIN_AUTHENTICATED = "admin_authenticated"
"""Request state key: True when the request carries the admin token (or none is needed)."""

UNAUTHORIZED_MESSAGE = "missing or wrong bearer token: send Authorization: Bearer <admin token>"
"""The 401 answer's message (no secret in it: it names the header, not a value)."""

VERSION_PREFIXES = (2, 3, 4)
# ASCII digits without leading zeros: /v02, /v0004 and /v٢ are not version prefixes.
_PREFIX = re.compile(r"^/v([1-9][0-9]{0,2})(/.*)?$", re.ASCII)


class AdminMiddleware:
    def __init__(self, app: ASGIApp, *, token: str | None, public_paths: frozenset[str]):
        self._app = app
        self._token = token.encode() if token else None
        self._public = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        match = _PREFIX.match(scope["path"])
        if match and int(match[1]) in VERSION_PREFIXES:
            rest = match[2] or "/"
            prefix_len = len(scope["path"]) - len(rest)
            raw = scope.get("raw_path")
            scope = {
                **scope,
                "path": rest,
                "state": {**scope.get("state", {}), "admin_api_version": int(match[1])},
            }
            if isinstance(raw, bytes):
                scope["raw_path"] = raw[prefix_len:]
        authenticated = self._authenticated(scope)
        # Public routes (health checks) answer everyone, but say more to an administrator.
        scope = {**scope, "state": {**scope.get("state", {}), ADMIN_AUTHENTICATED: authenticated}}
        if scope["path"] not in self._public and not authenticated:
            # A constant: the masker would take it for a credential and garble it.
            response = error_response(
                401, UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"}, mask=False
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _authenticated(self, scope: Scope) -> bool:
        """Whether the request carries the admin token (always, when none is configured)."""
        if self._token is None:
            return True
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token)
