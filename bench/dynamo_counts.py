"""DynamoDB requests by operation: a counter for boto3 clients, and an idle-poller measurement.

``DynamoCounts`` hooks botocore's ``before-call`` event of a client, so it counts every
request that client sends (retries of one call count once), by operation name. Attach it to
the client of the store a poller uses (``poller.store`` is built from it) to see what the
poller asks of DynamoDB.

``python -m bench.dynamo_counts --subscriptions 200 --seconds 60`` starts a broker and a moto
server, stores S running subscriptions on one idle topic, starts one in-process poller with
the default settings, waits until every subscription has its partition, and prints the
poller's DynamoDB requests per minute by operation over the window.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from collections import Counter
from typing import Any

__all__ = ["DynamoCounts", "measure_idle_poller"]


class DynamoCounts:
    """Requests sent by the boto3 clients it is attached to, by operation (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def attach(self, client: Any) -> DynamoCounts:
        client.meta.events.register("before-call.dynamodb", self._count)
        return self

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self._counts[str(model.name)] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def since(self, before: Counter[str]) -> Counter[str]:
        """Requests made after ``before`` (a :meth:`snapshot`), by operation."""
        now = self.snapshot()
        now.subtract(before)
        return +now

    @property
    def total(self) -> int:
        return sum(self.snapshot().values())


async def measure_idle_poller(subscriptions: int, seconds: float) -> dict[str, float]:
    """Requests per minute by operation of one idle poller running ``subscriptions``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from adapter import ids
    from adapter.config import load_settings
    from adapter.local.kafka import KafkaBroker
    from adapter.local.moto import MotoServer
    from adapter.model import (
        HandlerInfo,
        HandlerType,
        InputKind,
        ServiceInfo,
        ServiceType,
        Subscription,
    )
    from adapter.poller import Poller
    from adapter.store.dynamo import DynamoStore, make_client
    from adapter.store.tables import TableNames

    broker = KafkaBroker()
    broker.start()
    try:
        with MotoServer() as moto:
            client = make_client(moto.endpoint_url, "us-east-1")
            store = DynamoStore(client, TableNames(prefix=f"b{uuid.uuid4().hex[:8]}-"))
            store.create_tables()
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
            await admin.start()
            topic = f"idle-{uuid.uuid4().hex[:8]}"
            await admin.create_topics([NewTopic(topic, 1, 1)])
            await admin.close()
            await store.put_deployment(
                {"id": "dp_idle", "uri": "http://127.0.0.1:9", "created_at": 0}
            )
            await store.put_service(
                ServiceInfo(
                    "Idle",
                    ServiceType.SERVICE,
                    "dp_idle",
                    (HandlerInfo("run", HandlerType.SERVICE, InputKind.JSON),),
                )
            )
            for _ in range(subscriptions):
                sub_id = ids.subscription_id()
                await store.put_subscription(
                    Subscription(sub_id, "local", topic, "Idle", "run", {"group.id": sub_id})
                )
            settings = load_settings(
                None,
                env={
                    "KAFKA_INGRESS_KAFKA_CLUSTERS": (
                        f'[{{name = "local", brokers = ["{broker.bootstrap_servers}"]}}]'
                    ),
                    "KAFKA_INGRESS_DYNAMODB_ENDPOINT_URL": moto.endpoint_url,
                    "KAFKA_INGRESS_DYNAMODB_TABLE_PREFIX": store.names.prefix,
                },
            )
            counts = DynamoCounts().attach(client)
            poller = Poller(settings, store, admin=False)
            task = asyncio.create_task(poller.run())
            try:
                deadline = time.monotonic() + 300
                while True:
                    runners = poller.supervisor.runners()
                    held = sum(1 for r in runners.values() if r.partition_status())
                    if held == subscriptions:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"only {held}/{subscriptions} subscriptions started")
                    await asyncio.sleep(0.5)
                await asyncio.sleep(5)  # past the start-up reads
                before = counts.snapshot()
                await asyncio.sleep(seconds)
                made = counts.since(before)
            finally:
                poller.stop()
                await asyncio.wait_for(task, 120)
            client.close()
    finally:
        broker.stop()
    return {op: n * 60 / seconds for op, n in sorted(made.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    per_minute = asyncio.run(measure_idle_poller(args.subscriptions, args.seconds))
    total = sum(per_minute.values())
    print(f"idle poller, S = {args.subscriptions}, {args.seconds:.0f} s window")
    for op, n in per_minute.items():
        print(f"  {op:<20} {n:8.1f} /min")
    print(f"  {'total':<20} {total:8.1f} /min ({total / 60:.2f} /s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
