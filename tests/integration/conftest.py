from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapter.local.moto import MotoServer
from adapter.store.dynamo import DynamoStore
from tests._kafka_fixtures import TopicFactory
from tests.harness import Ingress


@pytest.fixture
async def ingress(
    kafka_bootstrap: str,
    store: DynamoStore,
    moto_server: MotoServer,
    topic_factory: TopicFactory,
) -> AsyncIterator[Ingress]:
    """An in-process poller (not started yet) on this test's tables and the session broker.

    It depends on ``topic_factory`` so that it stops before the test's topics are deleted.
    """
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)
    try:
        yield harness
    finally:
        await harness.stop()
