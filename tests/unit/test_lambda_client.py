"""The Invoke client's pure parts: the request it signs is the one boto3 signs, and errors are
read as botocore reads them. The calls themselves run against the local Lambda endpoint in
tests/e2e/test_lambda_invoker.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from multidict import CIMultiDict

from adapter.invokers.base import OutcomeKind
from adapter.invokers.lambda_client import LambdaClient, invoke_error
from adapter.invokers.lambda_errors import outcome_from_client_error

CREDENTIALS = Credentials("AKIDEXAMPLE", "secret", None)


class _Raw:
    def stream(self, **_: Any) -> Any:
        yield b"{}"


def _canonical(request: AWSRequest) -> str:
    """What SigV4 signs for ``request``, at a fixed time (as add_auth prepares it)."""
    signer = SigV4Auth(CREDENTIALS, "lambda", "eu-west-1")
    request.context["timestamp"] = "20261205T000000Z"
    signer._modify_request_before_signing(request)
    return str(signer.canonical_request(request))


def _boto3_canonical(function: str, payload: bytes) -> str:
    """The canonical request boto3 signs for Invoke (caught before it is sent)."""
    client = boto3.session.Session(
        aws_access_key_id=CREDENTIALS.access_key, aws_secret_access_key=CREDENTIALS.secret_key
    ).client("lambda", region_name="eu-west-1")
    seen: list[str] = []

    def before_sign(request: AWSRequest, **_: Any) -> None:
        copy = AWSRequest(
            method=request.method, url=request.url, data=request.body, headers=request.headers
        )
        seen.append(_canonical(copy))

    def before_send(request: Any, **_: Any) -> AWSResponse:
        return AWSResponse(request.url, 200, {}, _Raw())

    client.meta.events.register("before-sign.lambda.Invoke", before_sign)
    client.meta.events.register("before-send.lambda.Invoke", before_send)
    client.invoke(FunctionName=function, Payload=payload, InvocationType="RequestResponse")
    client.close()
    return seen[0]


@pytest.mark.parametrize(
    "function",
    ["orders", "orders:live", "arn:aws:lambda:eu-west-1:123456789012:function:orders:$LATEST"],
)
def test_the_signed_request_is_the_one_boto3_signs(function: str) -> None:
    payload = b'{"records": 1}'
    expected = _boto3_canonical(function, payload)
    url = (
        "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/"
        f"{quote(function, safe='')}/invocations"
    )
    ours = AWSRequest(
        method="POST",
        url=url,
        data=payload,
        headers={"X-Amz-Invocation-Type": "RequestResponse"},
    )
    assert _canonical(ours) == expected


def test_errors_are_read_as_botocore_reads_them() -> None:
    headers = CIMultiDict(
        {"x-amzn-ErrorType": "TooManyRequestsException:http://internal.amazon.com/coral/"}
    )
    body = b'{"Type": "User", "message": "Rate exceeded", "retryAfterSeconds": "2"}'
    assert invoke_error("f", 429, headers, body) == (
        "TooManyRequestsException",
        "Rate exceeded",
        2.0,
    )
    # No header: the body's __type (with or without its namespace).
    assert invoke_error(
        "f", 404, CIMultiDict(), b'{"__type": "x#ResourceNotFoundException", "Message": "no"}'
    ) == ("ResourceNotFoundException", "no", None)
    # A proxy's or load balancer's page: the status and the start of the text.
    code, message, wait = invoke_error(
        "f", 502, CIMultiDict({"Retry-After": "5"}), b"<html>Bad Gateway</html>"
    )
    assert (code, wait) == ("HTTP 502", 5.0)
    assert "Bad Gateway" in message
    assert outcome_from_client_error("f", code, message, status=502).kind is OutcomeKind.RETRY


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        LambdaClient(endpoint_url=None, region="us-east-1", timeout_s=0)
