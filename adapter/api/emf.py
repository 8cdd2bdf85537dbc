"""Consumer lag and errors as CloudWatch embedded-metric-format (EMF) log lines.

With ``[metrics] cloudwatch-emf = true`` the poller prints, every ``cloudwatch-emf-interval-s``
seconds, one JSON line to stdout that CloudWatch Logs turns into metrics — no AWS API call and
no permission beyond writing its log, nothing on the hot path::

    {"_aws": {"Timestamp": 1767225600000, "CloudWatchMetrics": [{"Namespace": "KafkaIngress",
      "Dimensions": [["Service"]], "Metrics": [{"Name": "ConsumerLag", "Unit": "Count"},
      {"Name": "InvocationErrors", "Unit": "Count"}]}]},
     "Service": "kafka-ingress-prod-poller", "ConsumerLag": 1234, "InvocationErrors": 3}

``ConsumerLag`` is the lag of the partitions this poller owns (log end offset minus the
committed position, summed) — the signal the ECS service scales on (docs/deploy.md); its Sum
over the pollers is the service's lag. ``InvocationErrors`` counts invocations that failed
terminally or were dead-lettered since the previous line. The dimension is ``[metrics]
service`` (``KAFKA_INGRESS_METRICS_SERVICE``).

:func:`emf_line` is pure; :class:`EmfEmitter` is the loop that prints it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = ["NAMESPACE", "EmfEmitter", "emf_line", "totals"]

NAMESPACE = "KafkaIngress"

Status = Mapping[str, Mapping[str, Any]]
Partitions = Mapping[str, Mapping[Any, Mapping[str, int | None]]]


def totals(status: Status, partitions: Partitions) -> tuple[int, int]:
    """(lag of every partition held here, terminal failures counted so far)."""
    lag = sum(int(part.get("lag") or 0) for parts in partitions.values() for part in parts.values())
    errors = 0
    for info in status.values():
        stats = info.get("stats")
        if stats is not None:
            errors += int(stats.failed) + int(stats.dead_lettered)
    return lag, errors


def emf_line(service: str, *, lag: int, errors: int, timestamp_ms: int) -> str:
    """One EMF record: ``ConsumerLag`` and ``InvocationErrors`` for ``service``."""
    record = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Service"]],
                    "Metrics": [
                        {"Name": "ConsumerLag", "Unit": "Count"},
                        {"Name": "InvocationErrors", "Unit": "Count"},
                    ],
                }
            ],
        },
        "Service": service,
        "ConsumerLag": lag,
        "InvocationErrors": errors,
    }
    return json.dumps(record, separators=(",", ":"))


class EmfEmitter:
    """Prints :func:`emf_line` every ``interval_s`` from the supervisor's figures."""

    def __init__(
        self,
        service: str,
        *,
        status: Callable[[], Status],
        partitions: Callable[[], Partitions],
        interval_s: float = 60.0,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._status = status
        self._partitions = partitions
        self._interval_s = interval_s
        self._out = out
        self._clock = clock
        self._errors_before: int | None = None

    def emit(self) -> str:
        lag, errors = totals(self._status(), self._partitions())
        # Errors as a count per line (what Sum over a period adds up), not a running total.
        new_errors = errors - self._errors_before if self._errors_before is not None else 0
        self._errors_before = errors
        line = emf_line(
            self._service,
            lag=lag,
            errors=max(0, new_errors),
            timestamp_ms=int(self._clock() * 1000),
        )
        out = self._out if self._out is not None else sys.stdout
        print(line, file=out, flush=True)
        return line

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.emit()
