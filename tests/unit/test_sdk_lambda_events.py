"""The Lambda wire, both ends: events the poller builds, how the SDK answers them, and the
outcomes the poller reads back. Plus the batching wrapper, with a fake batch invoker."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest

from adapter.engine.mapping import build_request
from adapter.errors import ValidationError
from adapter.invokers.aws_lambda import (
    MAX_SYNC_PAYLOAD_BYTES,
    LambdaInvoker,
    LambdaReply,
    build_batch_event,
    build_invoke_event,
    build_msk_event,
    outcome_from_client_error,
    outcome_from_reply,
    outcomes_from_batch_reply,
    outcomes_from_msk_reply,
    parse_function,
)
from adapter.invokers.base import (
    InvocationRequest,
    NotSent,
    Outcome,
    OutcomeKind,
    check_fence,
    fence_sends,
)
from adapter.invokers.batching import BatchBuffer, BatchingInvoker
from adapter.invokers.kafka_event import EventSource
from adapter.model import (
    Deployment,
    HandlerType,
    InputKind,
    KafkaRecord,
    ServiceType,
    Target,
)
from adapter.sdk import Context, Endpoint, RetryableError, TerminalError, VirtualObject
from adapter.sdk.aws_lambda import LambdaEventError, handle_event

ARN = "arn:aws:lambda:us-east-1:000000000000:function:ledger"

obj = VirtualObject("Ledger")
calls: list[tuple[str | None, int, bytes]] = []


@obj.handler()
async def post(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    assert ctx.kafka is not None
    calls.append((ctx.key, ctx.kafka.offset, json.dumps(body).encode()))
    if body.get("terminal"):
        raise TerminalError("bad entry", status_code=422)
    if body.get("retry"):
        raise RetryableError("later", retry_after=4)
    return {"key": ctx.key, "offset": ctx.kafka.offset, "id": ctx.invocation_id}


@obj.handler(kind="shared")
def blob(ctx: Context, data: bytes) -> dict[str, Any]:
    return {"len": len(data), "headers": [[n, v.hex()] for n, v in ctx.record_headers]}


endpoint = Endpoint([obj], identity_keys=[], kafka_target="Ledger/post")
lambda_handler = endpoint.lambda_handler()


def _target(handler: str = "post", input_kind: InputKind = InputKind.JSON) -> Target:
    kind = HandlerType.EXCLUSIVE if handler == "post" else HandlerType.SHARED
    return Target(
        "Ledger", handler, ServiceType.VIRTUAL_OBJECT, kind, input_kind, Deployment("dp", arn=ARN)
    )


def _request(
    offset: int,
    value: bytes | None,
    *,
    key: bytes | None = b"acct-1",
    target: Target | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
    partition: int = 0,
) -> InvocationRequest:
    record = KafkaRecord(
        "ledger", partition, offset, key, value, 1_700_000_000_000 + offset, headers
    )
    request = build_request(
        subscription_id="sub_1",
        record=record,
        target=target or _target(),
        max_body_bytes=MAX_SYNC_PAYLOAD_BYTES,
    )
    return replace(request, record=record)


def _reply(payload: Any, error: str | None = None) -> LambdaReply:
    return LambdaReply(ARN, orjson.dumps(payload), error)


def test_single_event_round_trips_through_the_sdk() -> None:
    request = _request(7, b'{"amount": 5}', headers=(("X-Trace", b"t1"), ("bin", b"\x00")))
    event = build_invoke_event(request)
    assert event["protocol"] == "kafka-ingress/v1"
    assert event["type"] == "invoke"
    assert (event["service"], event["handler"], event["key"]) == ("Ledger", "post", "acct-1")
    assert event["path"] == "/invoke/Ledger/acct-1/post"
    assert event["body"] == '{"amount": 5}'
    assert event["isBase64Encoded"] is False
    assert event["headers"]["kafka.offset"] == "7"
    assert event["headers"]["idempotency-key"] == request.invocation_id
    response = lambda_handler(json.loads(orjson.dumps(event)), None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {
        "key": "acct-1",
        "offset": 7,
        "id": request.invocation_id,
    }
    assert outcome_from_reply(_reply(response)).kind is OutcomeKind.ACK


def test_raw_bodies_travel_as_base64_and_headers_exactly() -> None:
    request = _request(
        1, bytes(range(256)), target=_target("blob", InputKind.RAW), headers=(("b", b"\xff"),)
    )
    event = build_invoke_event(request)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == bytes(range(256))
    response = lambda_handler(event, None)
    assert json.loads(response["body"]) == {"len": 256, "headers": [["b", "ff"]]}


@pytest.mark.parametrize(
    ("body", "kind", "retry_after"),
    [
        (b'{"terminal": true}', OutcomeKind.TERMINAL, None),
        (b'{"retry": true}', OutcomeKind.RETRY, 4.0),
        (b"[1]", OutcomeKind.RETRY, None),  # a list is not a dict: handler input error → 400?
    ],
)
def test_sdk_failures_map_like_http(
    body: bytes, kind: OutcomeKind, retry_after: float | None
) -> None:
    response = lambda_handler(build_invoke_event(_request(1, body)), None)
    outcome = outcome_from_reply(_reply(response))
    if body == b"[1]":
        # Invalid input for the handler can never succeed: 400, terminal.
        assert response["statusCode"] == 400
        assert outcome.kind is OutcomeKind.TERMINAL
        return
    assert outcome.kind is kind
    assert outcome.retry_after == retry_after
    assert outcome.error is not None
    assert ARN in outcome.error


def test_function_errors_and_plain_functions() -> None:
    unhandled = _reply({"errorMessage": "boom", "errorType": "KeyError"}, "Unhandled")
    outcome = outcome_from_reply(unhandled)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert "KeyError" in outcome.error
    assert "boom" in outcome.error
    terminal = _reply({"errorMessage": "no", "errorType": "TerminalError"}, "Handled")
    assert outcome_from_reply(terminal).kind is OutcomeKind.TERMINAL
    timeout = _reply(
        {"errorMessage": "Task timed out", "errorType": "Sandbox.Timedout"}, "Unhandled"
    )
    assert outcome_from_reply(timeout).kind is OutcomeKind.RETRY
    garbage = LambdaReply(ARN, b"not json", "Unhandled")
    assert outcome_from_reply(garbage).kind is OutcomeKind.RETRY
    # A function that is not SDK-built: no error = ack, whatever it returned.
    assert outcome_from_reply(_reply(None)).kind is OutcomeKind.ACK
    assert outcome_from_reply(_reply({"ok": 1})).kind is OutcomeKind.ACK
    assert outcome_from_reply(LambdaReply(ARN, b"")).kind is OutcomeKind.ACK


def test_client_errors() -> None:
    def kind(code: str, status: int = 400) -> OutcomeKind:
        return outcome_from_client_error(ARN, code, "m", status=status).kind

    assert kind("ResourceNotFoundException", 404) is OutcomeKind.TERMINAL
    assert kind("RequestTooLargeException", 413) is OutcomeKind.TERMINAL
    assert kind("InvalidRequestContentException") is OutcomeKind.TERMINAL
    assert kind("TooManyRequestsException", 429) is OutcomeKind.RETRY
    assert kind("ResourceConflictException", 409) is OutcomeKind.RETRY
    assert kind("AccessDeniedException", 403) is OutcomeKind.RETRY
    assert kind("ServiceException", 500) is OutcomeKind.RETRY
    assert kind("SomethingNew", 502) is OutcomeKind.RETRY
    assert kind("SomethingNew", 400) is OutcomeKind.TERMINAL
    throttled = outcome_from_client_error(ARN, "TooManyRequestsException", "x", retry_after=3)
    assert throttled.retry_after == 3


def test_function_names() -> None:
    assert parse_function(ARN) == ARN
    assert parse_function(f"{ARN}:live") == f"{ARN}:live"
    assert parse_function("ledger") == "ledger"
    for bad in ("arn:aws:s3:::bucket", "arn:aws:lambda:us-east-1:1:function:x", "a b", ""):
        with pytest.raises(ValidationError):
            parse_function(bad)


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": 200},
        {"statusCode": 204, "headers": {"retry-after": "9"}},
        {"statusCode": 202, "isBase64Encoded": True},
        {"statusCode": 200, "body": None},
    ],
)
def test_a_2xx_result_without_a_body_acks_with_an_empty_response(result: dict[str, object]) -> None:
    requests = [_request(1, b"{}")]
    reply = _reply({"results": [{"invocationId": requests[0].invocation_id, **result}]})
    (outcome,) = outcomes_from_batch_reply(requests, reply)
    assert (outcome.kind, outcome.response, outcome.error) == (OutcomeKind.ACK, b"", None)


def test_a_2xx_result_with_a_body_keeps_it_and_an_error_status_is_read() -> None:
    requests = [_request(1, b"{}"), _request(2, b"{}")]
    results = [
        {"invocationId": requests[0].invocation_id, "statusCode": 200, "body": "ok"},
        {
            "invocationId": requests[1].invocation_id,
            "statusCode": 503,
            "headers": {"Retry-After": "7"},
        },
    ]
    ok, busy = outcomes_from_batch_reply(requests, _reply({"results": results}))
    assert (ok.kind, ok.response) == (OutcomeKind.ACK, b"ok")
    assert (busy.kind, busy.retry_after) == (OutcomeKind.RETRY, 7)


def test_batch_event_per_invocation_results() -> None:
    calls.clear()
    requests = [
        _request(1, b'{"n": 1}', key=b"a"),
        _request(2, b'{"terminal": true}', key=b"b"),
        _request(3, b'{"retry": true}', key=b"a"),
        _request(4, b'{"n": 4}', key=b"a"),  # after a failure of key a: not run
        _request(5, b'{"n": 5}', key=b"c"),
    ]
    event = build_batch_event(requests)
    assert event["type"] == "batch"
    assert len(event["invocations"]) == 5
    reply = lambda_handler(event, None)
    outcomes = outcomes_from_batch_reply(requests, _reply(reply))
    kinds = [o.kind for o in outcomes]
    assert kinds == [
        OutcomeKind.ACK,
        OutcomeKind.TERMINAL,
        OutcomeKind.RETRY,
        OutcomeKind.RETRY,
        OutcomeKind.ACK,
    ]
    assert outcomes[2].retry_after == 4
    assert sorted(offset for key, offset, _ in calls) == [1, 2, 3, 5]
    missing = outcomes_from_batch_reply(requests, _reply({"results": []}))
    assert {o.kind for o in missing} == {OutcomeKind.RETRY}
    crashed = outcomes_from_batch_reply(requests, _reply({"errorMessage": "x"}, "Unhandled"))
    assert {o.kind for o in crashed} == {OutcomeKind.RETRY}


def test_msk_event_has_the_aws_shape() -> None:
    requests = [
        _request(5, b'{"n": 5}', headers=(("headerKey", b"headerValue"),)),
        # A tombstone without key (built by hand: a keyed sink would refuse it before).
        InvocationRequest(
            "inv_tomb",
            _target("blob", InputKind.RAW),
            None,
            b"",
            headers={"restate.subscription.id": "sub_1"},
            record=KafkaRecord("ledger", 0, 4, None, None, 1_700_000_000_004),
        ),
    ]
    event = build_msk_event(requests, source=EventSource(bootstrap_servers=["b-1:9092"]))
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == "b-1:9092"
    assert list(event["records"]) == ["ledger-0"]
    first, second = event["records"]["ledger-0"]
    assert second == {
        "topic": "ledger",
        "partition": 0,
        "offset": 5,
        "timestamp": 1_700_000_000_005,
        "timestampType": "CREATE_TIME",
        "key": base64.b64encode(b"acct-1").decode(),
        "value": base64.b64encode(b'{"n": 5}').decode(),
        "headers": [{"headerKey": list(b"headerValue")}],
    }
    assert first["offset"] == 4
    assert "key" not in first
    assert first["value"] is None  # a null key is left out, a tombstone's value is null
    ext = event["kafkaIngress"]
    assert (ext["service"], ext["handler"], ext["subscriptionId"]) == ("Ledger", "post", "sub_1")
    assert {i["offset"]: i["invocationId"] for i in ext["invocations"]} == {
        5: requests[0].invocation_id,
        4: requests[1].invocation_id,
    }


def test_msk_event_runs_through_the_sdk_with_exact_results() -> None:
    calls.clear()
    requests = [
        _request(10, b'{"n": 10}', key=b"a"),
        _request(11, b'{"terminal": true}', key=b"b"),
        _request(12, b'{"retry": true}', key=b"a"),
        _request(13, b'{"n": 13}', key=b"a"),
        _request(14, b'{"n": 14}', key=b"c"),
    ]
    reply = lambda_handler(build_msk_event(requests), None)
    # AWS's shape: only the retryable failures, so AWS's own trigger does not retry terminals.
    assert reply["batchItemFailures"] == [
        {"itemIdentifier": {"partition": "ledger-0", "offset": 12}},
        {"itemIdentifier": {"partition": "ledger-0", "offset": 13}},
    ]
    outcomes = outcomes_from_msk_reply(requests, _reply(reply))
    assert [o.kind for o in outcomes] == [
        OutcomeKind.ACK,
        OutcomeKind.TERMINAL,
        OutcomeKind.RETRY,
        OutcomeKind.RETRY,
        OutcomeKind.ACK,
    ]
    ids = {offset: key for key, offset, _ in calls}
    assert sorted(ids) == [10, 11, 12, 14]


def test_msk_replies_of_unchanged_aws_consumers() -> None:
    requests = [_request(o, b"{}", key=f"k{o}".encode()) for o in (20, 21, 22, 23)]
    assert [o.kind for o in outcomes_from_msk_reply(requests, _reply(None))] == [
        OutcomeKind.ACK
    ] * 4
    assert {
        o.kind for o in outcomes_from_msk_reply(requests, _reply({"batchItemFailures": []}))
    } == {OutcomeKind.ACK}
    # AWS resumes the partition at the lowest reported offset: it and everything after retry.
    partial = {"batchItemFailures": [{"itemIdentifier": {"partition": "ledger-0", "offset": 22}}]}
    assert [o.kind for o in outcomes_from_msk_reply(requests, _reply(partial))] == [
        OutcomeKind.ACK,
        OutcomeKind.ACK,
        OutcomeKind.RETRY,
        OutcomeKind.RETRY,
    ]
    bare = {"batchItemFailures": [{"itemIdentifier": "21"}]}
    assert [o.kind for o in outcomes_from_msk_reply(requests, _reply(bare))] == [
        OutcomeKind.ACK,
        OutcomeKind.RETRY,
        OutcomeKind.RETRY,
        OutcomeKind.RETRY,
    ]
    for bad in (
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemIdentifier": {"partition": "ledger-0", "offset": 99}}]},
        {"batchItemFailures": [{"wrongKey": "20"}]},
        {"batchItemFailures": "20"},
    ):
        assert {o.kind for o in outcomes_from_msk_reply(requests, _reply(bad))} == {
            OutcomeKind.RETRY
        }, bad
    crashed = _reply({"errorMessage": "x", "errorType": "Exception"}, "Unhandled")
    assert {o.kind for o in outcomes_from_msk_reply(requests, crashed)} == {OutcomeKind.RETRY}


def test_aws_kafka_trigger_events_use_the_kafka_target() -> None:
    calls.clear()
    event = {
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:1:cluster/c/x",
        "records": {
            "ledger-0": [
                {
                    "topic": "ledger",
                    "partition": 0,
                    "offset": 3,
                    "timestamp": 1,
                    "timestampType": "CREATE_TIME",
                    "key": base64.b64encode(b"z").decode(),
                    "value": base64.b64encode(b'{"n": 3}').decode(),
                    "headers": [],
                }
            ]
        },
    }
    assert lambda_handler(event, None) == {"batchItemFailures": [], "kafkaIngress": {"results": []}}
    assert calls == [("z", 3, b'{"n": 3}')]
    unconfigured = Endpoint([obj], identity_keys=[]).lambda_handler()
    with pytest.raises(LambdaEventError, match="kafka_target"):
        unconfigured(event, None)
    with pytest.raises(LambdaEventError, match="not a Kafka Ingress event"):
        lambda_handler({"hello": "world"}, None)
    with pytest.raises(LambdaEventError, match="unknown event type"):
        lambda_handler({"protocol": "kafka-ingress/v1", "type": "nope"}, None)


class EndpointClient:
    """A Lambda client stand-in that answers through the SDK endpoint. Like the real client it
    may wait before sending (a credentials refresh: here one turn of the loop, so concurrent
    calls interleave) and then checks the send fence."""

    def __init__(self, after_send: Callable[[], None] = lambda: None) -> None:
        self.payloads: list[int] = []
        self._after_send = after_send

    async def invoke(self, function: str, payload: bytes, *, timeout_s: float | None) -> Any:
        if len(payload) > MAX_SYNC_PAYLOAD_BYTES:
            return Outcome.terminal("too large")
        await asyncio.sleep(0)
        check_fence()
        self.payloads.append(len(payload))
        self._after_send()
        answer = await handle_event(endpoint.registry, None, orjson.loads(payload))
        return LambdaReply(function, orjson.dumps(answer))

    async def aclose(self) -> None:
        return


def oversized_batch() -> list[InvocationRequest]:
    """Four records of 2 MiB: too big for one synchronous Lambda call together."""
    big = b'"' + b"x" * (2 * 1024 * 1024) + b'"'
    return [_request(o, b'{"n": ' + big + b"}", key=f"k{o}".encode()) for o in range(4)]


async def test_oversized_events_are_terminal_before_sending_and_batches_split() -> None:
    client = EndpointClient()
    invoker = LambdaInvoker(client, event_format="ingress")  # type: ignore[arg-type]
    outcomes = await invoker.invoke_batch(oversized_batch())
    assert [o.kind for o in outcomes] == [OutcomeKind.ACK] * 4
    assert len(client.payloads) >= 2
    assert max(client.payloads) <= MAX_SYNC_PAYLOAD_BYTES


@pytest.mark.promise("p-ops-send-fence")
async def test_a_split_batch_reports_only_its_unsent_half_as_not_sent() -> None:
    """An oversized batch goes out in halves; when the fence lapses after the first half was
    sent, the first half keeps its answers and only the second is retried (fenced again)."""
    owner = {"fresh": True}

    def pause() -> None:
        owner["fresh"] = False  # the process pauses right after the first half went out

    client = EndpointClient(after_send=pause)
    invoker = LambdaInvoker(client, event_format="ingress")  # type: ignore[arg-type]
    requests = oversized_batch()
    fence_sends(lambda: owner["fresh"])
    try:
        outcomes = await invoker.invoke_batch(requests)
        assert len(client.payloads) == 1
        # The unsent half is reported as not sent, not as a retry: no attempt is counted,
        # and its last attempt can never end in a failure of a record nobody received.
        unsent = [o for o in outcomes if isinstance(o, NotSent)]
        sent = [o for o in outcomes if isinstance(o, Outcome)]
        assert len(unsent) == 2
        assert [o.kind for o in sent] == [OutcomeKind.ACK] * 2
        # Nothing sent at all (the fence still lapsed): the whole call is reported unsent.
        with pytest.raises(NotSent):
            await invoker.invoke_batch(requests)
        assert len(client.payloads) == 1
    finally:
        fence_sends(None)


class FakeBatchInvoker:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.called = asyncio.Event()
        self.closed = False

    async def invoke_batch(self, requests: Sequence[InvocationRequest]) -> list[Outcome]:
        self.batches.append([r.record.offset for r in requests if r.record])
        self.called.set()
        await self.release.wait()
        return [
            Outcome.retry("odd") if r.record and r.record.offset % 2 else Outcome.ack()
            for r in requests
        ]

    async def aclose(self) -> None:
        self.closed = True


def test_batch_buffer_groups_by_key_and_releases_full_batches() -> None:
    buffer: BatchBuffer[int] = BatchBuffer(3)
    assert buffer.add("a", 1) == (True, None)
    assert buffer.add("b", 10) == (True, None)
    assert buffer.add("a", 2) == (False, None)
    assert buffer.add("a", 3) == (False, [1, 2, 3])
    assert buffer.add("a", 4) == (True, None)
    assert len(buffer) == 2
    assert buffer.take("b") == [10]
    assert buffer.take("b") == []
    with pytest.raises(ValueError, match="batch_size"):
        BatchBuffer(0)


async def test_batching_invoker_groups_concurrent_requests_per_partition() -> None:
    inner = FakeBatchInvoker()
    invoker = BatchingInvoker(inner, batch_size=4, linger_s=0.01)
    requests = [_request(o, b"{}", key=f"k{o}".encode()) for o in range(10)]
    requests += [_request(o, b"{}", key=f"k{o}".encode(), partition=1) for o in range(2)]
    outcomes = await asyncio.gather(*(invoker.invoke(r) for r in requests))
    assert [o.kind for o in outcomes[:10]] == [
        OutcomeKind.RETRY if o % 2 else OutcomeKind.ACK for o in range(10)
    ]
    assert sorted(inner.batches) == [[0, 1], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert invoker.calls == 4
    await invoker.aclose()
    assert inner.closed


async def test_batching_invoker_survives_cancelled_callers_and_broken_batches() -> None:
    inner = FakeBatchInvoker()
    inner.release.clear()
    invoker = BatchingInvoker(inner, batch_size=2, linger_s=0)
    first = asyncio.create_task(invoker.invoke(_request(0, b"{}", key=b"a")))
    second = asyncio.create_task(invoker.invoke(_request(1, b"{}", key=b"b")))
    await asyncio.wait_for(inner.called.wait(), 5)
    first.cancel()
    inner.release.set()
    assert (await second).kind is OutcomeKind.RETRY
    with pytest.raises(asyncio.CancelledError):
        await first

    class Broken(FakeBatchInvoker):
        async def invoke_batch(self, requests: Sequence[InvocationRequest]) -> list[Outcome]:
            raise RuntimeError("bug")

    broken = BatchingInvoker(Broken(), batch_size=5, linger_s=0)
    outcome = await broken.invoke(_request(0, b"{}"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None
    assert "bug" in outcome.error


@pytest.mark.promise("p-ops-send-fence")
async def test_batching_invoker_gives_requests_the_inner_call_did_not_send_back_as_not_sent() -> (
    None
):
    class HalfSent(FakeBatchInvoker):
        async def invoke_batch(
            self, requests: Sequence[InvocationRequest]
        ) -> Sequence[Outcome | NotSent]:
            middle = len(requests) // 2
            return [Outcome.ack()] * middle + [NotSent("not sent")] * (len(requests) - middle)

    invoker = BatchingInvoker(HalfSent(), batch_size=4, linger_s=0.01)
    requests = [_request(o, b"{}", key=f"k{o}".encode()) for o in range(4)]
    calls = [asyncio.create_task(invoker.invoke(r)) for r in requests]
    for call in calls[:2]:
        assert (await call).kind is OutcomeKind.ACK
    for call in calls[2:]:
        with pytest.raises(NotSent):
            await call
    alone = BatchingInvoker(HalfSent(), batch_size=1)
    with pytest.raises(NotSent):
        await alone.invoke(requests[0])


@pytest.mark.promise("p-ops-paused-starts-nothing", "p-ops-send-fence")
async def test_batching_invoker_leaves_out_requests_whose_fence_lapsed_while_lingering() -> None:
    """The process pauses while a batch lingers: on the wake, a request whose caller can no
    longer prove it owns the partition is not sent; the others of the batch are."""
    inner = FakeBatchInvoker()
    invoker = BatchingInvoker(inner, batch_size=10, linger_s=0.05)
    owner = {"a": True, "b": True}

    async def call(offset: int, who: str) -> Outcome:
        fence_sends(lambda: owner[who])
        return await invoker.invoke(_request(offset, b"{}", key=f"k{offset}".encode()))

    lapsed = asyncio.create_task(call(0, "a"))
    kept = asyncio.create_task(call(2, "b"))
    await asyncio.sleep(0)  # both are lingering in one batch now
    owner["a"] = False  # the proof of "a" lapsed (a pause past its session)
    assert (await kept).kind is OutcomeKind.ACK
    with pytest.raises(NotSent):
        await lapsed
    assert inner.batches == [[2]]

    # A wait inside the inner invoker (credentials) is fenced by every caller of the batch.
    class Waits(FakeBatchInvoker):
        async def invoke_batch(self, requests: Sequence[InvocationRequest]) -> list[Outcome]:
            owner["b"] = False  # lapsed during the wait
            check_fence()
            return await super().invoke_batch(requests)

    owner["a"] = owner["b"] = True
    waits = Waits()
    invoker = BatchingInvoker(waits, batch_size=2, linger_s=0.05)
    results = await asyncio.gather(call(0, "a"), call(2, "b"), return_exceptions=True)
    assert all(isinstance(r, NotSent) for r in results), results
    assert waits.batches == []


_SHAPES: list[tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]] = [
    ("small JSON", b"k", b'{"a": 1}', ()),
    ("quotes and backslashes", b'"k"', b'{"q": "\\"\\\\\\"\\\\"}', ()),
    ("unicode", "clé-日本".encode(), '{"é": "日本語テキスト"}'.encode(), ()),
    ("big value", b"k" * 300, b'"' + b"x" * 200_000 + b'"', ()),
    ("header-heavy", b"k", b"{}", (("trace", bytes(range(256)) * 100), ("Ä-name", b"\x00\xff"))),
    ("null value", b"k", None, (("h", b""),)),
]


@pytest.mark.parametrize("event_format", ["msk", "ingress"])
@pytest.mark.parametrize("shape", _SHAPES, ids=[s[0] for s in _SHAPES])
def test_a_records_share_of_an_event_is_bounded_from_above(
    event_format: str,
    shape: tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]],
) -> None:
    """Partition batches close before the 6 MB payload limit by adding these bounds: each
    must be at least the record's real share of the event (and not wildly above it)."""
    from adapter.invokers.aws_lambda import record_event_bytes

    _, key, value, headers = shape
    target = _target("blob", InputKind.RAW) if value is None else _target("blob")
    requests = [
        _request(offset, value, key=key, target=target, headers=headers) for offset in (7, 8)
    ]
    one = requests[:1]
    if event_format == "msk":
        alone = len(orjson.dumps(build_msk_event(one)))
        both = len(orjson.dumps(build_msk_event(requests)))
    else:
        alone = len(orjson.dumps(build_batch_event(one)))
        both = len(orjson.dumps(build_batch_event(requests)))
    share = both - alone  # what the second record added
    bound = record_event_bytes(
        requests[1],
        event_format,
        extension=True,
        signed=False,  # type: ignore[arg-type]
    )
    assert share <= bound <= 2 * share + 1024, (share, bound)


@pytest.mark.parametrize("event_format", ["msk", "ingress"])
def test_a_whole_event_is_bounded_by_its_envelope_and_its_records_shares(
    event_format: str,
) -> None:
    """What a batch's line adds up, and what the event then is: a deployment's additional
    headers (copied into every invocation) and the event source's addresses (once per event)
    were left out, so a batch the engine closed under 6 MB could be above it (and was then
    handed out again unsent, for ever)."""
    from adapter.invokers.aws_lambda import record_event_bytes
    from adapter.invokers.kafka_event import EventSource, envelope_bytes

    deployment = Deployment("dp", arn=ARN, additional_headers={"authorization": "t" * 3000})
    target = replace(_target(), deployment=deployment)
    requests = [_request(o, b'"' + b"x" * 600 + b'"', target=target) for o in range(20)]
    brokers = [f"b-{i}.cluster-name.abcdef.c2.kafka.us-east-1.amazonaws.com:9098" for i in range(6)]
    arn = "arn:aws:kafka:us-east-1:123456789012:cluster/c/" + "a" * 40
    source = EventSource(bootstrap_servers=brokers, msk_cluster_arn=arn)
    if event_format == "msk":
        event = build_msk_event(requests, source=source)
    else:
        event = build_batch_event(requests)
    size = len(orjson.dumps(event))
    shares = sum(
        record_event_bytes(r, event_format, extension=True, signed=False)  # type: ignore[arg-type]
        for r in requests
    )
    assert size <= envelope_bytes(source) + shares, (size, envelope_bytes(source), shares)


def test_an_events_envelope_is_more_than_a_records_share_leaves_room_for() -> None:
    # One record with six MSK brokers and a cluster ARN: the record's share alone is below
    # the event, so a batch sized by shares alone could pass the limit by the envelope.
    from adapter.invokers.aws_lambda import record_event_bytes
    from adapter.invokers.kafka_event import EventSource, envelope_bytes

    brokers = [f"b-{i}.cluster-name.abcdef.c2.kafka.us-east-1.amazonaws.com:9098" for i in range(6)]
    arn = "arn:aws:kafka:us-east-1:123456789012:cluster/c/" + "a" * 40
    source = EventSource(bootstrap_servers=brokers, msk_cluster_arn=arn)
    request = _request(0, b'"' + b"x" * 4_000 + b'"', target=_target("blob", InputKind.RAW))
    size = len(orjson.dumps(build_msk_event([request], source=source)))
    share = record_event_bytes(request, "msk", extension=True, signed=False)
    assert share < size <= share + envelope_bytes(source)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize(
    ("service", "handler", "key"),
    [
        ("Ledger", "post", "顧" * 20),  # the key in JSON, in the path (percent-encoded), in aud
        ("服" * 255, "務" * 255, "acct-1"),  # names as long as allowed, in any script
        ("Ledger", "post", "a b/c\x01" * 10),  # ASCII that is escaped or percent-encoded
        ("Ledger", "post", ".."),  # %2E%2E in the path
    ],
    ids=["cjk-key", "long-cjk-names", "escaped-ascii-key", "dots-key"],
)
@pytest.mark.parametrize("event_format", ["msk", "ingress"])
def test_a_whole_event_is_bounded_whatever_the_names_and_keys(
    event_format: str, service: str, handler: str, key: str, signed: bool
) -> None:
    # Counted as 4 bytes a character, a non-ASCII key (9 bytes a character in the path alone)
    # or a long non-ASCII name made events larger than the batch was closed for.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from adapter.invokers.aws_lambda import record_event_bytes
    from adapter.invokers.kafka_event import envelope_bytes
    from adapter.invokers.signing import RequestSigner

    sign = RequestSigner(Ed25519PrivateKey.generate()) if signed else None
    target = Target(
        service,
        handler,
        ServiceType.VIRTUAL_OBJECT,
        HandlerType.EXCLUSIVE,
        InputKind.JSON,
        Deployment("dp", arn=ARN),
    )
    requests = [
        _request(o, b'"' + b"x" * 300 + b'"', key=key.encode(), target=target) for o in range(20)
    ]
    if event_format == "msk":
        event = build_msk_event(requests)
    else:
        event = build_batch_event(requests, sign)
    size = len(orjson.dumps(event))
    shares = sum(
        record_event_bytes(r, event_format, extension=True, signed=signed)  # type: ignore[arg-type]
        for r in requests
    )
    assert size <= envelope_bytes(None, service, handler) + shares
