"""Logging set-up: one line per event, secrets masked before anything is written."""

from __future__ import annotations

import logging
import os
import sys

from adapter.kafka.log_limits import RepeatLimit
from adapter.masking import mask_secrets

__all__ = ["SecretMaskingFilter", "configure_logging", "mask_secrets"]


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


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
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
