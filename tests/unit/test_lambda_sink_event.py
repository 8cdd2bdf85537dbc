"""What the Lambda invoker sends a ``lambda://`` sink: AWS's Kafka event, field by field.

Golden events: AWS Lambda developer guide, "Using Lambda with Amazon MSK" example event
(https://docs.aws.amazon.com/lambda/latest/dg/with-msk.html) and the self-managed Apache Kafka
example event (https://docs.aws.amazon.com/lambda/latest/dg/with-kafka.html), as written out in
``tests/unit/test_kafka_event.py``. Readers: Powertools' parser models
(``aws_lambda_powertools/utilities/parser/models/kafka.py``) and data class
(``utilities/data_classes/kafka_event.py``), which refuse what AWS would never send.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEvent
from aws_lambda_powertools.utilities.parser.models.kafka import (
    KafkaMskEventModel,
    KafkaSelfManagedEventModel,
)

from adapter.invokers.aws_lambda import LambdaInvoker, LambdaReply
from adapter.invokers.base import InvocationRequest, OutcomeKind
from adapter.invokers.kafka_event import EventSource
from adapter.model import (
    Deployment,
    HandlerType,
    InputKind,
    KafkaRecord,
    ServiceType,
    Target,
)
from adapter.store.function_sinks import function_sink_service
from tests.unit.test_kafka_event import (
    AWS_MSK_EXAMPLE,
    AWS_SELF_MANAGED_EXAMPLE,
    BROKERS,
    RECORD,
    _assert_field_by_field,
)

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:orders-consumer"
CLUSTER_ARN = str(AWS_MSK_EXAMPLE["eventSourceArn"])


class CapturingClient:
    """Stands in for the boto3 shell: keeps the payload, answers like a plain function."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    async def invoke(
        self, function: str, payload: bytes, *, timeout_s: float | None = None
    ) -> LambdaReply:
        self.payloads.append(orjson.loads(payload))
        return LambdaReply(function, b"null")

    async def aclose(self) -> None:
        return None


def _sink_target() -> Target:
    service = function_sink_service(FUNCTION)
    (handler,) = service.handlers
    return Target(
        service=service.name,
        handler=handler.name,
        service_type=service.service_type,
        handler_type=handler.handler_type,
        input_kind=handler.input_kind,
        deployment=Deployment(id=service.deployment_id, arn=FUNCTION),
    )


def _sdk_target() -> Target:
    return Target(
        service="Orders",
        handler="place",
        service_type=ServiceType.SERVICE,
        handler_type=HandlerType.SERVICE,
        input_kind=InputKind.JSON,
        deployment=Deployment(id="dp_1", arn=FUNCTION),
    )


def _request(target: Target, record: KafkaRecord = RECORD) -> InvocationRequest:
    return InvocationRequest(
        invocation_id=f"inv-{record.offset}",
        target=target,
        key=None,
        body=record.value or b"",
        record=record,
    )


async def _sent(target: Target, source: EventSource, *records: KafkaRecord) -> dict[str, Any]:
    client = CapturingClient()
    invoker = LambdaInvoker(client, event_format="msk", event_source=source)  # type: ignore[arg-type]
    outcomes = await invoker.invoke_batch([_request(target, r) for r in records or (RECORD,)])
    assert {o.kind for o in outcomes} == {OutcomeKind.ACK}
    (payload,) = client.payloads
    return payload


@pytest.mark.promise("p-function-sink-event")
async def test_a_function_sink_on_msk_gets_aws_msk_example_event_exactly() -> None:
    source = EventSource(bootstrap_servers=BROKERS, msk_cluster_arn=CLUSTER_ARN)
    event = await _sent(_sink_target(), source)
    _assert_field_by_field(event, AWS_MSK_EXAMPLE)
    assert event == AWS_MSK_EXAMPLE  # nothing of ours added (no kafkaIngress)
    parsed = KafkaMskEventModel.model_validate(event)
    assert parsed.eventSourceArn == CLUSTER_ARN
    assert parsed.bootstrapServers == BROKERS
    (record,) = parsed.records["mytopic-0"]
    assert (record.key, record.value) == (b"recordKey", "Hello, this is a test.")


@pytest.mark.promise("p-function-sink-event")
async def test_a_function_sink_on_self_managed_kafka_gets_the_real_brokers() -> None:
    event = await _sent(_sink_target(), EventSource(bootstrap_servers=BROKERS))
    assert event == AWS_SELF_MANAGED_EXAMPLE
    # Powertools' parser refuses an empty bootstrapServers: the brokers must be there.
    parsed = KafkaSelfManagedEventModel.model_validate(event)
    assert parsed.bootstrapServers == BROKERS
    with pytest.raises(ValueError, match="bootstrapServers"):
        KafkaSelfManagedEventModel.model_validate({**event, "bootstrapServers": ""})


async def test_log_append_time_headers_and_tombstones_reach_the_function_as_aws_sends_them() -> (
    None
):
    records = (
        KafkaRecord(
            "orders",
            2,
            40,
            b"k",
            b'{"n": 1}',
            1700000000000,
            headers=(("trace", b"a"), ("trace", b"b"), ("gone", None)),
            timestamp_type="LOG_APPEND_TIME",
        ),
        KafkaRecord("orders", 2, 41, b"k", None, 1700000000001),
    )
    event = await _sent(_sink_target(), EventSource(bootstrap_servers=["h:9092"]), *records)
    first, tombstone = event["records"]["orders-2"]
    assert first["timestampType"] == "LOG_APPEND_TIME"
    assert first["headers"] == [{"trace": [97]}, {"trace": [98]}, {}]
    assert tombstone["value"] is None
    assert tombstone["timestampType"] == "CREATE_TIME"
    read = list(KafkaEvent(event).records)
    assert read[0].timestamp_type == "LOG_APPEND_TIME"
    assert read[0].json_value == {"n": 1}
    assert [r.offset for r in read] == [40, 41]


async def test_functions_built_with_the_sdk_still_get_our_metadata() -> None:
    event = await _sent(_sdk_target(), EventSource(bootstrap_servers=BROKERS))
    assert event["kafkaIngress"]["service"] == "Orders"
    assert event["kafkaIngress"]["invocations"][0]["invocationId"] == "inv-15"
    assert {k: v for k, v in event.items() if k != "kafkaIngress"} == AWS_SELF_MANAGED_EXAMPLE
