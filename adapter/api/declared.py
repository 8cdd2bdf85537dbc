"""The apply document: the desired Kafka clusters, deployments and subscriptions, validated.

The shape (YAML for ``kafka-ingress apply -f``, JSON for ``POST /apply``) and what apply does
with it are described in :mod:`adapter.api.plan` and docs/apply.md. Every problem is one
:class:`~adapter.errors.ValidationError` naming the field (``subscriptions.0.name: …``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from adapter.api.bodies import OptionValue
from adapter.api.refs import parse_sink, parse_source, shown, sink_options
from adapter.errors import ValidationError

__all__ = [
    "GROUP_OPTION",
    "ClusterSpec",
    "DeploymentSpec",
    "Document",
    "SubscriptionSpec",
    "address",
    "lower_keys",
    "option_text",
    "parse_document",
]

GROUP_OPTION = "group.id"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(_Spec):
    name: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    properties: dict[str, OptionValue]


class DeploymentSpec(_Spec):
    uri: StrictStr | None = None
    arn: StrictStr | None = None
    headers: dict[str, StrictStr] = Field(default_factory=dict)
    use_http_11: bool = False

    @model_validator(mode="after")
    def _oneaddress(self) -> DeploymentSpec:
        if (self.uri is None) == (self.arn is None):
            raise ValueError("give exactly one of uri and arn")
        return self

    @property
    def address(self) -> str:
        return address(self.uri, self.arn)


def address(uri: str | None, arn: str | None) -> str:
    return uri.rstrip("/") if uri else arn or ""


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class SubscriptionSpec(_Spec):
    name: StrictStr = Field(
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="the consumer group (group.id) and the subscription's identity",
    )
    source: StrictStr
    sink: StrictStr
    options: dict[str, OptionValue] = Field(default_factory=dict)
    paused: bool = False

    @model_validator(mode="after")
    def _check(self) -> SubscriptionSpec:
        group = self.options.get(GROUP_OPTION)
        if group is not None and group != self.name:
            raise ValueError("the name is the consumer group; leave out options.group.id")
        try:
            parse_source(self.source)
            self.text_options()
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return self

    def text_options(self) -> dict[str, str]:
        """The options as the subscription stores them (a lambda:// sink's implied ones too)."""
        given = {k: option_text(v) for k, v in self.options.items() if k != GROUP_OPTION}
        return sink_options(parse_sink(self.sink), given)


class Document(_Spec):
    clusters: list[ClusterSpec] = Field(default_factory=list)
    deployments: list[DeploymentSpec] = Field(default_factory=list)
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Document:
        for what, keys in (
            ("cluster name", [c.name for c in self.clusters]),
            ("deployment address", [d.address for d in self.deployments]),
            ("subscription name", [s.name for s in self.subscriptions]),
        ):
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                raise ValueError(f"{what} {shown(twice[0])} appears twice")
        return self


def option_text(value: OptionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_document(data: Any, *, source: str = "document") -> Document:
    """Validate a decoded document; :class:`ValidationError` names the field at fault."""
    if data is None:
        data = {}
    try:
        return Document.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ValidationError(f"{source}: {where}: {message}{suffix}") from None
