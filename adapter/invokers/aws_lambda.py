"""The Lambda invoker: one invocation (or a batch) per ``Invoke`` call (RequestResponse).

The call itself is :mod:`adapter.invokers.lambda_client` (on the event loop); the Invoke API's
own errors are mapped in :mod:`adapter.invokers.lambda_errors`. The wire mapping here is pure
functions, in the same spirit as :mod:`adapter.engine.mapping`:

* :func:`build_invoke_event` / :func:`build_batch_event` / :func:`build_msk_event` turn
  requests into the event JSON (``docs/protocol.md``, "Lambda");
* :func:`outcome_from_reply`, :func:`outcomes_from_batch_reply` and
  :func:`outcomes_from_msk_reply` turn the function's answer into outcomes;
* :func:`outcome_from_client_error` maps the Invoke API's own errors.

What becomes what (every failure carries the function and the reason):

    the function's response {"statusCode": …}       same rules as HTTP (2xx ack, 408/429/5xx
                                                     retry honouring Retry-After, 4xx terminal)
    any other successful response                   ack (the function ran without error)
    FunctionError Unhandled/Handled                 retry, unless errorType is TerminalError
    TooManyRequestsException (throttled), 5xx,
      ResourceConflict/NotReady, EC2/ENI/KMS/EFS
      errors, access denied, network failures       retry (Retry-After honoured)
    ResourceNotFound, RequestTooLarge, invalid
      request content / parameter, other 4xx        terminal
    event above the 6 MB synchronous limit          terminal, before sending

Deployments registered by ARN are discovered with :func:`discover_lambda`, which invokes the
function with ``{"protocol": "kafka-ingress/v1", "type": "discover"}``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import orjson

from adapter.engine.mapping import HEADER_ATTEMPT, HEADER_SUBSCRIPTION_ID, outcome_from_http
from adapter.errors import (
    InvokeError,
    RetryableInvokeError,
    TerminalInvokeError,
    ValidationError,
)
from adapter.invokers.base import InvocationRequest, NotSent, Outcome, OutcomeKind
from adapter.invokers.batch_response import (
    BatchAnswer,
    VerdictKind,
    first_failed_onwards,
    item_position,
    read_batch_response,
)
from adapter.invokers.kafka_event import EventSource, build_kafka_event, partition_key
from adapter.invokers.lambda_client import MAX_SYNC_PAYLOAD_BYTES, LambdaClient
from adapter.invokers.lambda_errors import LambdaReply, outcome_from_client_error, short
from adapter.model import LAMBDA_FUNCTION_ARN, InputKind, function_sink_arn
from adapter.sdk.protocol import LAMBDA_PROTOCOL, invoke_path

__all__ = [
    "MAX_SYNC_PAYLOAD_BYTES",
    "EventFormat",
    "LambdaClient",
    "LambdaInvoker",
    "LambdaReply",
    "build_batch_event",
    "build_invoke_event",
    "build_msk_event",
    "discover_lambda",
    "outcome_from_client_error",
    "outcome_from_reply",
    "outcomes_from_batch_reply",
    "outcomes_from_msk_reply",
    "parse_function",
    "record_event_bytes",
]

EventFormat = Literal["ingress", "msk"]
Signer = Callable[[InvocationRequest, str], Mapping[str, str]]


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,140}(?::[A-Za-z0-9$_-]{1,128})?$")

# --- function names -------------------------------------------------------------------------


def parse_function(arn: str) -> str:
    """Validate a deployment's function ARN (or plain name[:qualifier]); return it for Invoke."""
    text = arn.strip()
    if LAMBDA_FUNCTION_ARN.match(text) or _NAME.match(text):
        return text
    raise ValidationError(
        f"{arn!r} is not a Lambda function ARN "
        "(arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]) or function name"
    )


# --- events (pure) --------------------------------------------------------------------------


def _body_fields(request: InvocationRequest) -> dict[str, Any]:
    """The body as text when it is JSON (UTF-8 by definition), else base64."""
    if request.target.input_kind is InputKind.JSON:
        try:
            return {"body": request.body.decode("utf-8"), "isBase64Encoded": False}
        except UnicodeDecodeError:
            pass
    return {"body": base64.b64encode(request.body).decode("ascii"), "isBase64Encoded": True}


def _headers(request: InvocationRequest, sign: Signer | None, path: str) -> dict[str, str]:
    # Like HTTP: mapped headers < deployment headers < signature (case-insensitively).
    merged = {k.lower(): v for k, v in request.headers.items()}
    merged[HEADER_ATTEMPT] = str(request.attempt)
    additional = request.target.deployment.additional_headers
    if additional:
        merged.update({k.lower(): v for k, v in additional.items()})
    if sign is not None:
        merged.update({k.lower(): v for k, v in sign(request, path).items()})
    return merged


def build_invoke_event(request: InvocationRequest, sign: Signer | None = None) -> dict[str, Any]:
    """The ``event.format=ingress`` event for one invocation (an HTTP request, as JSON)."""
    target = request.target
    key = request.key if target.keyed else None
    path = invoke_path(target.service, target.handler, key)
    return {
        "protocol": LAMBDA_PROTOCOL,
        "type": "invoke",
        "service": target.service,
        "handler": target.handler,
        "key": key,
        "path": path,
        "invocationId": request.invocation_id,
        "attempt": request.attempt,
        "headers": _headers(request, sign, path),
        **_body_fields(request),
    }


def build_batch_event(
    requests: Sequence[InvocationRequest], sign: Signer | None = None
) -> dict[str, Any]:
    """Several invocations of one handler (one partition) in one ``event.format=ingress`` call."""
    first = requests[0].target
    return {
        "protocol": LAMBDA_PROTOCOL,
        "type": "batch",
        "service": first.service,
        "handler": first.handler,
        "invocations": [build_invoke_event(r, sign) for r in requests],
    }


def build_msk_event(
    requests: Sequence[InvocationRequest],
    *,
    source: EventSource | None = None,
    with_extension: bool = True,
) -> dict[str, Any]:
    """The ``event.format=msk`` event: AWS's Kafka event (:mod:`adapter.invokers.kafka_event`).

    Every request must carry its source record. ``with_extension`` adds ``kafkaIngress``
    (the handler and the invocation IDs, for handlers written with this project's SDK);
    AWS's own consumers ignore it, and a plain function sink leaves it out.
    """
    records = []
    invocations = []
    for request in requests:
        record = request.record
        if record is None:
            raise ValueError(f"{request.invocation_id}: an MSK event needs the source record")
        records.append(record)
        invocations.append(
            {
                "partition": partition_key(record.topic, record.partition),
                "offset": record.offset,
                "invocationId": request.invocation_id,
                "attempt": request.attempt,
                "traceparent": request.headers.get("traceparent"),
            }
        )
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    extension = None
    if with_extension:
        first = requests[0]
        extension = {
            "version": 1,
            "service": first.target.service,
            "handler": first.target.handler,
            "subscriptionId": first.headers.get(HEADER_SUBSCRIPTION_ID),
            "invocations": invocations,
        }
    return build_kafka_event(
        records, source or EventSource(bootstrap_servers=()), extension=extension
    )


# --- sizes (pure) ---------------------------------------------------------------------------

# Digits of each byte value in a JSON list of integers ("255,").
_INT_CHARS = tuple(len(str(b)) + 1 for b in range(256))
# Each record's fixed share of an event: field names, punctuation, numbers (up to 20 digits),
# and for the SDK's kafkaIngress entry the invocation ID, traceparent and attempt.
_MSK_RECORD_BYTES = 200
_MSK_EXTENSION_BYTES = 260
_INGRESS_INVOCATION_BYTES = 300
_SIGNATURE_BYTES = 1024


def _b64_len(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _name_bytes(text: str) -> int:
    """An upper bound of what a service, handler or key adds to an ``ingress`` invocation:
    itself as JSON text, in the percent-encoded ``path``, and in the signature's ``aud`` (in
    base64). Letters, digits and ``-._~`` travel as they are (under 4 bytes each); any other
    UTF-8 byte takes at most 6 (a JSON escape) + 3 (percent-encoded) + 4 (base64 of that)."""
    bare = text.replace("-", "").replace(".", "").replace("_", "").replace("~", "")
    if text.isascii() and bare.isalnum():
        return 4 * len(text)
    if text.isascii() and not bare:
        return 8 * len(text)  # "." and ".." travel as %2E in the path
    return 13 * len(text.encode("utf-8", "surrogatepass"))


def record_event_bytes(
    request: InvocationRequest, event_format: EventFormat, *, extension: bool, signed: bool
) -> int:
    """An upper bound of what ``request`` adds to a batch event's JSON, in bytes, without
    building it (this runs for every record): partition batches close before an event would
    pass Lambda's 6 MB limit."""
    record = request.record
    if event_format == "msk" and record is not None:
        size = _MSK_RECORD_BYTES + 2 * len(record.topic)
        size += _b64_len(len(record.key or b"")) + _b64_len(len(record.value or b""))
        for name, value in record.headers:
            size += len(orjson.dumps(name)) + 4
            if value:
                size += sum(_INT_CHARS[b] for b in value)
        if extension:
            size += _MSK_EXTENSION_BYTES + len(record.topic)
        return size
    target = request.target
    size = _INGRESS_INVOCATION_BYTES + len(orjson.dumps(request.headers))
    additional = target.deployment.additional_headers
    if additional:  # copied into every invocation's headers (_headers)
        size += len(orjson.dumps(additional))
    for text in (target.service, target.handler, request.key or ""):
        size += _name_bytes(text)
    if target.input_kind is InputKind.JSON:
        try:
            size += len(orjson.dumps(request.body.decode("utf-8")))
        except UnicodeDecodeError:
            size += _b64_len(len(request.body))
    else:
        size += _b64_len(len(request.body))
    if signed:
        size += _SIGNATURE_BYTES
    return size


# --- replies (pure) -------------------------------------------------------------------------


def _parse(payload: bytes) -> Any:
    try:
        return orjson.loads(payload) if payload.strip() else None
    except orjson.JSONDecodeError:
        return None


def _function_error(reply: LambdaReply) -> Outcome:
    data = _parse(reply.payload)
    error_type, message = "", reply.payload.decode("utf-8", "replace")
    if isinstance(data, dict):
        error_type = str(data.get("errorType") or "")
        message = str(data.get("errorMessage") or message)
    text = f"function {reply.function} failed ({reply.function_error}"
    text += f", {error_type}): " if error_type else "): "
    text += short(message) or "(no message)"
    # Restate's name for "do not retry"; the SDK itself answers with a 4xx status instead.
    if error_type == "TerminalError" or error_type.endswith(".TerminalError"):
        return Outcome.terminal(text)
    return Outcome.retry(text)


def _http_like(reply: LambdaReply, data: Mapping[str, Any]) -> Outcome:
    status = data.get("statusCode")
    assert isinstance(status, int)
    body_value = data.get("body")
    if body_value is None and 200 <= status < 300:
        return Outcome.ack()  # the common answer about a batch's record: nothing to read
    headers = data.get("headers") if isinstance(data.get("headers"), Mapping) else {}
    body = b""
    if isinstance(body_value, str):
        try:
            body = (
                base64.b64decode(body_value) if data.get("isBase64Encoded") else body_value.encode()
            )
        except ValueError:
            body = body_value.encode()
    elif body_value is not None:
        body = orjson.dumps(body_value)
    outcome = outcome_from_http(status, {str(k): str(v) for k, v in (headers or {}).items()}, body)
    if outcome.error is not None:
        outcome = Outcome(
            outcome.kind,
            error=f"function {reply.function}: {outcome.error}",
            retry_after=outcome.retry_after,
            response=outcome.response,
        )
    return outcome


def _is_http_like(data: Any) -> bool:
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("statusCode"), int)
        and not isinstance(data.get("statusCode"), bool)
    )


def outcome_from_reply(reply: LambdaReply) -> Outcome:
    """The outcome of a single ``event.format=ingress`` invocation."""
    if reply.function_error:
        return _function_error(reply)
    data = _parse(reply.payload)
    if _is_http_like(data):
        return _http_like(reply, data)
    return Outcome.ack(reply.payload)


def outcomes_from_batch_reply(
    requests: Sequence[InvocationRequest], reply: LambdaReply
) -> list[Outcome]:
    """Per-invocation outcomes of an ``ingress`` batch; a missing result means retry."""
    if reply.function_error:
        outcome = _function_error(reply)
        return [outcome] * len(requests)
    data = _parse(reply.payload)
    results = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(results, list):
        outcome = Outcome.retry(
            f"function {reply.function} answered a batch without a 'results' list"
        )
        return [outcome] * len(requests)
    by_id = {
        r.get("invocationId"): r for r in results if isinstance(r, Mapping) and _is_http_like(r)
    }
    out = []
    for request in requests:
        result = by_id.get(request.invocation_id)
        if result is None:
            out.append(
                Outcome.retry(
                    f"function {reply.function} returned no result for {request.invocation_id}"
                )
            )
        else:
            out.append(_http_like(reply, result))
    return out


def outcomes_from_msk_reply(
    requests: Sequence[InvocationRequest], reply: LambdaReply
) -> list[Outcome]:
    """Outcomes of an ``msk`` call, with the semantics of AWS's Kafka trigger.

    FunctionError → all retry. ``batchItemFailures`` (ReportBatchItemFailures) → every record
    of a reported partition from the lowest reported offset on is retried, the rest ack, as
    AWS resumes a partition at the reported offset; an identifier that names no record of the
    batch (or is malformed) fails the whole batch, as on AWS. ``kafkaIngress.results`` (from
    the SDK) → exact per-record outcomes: listed records by their status, the rest ack.
    """
    if reply.function_error:
        outcome = _function_error(reply)
        return [outcome] * len(requests)
    data = _parse(reply.payload)
    if not isinstance(data, Mapping):
        return [Outcome.ack(reply.payload)] * len(requests)
    ext = data.get("kafkaIngress")
    positions = [
        (f"{r.record.topic}-{r.record.partition}", r.record.offset) if r.record else ("", -1)
        for r in requests
    ]
    if isinstance(ext, Mapping) and isinstance(ext.get("results"), list):
        by_position: dict[tuple[str, int], Mapping[str, Any]] = {}
        for result in ext["results"]:
            ident = item_position(result)
            if ident is not None and _is_http_like(result):
                by_position[ident] = result
        return [
            _http_like(reply, by_position[pos]) if pos in by_position else Outcome.ack()
            for pos in positions
        ]
    # AWS's partial batch response; the event.format=msk path has always honoured it.
    records = [r.record for r in requests if r.record is not None]
    if len(records) != len(requests):
        return [Outcome.terminal("event.format=msk needs the source record")] * len(requests)
    verdict = read_batch_response(
        records, reply.payload, function_error=None, report_batch_item_failures=True
    )
    if verdict.kind is VerdictKind.INVALID_RESPONSE:
        whole = Outcome.retry(f"function {reply.function}: {verdict.reason}")
        return [whole] * len(requests)
    return [
        Outcome.retry(f"function {reply.function}: {verdict.reason}") if bad else Outcome.ack()
        for bad in verdict.failed
    ]


class LambdaInvoker:
    """Invoke Lambda functions in one event format; implements ``Invoker`` and batches."""

    def __init__(
        self,
        client: LambdaClient,
        *,
        event_format: EventFormat = "ingress",
        sign: Signer | None = None,
        event_source: EventSource | None = None,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.event_format = event_format
        self._sign = sign
        self._event_source = event_source
        self._owns_client = owns_client

    def __repr__(self) -> str:
        return f"LambdaInvoker(event_format={self.event_format!r}, client={self.client!r})"

    def event_bytes(self, request: InvocationRequest) -> int:
        """An upper bound of ``request``'s share of a batch event (see record_event_bytes)."""
        plain = function_sink_arn(request.target.service) is not None
        return record_event_bytes(
            request, self.event_format, extension=not plain, signed=self._sign is not None
        )

    def _function(self, request: InvocationRequest) -> str | Outcome:
        deployment = request.target.deployment
        if not deployment.arn:
            return Outcome.terminal(f"deployment {deployment.id} has no Lambda function ARN")
        try:
            return parse_function(deployment.arn)
        except ValidationError as exc:
            return Outcome.terminal(f"deployment {deployment.id}: {exc}")

    async def invoke(self, request: InvocationRequest) -> Outcome:
        result = (await self.invoke_batch([request]))[0]
        if isinstance(result, NotSent):
            raise NotSent(str(result))
        return result

    async def invoke_batch(
        self, requests: Sequence[InvocationRequest]
    ) -> Sequence[Outcome | NotSent]:
        """Invoke one function with all ``requests`` (same target) in as few calls as fit."""
        if not requests:
            return []
        function = self._function(requests[0])
        if isinstance(function, Outcome):
            return [function] * len(requests)
        if self.event_format == "msk" and any(r.record is None for r in requests):
            return [Outcome.terminal("event.format=msk needs the source record")] * len(requests)
        return await self._call(function, list(requests))

    def _payload(self, requests: list[InvocationRequest]) -> bytes:
        if self.event_format == "msk":
            # kafkaIngress is for functions built with the SDK (registered by discovery); a
            # lambda:// sink is a plain AWS consumer and gets AWS's event, nothing added.
            plain = function_sink_arn(requests[0].target.service) is not None
            event = build_msk_event(requests, source=self._event_source, with_extension=not plain)
        elif len(requests) == 1:
            event = build_invoke_event(requests[0], self._sign)
        else:
            event = build_batch_event(requests, self._sign)
        return orjson.dumps(event)

    async def _call(
        self, function: str, requests: list[InvocationRequest]
    ) -> Sequence[Outcome | NotSent]:
        payload = self._payload(requests)
        if len(payload) > MAX_SYNC_PAYLOAD_BYTES and len(requests) > 1:
            # Too big together: split in halves until every call fits (or one record alone
            # is too big, which the client reports as terminal).
            middle = len(requests) // 2
            halves = (requests[:middle], requests[middle:])
            results = await asyncio.gather(
                *(self._call(function, half) for half in halves), return_exceptions=True
            )
            if all(isinstance(r, NotSent) for r in results):
                raise NotSent(str(results[0]))
            outcomes: list[Outcome | NotSent] = []
            for half, result in zip(halves, results, strict=True):
                if isinstance(result, NotSent):
                    # The other half went out: only this one's requests are reported unsent
                    # (no attempt counted, held until the poller may start them again).
                    outcomes += [result] * len(half)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    outcomes += result
            return outcomes
        timeout = max((r.timeout_s or 0.0) for r in requests) or None
        reply = await self.client.invoke(function, payload, timeout_s=timeout)
        if isinstance(reply, Outcome):
            return [reply] * len(requests)
        if self.event_format == "msk":
            return outcomes_from_msk_reply(requests, reply)
        if len(requests) == 1:
            return [outcome_from_reply(reply)]
        return outcomes_from_batch_reply(requests, reply)

    async def invoke_records(
        self, requests: Sequence[InvocationRequest], *, report_batch_item_failures: bool
    ) -> BatchAnswer:
        """One call with the whole batch (the engine sized it to fit), read as AWS's event
        source mapping reads it: ``msk`` events by :func:`read_batch_response`, ``ingress``
        events by their per-record results, resuming at the first failed record."""
        size = len(requests)
        function = self._function(requests[0])
        if isinstance(function, Outcome):
            return BatchAnswer.whole(size, function.error or "not invocable", called=False)
        records = [r.record for r in requests if r.record is not None]
        if self.event_format == "msk" and len(records) != size:
            return BatchAnswer.whole(size, "event.format=msk needs the source record", called=False)
        timeout = max((r.timeout_s or 0.0) for r in requests) or None
        reply = await self.client.invoke(function, self._payload(list(requests)), timeout_s=timeout)
        if isinstance(reply, Outcome):
            if reply.maybe_ran:
                # Sent with no answer back: the function may have run. As AWS reports a
                # function that timed out (an Unhandled function error): the attempt counts
                # and the batch is split, so one slow record does not fail its neighbours.
                return BatchAnswer.whole(
                    size, reply.error or "no answer", called=True, function_error="Unhandled"
                )
            return BatchAnswer.whole(size, reply.error or "invoke failed", called=False)
        if self.event_format == "msk" and not _has_ingress_results(reply):
            verdict = read_batch_response(
                records,
                reply.payload,
                function_error=reply.function_error,
                report_batch_item_failures=report_batch_item_failures,
            )
            error = None if verdict.kind is VerdictKind.SUCCESS else verdict.reason
            if reply.function_error:
                error = _function_error(reply).error
            return BatchAnswer(verdict.failed, error, reply.function_error)
        if self.event_format == "msk":
            outcomes = outcomes_from_msk_reply(requests, reply)  # the SDK's kafkaIngress.results
        elif size == 1:
            outcomes = [outcome_from_reply(reply)]
        else:
            outcomes = outcomes_from_batch_reply(requests, reply)
        # Per-record results: a terminal one is final (delivered, never retried); the batch
        # resumes at the first record to retry.
        failed = first_failed_onwards([o.kind is OutcomeKind.RETRY for o in outcomes])
        rejected = tuple(
            o.kind is OutcomeKind.TERMINAL and not bad
            for o, bad in zip(outcomes, failed, strict=True)
        )
        error = next((o.error for o in outcomes if o.kind is not OutcomeKind.ACK), None)
        return BatchAnswer(failed, error, reply.function_error, rejected=rejected)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _has_ingress_results(reply: LambdaReply) -> bool:
    """Does an ``msk`` answer carry the SDK's exact per-record results?"""
    if reply.function_error or b"kafkaIngress" not in reply.payload:
        return False
    data = _parse(reply.payload)
    ext = data.get("kafkaIngress") if isinstance(data, Mapping) else None
    return isinstance(ext, Mapping) and isinstance(ext.get("results"), list)


async def discover_lambda(arn: str, *, endpoint_url: str | None, region: str) -> dict[str, Any]:
    """Invoke a function with the discovery event and return its manifest.

    Raises :class:`~adapter.errors.ValidationError` for a malformed ARN or a function that
    does not answer with a manifest (or fails on the request),
    :class:`~adapter.errors.TerminalInvokeError` when the
    function cannot be invoked (not found, not permitted) and
    :class:`~adapter.errors.RetryableInvokeError` when it may work later.
    """
    function = parse_function(arn)
    client = LambdaClient(endpoint_url=endpoint_url, region=region, max_connections=1)
    try:
        payload = orjson.dumps({"protocol": LAMBDA_PROTOCOL, "type": "discover"})
        reply = await client.invoke(function, payload)
    finally:
        await client.aclose()
    if isinstance(reply, Outcome):
        error: type[InvokeError] = (
            TerminalInvokeError if reply.kind.value == "terminal" else RetryableInvokeError
        )
        raise error(f"discovering {arn}: {reply.error}")
    if reply.function_error:
        raise ValidationError(
            f"function {arn} failed on the discovery request ({_function_error(reply).error}); "
            "is it built with the Kafka Ingress SDK?"
        )
    data = _parse(reply.payload)
    if _is_http_like(data):
        data = _parse(str(data.get("body") or "").encode())
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        raise ValidationError(
            f"function {arn} did not answer the discovery request with a manifest "
            "({'services': [...]}); is it built with the Kafka Ingress SDK?"
        )
    return data
