"""Errors a handler raises to tell the ingress what to do with the record.

    Exception                     anything unexpected: the record is retried (HTTP 500)
    ├── TerminalError             never retry: the record is failed / dead-lettered (HTTP 4xx)
    └── RetryableError            retry, not before ``retry_after`` seconds (HTTP 503)

The names follow Restate's SDK. Both transports (HTTP and Lambda) map them to the same
status codes, so a handler behaves identically whichever way it is deployed.
"""

from __future__ import annotations

__all__ = ["HandlerError", "RetryableError", "TerminalError"]


class HandlerError(Exception):
    """Base of the errors a handler raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TerminalError(HandlerError):
    """This record can never succeed: do not retry it.

    ``status_code`` is the HTTP status sent back; it must be a 4xx other than 408 and 429,
    because those two mean "retry" in the handler protocol.
    """

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        if not 400 <= status_code < 500 or status_code in (408, 429):
            raise ValueError(
                f"TerminalError status_code must be a 4xx other than 408/429, got {status_code}"
            )
        super().__init__(message)
        self.status_code = status_code


class RetryableError(HandlerError):
    """Try this record again later, not before ``retry_after`` seconds if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must be >= 0 seconds, got {retry_after}")
        super().__init__(message)
        self.retry_after = retry_after
