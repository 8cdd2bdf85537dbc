"""Workflow claims against DynamoDB (moto over HTTP): one run per workflow ID, whatever its
length."""

from __future__ import annotations

import pytest

from adapter.store.dynamo import DynamoStore


@pytest.mark.parametrize("key", ["order-1", "k" * 5000, "ключ-" * 600])
async def test_a_workflow_id_is_claimed_by_one_invocation_whatever_its_length(
    store: DynamoStore, key: str
) -> None:
    # DynamoDB refuses partition keys over 2,048 bytes: a long record key must still claim.
    assert await store.claim_workflow("Checkout", key, "inv_a")
    assert await store.claim_workflow("Checkout", key, "inv_a"), "a redelivery claims again"
    assert not await store.claim_workflow("Checkout", key, "inv_b")
    assert await store.claim_workflow("Checkout", key + "x", "inv_b"), "another ID is free"
    assert await store.claim_workflow("Refund", key, "inv_b"), "another workflow is free"
