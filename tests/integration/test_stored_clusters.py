"""A cluster stored in DynamoDB that this version's option rules refuse (written by an older
version, or directly) is listed but not used, and the poller says so once, naming the option."""

from __future__ import annotations

import logging

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
