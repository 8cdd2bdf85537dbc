"""Lambda's ``Invoke`` API (RequestResponse) over aiohttp, on the event loop.

boto3 is synchronous: run on worker threads, each call cost ~1.5 ms of CPU and a hop through
the GIL, against ~1 ms here (``bench``: a 100-record batch against the local Lambda endpoint).
Like the ledger's BatchWriteItem (:mod:`adapter.store.ledger_client`), this one hot call is
spoken directly: the request is signed with botocore's SigV4 signer; botocore still resolves
the endpoint (region, partition, ``endpoint_url``, FIPS/dual-stack settings) and the
credentials (the whole provider chain, refreshed before they expire). As boto3 does, proxies
come from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` and extra CA certificates from
``AWS_CA_BUNDLE``.

What becomes what:

    HTTP 200                                      LambdaReply (payload, X-Amz-Function-Error)
    HTTP error with an error type                 outcome_from_client_error (type from
                                                  ``x-amzn-ErrorType`` or the body)
    connection refused/reset, DNS, TLS            Outcome.retry
    no answer within the deadline                 Outcome.retry
    no credentials                                Outcome.retry (they may be provided later)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from botocore.httpsession import where
from yarl import URL

from adapter.invokers.base import Outcome, check_fence
from adapter.invokers.lambda_errors import LambdaReply, outcome_from_client_error
from adapter.sigv4 import frozen_credentials, signed_headers

__all__ = ["LambdaClient", "invoke_error"]

_Proxy = tuple[URL | None, aiohttp.BasicAuth | None]

MAX_SYNC_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's limit for a synchronous (RequestResponse) request payload."""
_API_VERSION = "2015-03-31"
_USERINFO = re.compile(r"//[^/@]*@")


def invoke_error(
    function: str, status: int, headers: Any, body: bytes
) -> tuple[str, str, float | None]:
    """The error type, message and Retry-After of a failed Invoke, read as botocore reads
    a REST-JSON error: the type from ``x-amzn-ErrorType`` (``Type:uri``), else from the body's
    ``__type``/``code``; the message from ``message``/``Message``."""
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = str(headers.get("x-amzn-ErrorType") or "").split(":", 1)[0]
    if not code:
        code = str(data.get("__type") or data.get("code") or "").rsplit("#", 1)[-1]
    message = str(data.get("message") or data.get("Message") or "")
    if not code:
        code = f"HTTP {status}"
        message = message or body[:200].decode("utf-8", "replace")
    retry_after: Any = headers.get("Retry-After") or data.get("retryAfterSeconds")
    try:
        wait = max(0.0, float(retry_after)) if retry_after is not None else None
    except (TypeError, ValueError):
        wait = None
    return code, message, wait


class LambdaClient:
    """Invoke API calls for one poller, shared by its Lambda invokers.

    Created outside any event loop; the connection pool opens on first use in the running
    loop and is bound to it. Endpoint and credentials are resolved once, on first use, by
    botocore (on a worker thread: it may read files or call a metadata service).

    ``max_connections`` is the size of the pool (0: no bound). As many calls at most are in
    the pool at once: the others wait for a slot before the send fence is checked, never for
    a connection after it (:mod:`adapter.invokers.slots`).
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        timeout_s: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_connections < 0:
            raise ValueError(f"max_connections must be >= 0 (0 = no bound), got {max_connections}")
        self.endpoint_url = endpoint_url
        self.region = region
        self.timeout_s = timeout_s
        self._max_connections = max_connections
        # One slot per pooled connection, held until the response is read; per batch, so a
        # plain semaphore (no bound: a context that does nothing).
        self._slots: contextlib.AbstractAsyncContextManager[object] = (
            asyncio.Semaphore(max_connections) if max_connections else contextlib.nullcontext()
        )
        self._base: str | None = None
        self._credentials: Credentials | None = None
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        self._session: aiohttp.ClientSession | None = None
        self._resolving: asyncio.Lock | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"LambdaClient(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"timeout_s={self.timeout_s})"
        )

    def _resolve_sync(self) -> tuple[str, Credentials | None, _Proxy]:
        import boto3

        session = boto3.session.Session()
        client = session.client("lambda", endpoint_url=self.endpoint_url, region_name=self.region)
        try:
            base = str(client.meta.endpoint_url).rstrip("/")
        finally:
            client.close()
        # The environment's proxy for the endpoint, read once: aiohttp's trust_env reads it
        # (and ~/.netrc) again on a worker thread for every call.
        try:
            proxy: _Proxy = get_env_proxy_for_url(URL(base))
        except LookupError:
            proxy = (None, None)
        return base, session.get_credentials(), proxy

    async def _resolved(self) -> tuple[str, Credentials | None]:
        if self._base is None:
            if self._resolving is None:
                self._resolving = asyncio.Lock()
            async with self._resolving:
                if self._base is None:
                    base, credentials, proxy = await asyncio.to_thread(self._resolve_sync)
                    self._credentials = credentials
                    self._proxy, self._proxy_auth = proxy
                    self._base = base
        return self._base, self._credentials

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            bundle = os.environ.get("AWS_CA_BUNDLE") or where()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    ssl=ssl.create_default_context(cafile=bundle),
                ),
                # HTTPS_PROXY / NO_PROXY as boto3 reads them: resolved once (_resolve_sync)
                # and given with each call; no ~/.netrc credentials next to the signature.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _timeout(self, deadline: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(deadline)
        if timeout is None:
            # The connect timeout stays below the total: a call stuck before it is sent (name
            # resolution, TCP, TLS) ends as a connect timeout, never as the total's timeout,
            # which says the function may have run.
            timeout = aiohttp.ClientTimeout(total=deadline, connect=min(5.0, deadline / 2))
            self._timeouts[deadline] = timeout
        return timeout

    async def invoke(
        self, function: str, payload: bytes, *, timeout_s: float | None = None
    ) -> LambdaReply | Outcome:
        """Invoke ``function`` with ``payload``; a failure of the call comes back as an
        Outcome (see the module docstring)."""
        if self._closed:
            raise RuntimeError("LambdaClient is closed")
        if len(payload) > MAX_SYNC_PAYLOAD_BYTES:
            return Outcome.terminal(
                f"Lambda event for {function} is {len(payload)} bytes, above Lambda's "
                f"{MAX_SYNC_PAYLOAD_BYTES}-byte limit for synchronous invocations (raw bodies "
                "grow by a third in base64); lower max-record-bytes or batch.size"
            )
        deadline = timeout_s or self.timeout_s
        try:
            base, credentials = await self._resolved()
            if credentials is None:
                return Outcome.retry(f"Lambda Invoke {function}: no AWS credentials found")
            frozen = await frozen_credentials(credentials)
        except BotoCoreError as exc:
            return Outcome.retry(f"Lambda Invoke {function}: {type(exc).__name__}: {exc}")
        async with self._slots:
            url = f"{base}/{_API_VERSION}/functions/{quote(function, safe='')}/invocations"
            headers = signed_headers(
                frozen,
                service="lambda",
                region=self.region,
                url=url,
                body=payload,
                headers={"X-Amz-Invocation-Type": "RequestResponse"},  # what boto3 signs
            )
            # Last, once signed: after the slot (it may have waited for one), after resolving
            # the endpoint or refreshing credentials (either may have waited), and after any
            # pause since the engine's check; no wait for a connection follows.
            check_fence()
            try:
                async with self._open().post(
                    URL(url, encoded=True),
                    data=payload,
                    headers=headers,
                    timeout=self._timeout(deadline),
                    allow_redirects=False,
                    proxy=self._proxy,
                    proxy_auth=self._proxy_auth,
                ) as response:
                    body = await response.read()
                    if response.status < 300:
                        return LambdaReply(
                            function, body, response.headers.get("X-Amz-Function-Error")
                        )
                    code, message, wait = invoke_error(
                        function, response.status, response.headers, body
                    )
                    return outcome_from_client_error(
                        function, code, message, status=response.status, retry_after=wait
                    )
            except aiohttp.ConnectionTimeoutError:
                return Outcome.retry(f"Lambda Invoke {function}: connecting to {base} timed out")
            except TimeoutError:
                # Connected and sent: the function may be running (past our deadline).
                return Outcome.unanswered(f"Lambda Invoke {function} timed out after {deadline:g}s")
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
                reason = _USERINFO.sub("//", str(exc)) or type(exc).__name__
                return Outcome.unanswered(f"Lambda Invoke {function}: no answer: {reason}")
            except aiohttp.ClientConnectorError as exc:
                reason = _USERINFO.sub("//", str(exc.os_error or exc))
                return Outcome.retry(
                    f"Lambda Invoke {function}: cannot connect to {base}: {reason}"
                )
            except aiohttp.ClientOSError as exc:
                # Connected: a reset while sending or waiting for the answer (a proxy or load
                # balancer ending a slow call). The function may have run.
                reason = _USERINFO.sub("//", str(exc)) or type(exc).__name__
                return Outcome.unanswered(f"Lambda Invoke {function}: no answer: {reason}")
            except aiohttp.ClientError as exc:
                reason = _USERINFO.sub("//", str(exc)) or type(exc).__name__
                return Outcome.retry(f"Lambda Invoke {function}: {type(exc).__name__}: {reason}")

    async def aclose(self) -> None:
        """Close the connection pool (calls in flight fail as retries). Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
