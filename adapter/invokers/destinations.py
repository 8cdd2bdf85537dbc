"""On-failure destinations: where AWS's failure record of a discarded batch is written.

A destination is named as in an event source mapping's ``DestinationConfig.OnFailure
.Destination``: an ARN for AWS's services, ``kafka://<topic>`` for a topic of the same cluster
(docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html, ".../kafka-on-failure-destination
.html"):

    arn:aws:sqs:<region>:<account>:<queue>     SQS SendMessage, the record as the body
    arn:aws:sns:<region>:<account>:<topic>     SNS Publish, the record as the message
    arn:aws:s3:::<bucket>                      S3 PutObject, the record (with ``payload``)
    kafka://<topic>                            a Kafka message per record, keyed as it was

:func:`parse_destination` is pure. Each writer is a thin shell behind one method,
:meth:`FailureWriter.deliver`; boto3 is synchronous, so its calls run on a worker thread.
Every dependency error becomes a :class:`~adapter.errors.DestinationError` saying whether a
retry may help (throttling, 5xx, network) or not (missing queue, access denied, too large).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka.errors import KafkaError as AioKafkaError
from botocore.exceptions import BotoCoreError, ClientError

from adapter.errors import DestinationError, DestinationRecordTooLargeError
from adapter.failure_destination import Destination, DestinationKind, parse_destination

__all__ = [
    "Delivery",
    "Destination",
    "DestinationKind",
    "FailureWriter",
    "KafkaTopicWriter",
    "S3Writer",
    "SnsWriter",
    "SqsWriter",
    "parse_destination",
    "s3_object_key",
]


def s3_object_key(mapping_id: str, partition: str, failed_at_ms: int, unique: str = "") -> str:
    """AWS's object layout for stream failures: ``aws/lambda/<id>/<partition>/YYYY/MM/DD/…``."""
    moment = datetime.fromtimestamp(failed_at_ms / 1000, tz=UTC)
    day = moment.strftime("%Y/%m/%d")
    stamp = moment.strftime("%Y-%m-%dT%H.%M.%S")
    return f"aws/lambda/{mapping_id}/{partition}/{day}/{stamp}-{unique or uuid.uuid4()}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One failure record: ``body`` (JSON), the Kafka key, the S3 object key, and for a Kafka
    topic the record without its payload (``without_payload``), written when the whole one is
    too large for the topic."""

    body: bytes
    kafka_key: bytes | None = None
    s3_key: str = ""
    without_payload: bytes | None = None


class FailureWriter(Protocol):
    async def deliver(self, delivery: Delivery) -> None: ...


# Error codes after which trying again may succeed.
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KMSThrottlingException",
        "RequestTimeout",
    }
)


def _translate(what: str, exc: Exception) -> DestinationError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = str(error.get("Message", ""))[:300]
        retryable = code in _RETRYABLE_CODES or status >= 500 or status == 429
        return DestinationError(f"{what}: {code}: {message}", retryable=retryable)
    # Connection failures, timeouts: the service may be back soon.
    return DestinationError(f"{what}: {type(exc).__name__}: {exc}"[:400], retryable=True)


async def _call(what: str, fn: Any, /, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, **kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise _translate(what, exc) from exc


class SqsWriter:
    """SendMessage to one queue; the URL is looked up from the ARN on first use."""

    def __init__(self, client: Any, destination: Destination) -> None:
        if destination.kind is not DestinationKind.SQS:
            raise ValueError(f"not an SQS destination: {destination}")
        self._client = client
        self._destination = destination
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"SqsWriter({self._destination.arn})"

    async def deliver(self, delivery: Delivery) -> None:
        what = f"SQS {self._destination.arn}"
        if self._url is None:
            kwargs: dict[str, Any] = {"QueueName": self._destination.name}
            if self._destination.account:
                kwargs["QueueOwnerAWSAccountId"] = self._destination.account
            answer = await _call(what, self._client.get_queue_url, **kwargs)
            self._url = str(answer["QueueUrl"])
        await _call(
            what,
            self._client.send_message,
            QueueUrl=self._url,
            MessageBody=delivery.body.decode("utf-8"),
        )


class SnsWriter:
    """Publish to one topic."""

    def __init__(self, client: Any, destination: Destination) -> None:
        if destination.kind is not DestinationKind.SNS:
            raise ValueError(f"not an SNS destination: {destination}")
        self._client = client
        self._destination = destination

    def __repr__(self) -> str:
        return f"SnsWriter({self._destination.arn})"

    async def deliver(self, delivery: Delivery) -> None:
        await _call(
            f"SNS {self._destination.arn}",
            self._client.publish,
            TopicArn=self._destination.arn,
            Message=delivery.body.decode("utf-8"),
        )


class S3Writer:
    """PutObject into one bucket, at ``delivery.s3_key``."""

    def __init__(self, client: Any, destination: Destination) -> None:
        if destination.kind is not DestinationKind.S3:
            raise ValueError(f"not an S3 destination: {destination}")
        self._client = client
        self._destination = destination

    def __repr__(self) -> str:
        return f"S3Writer({self._destination.arn})"

    async def deliver(self, delivery: Delivery) -> None:
        if not delivery.s3_key:
            raise ValueError("an S3 delivery needs s3_key")
        await _call(
            f"S3 {self._destination.arn}",
            self._client.put_object,
            Bucket=self._destination.name,
            Key=delivery.s3_key,
            Body=delivery.body,
            ContentType="application/json",
        )


class KafkaSend(Protocol):
    """What the Kafka writer needs of a producer (aiokafka's ``AIOKafkaProducer`` has it)."""

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any: ...


class KafkaTopicWriter:
    """One message per failed record, keyed by the record's key (AWS keeps the partitioning)."""

    def __init__(self, producer: KafkaSend, destination: Destination) -> None:
        if destination.kind is not DestinationKind.KAFKA:
            raise ValueError(f"not a Kafka destination: {destination}")
        self._producer = producer
        self._topic = destination.name

    def __repr__(self) -> str:
        return f"KafkaTopicWriter({self._topic})"

    async def deliver(self, delivery: Delivery) -> None:
        try:
            await self._send(delivery.body, delivery.kafka_key)
            return
        except DestinationRecordTooLargeError:
            # The source record's event does not fit the topic: the failure record goes
            # without it (its topic, partition and offset say where the record is), and
            # without the record's key too if that alone is too large.
            if delivery.without_payload is None:
                raise
        try:
            await self._send(delivery.without_payload, delivery.kafka_key)
        except DestinationRecordTooLargeError:
            if delivery.kafka_key is None:
                raise
            await self._send(delivery.without_payload, None)

    async def _send(self, body: bytes, key: bytes | None) -> None:
        try:
            await self._producer.send_and_wait(self._topic, value=body, key=key)
        except AioKafkaError as exc:
            raise DestinationError(
                f"Kafka topic {self._topic}: {type(exc).__name__}: {exc}"[:400],
                retryable=bool(getattr(exc, "retriable", False)),
            ) from exc
