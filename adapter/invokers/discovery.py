"""Fetching a deployment's discovery manifest: ``GET {uri}/discover`` or the Lambda's own.

The admin API calls this when a deployment is registered. HTTP deployments are asked with the
deployment's ``additional_headers`` (they may need its credentials), no redirects are
followed (register the final URL), and the answer must be a JSON object within the timeout.
Lambda functions are asked through :func:`adapter.invokers.aws_lambda.discover_lambda`.

Every failure becomes a :class:`~adapter.errors.ValidationError` saying what went wrong with
the deployment's address: the caller gave an address that does not serve a manifest. URLs in
messages never include credentials, and an answer is described by its status, content type and
length, never by its body (it may hold anything the address serves).

Bounded: the address must pass :mod:`adapter.invokers.targets` (no link-local or metadata
addresses, no private ones with ``deny_private``) before anything is sent, and the address the
name resolves to when connecting is checked again (:class:`GuardedResolver`); the answer is
read as a stream and refused past ``max_bytes`` (1 MiB).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from adapter import __version__
from adapter.errors import IngressError, ValidationError
from adapter.invokers.targets import (
    GuardedResolver,
    RefusedAddressError,
    TargetRefused,
    check_target,
)

__all__ = ["MAX_MANIFEST_BYTES", "Discovery"]

MAX_MANIFEST_BYTES = 1024 * 1024

_USERINFO = re.compile(r"//[^/@]*@")
_ARN_REGION = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _describe(response: aiohttp.ClientResponse) -> str:
    """Status, content type and declared length: what an error may say about an answer."""
    content_type = response.headers.get("content-type", "none")[:100]
    length = response.headers.get("content-length")
    size = f"{length[:20]} bytes" if length else "no content-length"
    return f"HTTP {response.status}, content-type {content_type!r}, {size}"


class Discovery:
    """``await discovery(uri=..., arn=..., headers=...)`` → the manifest document."""

    def __init__(
        self,
        *,
        lambda_endpoint_url: str | None = None,
        lambda_region: str = "us-east-1",
        timeout_s: float = 10.0,
        sign: Callable[[str], Mapping[str, str]] | None = None,
        deny_private: bool = False,
        max_bytes: int = MAX_MANIFEST_BYTES,
    ) -> None:
        self._deny_private = deny_private
        self._max_bytes = max_bytes
        # A deployment that verifies request signatures verifies discovery too.
        self._sign = sign
        self._lambda_endpoint_url = lambda_endpoint_url
        self._lambda_region = lambda_region
        self._timeout_s = timeout_s

    async def __call__(
        self,
        *,
        uri: str | None = None,
        arn: str | None = None,
        headers: Mapping[str, str] | None = None,
        use_http_11: bool = False,
    ) -> dict[str, Any]:
        if uri is not None:
            return await self._http(uri, dict(headers or {}))
        if arn is not None:
            return await self._lambda(arn)
        raise ValidationError("a deployment needs a uri or an arn")

    async def _http(self, uri: str, headers: dict[str, str]) -> dict[str, Any]:
        url = f"{uri.rstrip('/')}/discover"
        shown = _safe(url)
        request_headers = {
            "accept": "application/json",
            "user-agent": f"kafka-ingress/{__version__}",
            **headers,
            **(self._sign("/discover") if self._sign is not None else {}),
        }
        await check_target(url, deny_private=self._deny_private)
        # The name may answer differently when aiohttp resolves it again to connect (DNS
        # rebinding): the resolver checks that answer before anything is sent.
        resolver = GuardedResolver(deny_private=self._deny_private)
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    connector=aiohttp.TCPConnector(resolver=resolver),
                ) as session,
                session.get(url, headers=request_headers, allow_redirects=False) as response,
            ):
                described = _describe(response)
                if response.status != 200:
                    raise ValidationError(
                        f"discovery of {shown} answered {described} (expected HTTP 200 with "
                        "the manifest as JSON)"
                    )
                content = await self._read(response, shown, described)
        except TimeoutError as exc:
            raise ValidationError(
                f"discovery of {shown} timed out after {self._timeout_s:g}s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddressError):
                raise TargetRefused(f"discovery of {shown} not sent: {exc.os_error}") from None
            reason = _USERINFO.sub("//", str(exc) or type(exc).__name__)
            raise ValidationError(f"cannot reach {shown} for discovery: {reason}") from exc
        except (aiohttp.ClientError, ValueError) as exc:
            # aiohttp quotes the URL in some errors: never with its credentials.
            reason = _USERINFO.sub("//", str(exc) or type(exc).__name__)
            raise ValidationError(f"cannot reach {shown} for discovery: {reason}") from exc
        finally:
            await resolver.close()
        try:
            document = json.loads(content)
        except ValueError as exc:
            # A JSONDecodeError says where parsing stopped, never what it read there.
            reason = str(exc) if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise ValidationError(
                f"discovery of {shown} did not answer JSON ({described}): {reason}"
            ) from exc
        if not isinstance(document, dict):
            raise ValidationError(
                f"discovery of {shown} did not answer a JSON object ({described})"
            )
        return document

    async def _read(self, response: aiohttp.ClientResponse, shown: str, described: str) -> bytes:
        too_big = ValidationError(
            f"discovery of {shown} answered {described}: the manifest is larger than "
            f"{self._max_bytes} bytes"
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def _lambda(self, arn: str) -> dict[str, Any]:
        try:
            from adapter.invokers.aws_lambda import discover_lambda
        except ImportError as exc:
            raise ValidationError(
                "Lambda deployments are not supported by this build (no Lambda invoker)"
            ) from exc
        match = _ARN_REGION.match(arn)
        region = match["region"] if match else self._lambda_region
        try:
            document: Any = await discover_lambda(
                arn, endpoint_url=self._lambda_endpoint_url, region=region
            )
        except IngressError as exc:
            raise ValidationError(f"discovery of Lambda function {arn} failed: {exc}") from exc
        if not isinstance(document, dict):
            raise ValidationError(f"discovery of Lambda function {arn} did not return an object")
        return document
