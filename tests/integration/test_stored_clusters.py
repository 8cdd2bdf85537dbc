"""Stored clusters in the catalog: one this version's option rules refuse (written by an older
version, or directly) is listed but not used, and the poller says so once, naming the option;
a read that began earlier never replaces what a later one found."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from adapter.api.catalog import ClusterCatalog
from adapter.config import load_settings
from adapter.store.dynamo import DynamoStore


@pytest.mark.promise("p-api-cluster-unusable")
async def test_an_unusable_stored_cluster_is_named_once_and_not_used(
    store: DynamoStore, caplog: pytest.LogCaptureFixture
) -> None:
    properties = {"bootstrap.servers": "127.0.0.1:9092", "auto.ofset.reset": "earliest"}
    await store.create_cluster({"name": "old", "properties": properties, "created_at": 1})
    await store.create_cluster(
        {"name": "fine", "properties": {"bootstrap.servers": "127.0.0.1:9092"}, "created_at": 2}
    )
    catalog = ClusterCatalog(load_settings(None, env={}), store)

    with caplog.at_level(logging.WARNING, logger="adapter.api.catalog"):
        await catalog.refresh()
        await catalog.refresh()

    assert sorted(catalog.snapshot()) == ["fine"]
    assert [e.name for e in catalog.entries()] == ["fine", "old"]
    assert "'auto.ofset.reset'" in catalog.unusable["old"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Kafka cluster 'old'" in warnings[0]
    assert "did you mean 'auto.offset.reset'?" in warnings[0]
    assert "PATCH /kafka-clusters/old" in warnings[0]


async def test_a_listing_begun_before_a_cluster_was_read_by_name_does_not_undo_that_read(
    store: DynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GET /kafka-clusters lists every cluster while a PATCH moves one and reads it back by
    # name: the listing, which saw the old brokers, ends last. Kept, the old brokers would be
    # what the poller sharing this catalog connects to.
    await store.create_cluster(
        {"name": "c", "properties": {"bootstrap.servers": "old.example:9092"}, "created_at": 1}
    )
    catalog = ClusterCatalog(load_settings(None, env={}), store)
    listed, go_on = asyncio.Event(), asyncio.Event()
    list_clusters = store.list_clusters

    async def slow_listing() -> list[dict[str, Any]]:
        rows = await list_clusters()
        listed.set()
        await go_on.wait()
        return rows

    monkeypatch.setattr(store, "list_clusters", slow_listing)
    listing = asyncio.create_task(catalog.refresh())
    await asyncio.wait_for(listed.wait(), 5)
    await store.replace_cluster(
        {"name": "c", "properties": {"bootstrap.servers": "new.example:9092"}, "created_at": 1}
    )
    await catalog.refresh(["c"])
    go_on.set()
    await asyncio.wait_for(listing, 5)
    assert list(catalog.snapshot()["c"].bootstrap_servers) == ["new.example:9092"]
