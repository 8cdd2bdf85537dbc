"""A small synchronous client of the admin API, for the CLI and scripts.

Every failure is an :class:`AdminApiError` carrying the HTTP status (0 when the API could not
be reached) and the server's ``message``; aiohttp's exceptions never escape. Each call runs its
request in an event loop of its own (``asyncio.run``): the CLI makes a call or two, so one
connection per call costs nothing worth a pool, and nothing async leaks into the caller.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from adapter.errors import IngressError
from adapter.masking import mask_secrets

__all__ = ["DEFAULT_URL", "AdminApiError", "AdminClient"]

DEFAULT_URL = "http://127.0.0.1:9070"


class AdminApiError(IngressError):
    """``body``: the decoded JSON error answer, when there was one (e.g. a refused plan)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class AdminClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._headers = {"accept": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def close(self) -> None:
        """Nothing stays open between calls; kept for ``with`` and callers that close."""

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty one); AdminApiError otherwise."""
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            status, reason, content_type, content = asyncio.run(
                self._send(method, path, body, clean)
            )
        except TimeoutError as exc:
            raise AdminApiError(
                0, mask_secrets(f"the admin API at {self.url} did not answer in time")
            ) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            # --admin-url may carry user:password@, and aiohttp's messages quote the URL.
            raise AdminApiError(
                0, mask_secrets(f"cannot reach the admin API at {self.url}: {exc}")
            ) from exc
        text = content.decode("utf-8", errors="replace")
        if status >= 400:
            decoded: Any = None
            try:
                decoded = json.loads(content)
                message = str(decoded["message"])
            except (ValueError, KeyError, TypeError):
                message = text[:500] or reason
            raise AdminApiError(status, message, decoded)
        if not content:
            return None
        if "json" not in content_type:
            return text
        return json.loads(content)

    async def _send(
        self, method: str, path: str, body: Any, params: dict[str, str]
    ) -> tuple[int, str, str, bytes]:
        async with (
            aiohttp.ClientSession(headers=self._headers, timeout=self._timeout) as session,
            session.request(
                method,
                f"{self.url}{path}",
                json=body,
                params=params,
                allow_redirects=False,
            ) as response,
        ):
            content = await response.read()
            return (
                response.status,
                response.reason or "",
                response.headers.get("content-type", ""),
                content,
            )
