"""A whole partition batch in one Lambda call, read as AWS's event source mapping reads it
(``LambdaInvoker.invoke_records``), against a stub of the boto3-backed client."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pytest

from adapter.engine.mapping import build_request
from adapter.invokers.aws_lambda import LambdaClient, LambdaInvoker, LambdaReply
from adapter.invokers.base import InvocationRequest, Outcome
from adapter.model import Deployment, HandlerType, InputKind, ServiceType, Target
from adapter.testing import record

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:f"
TARGET = Target(
    service="S",
    handler="h",
    service_type=ServiceType.SERVICE,
    handler_type=HandlerType.SERVICE,
    input_kind=InputKind.RAW,
    deployment=Deployment(id="dp_fn", arn=FUNCTION),
)


@dataclass
class StubClient:
    reply: LambdaReply | Outcome
    payloads: list[bytes] = field(default_factory=list)

    async def invoke(
        self, function: str, payload: bytes, *, timeout_s: float | None = None
    ) -> LambdaReply | Outcome:
        self.payloads.append(payload)
        return self.reply


def requests(n: int) -> list[InvocationRequest]:
    return [
        build_request(
            subscription_id="sub_1",
            record=record("orders", 0, o),
            target=TARGET,
            max_body_bytes=1 << 20,
        )
        for o in range(n)
    ]


def invoker(reply: LambdaReply | Outcome, event_format: str = "msk") -> LambdaInvoker:
    client = StubClient(reply)
    return LambdaInvoker(client, event_format=event_format)  # type: ignore[arg-type]


PARTIAL = orjson.dumps(
    {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 2}}]}
)


@pytest.mark.promise("p-config-partial-response")
async def test_a_partial_response_is_ignored_unless_reported_failures_are_enabled() -> None:
    reply = LambdaReply(FUNCTION, PARTIAL)
    off = await invoker(reply).invoke_records(requests(4), report_batch_item_failures=False)
    assert off.failed == (False, False, False, False)
    on = await invoker(reply).invoke_records(requests(4), report_batch_item_failures=True)
    assert on.failed == (False, False, True, True)


async def test_a_function_error_fails_the_whole_batch() -> None:
    reply = LambdaReply(FUNCTION, b'{"errorMessage": "boom"}', function_error="Unhandled")
    answer = await invoker(reply).invoke_records(requests(3), report_batch_item_failures=True)
    assert answer.failed == (True, True, True)
    assert answer.function_error == "Unhandled"
    assert answer.called


async def test_a_transport_failure_fails_the_batch_without_a_response() -> None:
    answer = await invoker(Outcome.retry("throttled")).invoke_records(
        requests(2), report_batch_item_failures=False
    )
    assert answer.failed == (True, True)
    assert not answer.called


async def test_a_call_sent_without_an_answer_counts_as_reaching_the_function() -> None:
    """Timed out (or cut off) after it went out: the function may have run, as a function's
    own timeout does on AWS, so the retry is counted and the batch can be split."""
    answer = await invoker(Outcome.unanswered("timed out after 3s")).invoke_records(
        requests(2), report_batch_item_failures=False
    )
    assert answer.failed == (True, True)
    assert answer.called
    assert answer.function_error == "Unhandled"  # what splits a batch when bisect is on


async def test_the_whole_batch_goes_in_one_call() -> None:
    inv = invoker(LambdaReply(FUNCTION, b"{}"))
    await inv.invoke_records(requests(5), report_batch_item_failures=False)
    client = inv.client
    assert isinstance(client, StubClient)
    assert not isinstance(client, LambdaClient)
    assert len(client.payloads) == 1
    event = orjson.loads(client.payloads[0])
    assert [r["offset"] for r in event["records"]["orders-0"]] == [0, 1, 2, 3, 4]


async def test_ingress_results_resume_at_the_first_retry_and_reject_terminal_ones() -> None:
    batch = requests(4)
    statuses = [200, 400, 503, 200]  # a terminal (4xx) result, then a retryable one
    results = [
        {"invocationId": r.invocation_id, "statusCode": s, "body": ""}
        for r, s in zip(batch, statuses, strict=True)
    ]
    reply = LambdaReply(FUNCTION, orjson.dumps({"results": results}))
    answer = await invoker(reply, "ingress").invoke_records(batch, report_batch_item_failures=False)
    assert answer.failed == (False, False, True, True)
    assert answer.rejected == (False, True, False, False)
