"""A Kafka function's answer to one batch, read the way AWS's event source mapping reads it.

Pure: the batch, what ``Invoke`` returned and the subscription's flag in; one verdict out.

    function error (FunctionError set)          every record failed (kind FUNCTION_ERROR)
    report.batch.item.failures off               any other answer is a success, as on AWS:
                                                 a partial response is ignored
    on, and null / {} / no or empty
      batchItemFailures                          success
    on, and batchItemFailures lists records      per partition, the lowest reported offset
                                                 is the checkpoint: it and every later
                                                 record of that partition are retried, the
                                                 rest succeeded (kind PARTIAL)
    on, and the list is malformed (not a list,
      an identifier null, empty, of a bad shape,
      or naming no record of the batch)          every record failed (kind INVALID_RESPONSE)

AWS's rules: docs.aws.amazon.com/lambda/latest/dg/services-kinesis-batchfailurereporting.html
("Success and failure conditions"; the lowest identifier is the checkpoint) and the Kafka
trigger's error handling page (kafka-retry-configurations.html). For Kafka the
``itemIdentifier`` is the object Powertools' ``BatchProcessor(EventType.Kafka)`` returns,
``{"partition": "<topic>-<partition>", "offset": <offset>}`` (Powertools 3.37,
``utilities/batch/base.py::_collect_kafka_failures``). Also accepted, because other
libraries send them: the key ``"topic-partition"`` in place of ``"partition"`` (an earlier
Powertools example), the string ``"<topic>-<partition>-<offset>"`` (middy), and a bare offset
when the batch holds one partition only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from adapter.invokers.kafka_event import partition_key
from adapter.model import KafkaRecord

__all__ = [
    "BatchAnswer",
    "BatchVerdict",
    "VerdictKind",
    "first_failed_onwards",
    "item_position",
    "read_batch_response",
]


class VerdictKind(enum.Enum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FUNCTION_ERROR = "function_error"
    INVALID_RESPONSE = "invalid_response"


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """``failed[i]`` says whether ``batch[i]`` must be retried; ``reason`` says why."""

    kind: VerdictKind
    failed: tuple[bool, ...]
    reason: str = ""

    @property
    def all_failed(self) -> bool:
        return bool(self.failed) and all(self.failed)


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """What one batch invocation came to: ``failed[i]`` for the batch's ``i``-th record.

    ``function_error`` is Lambda's ``FunctionError`` (None when the function answered);
    ``called`` is False when the function was never reached (throttled, unreachable). A call
    sent with no answer back (timed out, connection lost) may have run it: it is called, with
    the function error ``Unhandled``, as AWS reports a function that timed out.
    """

    failed: tuple[bool, ...]
    """Records to retry: a function error fails all; otherwise from the first failed on."""
    error: str | None = None
    function_error: str | None = None
    called: bool = True
    rejected: tuple[bool, ...] = ()
    """Records refused for good (a terminal result of the ingress protocol): never retried."""

    @classmethod
    def whole(
        cls, size: int, error: str, *, called: bool, function_error: str | None = None
    ) -> BatchAnswer:
        return cls((True,) * size, error, function_error, called)


def first_failed_onwards(failed: Sequence[bool]) -> tuple[bool, ...]:
    """A partition resumes at its first failed record: it and every later one are retried."""
    first = next((i for i, bad in enumerate(failed) if bad), len(failed))
    return tuple(i >= first for i in range(len(failed)))


def item_position(value: Any, single_partition: str | None = None) -> tuple[str, int] | None:
    """The (topic-partition, offset) an itemIdentifier names, or None if malformed."""
    if isinstance(value, Mapping):
        partition = value.get("partition", value.get("topic-partition"))
        offset = _offset(value.get("offset"))
        if isinstance(partition, str) and partition and offset is not None:
            return partition, offset
        return None
    if isinstance(value, str) and "-" in value:
        head, _, tail = value.rpartition("-")
        offset = _offset(tail)
        if head and offset is not None and head.rpartition("-")[2].isdigit():
            return head, offset
    offset = _offset(value)
    if offset is not None and single_partition is not None:
        return single_partition, offset
    return None


def _offset(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def read_batch_response(
    batch: Sequence[KafkaRecord],
    payload: bytes,
    *,
    function_error: str | None,
    report_batch_item_failures: bool,
) -> BatchVerdict:
    """What became of each record of ``batch`` (see the module's table)."""
    if function_error:
        return BatchVerdict(
            VerdictKind.FUNCTION_ERROR, (True,) * len(batch), f"function error ({function_error})"
        )
    ok = BatchVerdict(VerdictKind.SUCCESS, (False,) * len(batch))
    if not report_batch_item_failures or not payload.strip():
        return ok
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ok  # not a partial response at all: the function returned without error
    if not isinstance(data, Mapping):
        return ok
    failures = data.get("batchItemFailures")
    if failures is None or failures == []:
        return ok

    def invalid(why: str) -> BatchVerdict:
        return BatchVerdict(
            VerdictKind.INVALID_RESPONSE,
            (True,) * len(batch),
            f"invalid batchItemFailures ({why}); the whole batch is retried, as on AWS",
        )

    if not isinstance(failures, list):
        return invalid("not a list")
    positions = [(partition_key(r.topic, r.partition), r.offset) for r in batch]
    partitions = {tp for tp, _ in positions}
    single = next(iter(partitions)) if len(partitions) == 1 else None
    known = set(positions)
    checkpoint: dict[str, int] = {}
    for i, failure in enumerate(failures):
        if not isinstance(failure, Mapping) or "itemIdentifier" not in failure:
            return invalid(f"item {i} has no itemIdentifier")
        position = item_position(failure["itemIdentifier"], single)
        if position is None:
            return invalid(f"item {i}: itemIdentifier {_show(failure['itemIdentifier'])}")
        if position not in known:
            return invalid(f"item {i} names {position[0]}@{position[1]}, not in the batch")
        tp, offset = position
        checkpoint[tp] = min(offset, checkpoint.get(tp, offset))
    failed = tuple(tp in checkpoint and offset >= checkpoint[tp] for tp, offset in positions)
    where = ", ".join(f"{tp}@{offset}" for tp, offset in sorted(checkpoint.items()))
    return BatchVerdict(VerdictKind.PARTIAL, failed, f"batch item failure reported from {where}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
