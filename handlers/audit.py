"""AuditLog: a service taking the raw record value (``bytes``), whatever its format.

Keeps a digest of every record with its Kafka coordinates and headers: the shape of an
archiver or a compliance tap that must not parse (or reject) what it stores.
"""

from __future__ import annotations

import hashlib

from adapter.sdk import Context, Endpoint, Service
from handlers.state import MemoryTable

__all__ = ["audit", "endpoint", "entries", "handler"]

audit = Service("AuditLog", description="Stores a digest of every record, raw bytes in.")
entries: MemoryTable[dict[str, object]] = MemoryTable()


@audit.handler()
def append(ctx: Context, data: bytes) -> dict[str, object]:
    kafka = ctx.kafka
    entry: dict[str, object] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "topic": kafka.topic if kafka else None,
        "partition": kafka.partition if kafka else None,
        "offset": kafka.offset if kafka else None,
        "key": kafka.key if kafka else None,
        "headers": [[name, value.hex()] for name, value in ctx.record_headers],
    }
    entries.put_if_absent(ctx.invocation_id, entry)
    return {"sha256": entry["sha256"], "size": len(data)}


endpoint = Endpoint([audit])
handler = endpoint.lambda_handler()
