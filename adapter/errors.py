"""The exception tree of Kafka Ingress.

Every dependency's errors (aiokafka, botocore, aiohttp, pydantic) are translated into one of
these at the boundary of the module that talks to the dependency (``raise X from exc``), so
callers never have to know which library sits underneath.

    IngressError
    ├── ConfigError              bad settings file / env var / option; message names the key
    ├── ValidationError          bad API input (maps to 400)
    │   ├── UnknownResourceError (maps to 404)
    │   └── ItemTooLargeError    the store refused an item as too large (maps to 400)
    ├── ConflictError            state does not allow the operation (maps to 409)
    ├── StoreError               DynamoDB failed or is unreachable
    │   ├── ConditionFailedError a conditional write lost its race
    │   └── SecretError          KMS, Secrets Manager or SSM failed or is unreachable
    ├── KafkaError               the Kafka client failed
    │   ├── KafkaAuthError       authentication/authorisation against the broker failed
    │   └── KafkaRecordTooLargeError  a record to produce is larger than the client or the
    │                                 topic allows: sending it again cannot help
    ├── InvokeError              calling a handler failed (carries retry meaning)
    │   ├── RetryableInvokeError   try again, optionally after ``retry_after`` seconds
    │   └── TerminalInvokeError    never retry this record
    ├── DestinationError         writing to an on-failure destination (SQS, SNS, S3, Kafka)
    │   │                        failed; ``retryable`` says whether trying again may help
    │   └── DestinationRecordTooLargeError  the failure record is too large for its topic
    └── LocalStackError          a local dev service (broker, moto, lambda) failed to start
"""

from __future__ import annotations

__all__ = [
    "ConditionFailedError",
    "ConfigError",
    "ConflictError",
    "DestinationError",
    "DestinationRecordTooLargeError",
    "IngressError",
    "InvokeError",
    "ItemTooLargeError",
    "KafkaAuthError",
    "KafkaError",
    "KafkaRecordTooLargeError",
    "LocalStackError",
    "RetryableInvokeError",
    "SecretError",
    "StoreError",
    "TerminalInvokeError",
    "UnknownResourceError",
    "ValidationError",
]


class IngressError(Exception):
    """Base of every error raised by Kafka Ingress."""


class ConfigError(IngressError):
    """Configuration is invalid. The message names the offending key and what is expected."""


class ValidationError(IngressError):
    """A request or resource definition is invalid."""


class UnknownResourceError(ValidationError):
    """The named resource does not exist."""


class ItemTooLargeError(ValidationError):
    """The store refused what it was given as larger than an item may be."""


class ConflictError(IngressError):
    """The resource's current state does not allow the requested operation."""


class StoreError(IngressError):
    """The state store (DynamoDB) failed or could not be reached."""


class ConditionFailedError(StoreError):
    """A conditional write was rejected because the item changed underneath us."""


class SecretError(StoreError):
    """A secret could not be encrypted, decrypted or fetched (KMS, Secrets Manager, SSM).

    A store error: callers that keep going while DynamoDB is away (the supervisor's refresh)
    keep going while KMS is away too, and the admin API answers 503."""


class KafkaError(IngressError):
    """The Kafka client failed."""


class KafkaAuthError(KafkaError):
    """The broker rejected our credentials or certificate."""


class KafkaRecordTooLargeError(KafkaError):
    """A record to produce is too large: for the client's ``max_request_size`` (refused
    before sending) or for the topic's ``max.message.bytes`` (refused by the broker).

    The same record fails the same way again; a caller that retries Kafka errors must send
    something smaller instead (``adapter.engine.dead_letters``)."""


class InvokeError(IngressError):
    """Invoking a handler failed."""


class RetryableInvokeError(InvokeError):
    """The invocation may succeed if tried again, optionally not before ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TerminalInvokeError(InvokeError):
    """The invocation must not be retried; the record is failed/dead-lettered."""


class DestinationError(IngressError):
    """An on-failure destination refused or did not take a failure record."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class DestinationRecordTooLargeError(DestinationError):
    """A failure record is larger than its Kafka destination topic (or the producer) accepts:
    the same record fails the same way again, a smaller one must be sent instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class LocalStackError(IngressError):
    """A local development service (Kafka broker, moto server, Lambda endpoint) failed."""
