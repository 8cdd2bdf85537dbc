"""The OpenAPI 3.1 document, generated from the endpoint table and the pydantic bodies.

Served at ``/openapi.json`` (and ``/openapi``, Restate's path). Every route, parameter, request
body and response body is in it; errors share one ``ErrorResponse`` schema. The version
prefixes (``/v2``, ``/v3``, ``/v4``) serve the same routes and are described, not repeated.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from adapter.api.bodies import ErrorResponse
from adapter.api.endpoint import Endpoint

__all__ = ["build_openapi"]

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{([^}]+)}")
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad request: the message says what is wrong",
    401: "Missing or wrong bearer token",
    404: "Not found",
    409: "Conflict: the current state does not allow it",
    503: "A dependency (DynamoDB, Kafka) is unreachable; retry",
}
_DESCRIPTION = """\
Admin API of Kafka Ingress, shaped after Restate's admin API: subscriptions, deployments,
services, invocations and Kafka clusters. Every route is also served under the version prefixes
`/v2`, `/v3` and `/v4`. Errors are `{"message": ..., "restate_code": null}`. When a token is
configured, every route except `/health` and `/health/ready` needs `Authorization: Bearer`."""


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _schema_for(annotation: Any) -> dict[str, Any]:
    models = _models(annotation)
    if len(models) == 1:
        return _ref(models[0])
    return {"anyOf": [_ref(m) for m in models]}


def build_openapi(endpoints: Iterable[Endpoint], *, version: str) -> dict[str, Any]:
    endpoints = list(endpoints)
    bodies = {e.body for e in endpoints if e.body is not None}
    responses = {m for e in endpoints for a in e.responses.values() for m in _models(a)}
    responses.add(ErrorResponse)
    inputs = [(m, "validation") for m in sorted(bodies, key=lambda m: m.__name__)]
    outputs = [(m, "serialization") for m in sorted(responses, key=lambda m: m.__name__)]
    _, defs = models_json_schema(inputs + outputs, ref_template=_REF)  # type: ignore[arg-type]
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "responses": {},
        }
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(endpoint.path)
        ]
        parameters += [
            {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "description": q.description,
                "schema": q.schema,
            }
            for q in endpoint.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(endpoint.body)}},
            }
        error = {"application/json": {"schema": _ref(ErrorResponse)}}
        for status, annotation in sorted(endpoint.responses.items()):
            entry: dict[str, Any] = {"description": _REASONS.get(status, str(status))}
            if annotation is str:
                entry["content"] = {"text/plain": {"schema": {"type": "string"}}}
            elif _models(annotation):
                entry["content"] = {"application/json": {"schema": _schema_for(annotation)}}
            elif status >= 400:
                entry["content"] = error
            operation["responses"][str(status)] = entry
        if endpoint.public:
            operation["security"] = []
        else:
            operation["responses"]["401"] = {"description": _REASONS[401], "content": error}
        operation["responses"]["default"] = {"description": "Any other error", "content": error}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kafka Ingress admin API",
            "version": version,
            "description": _DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
