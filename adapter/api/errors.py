"""From exceptions to the admin API's error responses.

Every error body has Restate's shape, ``{"message": "...", "restate_code": null}``, so
Restate's CLI and UI show our messages as they show Restate's. The status comes from the
exception tree of :mod:`adapter.errors`:

    UnknownResourceError                     404
    ValidationError, ConfigError             400
    ConflictError                            409
    ApiError                                 its own status (401, 405, 501, 503 ...)
    StoreError, KafkaError                   503  (a dependency is unreachable; retry)
    any other IngressError                   500
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from adapter.errors import (
    ConfigError,
    ConflictError,
    IngressError,
    KafkaError,
    StoreError,
    UnknownResourceError,
    ValidationError,
)
from adapter.masking import mask_secrets

__all__ = ["ApiError", "error_response", "status_for"]


class ApiError(IngressError):
    """An error with an explicit HTTP status (authentication, not implemented, ...)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def status_for(exc: IngressError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, UnknownResourceError):
        return 404
    if isinstance(exc, ValidationError | ConfigError):
        return 400
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, StoreError | KafkaError):
        return 503
    return 500


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None, mask: bool = True
) -> JSONResponse:
    """Restate's error shape. Messages are built from user input and dependency errors, so
    anything secret-shaped is masked; ``mask=False`` only for a constant written in this
    package, which holds no secret but may look like one (``Authorization: Bearer <token>``)."""
    return JSONResponse(
        {"message": mask_secrets(message) if mask else message, "restate_code": None},
        status_code=status,
        headers=headers,
    )
