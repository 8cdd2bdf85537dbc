"""Handlers as cloud functions, end to end: real broker, moto server, uvicorn, and the local
Lambda endpoint reached through the real boto3 client.

The same example handler (``handlers.accounts``) consumes the same topic once over HTTP and
once as a Lambda function, with identical observable results; then batch mode, MSK-shaped
events, an unchanged AWS Kafka consumer, and signed requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapter import ids
from adapter.engine.lifecycle import InvocationStatus
from adapter.invokers.aws_lambda import discover_lambda
from adapter.invokers.signing import public_key_text
from adapter.local.lambda_server import FunctionSpec, LocalLambda, load_serverless_functions
from adapter.local.moto import MotoServer
from adapter.model import HandlerInfo, HandlerType, InputKind, ServiceInfo, ServiceType
from adapter.sdk import Context, Endpoint, Service
from adapter.store.dynamo import DynamoStore
from handlers import accounts
from handlers.app import app as handlers_app
from handlers.app import reset_state
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import (
    Ingress,
    committed_offsets,
    consume_all,
    eventually,
    produce,
    record_id,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

REGION = "us-east-1"


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:000000000000:function:{name}"


# -- a plain AWS Kafka consumer (no SDK): what already runs behind AWS's MSK trigger ----------

consumer_events: list[dict[str, Any]] = []
consumer_failures_left: dict[int, int] = {}


def plain_kafka_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    consumer_events.append(event)
    failures = []
    for tp, records in event["records"].items():
        for record in records:
            value = json.loads(base64.b64decode(record["value"]))
            offset = record["offset"]
            if consumer_failures_left.get(value["n"], 0) > 0:
                consumer_failures_left[value["n"]] -= 1
                failures.append({"itemIdentifier": {"partition": tp, "offset": offset}})
    return {"batchItemFailures": failures}


# -- a consumer whose first batch hangs until released: killing an invocation in batch mode ---

hung_gate = threading.Event()
hung_batches: list[list[int]] = []


def hanging_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    offsets = [r["offset"] for records in event["records"].values() for r in records]
    hung_batches.append(offsets)
    if 0 in offsets:
        hung_gate.wait(60)
    return {"batchItemFailures": []}


# -- signed handlers ---------------------------------------------------------------------------

SIGNING_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
signed = Service("Signed")
signed_calls: list[str] = []


@signed.handler()
def accept(ctx: Context, body: dict[str, int]) -> dict[str, int]:
    signed_calls.append(ctx.invocation_id)
    return body


signed_lambda = Endpoint([signed], identity_keys=[public_key_text(SIGNING_KEY)]).lambda_handler()


@pytest.fixture
def local_lambda() -> Iterator[LocalLambda]:
    functions = load_serverless_functions()
    functions += [
        FunctionSpec("plain-consumer", plain_kafka_consumer, timeout_s=10),
        FunctionSpec("signed", signed_lambda, timeout_s=10),
        FunctionSpec("hanging-consumer", hanging_consumer, timeout_s=90),
    ]
    local = LocalLambda(functions, region=REGION)
    try:
        yield local
    finally:
        local.close()


@pytest.fixture
async def lambda_endpoint(handler_server: HandlerServer, local_lambda: LocalLambda) -> str:
    return await handler_server(local_lambda.app)


@pytest.fixture
async def ingress(
    kafka_bootstrap: str, store: DynamoStore, moto_server: MotoServer, lambda_endpoint: str
) -> AsyncIterator[Ingress]:
    reset_state()
    harness = Ingress(
        kafka_bootstrap, store, moto_server.endpoint_url, lambda_endpoint=lambda_endpoint
    )
    try:
        yield harness
    finally:
        await harness.stop()
        reset_state()


async def register(store: DynamoStore, deployment: dict[str, Any], manifest: Any) -> str:
    """Register a deployment and its discovered services, as the admin API does."""
    dep_id = ids.deployment_id()
    await store.put_deployment({"id": dep_id, **deployment, "created_at": 0})
    for service in manifest["services"]:
        await store.put_service(
            ServiceInfo(
                name=service["name"],
                service_type=ServiceType(service["ty"]),
                deployment_id=dep_id,
                handlers=tuple(
                    HandlerInfo(h["name"], HandlerType(h["ty"] or "SERVICE"), InputKind(h["input"]))
                    for h in service["handlers"]
                ),
            )
        )
    return dep_id


async def http_manifest(url: str) -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/discover")
        response.raise_for_status()
        return response.json()


def payment(pid: str, cents: int, direction: str = "credit", currency: str = "EUR") -> bytes:
    return orjson.dumps(
        {"payment_id": pid, "amount_cents": cents, "direction": direction, "currency": currency}
    )


PAYMENTS: list[tuple[bytes, bytes]] = [
    (b"acct-1", payment("p1", 1000)),
    (b"acct-2", payment("p2", 500)),
    (b"acct-1", payment("p3", 300, "debit")),
    (b"acct-9", payment("p4", 700, currency="USD")),
    (b"acct-9", payment("p5", 100, currency="EUR")),  # wrong currency: terminal
    (b"acct-2", payment("p6", 900, "debit")),  # overdraft: terminal
    (b"acct-1", payment("p3", 300, "debit")),  # same payment again: idempotent
    (b"acct-2", b"{not json"),  # poison: terminal before invoking
    (b"acct 4/\xc3\xa9", payment("p7", 42)),
] + [(f"acct-{i % 5}".encode(), payment(f"q{i}", 10 + i)) for i in range(40)]


async def run_payments(
    ingress: Ingress, topic: str, dlq: str, options: dict[str, str] | None = None
) -> dict[str, Any]:
    """Consume the payments topic to the end; return everything a user can observe."""
    sub = await ingress.subscribe(
        topic, "Account", "apply", {"dead.letter.topic": dlq, **(options or {})}
    )
    ends = {0: 0, 1: 0}
    for p, o in placed_offsets[topic]:
        ends[p] = max(ends[p], o + 1)

    async def done() -> bool:
        return await committed_offsets(ingress.bootstrap, sub.id, topic, 2) == ends

    await eventually(done, timeout=90, message="payments not all committed")
    statuses: dict[tuple[int, int], tuple[str, int]] = {}
    for p, o in placed_offsets[topic]:
        entry = await ingress.entry_of(sub.id, topic, p, o)
        assert entry is not None
        statuses[(p, o)] = (entry.status, entry.attempts)
    letters = await consume_all(ingress.bootstrap, dlq, 3)
    dead = sorted(
        (
            int(dict(m.headers)["x-kafka-ingress-source-offset"]),
            m.key,
            "overdraw" in dict(m.headers)["x-kafka-ingress-error"].decode()
            or "kept in" in dict(m.headers)["x-kafka-ingress-error"].decode()
            or "JSON" in dict(m.headers)["x-kafka-ingress-error"].decode(),
        )
        for m in letters
    )
    await ingress.store.delete_subscription(sub.id)
    assert ingress.poller is not None
    ingress.poller.supervisor.wake()
    return {
        "balances": {
            k: (v.currency, v.balance_cents, sorted(v.applied))
            for k, v in accounts.balances.items().items()
        },
        "statuses": statuses,
        "dead_letters": dead,
    }


placed_offsets: dict[str, list[tuple[int, int]]] = {}


async def produce_payments(ingress: Ingress, topic: str) -> None:
    placed_offsets[topic] = await produce(ingress.bootstrap, topic, PAYMENTS)


async def test_same_handler_over_http_and_lambda_gives_identical_results(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    local_lambda: LocalLambda,
    lambda_endpoint: str,
) -> None:
    topic = await topic_factory(partitions=2)
    dlq_http, dlq_lambda = await topic_factory(), await topic_factory()
    await produce_payments(ingress, topic)
    await ingress.start()

    url = await handler_server(handlers_app)
    await register(ingress.store, {"uri": url}, await http_manifest(url))
    over_http = await run_payments(ingress, topic, dlq_http)
    assert local_lambda.invocations("account") == 0

    reset_state()
    manifest = await discover_lambda(arn("account"), endpoint_url=lambda_endpoint, region=REGION)
    assert manifest["services"][0]["name"] == "Account"
    await register(ingress.store, {"arn": arn("account")}, manifest)
    as_lambda = await run_payments(ingress, topic, dlq_lambda)
    assert local_lambda.invocations("account") >= len(PAYMENTS) - 1  # all but the poison one

    assert as_lambda == over_http
    balances = over_http["balances"]
    assert balances["acct-1"][1] == 1000 - 300 + sum(10 + i for i in range(40) if i % 5 == 1)
    assert balances["acct-9"] == ("USD", 700, ["p4"])
    assert balances["acct 4/é"][1] == 42
    assert balances["acct-4"][1] == sum(10 + i for i in range(40) if i % 5 == 4)
    statuses = [status for status, _ in over_http["statuses"].values()]
    assert statuses.count(InvocationStatus.DEAD_LETTERED.value) == 3
    assert statuses.count(InvocationStatus.SUCCEEDED.value) == len(PAYMENTS) - 3
    assert [ok for _, _, ok in over_http["dead_letters"]] == [True, True, True]


@pytest.mark.parametrize("event_format", ["ingress", "msk"])
async def test_batch_mode_sends_one_call_per_partition_batch_with_per_record_results(
    ingress: Ingress,
    topic_factory: TopicFactory,
    local_lambda: LocalLambda,
    lambda_endpoint: str,
    event_format: str,
) -> None:
    topic = await topic_factory(partitions=2)
    dlq = await topic_factory()
    await produce_payments(ingress, topic)
    manifest = await discover_lambda(arn("account"), endpoint_url=lambda_endpoint, region=REGION)
    await register(ingress.store, {"arn": arn("account")}, manifest)
    await ingress.start()
    batched = await run_payments(
        ingress, topic, dlq, {"batch.size": "10", "event.format": event_format}
    )
    calls = local_lambda.invocations("account")
    # Exclusive handler: one record per key at a time, so 5 accounts → batches of up to 5.
    assert calls < len(PAYMENTS) - 1, f"{calls} calls for {len(PAYMENTS)} records: not batched"

    reset_state()
    topic2 = await topic_factory(partitions=2)
    dlq2 = await topic_factory()
    await produce_payments(ingress, topic2)
    single = await run_payments(ingress, topic2, dlq2)
    assert batched["balances"] == single["balances"]
    assert {k: s for k, (s, _) in batched["statuses"].items()} == {
        k: s for k, (s, _) in single["statuses"].items()
    }
    assert batched["dead_letters"] == single["dead_letters"]


async def register_consumer(ingress: Ingress, service: str, function: str) -> None:
    """A plain Kafka consumer function as ``<service>/consume`` (raw input), as an operator
    registers a function that does not speak the discovery protocol."""
    dep_id = ids.deployment_id()
    await ingress.store.put_deployment({"id": dep_id, "arn": arn(function)})
    await ingress.store.put_service(
        ServiceInfo(
            service,
            ServiceType.SERVICE,
            dep_id,
            (HandlerInfo("consume", HandlerType.SERVICE, InputKind.RAW),),
        )
    )


async def test_an_unchanged_aws_kafka_consumer_runs_with_partial_batch_failures(
    ingress: Ingress, topic_factory: TopicFactory, local_lambda: LocalLambda
) -> None:
    consumer_events.clear()
    consumer_failures_left.clear()
    consumer_failures_left.update({3: 2, 7: 1})  # record n=3 fails twice, n=7 once
    topic = await topic_factory(partitions=1)
    await register_consumer(ingress, "Orders", "plain-consumer")
    await produce(
        ingress.bootstrap,
        topic,
        [(f"k{n}".encode(), orjson.dumps({"n": n}), [("origin", b"shop")]) for n in range(10)],
    )
    await ingress.start()
    sub = await ingress.subscribe(
        topic,
        "Orders",
        "consume",
        {
            "batch.size": "5",
            "event.format": "msk",
            "retry.initial.interval.ms": "10",
            # FunctionResponseTypes=ReportBatchItemFailures: without it AWS (and the ingress)
            # reads a partial response as success.
            "report.batch.item.failures": "true",
        },
    )

    async def done() -> bool:
        return await committed_offsets(ingress.bootstrap, sub.id, topic, 1) == {0: 10}

    await eventually(done, timeout=60, message="plain consumer did not finish")
    first = consumer_events[0]
    assert first["eventSource"] == "SelfManagedKafka"
    record = first["records"][f"{topic}-0"][0]
    assert set(record) == {
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestampType",
        "key",
        "value",
        "headers",
    }
    assert record["headers"] == [{"origin": list(b"shop")}]
    assert base64.b64decode(record["key"]).startswith(b"k")
    delivered: dict[int, int] = {}
    for event in consumer_events:
        for r in event["records"][f"{topic}-0"]:
            n = json.loads(base64.b64decode(r["value"]))["n"]
            delivered[n] = delivered.get(n, 0) + 1
    assert set(delivered) == set(range(10))
    assert delivered[3] >= 3  # failed twice, then succeeded
    assert delivered[7] >= 2
    for n in range(10):
        entry = await ingress.entry_of(sub.id, topic, 0, n)
        assert entry is not None
        assert entry.status == InvocationStatus.SUCCEEDED.value
    assert len(consumer_events) < sum(delivered.values()), "records were not batched"


async def test_killing_an_invocation_of_a_batch_in_flight_finishes_it_and_drops_its_result(
    ingress: Ingress, topic_factory: TopicFactory, local_lambda: LocalLambda
) -> None:
    # In batch mode an invocation waits for its batch's call: a kill must still settle that
    # one record at once, and the batch's late answer for it must not overwrite KILLED.
    hung_gate.clear()
    hung_batches.clear()
    topic = await topic_factory(partitions=1)
    await register_consumer(ingress, "Hanging", "hanging-consumer")
    await produce(ingress.bootstrap, topic, [(b"k", b"%d" % n, []) for n in range(4)])
    poller = await ingress.start()
    sub = await ingress.subscribe(
        topic, "Hanging", "consume", {"batch.size": "4", "event.format": "msk"}
    )

    async def first_batch_hangs() -> bool:
        return bool(hung_batches)

    await eventually(first_batch_hangs, timeout=60, message="first batch never arrived")
    assert hung_batches[0] == [0, 1, 2, 3]
    killed = await record_id(ingress.bootstrap, sub.id, topic, 0, 2)
    runner = poller.supervisor.runners()[sub.id]
    try:
        assert await runner.kill(killed, InvocationStatus.KILLED)
        assert not await runner.kill(killed, InvocationStatus.KILLED)  # settled already

        async def killed_recorded() -> bool:
            entry = await ingress.store.get_entry(killed)
            return entry is not None and entry.status == InvocationStatus.KILLED.value

        await eventually(killed_recorded, timeout=30, message="kill was not recorded")
        # Offsets 0 and 1 are still running: nothing may be committed past them.
        assert (await committed_offsets(ingress.bootstrap, sub.id, topic, 1))[0] in (None, 0)
    finally:
        hung_gate.set()

    async def all_committed() -> bool:
        return await committed_offsets(ingress.bootstrap, sub.id, topic, 1) == {0: 4}

    await eventually(all_committed, timeout=60, message="batch did not finish after release")
    entry = await ingress.store.get_entry(killed)
    assert entry is not None
    assert entry.status == InvocationStatus.KILLED.value
    for offset in (0, 1, 3):
        other = await ingress.entry_of(sub.id, topic, 0, offset)
        assert other is not None
        assert other.status == InvocationStatus.SUCCEEDED.value
    assert hung_batches == [[0, 1, 2, 3]]  # the killed record was not sent again


async def test_signed_requests_are_accepted_and_foreign_signatures_rejected(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    tmp_path: Path,
) -> None:
    signed_calls.clear()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(
        SIGNING_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ingress.signing_key_file = str(key_file)
    good_http = await handler_server(
        Endpoint([signed], identity_keys=[public_key_text(SIGNING_KEY)]).asgi_app()
    )
    foreign = Service("Foreign")
    foreign.handler("accept")(accept)
    bad_http = await handler_server(
        Endpoint([foreign], identity_keys=[public_key_text(OTHER_KEY)]).asgi_app()
    )
    await register(ingress.store, {"uri": bad_http}, {"services": [_service_json("Foreign")]})
    t_http, t_lambda, t_bad = [await topic_factory() for _ in range(3)]
    for t in (t_http, t_lambda, t_bad):
        await produce(ingress.bootstrap, t, [(None, b'{"n": 1}'), (None, b'{"n": 2}')])
    await ingress.start()

    await register(ingress.store, {"uri": good_http}, {"services": [_service_json("Signed")]})
    sub_http = await ingress.subscribe(t_http, "Signed", "accept")
    await eventually(lambda: len(signed_calls) >= 2, timeout=30, message="signed HTTP calls")
    await _wait_committed(ingress, sub_http.id, t_http)

    await register(ingress.store, {"arn": arn("signed")}, {"services": [_service_json("Signed")]})
    sub_lambda = await ingress.subscribe(t_lambda, "Signed", "accept")
    await eventually(lambda: len(signed_calls) >= 4, timeout=30, message="signed Lambda calls")
    await _wait_committed(ingress, sub_lambda.id, t_lambda)

    sub_bad = await ingress.subscribe(t_bad, "Foreign", "accept")
    await _wait_committed(ingress, sub_bad.id, t_bad)
    entry = await ingress.entry_of(sub_bad.id, t_bad, 0, 0)
    assert entry is not None
    assert entry.status == InvocationStatus.FAILED.value
    assert entry.last_error is not None
    assert "401" in entry.last_error
    assert "does not match any configured key" in entry.last_error
    assert len(signed_calls) == 4


def _service_json(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "ty": "SERVICE",
        "handlers": [{"name": "accept", "ty": None, "input": "JSON"}],
    }


async def _wait_committed(ingress: Ingress, group: str, topic: str) -> None:
    async def done() -> bool:
        return await committed_offsets(ingress.bootstrap, group, topic, 1) == {0: 2}

    await eventually(done, timeout=30, message=f"{topic} not committed")


async def test_discovering_functions_that_cannot_answer(
    local_lambda: LocalLambda, lambda_endpoint: str
) -> None:
    from adapter.errors import TerminalInvokeError, ValidationError

    with pytest.raises(TerminalInvokeError, match="ResourceNotFoundException"):
        await discover_lambda(arn("missing"), endpoint_url=lambda_endpoint, region=REGION)
    with pytest.raises(ValidationError, match="built with the Kafka Ingress SDK"):
        await discover_lambda(arn("plain-consumer"), endpoint_url=lambda_endpoint, region=REGION)
    with pytest.raises(ValidationError, match="not a Lambda function ARN"):
        await discover_lambda("arn:aws:s3:::x", endpoint_url=lambda_endpoint, region=REGION)
    assert asyncio.get_running_loop()  # the loop stayed responsive throughout
