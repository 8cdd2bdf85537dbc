"""Logging set-up: one line per event, secrets masked before anything is written."""

from __future__ import annotations

import logging
import re
import sys

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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every retry of a failing connection at ERROR; our own logs say it once.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
