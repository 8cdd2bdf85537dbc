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

__all__ = ["VERSION_PREFIXES", "AdminMiddleware"]

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
        if self._token is not None and scope["path"] not in self._public:
            given = b""
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    given = value
                    break
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credential.strip(), self._token
            ):
                response = error_response(
                    401,
                    "missing or wrong bearer token: send Authorization: Bearer <admin token>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
