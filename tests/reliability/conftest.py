"""Fixtures of the reliability suites: a broker and a moto server of their own per module
(the suites restart them), fresh tables per test."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from adapter.local.kafka import KafkaBroker
from adapter.local.moto import MotoServer
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.tables import TableNames

SEED = int(os.environ.get("CHAOS_SEED", "1"))


@pytest.fixture(scope="module")
def chaos_broker() -> Iterator[KafkaBroker]:
    """A broker of its own: this suite restarts it."""
    broker = KafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def chaos_moto() -> Iterator[MotoServer]:
    """A moto server of its own: this suite takes it down and brings it back."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chaos_store(chaos_moto: MotoServer) -> DynamoStore:
    store = DynamoStore(
        make_client(chaos_moto.endpoint_url, "us-east-1"),
        TableNames(f"chaos{SEED}-{time.time_ns()}-"),
    )
    store.create_tables()
    return store
