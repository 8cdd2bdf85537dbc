"""The ledger's BatchWriteItem over aiohttp, against the moto server and a scripted DynamoDB front.

The front is a real aiohttp server on loopback: it answers from a script (throttling, errors,
unprocessed items) and passes every other request on to moto, recording what it saw.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from botocore.credentials import RefreshableCredentials

from adapter.engine.ledger import reduced_entry
from adapter.errors import ItemTooLargeError, StoreError
from adapter.local.moto import MotoServer
from adapter.model import LedgerEntry
from adapter.store.dynamo import DynamoStore, _ledger_item, make_client
from adapter.store.tables import TableNames

_ERROR = "com.amazonaws.dynamodb.v20120810#"
Reply = tuple[int, dict[str, Any]]


def _entry(i: int, **changes: Any) -> LedgerEntry:
    entry = LedgerEntry(
        id=f"inv_{i:05d}",
        subscription_id="sub_1",
        topic="orders",
        partition=i % 3,
        offset=i,
        key=f"k{i % 7}",
        target="service://Orders/handle",
        status="SUCCEEDED",
        attempts=1,
        created_at_ms=1_700_000_000_000 + i,
        updated_at_ms=1_700_000_000_500 + i,
        completed_at_ms=1_700_000_000_900 + i,
    )
    return replace(entry, **changes)


def _raw_row(dynamo_client: Any, table: str, inv_id: str) -> dict[str, Any]:
    item: dict[str, Any] = dynamo_client.get_item(
        TableName=table, Key={"id": {"S": inv_id}}, ConsistentRead=True
    )["Item"]
    return item


@dataclass
class DynamoFront:
    """Answers BatchWriteItem from ``replies`` while it lasts, then proxies to moto."""

    upstream: str
    replies: Iterator[Reply] = field(default_factory=lambda: iter(()))
    seen: list[str] = field(default_factory=list)  # access key ID of each request
    url: str = ""
    session: aiohttp.ClientSession | None = None

    def access_key(self, authorization: str) -> str:
        return authorization.split("Credential=", 1)[1].split("/", 1)[0]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(self.access_key(request.headers["Authorization"]))
        reply = next(self.replies, None)
        if reply is not None:
            status, doc = reply
            return web.Response(
                status=status, body=orjson.dumps(doc), content_type="application/x-amz-json-1.0"
            )
        forward = {
            name: value
            for name, value in request.headers.items()
            if name.lower().startswith("x-amz-") or name.lower() in ("authorization",)
        }
        forward["Content-Type"] = request.headers["Content-Type"]
        assert self.session is not None
        async with self.session.post(self.upstream, data=body, headers=forward) as resp:
            return web.Response(
                status=resp.status, body=await resp.read(), content_type=resp.content_type
            )


@pytest.fixture
async def front(moto_server: MotoServer) -> AsyncIterator[DynamoFront]:
    dynamo = DynamoFront(moto_server.endpoint_url)
    app = web.Application()
    app.router.add_post("/", dynamo.handle)
    async with aiohttp.ClientSession() as session:
        dynamo.session = session
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        dynamo.url = f"http://{host}:{port}"
        try:
            yield dynamo
        finally:
            await runner.cleanup()


@pytest.fixture
async def front_store(front: DynamoFront, table_names: TableNames) -> AsyncIterator[DynamoStore]:
    """A store on the moto tables of ``store`` whose requests go through ``front``."""
    s = DynamoStore(make_client(front.url, "us-east-1"), table_names)
    yield s
    await s.aclose()


async def test_rows_read_back_through_boto3_identical_to_rows_boto3_wrote(
    store: DynamoStore, dynamo_client: Any
) -> None:
    full = _entry(
        1,
        status="FAILED",
        attempts=4,
        last_error='handler said: ünïcødé ✓ "quoted" \\ and\nnewline',
        next_retry_at_ms=1_700_000_001_000,
        dead_letter_topic="orders.dlq",
    )
    bare = _entry(2, key=None, completed_at_ms=None)
    await store.write_entries([full, bare])

    assert await store.get_entry(full.id) == full
    assert await store.get_entry(bare.id) == bare
    assert await store.get_statuses([full.id, bare.id, "inv_missing"]) == {
        full.id: "FAILED",
        bare.id: "SUCCEEDED",
    }

    table = store.names.invocations

    def raw(inv_id: str) -> dict[str, Any]:
        return _raw_row(dynamo_client, table, inv_id)

    ours = {e.id: raw(e.id) for e in (full, bare)}
    # The same rows the way the boto3 path writes them, over ours.
    expires = int(ours[full.id]["expires_at"]["N"])
    dynamo_client.batch_write_item(
        RequestItems={
            table: [{"PutRequest": {"Item": _ledger_item(e, expires)}} for e in (full, bare)]
        }
    )
    assert {e.id: raw(e.id) for e in (full, bare)} == ours
    assert store.requests >= 1


async def test_a_first_attempt_success_is_stored_without_derivable_attributes(
    store: DynamoStore, dynamo_client: Any
) -> None:
    common = _entry(3, completed_at_ms=None)
    common = replace(common, completed_at_ms=common.updated_at_ms)
    retried = _entry(4, attempts=2)  # updated_at != completed_at, attempts != 1
    await store.write_entries([common, retried])
    table = store.names.invocations

    def raw(inv_id: str) -> dict[str, Any]:
        return _raw_row(dynamo_client, table, inv_id)

    assert sorted(raw(common.id)) == [
        "completed_at",
        "created_at",
        "expires_at",
        "id",
        "key",
        "position",
        "status",
        "subscription_id",
        "target",
    ]
    assert {"attempts", "updated_at", "completed_at"} <= set(raw(retried.id))
    assert await store.get_entry(common.id) == common
    assert await store.get_entry(retried.id) == retried


async def test_rows_in_the_earlier_full_form_still_read_back(
    store: DynamoStore, dynamo_client: Any
) -> None:
    entry = _entry(5, attempts=1)
    full = {
        "id": {"S": entry.id},
        "subscription_id": {"S": entry.subscription_id},
        "topic": {"S": entry.topic},
        "partition": {"N": str(entry.partition)},
        "offset": {"N": str(entry.offset)},
        "position": {"S": f"orders|{entry.partition:06d}|{entry.offset:020d}"},
        "target": {"S": entry.target},
        "status": {"S": entry.status},
        "attempts": {"N": "1"},
        "created_at": {"N": str(entry.created_at_ms)},
        "updated_at": {"N": str(entry.updated_at_ms)},
        "completed_at": {"N": str(entry.completed_at_ms)},
        "expires_at": {"N": "4102444800"},
        "key": {"S": str(entry.key)},
    }
    dynamo_client.put_item(TableName=store.names.invocations, Item=full)

    assert await store.get_entry(entry.id) == entry
    assert await store.highest_recorded_offset("sub_1", "orders", entry.partition) == 5


async def test_many_rows_go_out_in_chunks_of_25_and_the_last_row_of_an_id_wins(
    store: DynamoStore,
) -> None:
    rows = [_entry(i, status="RUNNING") for i in range(60)]
    rows += [_entry(i, status="SUCCEEDED", attempts=2) for i in range(0, 60, 2)]
    rows += [_entry(i, status="FAILED", attempts=3) for i in range(1, 60, 10)]
    before = store.requests

    await store.write_entries(rows)

    assert store.requests - before == 3  # 60 distinct IDs
    statuses = await store.get_statuses(e.id for e in rows)
    expected = {e.id: e.status for e in rows}  # dict keeps the last row per ID
    assert statuses == expected
    assert (await store.get_entry(_entry(2).id)) == _entry(2, status="SUCCEEDED", attempts=2)


@pytest.mark.parametrize(
    "error",
    ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"],
)
@pytest.mark.promise("p-fault-dynamodb")
async def test_throttled_chunks_are_resent_after_backoff_until_written(
    front: DynamoFront, front_store: DynamoStore, store: DynamoStore, error: str
) -> None:
    throttle = (400, {"__type": _ERROR + error, "message": "slow down"})
    front.replies = iter([throttle] * 3)
    rows = [_entry(i) for i in range(10)]

    await front_store.write_entries(rows, deadline_s=10)

    assert len(front.seen) == 4 == front_store.requests
    assert await store.get_statuses(e.id for e in rows) == {e.id: "SUCCEEDED" for e in rows}


@pytest.mark.promise("p-fault-dynamodb")
async def test_unprocessed_items_are_resent(
    front: DynamoFront, front_store: DynamoStore, store: DynamoStore
) -> None:
    rows = [_entry(i) for i in range(5)]
    table = store.names.invocations
    left = [{"PutRequest": {"Item": _ledger_item(rows[3], int(time.time()) + 3600)}}]
    front.replies = iter([(200, {"UnprocessedItems": {table: left}})])

    await front_store.write_entries(rows, deadline_s=10)

    # The first reply wrote nothing (the front answered it), so only row 3 was re-sent.
    assert len(front.seen) == 2
    assert await store.get_statuses(e.id for e in rows) == {rows[3].id: "SUCCEEDED"}
    assert await store.get_entry(rows[3].id) == rows[3]


async def test_throttling_past_the_deadline_is_a_store_error(
    front: DynamoFront, front_store: DynamoStore
) -> None:
    throttle = (400, {"__type": _ERROR + "ThrottlingException", "message": "Rate exceeded"})
    front.replies = itertools.repeat(throttle)
    started = time.monotonic()

    with pytest.raises(StoreError, match=r"(25|5) rows still unprocessed after 0\.5s") as caught:
        await front_store.write_entries([_entry(i) for i in range(30)], deadline_s=0.5)

    assert time.monotonic() - started < 3
    assert "ThrottlingException: Rate exceeded" in str(caught.value)
    assert len(front.seen) > 2  # both chunks were re-sent


async def test_other_errors_fail_at_once_naming_dynamodb_error_and_nothing_else(
    front: DynamoFront, front_store: DynamoStore
) -> None:
    front.replies = iter(
        [(400, {"__type": _ERROR + "AccessDeniedException", "message": "not authorized"})]
    )

    with pytest.raises(StoreError) as caught:
        await front_store.write_entries([_entry(1)], deadline_s=10)

    message = str(caught.value)
    assert message == "write invocation ledger: HTTP 400 AccessDeniedException: not authorized"
    assert len(front.seen) == 1


@pytest.mark.promise("p-fault-ledger-row-refused")
async def test_a_row_over_the_item_limit_is_an_item_too_large_error_not_a_store_error(
    front: DynamoFront, front_store: DynamoStore
) -> None:
    # A StoreError is re-sent until DynamoDB answers: this refusal never changes.
    message = "Item size has exceeded the maximum allowed size"
    front.replies = iter([(400, {"__type": _ERROR + "ValidationException", "message": message})])

    with pytest.raises(ItemTooLargeError) as caught:
        await front_store.write_entries([_entry(1)], deadline_s=10)

    assert not isinstance(caught.value, StoreError)
    assert str(caught.value) == f"write invocation ledger: HTTP 400 ValidationException: {message}"
    assert len(front.seen) == 1


def _item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it, close enough: names plus values, in UTF-8."""
    size = 0
    for name, value in item.items():
        ((_, data),) = value.items()
        size += len(name.encode()) + len(str(data).encode())
    return size


@pytest.mark.promise("p-fault-ledger-row-refused")
@pytest.mark.parametrize("status", ["FAILED", "BACKING_OFF"])
async def test_a_450_kb_key_gets_a_row_within_the_item_limit_still_found_by_its_key(
    store: DynamoStore, dynamo_client: Any, status: str
) -> None:
    # The record passes the 6 MiB max-record-bytes check; its row must not exceed 400 KB.
    key = "ключ-" + "k" * 450_000
    entry = _entry(
        7, key=key, status=status, attempts=2, last_error="x" * 50_000, completed_at_ms=None
    )
    if status == "FAILED":
        entry = replace(entry, completed_at_ms=entry.updated_at_ms)
        await store.write_entries([entry])
    else:
        assert await store.write_progress(entry)

    raw = _raw_row(dynamo_client, store.names.invocations, entry.id)
    assert _item_bytes(raw) < 12 * 1024
    stored = await store.get_entry(entry.id)
    assert stored is not None
    assert stored.key is not None
    assert stored.key.startswith("ключ-kkk")
    assert stored.key.endswith(f"[cut: {len(key.encode())} bytes]")
    assert stored == replace(entry, key=stored.key, last_error=(entry.last_error or "")[:2000])
    # Looking it up by its key (GET /invocations?key=...) still finds it, and only it.
    await store.write_entries([_entry(8, key=stored.key), _entry(9, key=key[:-1])])
    found, _ = await store.find_entries(key=key)
    assert [e.id for e in found] == [entry.id]
    found, _ = await store.find_entries(subscription_id="sub_1", key=key)
    assert [e.id for e in found] == [entry.id]
    found, _ = await store.find_entries(key=stored.key)
    assert [e.id for e in found] == [_entry(8).id]


@pytest.mark.promise("p-fault-ledger-row-refused")
async def test_a_row_written_reduced_is_still_found_by_its_whole_key(store: DynamoStore) -> None:
    # A row the store refused is written again with its key cut short (the engine's
    # reduced_entry), far below the store's own 1 KiB bound: the lookup by key must find it.
    key = "order-" + "x" * 300
    entry = reduced_entry(
        _entry(11, key=key, status="FAILED", last_error="handler said no"), "ValidationException"
    )
    assert entry.key is not None
    assert entry.key != key
    await store.write_entries([entry])
    # A real key spelled like the cut one is another record's.
    await store.write_entries([_entry(12, key=entry.key), _entry(13, key=key[:-1])])
    found, _ = await store.find_entries(key=key)
    assert [e.id for e in found] == [entry.id]
    found, _ = await store.find_entries(subscription_id="sub_1", key=key)
    assert [e.id for e in found] == [entry.id]
    found, _ = await store.find_entries(key=entry.key)
    assert [e.id for e in found] == [_entry(12).id]
    # Read back and written again (an operator's action on it), it is still found.
    read = await store.get_entry(entry.id)
    assert read is not None
    await store.write_entries([replace(read, status="KILLED")])
    found, _ = await store.find_entries(key=key)
    assert [(e.id, e.status) for e in found] == [(entry.id, "KILLED")]


async def test_missing_table_is_a_store_error_from_moto(
    dynamo_client: Any, table_names: TableNames
) -> None:
    store = DynamoStore(dynamo_client, table_names)  # tables never created
    try:
        with pytest.raises(StoreError, match="HTTP 400 ResourceNotFoundException"):
            await store.write_entries([_entry(1)])
    finally:
        await store.aclose()


async def test_connection_refused_is_a_store_error(table_names: TableNames) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = DynamoStore(make_client(f"http://127.0.0.1:{port}", "us-east-1"), table_names)
    try:
        with pytest.raises(StoreError, match="write invocation ledger") as caught:
            await store.write_entries([_entry(1)])
    finally:
        await store.aclose()
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert store.requests == 1


async def test_refreshable_credentials_are_refreshed_and_used_per_request(
    front: DynamoFront, table_names: TableNames, store: DynamoStore
) -> None:
    refreshes: list[str] = []

    def metadata(access_key: str, expires_in: timedelta) -> dict[str, str]:
        return {
            "access_key": access_key,
            "secret_key": "s3cret",
            "token": "token",
            "expiry_time": (datetime.now(UTC) + expires_in).isoformat(),
        }

    def refresh() -> dict[str, str]:
        refreshes.append("refresh")
        return metadata("AKIDFRESH", timedelta(hours=1))

    credentials = RefreshableCredentials.create_from_metadata(
        metadata("AKIDSTALE", timedelta(minutes=5)), refresh, "test"
    )
    front_store = DynamoStore(
        make_client(front.url, "us-east-1"), table_names, credentials=credentials
    )
    try:
        await front_store.write_entries([_entry(1)])
        await front_store.write_entries([_entry(2)])
    finally:
        await front_store.aclose()

    assert front.seen == ["AKIDFRESH", "AKIDFRESH"]
    assert refreshes == ["refresh"]
    assert set(await store.get_statuses([_entry(1).id, _entry(2).id])) == {
        _entry(1).id,
        _entry(2).id,
    }


async def test_the_store_reopens_its_session_after_aclose(store: DynamoStore) -> None:
    await store.write_entries([_entry(1)])
    await store.aclose()
    await store.write_entries([_entry(2)])
    assert set(await store.get_statuses([_entry(1).id, _entry(2).id])) == {
        _entry(1).id,
        _entry(2).id,
    }
