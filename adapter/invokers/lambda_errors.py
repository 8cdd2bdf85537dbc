"""What the Lambda Invoke API answered, and its own errors as outcomes. Pure.

Shared by the Invoke client (:mod:`adapter.invokers.lambda_client`) and the invoker
(:mod:`adapter.invokers.aws_lambda`), which reads the function's answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapter.invokers.base import Outcome

__all__ = ["LambdaReply", "outcome_from_client_error", "short"]

_ERROR_TEXT_LIMIT = 500

_TERMINAL_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "RequestTooLargeException",
        "InvalidRequestContentException",
        "InvalidParameterValueException",
        "UnsupportedMediaTypeException",
    }
)
# Errors that clear up without touching the record: throttling, a function being updated,
# VPC/KMS/EFS hiccups, and credentials or IAM policies that are being fixed.
_RETRY_CODES = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "ResourceConflictException",
        "ResourceNotReadyException",
        "ServiceException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "RequestExpired",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "EC2AccessDeniedException",
        "EC2ThrottledException",
        "EC2UnexpectedException",
        "ENILimitReachedException",
        "EFSIOException",
        "EFSMountConnectivityException",
        "EFSMountFailureException",
        "EFSMountTimeoutException",
        "SubnetIPAddressLimitReachedException",
        "SnapStartNotReadyException",
        "SnapStartTimeoutException",
    }
)


@dataclass(frozen=True, slots=True)
class LambdaReply:
    """What ``Invoke`` returned: the payload and, if the function failed, ``FunctionError``."""

    function: str
    payload: bytes
    function_error: str | None = None


def short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "…"


def outcome_from_client_error(
    function: str, code: str, message: str, *, status: int = 0, retry_after: float | None = None
) -> Outcome:
    """The outcome of an error of the Invoke API itself (not of the function's code)."""
    text = f"Lambda Invoke {function}: {code}: {short(message)}"
    if code in _TERMINAL_CODES:
        return Outcome.terminal(text)
    if code in _RETRY_CODES or status >= 500 or status in (408, 429) or status == 0:
        return Outcome.retry(text, retry_after)
    return Outcome.terminal(text)
