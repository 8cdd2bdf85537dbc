"""Logging set-up: one line per event, secrets masked before anything is written."""

from __future__ import annotations

import logging
import os
import re
import sys

from adapter.kafka.log_limits import RepeatLimit

__all__ = ["SecretMaskingFilter", "configure_logging"]

# key=value / "key": "value" pairs whose key names a secret, in any log line.
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (?P<key>["']?[\w.\-]*(?:password|secret|passphrase|sasl\.username|sasl\.jaas\.config
        |sasl\.oauthbearer\.config|token)[\w.\-]*["']?\s*[:=]\s*)
    (?P<value>"[^"]*"|'[^']*'|[^\s,}\]]+)
    """
)


def mask_secrets(text: str) -> str:
    return _SECRET_PAIR.sub(lambda m: f"{m['key']}***", text)


class SecretMaskingFilter(logging.Filter):
    """Masks secret-looking key/value pairs in the fully formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(SecretMaskingFilter())
    handler.addFilter(RepeatLimit())
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
