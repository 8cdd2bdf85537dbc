"""A small synchronous client of the admin API, for the CLI and scripts.

Every failure is an :class:`AdminApiError` carrying the HTTP status (0 when the API could not
be reached) and the server's ``message``; httpx's exceptions never escape.
"""

from __future__ import annotations

from typing import Any

import httpx

from adapter.errors import IngressError

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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._client.close()

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
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, json=body, params=clean)
        except httpx.TimeoutException as exc:
            raise AdminApiError(0, f"the admin API at {self.url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise AdminApiError(0, f"cannot reach the admin API at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            decoded: Any = None
            try:
                decoded = response.json()
                message = str(decoded["message"])
            except (ValueError, KeyError, TypeError):
                message = response.text[:500] or response.reason_phrase
            raise AdminApiError(response.status_code, message, decoded)
        if not response.content:
            return None
        if "json" not in response.headers.get("content-type", ""):
            return response.text
        return response.json()
