"""Subscriptions declared next to the functions in serverless.yml, as an apply document.

``custom.kafkaIngress`` (the Serverless Framework leaves ``custom`` alone) names, per function,
the topics it consumes, in the shape of the framework's ``msk``/``kafka`` events::

    custom:
      kafkaIngress:
        cluster: prod                    # default cluster of the events below
        clusters: []                     # optional dynamic clusters, as in an apply document
        functions:
          account:
            - topic: payments
              handler: Account/apply     # <service>/<handler> served by the function
              batchSize: 10              # -> batch.size
              startingPosition: TRIM_HORIZON   # TRIM_HORIZON | LATEST -> auto.offset.reset
              consumerGroupId: account-payments   # default <service>-<stage>-<function>-<topic>
              enabled: true              # false -> paused
              options: {event.format: msk}      # any further subscription option

Every function with events becomes a Lambda deployment
(``arn:<partition>:lambda:<region>:<account>:function:<service>-<stage>-<function>``, or the
function's own ``name:``), every event a subscription named by its consumer group. Pure: the
caller reads the file and knows the stage, region and account.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from adapter.api.bodies import OptionValue
from adapter.errors import ValidationError

__all__ = ["document_from_serverless"]

_POSITIONS = {"TRIM_HORIZON": "earliest", "LATEST": "latest"}


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    topic: StrictStr = Field(min_length=1)
    handler: StrictStr = Field(pattern=r"^[^/\s]+/[^/\s]+$", description="Service/handler")
    cluster: StrictStr | None = None
    batch_size: StrictInt | None = Field(default=None, alias="batchSize", ge=1, le=10_000)
    starting_position: Literal["TRIM_HORIZON", "LATEST"] | None = Field(
        default=None, alias="startingPosition"
    )
    consumer_group_id: StrictStr | None = Field(
        default=None, alias="consumerGroupId", pattern=r"^[A-Za-z0-9._-]{1,249}$"
    )
    enabled: StrictBool = True
    dead_letter_topic: StrictStr | None = Field(default=None, alias="deadLetterTopic")
    options: dict[str, OptionValue] = Field(default_factory=dict)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: StrictStr | None = None
    clusters: list[dict[str, Any]] = Field(default_factory=list)
    functions: dict[str, list[_Event]] = Field(default_factory=dict)


def _section(document: dict[str, Any]) -> _Section:
    raw = (document.get("custom") or {}).get("kafkaIngress")
    if raw is None:
        raise ValidationError("serverless.yml: no custom.kafkaIngress section")
    try:
        return _Section.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        raise ValidationError(f"serverless.yml: custom.kafkaIngress.{where}: {message}") from None


def document_from_serverless(
    document: dict[str, Any],
    *,
    stage: str,
    region: str,
    account_id: str,
    partition: str = "aws",
) -> dict[str, Any]:
    """The apply document for the ``custom.kafkaIngress`` section of a parsed serverless.yml."""
    section = _section(document)
    service = document.get("service")
    if not isinstance(service, str) or not service:
        raise ValidationError("serverless.yml: service: a name is required")
    functions = document.get("functions") or {}
    deployments: list[dict[str, Any]] = []
    subscriptions: list[dict[str, Any]] = []
    for function, events in section.functions.items():
        where = f"serverless.yml: custom.kafkaIngress.functions.{function}"
        spec = functions.get(function)
        if not isinstance(spec, dict):
            raise ValidationError(f"{where}: no such function under functions")
        name = spec.get("name") or f"{service}-{stage}-{function}"
        deployments.append({"arn": f"arn:{partition}:lambda:{region}:{account_id}:function:{name}"})
        for index, event in enumerate(events):
            cluster = event.cluster or section.cluster
            if cluster is None:
                raise ValidationError(
                    f"{where}[{index}]: no cluster (set cluster here or in custom.kafkaIngress)"
                )
            options: dict[str, OptionValue] = dict(event.options)
            if event.batch_size is not None:
                options["batch.size"] = event.batch_size
            if event.starting_position is not None:
                options["auto.offset.reset"] = _POSITIONS[event.starting_position]
            if event.dead_letter_topic is not None:
                options["dead.letter.topic"] = event.dead_letter_topic
            group = event.consumer_group_id or f"{service}-{stage}-{function}-{event.topic}"
            subscriptions.append(
                {
                    "name": group,
                    "source": f"kafka://{cluster}/{event.topic}",
                    "sink": f"service://{event.handler}",
                    "options": options,
                    "paused": not event.enabled,
                }
            )
    return {
        "clusters": section.clusters,
        "deployments": deployments,
        "subscriptions": subscriptions,
    }
