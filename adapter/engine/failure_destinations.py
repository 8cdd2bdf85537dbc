"""Building the on-failure destination of a subscription (``destination.on.failure``).

SQS, SNS and S3 writers get a boto3 client per service and region, shared by the
subscriptions of this poller; like the secrets clients they follow ``[dynamodb] endpoint-url``
when it is set (one endpoint for AWS's services in local setups), else they reach AWS
itself. A Kafka topic destination writes through the cluster's shared producer (the
dead-letter one).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from adapter.engine.discards import FailureDestination
from adapter.errors import (
    DestinationError,
    DestinationRecordTooLargeError,
    KafkaError,
    KafkaRecordTooLargeError,
)
from adapter.failure_destination import Destination, DestinationKind
from adapter.invokers.destinations import KafkaTopicWriter, S3Writer, SnsWriter, SqsWriter
from adapter.kafka.dead_letter import DeadLetterProducer
from adapter.model import KafkaRecord

__all__ = ["FailureDestinations"]


class _ProducerSend:
    """The shared producer, as the Kafka topic writer calls it."""

    def __init__(self, producer: DeadLetterProducer) -> None:
        self._producer = producer

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> None:
        # The producer takes a record; only its key and value are written.
        message = KafkaRecord(topic, 0, 0, key, value, 0)
        try:
            await self._producer.send(topic, message, [])
        except KafkaRecordTooLargeError as exc:
            raise DestinationRecordTooLargeError(f"Kafka topic {topic}: {exc}") from exc
        except KafkaError as exc:
            raise DestinationError(f"Kafka topic {topic}: {exc}", retryable=True) from exc


class FailureDestinations:
    """Writers for parsed destinations, with their clients cached per service and region."""

    def __init__(self, *, endpoint_url: str | None, region: str) -> None:
        self._endpoint_url = endpoint_url
        self._region = region
        self._clients: dict[tuple[str, str], Any] = {}

    def _client(self, service: str, region: str | None) -> Any:
        key = (service, region or self._region)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = boto3.client(
                service,  # type: ignore[call-overload]
                endpoint_url=self._endpoint_url,
                region_name=key[1],
                config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
            )
        return client

    def build(
        self, destination: Destination, producer: DeadLetterProducer | None
    ) -> FailureDestination:
        kind = destination.kind
        if kind is DestinationKind.KAFKA:
            assert producer is not None, "a Kafka destination needs the cluster's producer"
            writer: Any = KafkaTopicWriter(_ProducerSend(producer), destination)
        elif kind is DestinationKind.SQS:
            writer = SqsWriter(self._client("sqs", destination.region), destination)
        elif kind is DestinationKind.SNS:
            writer = SnsWriter(self._client("sns", destination.region), destination)
        else:
            writer = S3Writer(self._client("s3", destination.region), destination)
        return FailureDestination(kind, writer)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
