"""Request and response bodies of the admin API (pydantic), named and shaped as Restate's.

Requests reject unknown fields, so a typo (``"option"`` for ``"options"``) is a 400 naming the
field instead of a silently ignored setting; every field Restate's own tooling sends is
declared. Responses are built through these models, so what is served always matches the
OpenAPI document generated from them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = [
    "ActionResponse",
    "ApplyAction",
    "ApplyRequest",
    "ApplyResponse",
    "CommandResponse",
    "CreateKafkaClusterRequest",
    "CreateSubscriptionRequest",
    "DetailedHttpDeploymentResponse",
    "DetailedLambdaDeploymentResponse",
    "DetailedSubscriptionResponse",
    "ErrorResponse",
    "HandlerResponse",
    "HealthResponse",
    "HttpDeploymentResponse",
    "InvocationResponse",
    "KafkaClusterResponse",
    "LambdaDeploymentResponse",
    "ListDeploymentsResponse",
    "ListHandlersResponse",
    "ListInvocationsResponse",
    "ListKafkaClustersResponse",
    "ListServicesResponse",
    "ListSubscriptionsResponse",
    "OptionValue",
    "PartitionOffset",
    "PartitionStatus",
    "ReadinessResponse",
    "RegisterDeploymentRequest",
    "RegisterDeploymentResponse",
    "ResetOffsetsRequest",
    "ResetOffsetsResponse",
    "RuntimeStatus",
    "ServiceNameRevision",
    "ServiceResponse",
    "SimpleKafkaClusterResponse",
    "SubscriptionResponse",
    "UpdateKafkaClusterRequest",
    "UpdateSubscriptionRequest",
    "VersionResponse",
]

OptionValue = StrictStr | StrictInt | StrictFloat | StrictBool
"""An option value: librdkafka options are strings; numbers and booleans are accepted and
rendered as librdkafka reads them (``true``/``false``)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ---------------------------------------------------------------------------------


class CreateSubscriptionRequest(_Request):
    source: StrictStr = Field(
        description="`kafka://<cluster_name>/<topic_name>`, e.g. `kafka://my-cluster/orders`"
    )
    sink: StrictStr = Field(
        description="`service://<service_name>/<handler_name>`, e.g. `service://Counter/count`"
    )
    options: dict[str, OptionValue] | None = Field(
        default=None, description="Kafka consumer options (librdkafka names) and ingress options."
    )


class UpdateSubscriptionRequest(_Request):
    options: dict[str, OptionValue | None] | None = Field(
        default=None,
        description="Options to set; `null` removes an option (JSON merge patch). The "
        "consumer group (`group.id`) is kept unless set explicitly.",
    )
    paused: StrictBool | None = Field(
        default=None, description="`true` stops consuming (offsets are kept), `false` resumes."
    )


class ResetOffsetsRequest(_Request):
    to: StrictStr | StrictInt = Field(
        description="`earliest`, `latest`, an RFC 3339 timestamp or epoch milliseconds."
    )
    timeout_s: StrictInt | StrictFloat = Field(
        default=60,
        gt=0,
        le=600,
        description="How long to wait for every poller to leave the consumer group.",
    )


class RegisterDeploymentRequest(_Request):
    uri: StrictStr | None = Field(default=None, description="HTTP(S) base URL of the deployment.")
    arn: StrictStr | None = Field(default=None, description="ARN of a Lambda function.")
    additional_headers: dict[str, StrictStr] | None = Field(
        default=None, description="Headers added to discovery and to every invocation."
    )
    use_http_11: StrictBool = False
    force: StrictBool | None = Field(
        default=None,
        description="Overwrite an existing deployment with the same address (and allow "
        "breaking service changes). Default false (true under /v2).",
    )
    breaking: StrictBool = False
    dry_run: StrictBool = Field(
        default=False, description="Discover and validate, but register nothing."
    )
    assume_role_arn: StrictStr | None = None
    metadata: dict[str, StrictStr] | None = None


class CreateKafkaClusterRequest(_Request):
    name: StrictStr = Field(description="Letters, digits, `.`, `_`, `-`.")
    properties: dict[str, OptionValue] = Field(
        description="librdkafka options; must contain `bootstrap.servers` or "
        "`metadata.broker.list`."
    )


class UpdateKafkaClusterRequest(_Request):
    properties: dict[str, OptionValue]


# -- responses --------------------------------------------------------------------------------


class ErrorResponse(_Response):
    message: str
    restate_code: str | None = None


class SubscriptionResponse(_Response):
    id: str
    source: str
    sink: str
    options: dict[str, str]
    paused: bool = False
    revision: int = 1
    created_at: str


class PartitionStatus(_Response):
    topic: str
    partition: int
    committed: int | None
    pending: int | None
    oldest_unfinished: int | None


class RetentionLossStatus(_Response):
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    count: int


class RuntimeStatus(_Response):
    """How the subscription runs in the poller that answered (other pollers may share it)."""

    state: str
    last_error: str | None
    in_flight: int
    partitions: list[PartitionStatus]
    retention_losses: list[RetentionLossStatus] = []
    """Records retention deleted before they were processed, until the subscription is
    updated or reset (which acknowledges them)."""


class DetailedSubscriptionResponse(SubscriptionResponse):
    runtime: RuntimeStatus | None = None


class ListSubscriptionsResponse(_Response):
    subscriptions: list[SubscriptionResponse]


class PartitionOffset(_Response):
    topic: str
    partition: int
    offset: int


class ResetOffsetsResponse(_Response):
    id: str
    group_id: str
    offsets: list[PartitionOffset]
    ledger_rows_deleted: int


class HandlerResponse(_Response):
    name: str
    ty: Literal["Exclusive", "Shared", "Workflow"]
    input_description: str
    output_description: str
    input: Literal["JSON", "RAW"]


class ServiceResponse(_Response):
    name: str
    handlers: list[HandlerResponse]
    ty: Literal["Service", "VirtualObject", "Workflow"]
    deployment_id: str
    revision: int
    public: bool = True
    idempotency_retention: str


class ListServicesResponse(_Response):
    services: list[ServiceResponse]


class ListHandlersResponse(_Response):
    handlers: list[HandlerResponse]


class ServiceNameRevision(_Response):
    name: str
    revision: int


class RegisterDeploymentResponse(_Response):
    id: str
    services: list[ServiceResponse]
    min_protocol_version: int
    max_protocol_version: int
    sdk_version: str | None = None


class _DeploymentCommon(_Response):
    id: str
    # Restate's CLI refuses null here (an absent or empty map is what it knows)
    additional_headers: dict[str, str] = Field(default_factory=dict)
    created_at: str
    min_protocol_version: int
    max_protocol_version: int
    sdk_version: str | None = None


class HttpDeploymentResponse(_DeploymentCommon):
    uri: str
    protocol_type: Literal["RequestResponse"] = "RequestResponse"
    http_version: str
    services: list[ServiceNameRevision]


class LambdaDeploymentResponse(_DeploymentCommon):
    arn: str
    assume_role_arn: str | None = None
    services: list[ServiceNameRevision]


class DetailedHttpDeploymentResponse(_DeploymentCommon):
    uri: str
    protocol_type: Literal["RequestResponse"] = "RequestResponse"
    http_version: str
    services: list[ServiceResponse]


class DetailedLambdaDeploymentResponse(_DeploymentCommon):
    arn: str
    assume_role_arn: str | None = None
    services: list[ServiceResponse]


class ListDeploymentsResponse(_Response):
    deployments: list[HttpDeploymentResponse | LambdaDeploymentResponse]


class InvocationResponse(_Response):
    id: str
    status: str
    subscription_id: str
    target: str
    key: str | None
    topic: str
    partition: int
    offset: int
    attempts: int
    last_error: str | None
    created_at: str | None
    modified_at: str | None
    completed_at: str | None
    next_retry_at: str | None
    dead_letter_topic: str | None


class ListInvocationsResponse(_Response):
    invocations: list[InvocationResponse]
    next_page_token: str | None = None


class CommandResponse(_Response):
    action: Literal["cancel", "kill", "retry"]
    state: Literal["pending", "done"] = Field(
        description="`pending` until the poller that holds the invocation carries it out."
    )
    outcome: str | None = Field(description="The invocation's status once carried out.")
    requested_at: str
    done_at: str | None


class ActionResponse(_Response):
    id: str
    action: Literal["cancel", "kill", "purge", "retry"]
    status: str | None = Field(
        description="The status after the action; null once purged, or while queued (202)."
    )
    command: CommandResponse | None = Field(
        default=None,
        description="With 202: the action was queued for the poller that holds the "
        "invocation; follow it with GET /invocations/{id}/command.",
    )


class SimpleKafkaClusterResponse(_Response):
    name: str
    properties: dict[str, str]
    created_at: str
    origin: Literal["config", "api"] = Field(
        description="`config`: from the settings file (read-only here); `api`: created here."
    )


class KafkaClusterResponse(SimpleKafkaClusterResponse):
    subscriptions: list[SubscriptionResponse]


class ListKafkaClustersResponse(_Response):
    clusters: list[SimpleKafkaClusterResponse]


class HealthResponse(_Response):
    status: Literal["ok"] = "ok"


class ReadinessResponse(_Response):
    status: Literal["ready", "not ready"]
    message: str | None = None
    checks: dict[str, str] | None = Field(
        default=None, description="One line per check; only with the admin token."
    )


class VersionResponse(_Response):
    version: str
    min_admin_api_version: int
    max_admin_api_version: int
    ingress_endpoint: str | None = None
    features: dict[str, bool] = Field(default_factory=dict)


# -- POST /apply ------------------------------------------------------------------------------


class ApplyRequest(_Request):
    document: dict[str, Any] = Field(description="clusters, deployments and subscriptions")
    dry_run: StrictBool = False
    prune: StrictBool = Field(default=False, description="delete what the document does not name")
    force: StrictBool = Field(
        default=False, description="also make changes that lose a consumer group's position"
    )
    plan: StrictStr | None = Field(
        default=None, description="fingerprint of the plan shown; 409 if it changed since"
    )


class ApplyAction(_Response):
    verb: str
    kind: str
    name: str
    changes: list[str]
    refused: str | None = None


class ApplyResponse(_Response):
    message: str | None = Field(default=None, description="why nothing (more) was applied")
    fingerprint: str
    actions: list[ApplyAction] = Field(description="the plan, in the order it runs")
    unchanged: list[str]
    kept: list[str] = Field(description="exists, not in the document, not pruned")
    errors: list[str]
    dry_run: bool
    applied: list[ApplyAction]
    failed: ApplyAction | None = None
