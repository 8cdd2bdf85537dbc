"""The Lambda invoker against the local Lambda endpoint, through the real boto3 client: every
way an Invoke can go wrong maps to the documented outcome, and the event loop never blocks."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import orjson
import pytest

from adapter.invokers.aws_lambda import LambdaClient, LambdaInvoker
from adapter.invokers.base import InvocationRequest, OutcomeKind
from adapter.local.lambda_server import FunctionSpec, LocalLambda
from adapter.local.moto import fake_aws_credentials
from adapter.model import Deployment, HandlerType, InputKind, KafkaRecord, ServiceType, Target
from adapter.sdk import Context, Endpoint, Service, TerminalError
from tests._http_fixtures import HandlerServer

pytestmark = pytest.mark.timeout(120)

release = threading.Event()
entered = threading.Event()


class TerminalErrorLike(Exception):
    """A non-SDK function raising an error class named TerminalError."""


TerminalErrorLike.__name__ = "TerminalError"


def crash(event: Any, context: Any) -> Any:
    raise KeyError("boom")


def terminal(event: Any, context: Any) -> Any:
    raise TerminalErrorLike("never retry this")


def slow(event: Any, context: Any) -> Any:
    entered.set()
    release.wait(10)
    return {"statusCode": 200, "body": "late"}


def hang(event: Any, context: Any) -> Any:
    release.wait(10)
    return None


def echo(event: Any, context: Any) -> Any:
    return {
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "event": event,
    }


def huge(event: Any, context: Any) -> Any:
    return "x" * (7 * 1024 * 1024)


svc = Service("Greeter")


@svc.handler()
def greet(ctx: Context, body: dict[str, str]) -> dict[str, str]:
    if body.get("name") == "nobody":
        raise TerminalError("no name")
    return {"hello": body["name"]}


FUNCTIONS = [
    FunctionSpec("crash", crash),
    FunctionSpec("terminal", terminal),
    FunctionSpec("slow", slow, reserved_concurrency=1, timeout_s=20),
    FunctionSpec("hang", hang, timeout_s=0.3),
    FunctionSpec("echo", echo, timeout_s=9),
    FunctionSpec("huge", huge),
    FunctionSpec("import-error", "handlers.does_not_exist.handler"),
    FunctionSpec("greeter", Endpoint([svc], identity_keys=[]).lambda_handler()),
]


@pytest.fixture
def local() -> Iterator[LocalLambda]:
    release.clear()
    entered.clear()
    fake_aws_credentials()
    local = LocalLambda(FUNCTIONS)
    try:
        yield local
    finally:
        release.set()
        local.close()


@pytest.fixture
async def endpoint(handler_server: HandlerServer, local: LocalLambda) -> str:
    return await handler_server(local.app)


@pytest.fixture
async def client(endpoint: str) -> AsyncIterator[LambdaClient]:
    lambda_client = LambdaClient(endpoint_url=endpoint, region="us-east-1", timeout_s=5)
    try:
        yield lambda_client
    finally:
        release.set()
        await lambda_client.aclose()


def _request(function: str, body: bytes = b'{"name": "Ada"}') -> InvocationRequest:
    target = Target(
        "Greeter",
        "greet",
        ServiceType.SERVICE,
        HandlerType.SERVICE,
        InputKind.JSON,
        Deployment("dp_1", arn=f"arn:aws:lambda:us-east-1:000000000000:function:{function}"),
    )
    record = KafkaRecord("t", 0, 1, None, body, 1)
    return InvocationRequest("inv_1", target, None, body, record=record)


async def test_sdk_function_outcomes(client: LambdaClient) -> None:
    invoker = LambdaInvoker(client)
    ok = await invoker.invoke(_request("greeter"))
    assert ok.kind is OutcomeKind.ACK
    assert orjson.loads(ok.response) == {"hello": "Ada"}
    terminal_outcome = await invoker.invoke(_request("greeter", b'{"name": "nobody"}'))
    assert terminal_outcome.kind is OutcomeKind.TERMINAL
    assert terminal_outcome.error is not None
    assert "no name" in terminal_outcome.error


async def test_function_errors(client: LambdaClient) -> None:
    invoker = LambdaInvoker(client)
    crashed = await invoker.invoke(_request("crash"))
    assert crashed.kind is OutcomeKind.RETRY
    assert crashed.error is not None
    assert "Unhandled, KeyError" in crashed.error
    assert (await invoker.invoke(_request("terminal"))).kind is OutcomeKind.TERMINAL
    imported = await invoker.invoke(_request("import-error"))
    assert imported.kind is OutcomeKind.RETRY
    assert imported.error is not None
    assert "Runtime.ImportModuleError" in imported.error
    timed_out = await invoker.invoke(_request("hang"))
    assert timed_out.kind is OutcomeKind.RETRY
    assert timed_out.error is not None
    assert "Sandbox.Timedout" in timed_out.error
    too_big_answer = await invoker.invoke(_request("huge"))
    assert too_big_answer.kind is OutcomeKind.RETRY
    assert too_big_answer.error is not None
    assert "ResponseSizeTooLarge" in too_big_answer.error


async def test_api_errors(client: LambdaClient) -> None:
    invoker = LambdaInvoker(client)
    missing = await invoker.invoke(_request("nope"))
    assert missing.kind is OutcomeKind.TERMINAL
    assert missing.error is not None
    assert "ResourceNotFoundException" in missing.error
    oversized = await invoker.invoke(_request("echo", b'"' + b"x" * (6 * 1024 * 1024) + b'"'))
    assert oversized.kind is OutcomeKind.TERMINAL
    assert oversized.error is not None
    assert "6291456-byte limit" in oversized.error


async def test_throttling_is_retried_and_the_loop_stays_free(
    client: LambdaClient, local: LocalLambda
) -> None:
    invoker = LambdaInvoker(client)
    first = asyncio.create_task(invoker.invoke(_request("slow")))
    await asyncio.to_thread(entered.wait, 10)
    # The loop keeps running while a call waits for the function.
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 10
    throttled = await invoker.invoke(_request("slow"))
    assert throttled.kind is OutcomeKind.RETRY
    assert throttled.error is not None
    assert "TooManyRequestsException" in throttled.error
    release.set()
    assert (await first).kind is OutcomeKind.ACK
    assert local.invocations("slow") == 1


async def test_our_own_deadline_applies(endpoint: str) -> None:
    short = LambdaClient(endpoint_url=endpoint, region="us-east-1", timeout_s=0.2)
    try:
        outcome = await LambdaInvoker(short).invoke(_request("slow"))
        assert outcome.kind is OutcomeKind.RETRY
        assert outcome.error is not None
        assert "timed out after 0.2s" in outcome.error
    finally:
        release.set()
        await short.aclose()
    refused = LambdaClient(endpoint_url="http://127.0.0.1:9", region="us-east-1", timeout_s=2)
    try:
        outcome = await LambdaInvoker(refused).invoke(_request("echo"))
        assert outcome.kind is OutcomeKind.RETRY
        assert outcome.error is not None
        assert "cannot connect to http://127.0.0.1:9" in outcome.error
    finally:
        await refused.aclose()


async def test_the_invoke_api_as_boto3_sees_it(local: LocalLambda, endpoint: str) -> None:
    # boto3 blocks: run it on a thread while this loop serves the endpoint.
    await asyncio.to_thread(_invoke_api_checks, endpoint)


def _invoke_api_checks(endpoint: str) -> None:
    lam = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1")
    try:
        reply = lam.invoke(
            FunctionName="arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST",
            Payload=b'{"a": 1}',
            LogType="Tail",
        )
        assert reply["StatusCode"] == 200
        assert reply.get("FunctionError") is None
        body = orjson.loads(reply["Payload"].read())
        assert body["event"] == {"a": 1}
        assert 0 < body["remaining_ms"] <= 9000
        assert body["arn"].endswith(":function:echo")
        assert b"REPORT RequestId" in base64.b64decode(reply["LogResult"])
        crashed = lam.invoke(FunctionName="crash", Payload=b"{}")
        assert crashed["FunctionError"] == "Unhandled"
        assert orjson.loads(crashed["Payload"].read())["errorType"] == "KeyError"
        event = lam.invoke(FunctionName="echo", Payload=b"{}", InvocationType="Event")
        assert event["StatusCode"] == 202
        dry = lam.invoke(FunctionName="echo", Payload=b"{}", InvocationType="DryRun")
        assert dry["StatusCode"] == 204
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.invoke(FunctionName="nope", Payload=b"{}")
        with pytest.raises(lam.exceptions.InvalidRequestContentException):
            lam.invoke(FunctionName="echo", Payload=b"{not json")
    finally:
        lam.close()
