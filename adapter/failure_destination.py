"""The name of an on-failure destination (``destination.on.failure``), parsed and checked.

Pure, and below every other layer so that option validation (``adapter.kafka.options``) and
the writers (``adapter.invokers.destinations``) share one parser. The accepted names are an
event source mapping's ``DestinationConfig.OnFailure.Destination`` values
(docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html) plus ``kafka://<topic>`` for a
topic of the subscription's own cluster.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from adapter.errors import ConfigError

__all__ = ["Destination", "DestinationKind", "parse_destination"]


class DestinationKind(enum.StrEnum):
    SQS = "sqs"
    SNS = "sns"
    S3 = "s3"
    KAFKA = "kafka"


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed destination: ``name`` is the queue, topic or bucket."""

    kind: DestinationKind
    name: str
    arn: str | None = None
    region: str | None = None
    account: str | None = None


_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws(?:-[a-z]+)*):(?P<service>sqs|sns|s3):(?P<region>[a-z0-9-]*):"
    r"(?P<account>\d{12})?:(?P<name>[A-Za-z0-9._-]{1,256})$"
)
_KAFKA_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def parse_destination(text: str) -> Destination:
    """Parse an on-failure destination; :class:`ConfigError` says what is accepted."""
    value = text.strip()
    if value.startswith("kafka://"):
        topic = value.removeprefix("kafka://")
        if not _KAFKA_TOPIC_RE.match(topic) or topic in (".", "..") or topic.startswith("__"):
            raise ConfigError(f"on-failure destination {value!r}: not a Kafka topic name")
        return Destination(DestinationKind.KAFKA, topic)
    match = _ARN_RE.match(value)
    if match is None:
        raise ConfigError(
            f"on-failure destination {value[:100]!r}: expected an SQS queue, SNS topic or S3 "
            "bucket ARN (arn:aws:sqs:<region>:<account>:<queue>, arn:aws:sns:…, "
            "arn:aws:s3:::<bucket>) or kafka://<topic>"
        )
    service = DestinationKind(match["service"])
    is_s3 = service is DestinationKind.S3
    if is_s3 != (not match["region"] and not match["account"]):
        where = "no region or account" if is_s3 else "a region and an account"
        raise ConfigError(f"on-failure destination {value!r}: a {service} ARN has {where}")
    return Destination(
        service,
        match["name"],
        arn=value,
        region=match["region"] or None,
        account=match["account"] or None,
    )
