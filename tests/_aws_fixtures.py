"""DynamoDB fixtures: in-process ``mock_aws`` for unit tests, a real moto server over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapter.local.moto import MotoServer, fake_aws_credentials
from adapter.store.dynamo import DynamoStore, make_client
from adapter.store.sealing import KmsEnvelope, SecretSealing
from adapter.store.tables import TableNames


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session, on a free loopback port, spoken to over HTTP."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def table_names() -> TableNames:
    """A fresh table prefix per test, so tests sharing the moto server never see each other."""
    return TableNames(prefix=f"t{uuid.uuid4().hex[:10]}-")


@pytest.fixture
def dynamo_client(moto_server: MotoServer) -> Iterator[Any]:
    client = make_client(moto_server.endpoint_url, "us-east-1")
    yield client
    # Closed here, not by the garbage collector in the middle of a later test, where an
    # "unclosed socket" ResourceWarning would fail that test (warnings are errors).
    client.close()


@pytest.fixture(scope="session")
def kms_key(moto_server: MotoServer) -> str:
    """A KMS key in the moto server: what ``[secrets] kms-key-id`` names in tests."""
    return moto_server.create_kms_key()


@pytest.fixture
def kms_client(moto_server: MotoServer) -> Iterator[Any]:
    import boto3

    client = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    yield client
    client.close()


@pytest.fixture
def sealing(kms_client: Any, kms_key: str) -> SecretSealing:
    """Secrets sealed with the moto server's KMS, as a poller with a kms-key-id does."""
    return SecretSealing(KmsEnvelope(kms_client, kms_key))


@pytest.fixture
async def store(
    dynamo_client: Any, table_names: TableNames, sealing: SecretSealing
) -> AsyncIterator[DynamoStore]:
    s = DynamoStore(dynamo_client, table_names, secrets=sealing)
    s.create_tables()
    yield s
    await s.aclose()  # the ledger writer's HTTP session, if a test wrote ledger rows


@pytest.fixture
def mock_dynamo() -> Iterator[Any]:
    """In-process moto, no sockets: for fast unit tests of store logic."""
    from moto import mock_aws

    fake_aws_credentials()
    with mock_aws():
        yield make_client(None, "us-east-1")
