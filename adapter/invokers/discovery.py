"""Fetching a deployment's discovery manifest: ``GET {uri}/discover`` or the Lambda's own.

The admin API calls this when a deployment is registered. HTTP deployments are asked with the
deployment's ``additional_headers`` (they may need its credentials), no redirects are
followed (register the final URL), and the answer must be a JSON object within the timeout.
Lambda functions are asked through :func:`adapter.invokers.aws_lambda.discover_lambda`.

Every failure becomes a :class:`~adapter.errors.ValidationError` saying what went wrong with
the deployment's address: the caller gave an address that does not serve a manifest. URLs in
messages never include credentials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from adapter import __version__
from adapter.errors import IngressError, ValidationError

__all__ = ["Discovery"]

_ARN_REGION = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Discovery:
    """``await discovery(uri=..., arn=..., headers=...)`` → the manifest document."""

    def __init__(
        self,
        *,
        lambda_endpoint_url: str | None = None,
        lambda_region: str = "us-east-1",
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sign: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        # A deployment that verifies request signatures verifies discovery too.
        self._sign = sign
        self._lambda_endpoint_url = lambda_endpoint_url
        self._lambda_region = lambda_region
        self._timeout_s = timeout_s
        self._transport = transport

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
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout_s, follow_redirects=False, transport=self._transport
            ) as client:
                response = await client.get(url, headers=request_headers)
        except httpx.TimeoutException as exc:
            raise ValidationError(
                f"discovery of {shown} timed out after {self._timeout_s:g}s"
            ) from exc
        except (httpx.HTTPError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ValidationError(f"cannot reach {shown} for discovery: {reason}") from exc
        if response.status_code != 200:
            raise ValidationError(
                f"discovery of {shown} answered HTTP {response.status_code} (expected 200 with "
                f"the manifest): {response.text[:200]}"
            )
        try:
            document = json.loads(response.content)
        except ValueError as exc:
            raise ValidationError(f"discovery of {shown} did not answer JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValidationError(f"discovery of {shown} did not answer a JSON object")
        return document

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
