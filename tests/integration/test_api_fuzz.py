"""Property test of the admin API against its own OpenAPI document (schemathesis).

Requests are generated from the document for every operation and sent in-process to the app
backed by the real moto server. Whatever arrives, the API must not fail with a 5xx, every
error body must carry a message, and every response must match the document (status, content
type, body schema). Discovery, offset resets and broker checks are fakes here: generated
deployment URIs must never reach the network. The hostile inputs of the security review (deep
JSON, long names and values, masks with nothing stored, URIs with credentials, a query or
fragment, headers the client owns) go through the same checks and must be 400s naming what is
wrong; limits enforced by the server itself (header size and time, body size) are tested
against a real server in ``test_admin_limits.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapter.api import AdminState, ClusterCatalog, create_app
from adapter.config import load_settings
from adapter.model import HandlerInfo, HandlerType, InputKind, ServiceInfo, ServiceType
from adapter.store.dynamo import DynamoStore

pytestmark = pytest.mark.timeout(300)

MANIFEST = {
    "services": [
        {"name": "Greeter", "ty": "SERVICE", "handlers": [{"name": "greet"}]},
        {"name": "Account", "ty": "VIRTUAL_OBJECT", "handlers": [{"name": "apply"}]},
    ]
}


async def _discover(**kwargs: Any) -> dict[str, Any]:
    return MANIFEST


async def _reset(options: Any, topic: str, to: Any, *, timeout_s: float) -> Any:
    return {(topic, 0): 0}


async def _kafka(catalog: ClusterCatalog) -> dict[str, str]:
    return dict.fromkeys(catalog.names(), "ok")


def _schema(store: DynamoStore) -> Any:
    env = {"KAFKA_INGRESS_KAFKA_CLUSTERS": '[{name="local", brokers=["127.0.0.1:19092"]}]'}
    conf = load_settings(None, env=env)
    state = AdminState(
        settings=conf,
        store=store,
        catalog=ClusterCatalog(conf, store),
        discover=_discover,
        reset_offsets=_reset,
        check_kafka=_kafka,
    )
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(state))


def _check(case: Any) -> None:
    response = case.call()
    where = (case.method, case.formatted_path, case.query, case.body)
    assert response.status_code < 500, (where, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("message"), str), (where, response.text)
        assert body["message"], (where, response.text)
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )


@pytest.mark.parametrize(
    ("mode", "examples"), [(GenerationMode.POSITIVE, 25), (GenerationMode.NEGATIVE, 10)]
)
def test_api_conforms_to_its_openapi_document(
    store: DynamoStore, mode: GenerationMode, examples: int
) -> None:
    schema = _schema(store)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    exercised = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            _check(case)

        try:
            run()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid (no body, no constrained
            # parameter): only possible when generating invalid requests.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        exercised += 1
    assert exercised >= (len(operations) if mode is GenerationMode.POSITIVE else 10)


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


_SUB = {"source": "kafka://local/orders", "sink": "service://Greeter/greet"}
_HOSTILE: list[tuple[str, str, dict[str, Any], Any, str]] = [
    ("/subscriptions", "POST", {}, {**_SUB, "options": _deep(200)}, "nested more than 32"),
    ("/subscriptions", "POST", {}, {**_SUB, "options": {"client.id": "c" * 300}}, "client.id"),
    ("/subscriptions", "POST", {}, {**_SUB, "options": {"x" * 5000: "1"}}, "at most 1024"),
    ("/subscriptions", "POST", {}, {**_SUB, "options": {"x" * 500: "1"}}, "at most 256"),
    ("/subscriptions", "POST", {}, {**_SUB, "options": {"retry.max.attempts": "-5"}}, "1.."),
    ("/subscriptions", "POST", {}, {**_SUB, "options": {"sasl.password": "***"}}, "no stored"),
    ("/deployments", "POST", {}, {"uri": "http://[::1"}, "'uri' is invalid"),
    ("/deployments", "POST", {}, {"uri": "http://h/x?"}, "no query or fragment"),
    ("/deployments", "POST", {}, {"uri": "http://h/x#"}, "no query or fragment"),
    ("/deployments", "POST", {}, {"uri": "http://u:p@h/"}, "credentials"),
    ("/deployments", "POST", {}, {"uri": "http://h", "additional_headers": {"Host": "x"}}, "Host"),
    (
        "/deployments",
        "POST",
        {},
        {"uri": "http://h", "additional_headers": {"Content-Length": "1"}},
        "Content-Length",
    ),
    (
        "/kafka-clusters",
        "POST",
        {},
        {"name": "big", "properties": {"bootstrap.servers": "h:1", "client.id": "p" * 70_000}},
        "at most 65536",
    ),
]


@pytest.mark.parametrize(
    ("path", "method", "query", "body", "expected"), _HOSTILE, ids=[c[4] for c in _HOSTILE]
)
async def test_hostile_input_is_a_documented_400_with_a_message(
    store: DynamoStore, path: str, method: str, query: dict[str, Any], body: Any, expected: str
) -> None:
    # Cases of the security review, run through the same checks as the generated ones.
    await store.put_service(
        ServiceInfo(
            "Greeter",
            ServiceType.SERVICE,
            "dp_1",
            (HandlerInfo("greet", HandlerType.SERVICE, InputKind.JSON),),
        )
    )
    schema = _schema(store)
    case = schema[path][method].Case(body=body, query=query, media_type="application/json")
    response = case.call()
    assert response.status_code == 400, response.text[:300]
    assert expected in response.json()["message"]
    _check(case)
