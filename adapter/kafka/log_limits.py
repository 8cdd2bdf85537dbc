"""Rate limits for the Kafka client's repeated log lines.

aiokafka logs the same failure on every retry — a missing topic about ten times a second —
which buries everything else in the log. :class:`RepeatLimit` lets the first line of a kind
through and then at most one per ``interval_s``, with the count of lines it held back. It sits
on the output handler, not on aiokafka's loggers, so the connection watch
(``adapter.kafka.errors``) still sees every line it diagnoses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RepeatLimit"]

_MAX_KINDS = 1024


class RepeatLimit(logging.Filter):
    """Passes a ``(logger, message template, arguments)`` kind at most once per interval."""

    def __init__(
        self,
        prefix: str = "aiokafka",
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix) or record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg), repr(record.args))
        now = self._clock()
        with self._lock:
            last = self._seen.get(kind)
            if last is not None and now - last[0] < self._interval_s:
                self._seen[kind] = (last[0], last[1] + 1)
                return False
            if len(self._seen) >= _MAX_KINDS:
                self._seen.clear()
            self._seen[kind] = (now, 0)
        if last is not None and last[1] and isinstance(record.args, tuple):
            record.msg = f"{record.msg} (repeated {last[1]} times in the last %.0fs)"
            record.args = (*record.args, now - last[0])
        return True
