"""Deployment registration, the pure part: read a discovery manifest, decide what changes.

:func:`parse_manifest` checks the document a deployment serves at ``GET {base}/discover``
(see docs/protocol.md) and returns typed services; every problem names its place in the
document (``services[0].handlers[2].ty``). :func:`plan_registration` compares it with the
registry and returns what to write, following Restate's rules:

* the same address (URI or ARN) with the same services and headers is *unchanged* (200);
* the same address with something changed is overwritten only with ``force`` (else 409);
* a new address serving an existing service takes that service over, with the service's
  revision incremented; changing a service's type, or removing a handler that a
  subscription uses, needs ``force`` (else 409).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from adapter.errors import ConflictError, ValidationError
from adapter.model import (
    HandlerInfo,
    HandlerType,
    InputKind,
    ServiceInfo,
    ServiceType,
    Subscription,
    function_sink_arn,
)

__all__ = ["Manifest", "RegistrationPlan", "parse_manifest", "plan_registration"]

_SERVICE_TYPES = {t.value: t for t in ServiceType}
_HANDLER_TYPES = {t.value: t for t in HandlerType}
# Which handler types each service type allows, and the type of a handler without one.
_ALLOWED: Mapping[ServiceType, tuple[frozenset[HandlerType], HandlerType]] = {
    ServiceType.SERVICE: (frozenset(), HandlerType.SERVICE),
    ServiceType.VIRTUAL_OBJECT: (
        frozenset({HandlerType.EXCLUSIVE, HandlerType.SHARED}),
        HandlerType.EXCLUSIVE,
    ),
    ServiceType.WORKFLOW: (
        frozenset({HandlerType.WORKFLOW, HandlerType.SHARED}),
        HandlerType.SHARED,
    ),
}


@dataclass(frozen=True, slots=True)
class Manifest:
    services: tuple[ServiceInfo, ...]
    min_protocol_version: int = 1
    max_protocol_version: int = 1
    sdk_version: str | None = None

    def digest(self, headers: Mapping[str, str], extra: Mapping[str, object]) -> str:
        """Identity of what a registration would store, to tell "unchanged" apart."""
        doc = {
            "services": [
                {
                    "name": s.name,
                    "ty": s.service_type.value,
                    "handlers": sorted(
                        (h.name, h.handler_type.value, h.input_kind.value) for h in s.handlers
                    ),
                }
                for s in sorted(self.services, key=lambda s: s.name)
            ],
            "versions": [self.min_protocol_version, self.max_protocol_version],
            "headers": sorted(headers.items()),
            "extra": sorted((k, str(v)) for k, v in extra.items()),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _fail(where: str, place: str, message: str) -> ValidationError:
    return ValidationError(f"discovery manifest of {where}: {place}: {message}")


def _input_kind(raw: object, where: str, place: str) -> InputKind:
    if raw is None:
        return InputKind.JSON
    if isinstance(raw, str):
        try:
            return InputKind(raw.upper())
        except ValueError:
            raise _fail(where, place, f"{raw!r} is not JSON or RAW") from None
    if isinstance(raw, dict):
        # Restate SDK manifests describe input as {"contentType": ...}; anything but JSON is
        # passed through as raw bytes.
        content_type = str(raw.get("contentType") or raw.get("content_type") or "")
        if not content_type or "json" in content_type.lower():
            return InputKind.JSON
        return InputKind.RAW
    raise _fail(where, place, "expected JSON, RAW or an object")


def _int(doc: Mapping[str, Any], *names: str, default: int) -> int:
    for name in names:
        value = doc.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def parse_manifest(doc: object, where: str) -> Manifest:
    """The services a deployment serves, from its discovery document."""
    if not isinstance(doc, dict):
        raise _fail(where, "(document)", "expected a JSON object")
    services_raw = doc.get("services")
    if not isinstance(services_raw, list):
        raise _fail(where, "services", "expected a list of services")
    services: list[ServiceInfo] = []
    seen: set[str] = set()
    for i, svc in enumerate(services_raw):
        place = f"services[{i}]"
        if not isinstance(svc, dict):
            raise _fail(where, place, "expected an object")
        name = svc.get("name")
        if not isinstance(name, str) or not name or len(name) > 255 or "/" in name:
            raise _fail(where, f"{place}.name", "expected a non-empty name without '/'")
        if function_sink_arn(name):
            raise _fail(
                where, f"{place}.name", "a Lambda function ARN names a lambda:// sink's service"
            )
        if name in seen:
            raise _fail(where, f"{place}.name", f"service {name!r} appears twice")
        seen.add(name)
        ty_raw = svc.get("ty")
        service_type = _SERVICE_TYPES.get(str(ty_raw).upper()) if ty_raw is not None else None
        if service_type is None:
            raise _fail(where, f"{place}.ty", "expected SERVICE, VIRTUAL_OBJECT or WORKFLOW")
        allowed, default = _ALLOWED[service_type]
        handlers_raw = svc.get("handlers")
        if not isinstance(handlers_raw, list):
            raise _fail(where, f"{place}.handlers", "expected a list of handlers")
        handlers: list[HandlerInfo] = []
        for j, handler in enumerate(handlers_raw):
            hplace = f"{place}.handlers[{j}]"
            if not isinstance(handler, dict):
                raise _fail(where, hplace, "expected an object")
            hname = handler.get("name")
            if not isinstance(hname, str) or not hname or len(hname) > 255 or "/" in hname:
                raise _fail(where, f"{hplace}.name", "expected a non-empty name without '/'")
            if any(h.name == hname for h in handlers):
                raise _fail(where, f"{hplace}.name", f"handler {hname!r} appears twice")
            hty_raw = handler.get("ty")
            handler_type = default
            if hty_raw is not None:
                parsed = _HANDLER_TYPES.get(str(hty_raw).upper())
                if parsed is None or parsed not in allowed:
                    expected = ", ".join(sorted(t.value for t in allowed)) or "null"
                    raise _fail(
                        where,
                        f"{hplace}.ty",
                        f"{hty_raw!r} is not a handler type of a {service_type.value} "
                        f"(expected {expected})",
                    )
                handler_type = parsed
            kind = _input_kind(handler.get("input"), where, f"{hplace}.input")
            handlers.append(HandlerInfo(hname, handler_type, kind))
        services.append(ServiceInfo(name, service_type, "", tuple(handlers)))
    low = _int(doc, "min_protocol_version", "minProtocolVersion", "protocol_version", default=1)
    high = _int(doc, "max_protocol_version", "maxProtocolVersion", "protocol_version", default=low)
    sdk = doc.get("sdk_version") or doc.get("sdkVersion")
    return Manifest(
        services=tuple(services),
        min_protocol_version=low,
        max_protocol_version=max(low, high),
        sdk_version=sdk if isinstance(sdk, str) else None,
    )


Outcome = Literal["created", "unchanged", "overwritten"]


@dataclass(frozen=True, slots=True)
class RegistrationPlan:
    outcome: Outcome
    deployment_id: str
    services: tuple[ServiceInfo, ...]
    """Every service the deployment serves, as it will be stored (ID and revision set)."""
    remove_services: tuple[str, ...] = ()
    """Services the overwritten deployment served and the new manifest no longer does."""
    warnings: tuple[str, ...] = field(default=())


def plan_registration(
    *,
    new_id: str,
    existing: Mapping[str, Any] | None,
    existing_digest_matches: bool,
    manifest: Manifest,
    registry: Mapping[str, ServiceInfo],
    subscriptions: Iterable[Subscription],
    overwrite: bool,
    allow_breaking: bool,
) -> RegistrationPlan:
    """What registering ``manifest`` changes; ConflictError when ``force`` is needed.

    ``existing`` is the stored deployment with the same address, if any. ``overwrite``
    replaces it when it changed; ``allow_breaking`` permits service type changes and removing
    handlers that subscriptions use.
    """
    if existing is not None and existing_digest_matches:
        dep_id = str(existing["id"])
        current = tuple(
            registry.get(s.name) or replace(s, deployment_id=dep_id) for s in manifest.services
        )
        return RegistrationPlan("unchanged", dep_id, current)
    if existing is not None and not overwrite:
        raise ConflictError(
            f"deployment {existing['id']} is already registered at this address with other "
            "services, handlers or headers; register again with force: true to overwrite it"
        )
    dep_id = str(existing["id"]) if existing is not None else new_id
    used: dict[str, set[str]] = {}
    for sub in subscriptions:
        used.setdefault(sub.service, set()).add(sub.handler)
    planned: list[ServiceInfo] = []
    for svc in manifest.services:
        previous = registry.get(svc.name)
        revision = 1
        if previous is not None:
            revision = previous.revision + 1
            if previous.service_type is not svc.service_type and not allow_breaking:
                raise ConflictError(
                    f"service {svc.name!r} is a {previous.service_type.value} in deployment "
                    f"{previous.deployment_id}; this deployment declares it a "
                    f"{svc.service_type.value}. Changing a service's type needs force: true"
                )
            removed = sorted(used.get(svc.name, set()) - {h.name for h in svc.handlers})
            if removed and not allow_breaking:
                raise ConflictError(
                    f"service {svc.name!r} would lose handler(s) {', '.join(removed)} that "
                    "subscriptions use; delete those subscriptions first or use force: true"
                )
        planned.append(replace(svc, deployment_id=dep_id, revision=revision))
    remove: tuple[str, ...] = ()
    if existing is not None:
        served = {s.name for s in manifest.services}
        remove = tuple(
            sorted(
                name
                for name, info in registry.items()
                if info.deployment_id == dep_id and name not in served
            )
        )
    outcome: Outcome = "overwritten" if existing is not None else "created"
    return RegistrationPlan(outcome, dep_id, tuple(planned), remove)
