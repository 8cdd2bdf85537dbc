"""Tables created by an earlier version get the ledger's newer indexes from ``init-tables``."""

from __future__ import annotations

import copy
from typing import Any

from adapter.store.tables import TableNames, create_tables, table_definitions


def test_init_tables_adds_the_indexes_an_earlier_invocations_table_lacks(
    dynamo_client: Any, table_names: TableNames
) -> None:
    # The invocations table as the version before `by_time` and `by_status` created it.
    earlier = copy.deepcopy(table_definitions()["invocations"])
    earlier.pop("TimeToLiveSpecification")
    earlier["GlobalSecondaryIndexes"] = [
        i for i in earlier["GlobalSecondaryIndexes"] if i["IndexName"] == "by_subscription"
    ]
    earlier["AttributeDefinitions"] = [
        a
        for a in earlier["AttributeDefinitions"]
        if a["AttributeName"] in ("id", "subscription_id", "position")
    ]
    dynamo_client.create_table(TableName=table_names.invocations, **earlier)

    created = create_tables(dynamo_client, table_names)

    assert f"{table_names.invocations}:by_time" in created
    assert f"{table_names.invocations}:by_status" in created
    table = dynamo_client.describe_table(TableName=table_names.invocations)["Table"]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by_subscription", "by_time", "by_status"}
    assert [k["AttributeName"] for k in indexes["by_status"]["KeySchema"]] == [
        "sub_status",
        "created_at",
    ]
    assert create_tables(dynamo_client, table_names) == []  # idempotent
