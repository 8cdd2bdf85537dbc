"""Logging set-up: one line per event, secrets masked before anything is written.

Two formats (``log-format``):

- ``text`` (default)::

    2026-12-04T22:02:33.123+00:00 INFO    adapter.engine.dispatcher: invocation inv_1... failed: ...

- ``json``, one object a line for log pipelines: ``time`` (ISO 8601, UTC, milliseconds),
  ``level``, ``logger``, ``message``, ``exception`` when there is one, and the record's context
  where known: ``subscription``, ``topic``, ``partition``, ``offset``, ``invocation_id``,
  ``trace_id``.

The context comes from ``extra=`` at the log call or, inside an invocation's task, from
:func:`bind_invocation` (a contextvar, so everything logged while that invocation runs carries
it). Both formats see the message after :class:`SecretMaskingFilter` has masked it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from adapter.kafka.log_limits import RepeatLimit
from adapter.masking import mask_secrets

__all__ = [
    "CONTEXT_FIELDS",
    "JsonFormatter",
    "SecretMaskingFilter",
    "TextFormatter",
    "bind_invocation",
    "configure_logging",
    "mask_secrets",
]

LogFormat = Literal["text", "json"]

CONTEXT_FIELDS = ("subscription", "topic", "partition", "offset", "invocation_id", "trace_id")
"""Attributes a log record may carry (via ``extra=`` or :func:`bind_invocation`)."""

# The values of CONTEXT_FIELDS, in that order (a tuple: this is set for every record).
_CONTEXT: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar(
    "kafka_ingress_log_context", default=None
)


def bind_invocation(
    *,
    subscription: str,
    topic: str,
    partition: int,
    offset: int,
    invocation_id: str,
    trace_id: str | None = None,
) -> None:
    """Name the invocation the current task works on, for every line it logs from now on.

    Call it at the start of a task of its own: the value stays in that task's context.
    """
    _CONTEXT.set((subscription, topic, partition, offset, invocation_id, trace_id or None))


class SecretMaskingFilter(logging.Filter):
    """Masks secrets (see :mod:`adapter.masking`) in the fully formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        # A traceback quotes exception messages (URLs, option values): formatted and masked
        # here, the formatter then prints this text instead of formatting it again.
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``<ISO 8601 time> <level> <logger>: <message>``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _CONTEXT.get()
        for index, name in enumerate(CONTEXT_FIELDS):
            value = getattr(record, name, None)
            if value is None and context is not None:
                value = context[index]
            if value is not None:
                out[name] = value
        if record.exc_info and not record.exc_text:
            # Not seen by the masking filter (a handler without it): mask here.
            record.exc_text = mask_secrets(self.formatException(record.exc_info))
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # Repeats are dropped before they cost a masking pass.
    handler.addFilter(RepeatLimit())
    handler.addFilter(SecretMaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every retry of a failing connection at ERROR; our own logs say it once.
    # KAFKA_INGRESS_KAFKA_LOG_LEVEL=INFO shows group membership changes when debugging.
    kafka_level = os.environ.get("KAFKA_INGRESS_KAFKA_LOG_LEVEL")
    logging.getLogger("aiokafka").setLevel(
        kafka_level.upper() if kafka_level else max(logging.WARNING, root.level)
    )
    # At DEBUG, botocore logs whole request bodies (subscription options, deployment headers)
    # in a shape the masking filter cannot parse: never let it go below INFO.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
