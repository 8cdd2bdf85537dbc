"""A partition the group never committed: where it starts is committed before any record of
it finishes, so a restart in between cannot apply ``auto.offset.reset`` afresh."""

from __future__ import annotations

import orjson
import pytest
from starlette.responses import JSONResponse, Response

from adapter.model import HandlerType, InputKind, ServiceType
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Call, Ingress, RecordingHandler, committed_offsets, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


@pytest.mark.promise("p-ops-every-record")
async def test_records_retrying_at_a_restart_of_a_new_latest_subscription_are_not_skipped(
    ingress: Ingress, handler_server: HandlerServer, topic_factory: TopicFactory
) -> None:
    down = True

    async def handler_down(call: Call) -> Response | None:
        return JSONResponse({"error": "down"}, status_code=503) if down else None

    handler = RecordingHandler(handler_down)
    url = await handler_server(handler.app)
    await ingress.register(
        url, "Orders", ServiceType.SERVICE, {"place": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = await topic_factory(partitions=1)
    await produce(ingress.bootstrap, topic, [(None, b"{}")] * 5)  # before it: not its records
    await ingress.start()
    sub = await ingress.subscribe(topic, "Orders", "place", {"auto.offset.reset": "latest"})

    async def committed() -> dict[int, int]:
        return await committed_offsets(ingress.bootstrap, sub.id, topic, 1)

    async def starts_at_the_log_end() -> bool:
        return await committed() == {0: 5}

    await eventually(starts_at_the_log_end, timeout=30, message="start position not committed")
    await produce(ingress.bootstrap, topic, [(None, orjson.dumps({"n": n})) for n in range(3)])
    await eventually(
        lambda: {c.offset for c in handler.calls} == {5, 6, 7},
        timeout=30,
        message=lambda: f"tried: {sorted({c.offset for c in handler.calls})}",
    )
    # A deploy while they retry: the next poller starts where this one started, not at a
    # 'latest' of its own past them.
    await ingress.stop()
    down = False
    await ingress.start()
    await eventually(
        lambda: {c.offset for c in handler.acked()} == {5, 6, 7},
        timeout=60,
        message=lambda: f"acked: {sorted({c.offset for c in handler.acked()})}",
    )

    async def committed_past_them() -> bool:
        return await committed() == {0: 8}

    await eventually(committed_past_them, timeout=30, message="not committed past them")
