"""Pollers share subscriptions: three poller processes on a real broker split the work
through the shard map, and the survivors take over when one stops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from adapter.model import HandlerType, InputKind, ServiceType, Subscription
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Ingress, PollerProcess, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

SUBSCRIPTIONS = 9


async def group_members(bootstrap: str, groups: list[str]) -> dict[str, int]:
    """Live members of each consumer group, as the broker reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    counts: dict[str, int] = {}
    try:
        # One group per request: aiokafka 0.14 cannot decode a response describing several.
        for group in groups:
            for response in await admin.describe_consumer_groups([group]):
                for entry in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    counts[entry[1]] = len(entry[5])
    except KafkaError:
        return {}  # the group coordinator is not up yet on a fresh broker
    finally:
        await admin.close()
    return counts


async def delivered_everywhere(
    ingress: Ingress, handler: RecordingHandler, subs: list[Subscription], tag: str
) -> None:
    for sub in subs:
        await produce(ingress.bootstrap, sub.topic, [(None, json.dumps({"tag": tag}).encode())])

    def reached() -> set[str]:
        return {
            c.headers.get("kafka.topic", "")
            for c in handler.acked()
            if json.loads(c.body) == {"tag": tag}
        }

    await eventually(
        lambda: reached() == {s.topic for s in subs},
        timeout=60,
        message=lambda: f"{tag}: {len(reached())} of {len(subs)} topics delivered",
    )


@pytest.mark.promise("p-ops-shards-pollers")
async def test_pollers_split_subscriptions_and_take_over_when_one_stops(
    ingress: Ingress,
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    tmp_path: Path,
) -> None:
    handler = RecordingHandler()
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SHARED, InputKind.JSON)}
    )
    subs = [
        await ingress.subscribe(await topic_factory(partitions=1), "Greeter", "greet")
        for _ in range(SUBSCRIPTIONS)
    ]
    control = f"{ingress.store.names.prefix}pollers.default"
    groups = [s.id for s in subs]
    env = {**ingress.env(), "KAFKA_INGRESS_POLLER_SHARDS": "64"}  # the shard map is opt-in
    pollers = [PollerProcess(env) for _ in range(3)]
    try:
        for poller in pollers:
            await poller.start(tmp_path)

        async def placement(pollers_alive: int) -> bool:
            members = await group_members(ingress.bootstrap, [control, *groups])
            # Each 1-partition subscription runs on exactly 2 of the pollers, not on all.
            return members.get(control) == pollers_alive and all(
                members.get(g) == 2 for g in groups
            )

        await eventually(
            lambda: placement(3),
            timeout=90,
            interval=0.5,
            message=lambda: (
                "subscriptions not placed on 2 of 3 pollers: "
                + "".join(p.output.decode(errors="replace")[-2000:] for p in pollers)
            ),
        )
        await delivered_everywhere(ingress, handler, subs, "before")

        # A graceful stop: the two others now run every subscription.
        assert await pollers[0].terminate() == 0
        await eventually(lambda: placement(2), timeout=90, interval=0.5)
        await delivered_everywhere(ingress, handler, subs, "after")
    finally:
        for poller in pollers:
            if poller.proc is not None and poller.proc.returncode is None:
                await poller.terminate()
        await asyncio.sleep(0)
