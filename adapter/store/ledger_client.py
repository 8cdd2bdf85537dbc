"""DynamoDB's BatchWriteItem over aiohttp: the invocation ledger's one hot call.

boto3 spends most of the ledger path's CPU on request validation, serialisation and signing,
and running it in worker threads takes the GIL from the event loop (bench/: ~120 ms CPU per
1,000 rows against ~60 ms here). So this module speaks DynamoDB's JSON protocol for this single
operation itself: the body is the low-level item JSON (orjson), signed with botocore's SigV4
signer, and sent on the event loop. Everything else stays on boto3 (:mod:`adapter.store.dynamo`).

Errors are mapped at this boundary; nothing from aiohttp escapes:

    HTTP 200                                  -> the items DynamoDB left unprocessed (re-send)
    HTTP 400 throttling ``__type``, HTTP 5xx  -> the whole chunk is still to send (re-send)
    HTTP 400 ValidationException, item size   -> ItemTooLargeError (never re-send: it cannot
                                                 succeed; the writer isolates the row)
    any other status                          -> StoreError(``__type``: message)
    aiohttp error, timeout                    -> StoreError ... from exc

Re-sending, with capped exponential backoff until a deadline, is the caller's loop
(:meth:`adapter.store.dynamo.DynamoStore.write_entries`); :func:`batch_write_outcome` is the pure
response → outcome mapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from botocore.credentials import Credentials

from adapter.errors import ItemTooLargeError, StoreError
from adapter.sigv4 import frozen_credentials, signed_headers

__all__ = ["LedgerClient", "Throttled", "batch_write_outcome"]

_TARGET = "DynamoDB_20120810.BatchWriteItem"
_CONTENT_TYPE = "application/x-amz-json-1.0"
_THROTTLING = (
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
)
_WHAT = "write invocation ledger"


class Throttled:
    """Outcome of a request DynamoDB refused for now (throttling, 5xx): send it all again."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Throttled({self.reason!r})"


def _error_type(body: dict[str, Any]) -> str:
    # "com.amazonaws.dynamodb.v20120810#ThrottlingException" -> "ThrottlingException"
    return str(body.get("__type", "")).rsplit("#", 1)[-1]


def _error_message(body: dict[str, Any]) -> str:
    return str(body.get("message") or body.get("Message") or "")[:300]


def batch_write_outcome(status: int, payload: bytes, table: str) -> list[Any] | Throttled:
    """Map one BatchWriteItem response to what is left to do.

    A list: the put/delete requests DynamoDB did not process (empty when all were written).
    :class:`Throttled`: nothing was written, send the whole chunk again after a backoff.
    Raises ItemTooLargeError for a row over DynamoDB's item limit and StoreError for every
    other failure; the message carries DynamoDB's error type and message, never the request or
    its headers.
    """
    try:
        body = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status == 200:
        unprocessed: list[Any] = body.get("UnprocessedItems", {}).get(table, [])
        return unprocessed
    kind = _error_type(body)
    message = _error_message(body)
    detail = f"{kind}: {message}" if kind and message else kind or message or "no error body"
    if (status == 400 and kind.endswith(_THROTTLING)) or status >= 500:
        return Throttled(f"HTTP {status} {detail}")
    if status == 400 and kind == "ValidationException" and "item size" in message.lower():
        # As the boto3 path maps it (DynamoStore._call_sync): not a StoreError, which means
        # "try again", but a refusal of what was sent.
        raise ItemTooLargeError(f"{_WHAT}: HTTP {status} {detail}")
    raise StoreError(f"{_WHAT}: HTTP {status} {detail}")


class LedgerClient:
    """An async BatchWriteItem client; owns one aiohttp session.

    The session is opened lazily in the running event loop and released by :meth:`aclose`;
    a later call opens a new one (a store outlives a stopped poller in tests and ``make dev``).
    Using it from a second event loop while a session is open is a programming error.

    ``credentials`` are botocore's (``boto3.Session().get_credentials()``);
    ``get_frozen_credentials()`` is called
    for every request so refreshable credentials (assumed roles, instance profiles) keep
    working. A refresh does blocking I/O, so it runs in a worker thread.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        credentials: Credentials,
        on_request: Callable[[], None] = lambda: None,
        max_connections: int = 32,
        connect_timeout_s: float = 3,
        timeout_s: float = 10,
    ) -> None:
        if not endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must be an http(s) URL, got {endpoint_url!r}")
        if not region:
            raise ValueError("region must be set (the SigV4 signature covers it)")
        self._url = endpoint_url
        self._region = region
        self._credentials = credentials
        self._on_request = on_request
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "idle"
        return f"LedgerClient({self._url!r}, region={self._region!r}, {state})"

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None:
            if self._loop is not loop:
                raise RuntimeError(
                    "LedgerClient is open in another event loop; aclose() it in that loop first"
                )
            return self._session
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=self._timeout,
        )
        self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()

    async def batch_write(self, table: str, requests: list[Any]) -> list[Any] | Throttled:
        """Send one BatchWriteItem (at most 25 requests) for ``table``; see
        :func:`batch_write_outcome` for the result."""
        session = self._open()
        body = orjson.dumps({"RequestItems": {table: requests}})
        headers = signed_headers(
            await frozen_credentials(self._credentials),
            service="dynamodb",
            region=self._region,
            url=self._url,
            body=body,
            headers={"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET},
        )
        self._on_request()
        try:
            async with session.post(self._url, data=body, headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreError(f"{_WHAT}: {reason}") from exc
        return batch_write_outcome(status, payload, table)
