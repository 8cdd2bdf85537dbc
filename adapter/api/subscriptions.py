"""``/subscriptions``: Restate's subscription routes, plus PATCH (options, pause) and reset.

A subscription's consumer group is fixed when it is created — the ``group.id`` option, else
the cluster's, else the subscription ID — and stored in its options, so later option changes
never move it to a new group (which would re-read or skip the topic). Every change bumps the
subscription's ``revision``; pollers restart a consumer whose revision changed.

Creating a subscription that already exists (same source, sink and group) returns the
existing one (200) instead of starting a second consumer; with other options it is a 409.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response

from adapter import ids
from adapter.api.bodies import (
    CreateSubscriptionRequest,
    DetailedSubscriptionResponse,
    ListSubscriptionsResponse,
    OptionValue,
    PartitionOffset,
    PartitionStatus,
    ResetOffsetsRequest,
    ResetOffsetsResponse,
    RetentionLossStatus,
    RuntimeStatus,
    SubscriptionResponse,
    UpdateSubscriptionRequest,
)
from adapter.api.checked_writes import ChangedMeanwhile, versions
from adapter.api.endpoint import AdminState, Endpoint, QueryParam, json_response, read_body
from adapter.api.groups import ResetTarget
from adapter.api.refs import EVENT_FORMAT, Sink, parse_sink, parse_source, sink_options
from adapter.api.wire import parse_timestamp, subscription_response
from adapter.config import KafkaCluster
from adapter.errors import (
    ConditionFailedError,
    ConfigError,
    ConflictError,
    UnknownResourceError,
    ValidationError,
)
from adapter.kafka.options import (
    ClientOptions,
    holds_own_secrets,
    resolve_options,
    restore_masked,
    secret_routing_changed,
    secrets_following_cluster,
    validate_options,
)
from adapter.masking import mask_secrets
from adapter.model import Subscription, function_sink_arn, topic_name
from adapter.secrets import check_references
from adapter.store.changes import ConditionsFailed
from adapter.store.function_sinks import ensure_function_sink, release_function_sink

__all__ = ["ENDPOINTS"]

log = logging.getLogger(__name__)

_GROUP = "group.id"


def _text(value: OptionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _group_of(sub: Subscription) -> str:
    return sub.options.get(_GROUP) or sub.id


def _known(names: list[str]) -> str:
    return ", ".join(names) if names else "none (add one to the settings or POST /kafka-clusters)"


async def _cluster(state: AdminState, name: str) -> KafkaCluster:
    cluster = await state.catalog.lookup(name)
    if cluster is None:
        await state.catalog.refresh()  # only to name the known ones
        raise ValidationError(
            f"unknown Kafka cluster {name!r}; known clusters: {_known(state.catalog.names())}"
        )
    return cluster


def _inherited(cluster: KafkaCluster | None) -> dict[str, str] | None:
    """The options a subscription of ``cluster`` inherits, its brokers among them as
    ``bootstrap.servers`` unless an option names them (as :func:`resolve_options` reads)."""
    if cluster is None:
        return None
    options = dict(cluster.options)
    if not any(name in options for name in ("bootstrap.servers", "metadata.broker.list")):
        options["bootstrap.servers"] = ",".join(cluster.bootstrap_servers)
    return options


def _resolve(sub_id: str, cluster: KafkaCluster, options: dict[str, str]) -> ClientOptions:
    try:
        validate_options(options)
        check_references(options)
        return resolve_options(
            subscription_id=sub_id,
            bootstrap_servers=cluster.bootstrap_servers,
            cluster_options=cluster.options,
            subscription_options=options,
        )
    except ConfigError as exc:
        raise ValidationError(str(exc)) from None


async def find_subscription(state: AdminState, sub_id: str) -> Subscription | None:
    """The subscription named by ``sub_id`` in either ID form (400 if it is neither): one
    created before Restate's form was adopted is stored under its earlier-form key."""
    for key in ids.stored_forms(sub_id, "sub"):
        sub = await state.store.get_subscription(key)
        if sub is not None:
            return sub
    return None


async def _get(state: AdminState, sub_id: str) -> Subscription:
    sub = await find_subscription(state, sub_id)
    if sub is None:
        raise UnknownResourceError(f"the subscription {sub_id!r} does not exist")
    return sub


async def _check_sink(state: AdminState, sink: Sink) -> None:
    if sink.function_arn is not None:
        return  # registered below, without discovery
    service, handler = sink.service, sink.handler
    svc = await state.store.get_service(service)
    if svc is None:
        known = ", ".join(s.name for s in await state.store.list_services()) or "none"
        raise ValidationError(
            f"unknown service {service!r} in sink: register a deployment that serves it "
            f"(registered services: {known})"
        )
    if svc.handler(handler) is None:
        known = ", ".join(h.name for h in svc.handlers) or "none"
        raise ValidationError(f"service {service!r} has no handler {handler!r} (handlers: {known})")


async def create_subscription(request: Request, state: AdminState) -> Response:
    body = await read_body(request, CreateSubscriptionRequest)
    source = parse_source(body.source)
    sink = parse_sink(body.sink)
    await _cluster(state, source.cluster)
    seen = _properties(state, source.cluster)  # as read just now: nothing awaited between
    await _check_sink(state, sink)
    try:
        options = restore_masked({k: _text(v) for k, v in (body.options or {}).items()}, {})
    except ConfigError as exc:
        raise ValidationError(str(exc)) from None
    options = sink_options(sink, options)
    new_id = ids.subscription_id()
    created_at = int(time.time() * 1000)
    guarded = holds_own_secrets(options)
    async for since in versions(state, f"subscription of {source}", guarded=guarded):
        # Checked against the cluster as it is when written (adapter.api.checked_writes).
        cluster = await _cluster(state, source.cluster)
        _not_moved_meanwhile(state, source.cluster, seen, options)
        resolved = _resolve(new_id, cluster, options)
        sub = Subscription(
            id=new_id,
            cluster=source.cluster,
            topic=source.topic,
            service=sink.service,
            handler=sink.handler,
            options={**options, _GROUP: resolved.group_id},
            created_at_ms=created_at,
        )
        # The store checks for a subscription with the same source, sink and group by its
        # claim (one conditional write), so concurrent creations of one consumer make one.
        try:
            existing = await state.store.create_subscription(sub, since=since)
        except ChangedMeanwhile:
            continue
        if existing is not None:
            return _existing(existing, options)
        break
    if sink.function_arn is not None:
        # After the row: a concurrent delete of the function's last other subscription
        # either sees this row and keeps the registration, or is undone here.
        await ensure_function_sink(state.store, sink.function_arn)
    live = sub
    state.subscription_changed(live.cluster)
    log.info("subscription %s created: %s -> %s", live.id, live.source, live.sink)
    return json_response(
        subscription_response(live),
        201,
        headers={"Location": f"subscriptions/{ids.restate_form(live.id)}"},
    )


def _existing(sub: Subscription, options: dict[str, str]) -> Response:
    mine = {k: v for k, v in sub.options.items() if k != _GROUP}
    asked = {k: v for k, v in options.items() if k != _GROUP}
    if mine != asked:
        shown = ids.restate_form(sub.id)
        raise ConflictError(
            f"subscription {shown} already consumes {sub.source} into {sub.sink} in group "
            f"{_group_of(sub)!r} with other options; change them with PATCH "
            f"/subscriptions/{shown}, or give this one its own group.id"
        )
    return json_response(
        subscription_response(sub),
        200,
        headers={"Location": f"subscriptions/{ids.restate_form(sub.id)}"},
    )


async def list_subscriptions(request: Request, state: AdminState) -> Response:
    sink = request.query_params.get("sink")
    source = request.query_params.get("source")
    subs = [
        subscription_response(s)
        for s in await state.store.list_subscriptions()
        if (sink is None or s.sink == sink) and (source is None or s.source == source)
    ]
    return json_response(ListSubscriptionsResponse(subscriptions=subs))


def _runtime(state: AdminState, sub_id: str) -> RuntimeStatus | None:
    if state.supervisor is None:
        return None
    info = state.supervisor.status().get(sub_id)
    if info is None:
        return None
    runner = state.supervisor.runners().get(sub_id)
    partitions = []
    if runner is not None:
        for tp, part in sorted(runner.partition_status().items()):
            partitions.append(
                PartitionStatus(
                    topic=tp[0],
                    partition=tp[1],
                    committed=part.get("committed"),
                    pending=part.get("pending"),
                    oldest_unfinished=part.get("oldest_unfinished"),
                )
            )
    error = info.get("last_error")
    return RuntimeStatus(
        state=str(info.get("state")),
        last_error=mask_secrets(error) if error else None,
        in_flight=int(info.get("in_flight") or 0),
        partitions=partitions,
        retention_losses=[
            RetentionLossStatus(
                topic=loss.tp[0],
                partition=loss.tp[1],
                first_offset=loss.first,
                last_offset=loss.last,
                count=loss.count,
            )
            for loss in info.get("retention_losses") or ()
        ],
    )


async def get_subscription(request: Request, state: AdminState) -> Response:
    sub = await _get(state, request.path_params["subscription"])
    body = DetailedSubscriptionResponse(
        **subscription_response(sub).model_dump(), runtime=_runtime(state, sub.id)
    )
    return json_response(body)


async def delete_subscription(request: Request, state: AdminState) -> Response:
    sub = await _get(state, request.path_params["subscription"])
    sub_id = sub.id
    if not await state.store.delete_subscription(sub_id):
        raise UnknownResourceError(f"the subscription {sub_id!r} does not exist")
    # A function sink's implicit registration goes with its last subscription.
    await release_function_sink(state.store, sub.service)
    state.subscription_changed(sub.cluster)
    log.info("subscription %s deleted", sub_id)
    return Response(status_code=202)


async def _save(
    state: AdminState, old: Subscription, new: Subscription, *, since: int | None = None
) -> Subscription:
    saved = replace(new, revision=old.revision + 1)
    try:
        await state.store.update_subscription(
            saved, expected_revision=old.revision, previous=old, since=since
        )
    except ConditionsFailed as exc:
        if 0 in exc.failed:
            raise ConflictError(
                f"subscription {old.id} was changed or deleted by another request meanwhile; "
                "read it again and retry"
            ) from None
        raise ConflictError(
            f"another subscription already consumes {new.source} into {new.sink} in group "
            f"{_group_of(new)!r}; choose another group.id"
        ) from None
    except ConditionFailedError:
        raise ConflictError(
            f"subscription {old.id} was changed or deleted by another request meanwhile; "
            "read it again and retry"
        ) from None
    state.subscription_changed(saved.cluster)
    if saved.cluster != old.cluster:
        state.subscription_changed(old.cluster)
    return saved


def _properties(state: AdminState, name: str) -> Mapping[str, str]:
    """The cluster's properties as last read (empty: unknown)."""
    entry = state.catalog.get(name)
    return entry.properties if entry is not None else {}


def _not_moved_meanwhile(
    state: AdminState, name: str, seen: Mapping[str, str], options: Mapping[str, str]
) -> None:
    """409 if the cluster changed since this request first read it in a way that would send
    the secrets the subscription gives itself elsewhere: they were given for what it was."""
    following = secrets_following_cluster(seen, _properties(state, name), options) if seen else []
    if following:
        change = following[0]
        effect = "sends them elsewhere" if change.moves else "weakens their protection"
        raise ConflictError(
            f"Kafka cluster {name!r} changed while this request was made: its "
            f"{change.option!r} {effect}, and this subscription gives secret options of its "
            f"own ({', '.join(change.secrets)}); read the cluster again and retry"
        )


async def _cluster_for_options(
    state: AdminState, sub: Subscription, body: UpdateSubscriptionRequest
) -> KafkaCluster | None:
    """The subscription's cluster when options are given (None: none given, or the cluster
    was deleted with force=true, and changes are judged by the subscription alone)."""
    return await state.catalog.lookup(sub.cluster) if body.options else None


def _updated_options(
    sub: Subscription, body: UpdateSubscriptionRequest, cluster: KafkaCluster | None
) -> dict[str, str]:
    options = dict(sub.options)
    given = {k: None if v is None else _text(v) for k, v in (body.options or {}).items()}
    try:
        # "***" (what GET shows for a secret) written back keeps the stored secret, unless
        # the change (a removal too: the cluster's option then applies) moves or weakens
        # where it goes.
        kept = restore_masked(given, sub.options, inherited=_inherited(cluster))
    except ConfigError as exc:
        raise ValidationError(str(exc)) from None
    for name, value in (body.options or {}).items():
        if value is None and name == EVENT_FORMAT and function_sink_arn(sub.service):
            continue  # a function sink's implicit format: removing it keeps it
        if value is None:
            if name == _GROUP:
                raise ValidationError(
                    "group.id cannot be removed: the consumer group is fixed when the "
                    "subscription is created (set another value to move it to that group)"
                )
            options.pop(name, None)
        else:
            options[name] = kept[name]
    if function_sink_arn(sub.service):
        options = sink_options(parse_sink(sub.sink), options)
    return options


async def update_subscription(request: Request, state: AdminState) -> Response:
    sub_id = request.path_params["subscription"]
    first = await _get(state, sub_id)
    body = await read_body(request, UpdateSubscriptionRequest)
    cluster = await _cluster_for_options(state, first, body)
    seen = _properties(state, first.cluster)  # as read just now: nothing awaited between
    options = _updated_options(first, body, cluster)
    # Guarded only when it gives itself secrets and changes a secret, an address or the TLS
    # they travel under: a pause or a plain option change is not held up by unrelated writes.
    guarded = holds_own_secrets(options) and secret_routing_changed(first.options, options)
    async for since in versions(state, f"subscription {sub_id}", guarded=guarded):
        # Read after the version, so checked against its cluster as it is when written.
        sub = await _get(state, sub_id)
        cluster = await _cluster_for_options(state, sub, body)
        options = _updated_options(sub, body, cluster)
        if (
            since is None
            and holds_own_secrets(options)
            and secret_routing_changed(sub.options, options)
        ):
            raise ConflictError(
                f"subscription {sub_id} was changed by another request meanwhile; read it "
                "again and retry"
            )
        _not_moved_meanwhile(state, sub.cluster, seen, options)
        if options != sub.options:
            _resolve(sub.id, cluster or await _cluster(state, sub.cluster), options)
        paused = sub.paused if body.paused is None else body.paused
        if options == sub.options and paused == sub.paused:
            return json_response(subscription_response(sub))
        try:
            saved = await _save(
                state, sub, replace(sub, options=options, paused=paused), since=since
            )
        except ChangedMeanwhile:
            continue
        break
    log.info("subscription %s updated (revision %d)", saved.id, saved.revision)
    return json_response(subscription_response(saved))


def _target(value: str | int) -> ResetTarget:
    if isinstance(value, str) and value.strip().lower() in ("earliest", "latest"):
        return "earliest" if value.strip().lower() == "earliest" else "latest"
    return parse_timestamp(value)


async def _wait_stopped_here(state: AdminState, sub_id: str, deadline: float) -> None:
    while state.supervisor is not None and sub_id in state.supervisor.status():
        if time.monotonic() >= deadline:
            raise ConflictError(f"subscription {sub_id} did not stop in time; try again")
        await asyncio.sleep(0.05)


async def _resumable(
    state: AdminState, latest: Subscription, paused: Subscription, reset: ClientOptions
) -> bool:
    """May a reset resume the subscription it paused? Not if another request changed it
    meanwhile (a change of its cluster moves only its revision, to restart it), nor if it
    would now consume from other brokers than those whose offsets were reset."""
    if replace(latest, revision=paused.revision) != paused:
        return False
    cluster = await state.catalog.lookup(latest.cluster)
    if cluster is None:
        return False
    try:
        now = _resolve(latest.id, cluster, latest.options)
    except ValidationError:
        return False
    return now.bootstrap_servers == reset.bootstrap_servers


async def reset_offsets(request: Request, state: AdminState) -> Response:
    sub = await _get(state, request.path_params["subscription"])
    body = await read_body(request, ResetOffsetsRequest)
    target = _target(body.to)
    if state.reset_offsets is None:
        raise ConflictError("offset reset is not available in this admin process")
    # Refused before pausing anything if the options do not resolve, secret references
    # included (a reference this process cannot read would stop a healthy consumer for
    # nothing).
    _resolve(sub.id, await _cluster(state, sub.cluster), sub.options)
    options = await state.client_options(sub.cluster, sub.id)
    deadline = time.monotonic() + float(body.timeout_s)
    current = sub
    if not sub.paused:
        current = await _save(state, sub, replace(sub, paused=True))
    try:
        await _wait_stopped_here(state, sub.id, deadline)
        # Read again, as of one moment: the subscription read above, paired with its
        # cluster as changed since, could send its secrets to brokers they were not given for.
        options = await state.client_options(sub.cluster, sub.id)
        offsets = await state.reset_offsets(
            options, sub.topic, target, timeout_s=max(0.1, deadline - time.monotonic())
        )
        # The ledger remembers which records completed and skips them when redelivered; a
        # reset means "deliver from here", so forget the rows from the new positions on.
        deleted = 0
        for (topic, partition), offset in sorted(offsets.items()):
            deleted += await state.store.delete_entries_from(sub.id, topic, partition, offset)
    finally:
        if not sub.paused:
            latest = await state.store.get_subscription(sub.id)
            if latest is not None and await _resumable(state, latest, current, options):
                await _save(state, latest, replace(latest, paused=False))
    log.info("subscription %s: offsets of group %s reset to %s", sub.id, options.group_id, body.to)
    return json_response(
        ResetOffsetsResponse(
            id=ids.restate_form(sub.id),
            group_id=options.group_id,
            offsets=[
                PartitionOffset(topic=topic_name(t), partition=p, offset=o)
                for (t, p), o in sorted(offsets.items())
            ],
            ledger_rows_deleted=deleted,
        )
    )


_SUB = "subscription"
_ERR = {400: None, 404: None}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/subscriptions",
        create_subscription,
        "create_subscription",
        "Create subscription",
        _SUB,
        {201: SubscriptionResponse, 200: SubscriptionResponse, 409: None, 400: None},
        body=CreateSubscriptionRequest,
    ),
    Endpoint(
        "GET",
        "/subscriptions",
        list_subscriptions,
        "list_subscriptions",
        "List subscriptions",
        _SUB,
        {200: ListSubscriptionsResponse},
        query=(
            QueryParam("sink", {"type": "string"}, "Filter by the exact specified sink."),
            QueryParam("source", {"type": "string"}, "Filter by the exact specified source."),
        ),
    ),
    Endpoint(
        "GET",
        "/subscriptions/{subscription}",
        get_subscription,
        "get_subscription",
        "Get subscription",
        _SUB,
        {200: DetailedSubscriptionResponse, **_ERR},
    ),
    Endpoint(
        "DELETE",
        "/subscriptions/{subscription}",
        delete_subscription,
        "delete_subscription",
        "Delete subscription",
        _SUB,
        {202: None, **_ERR},
    ),
    Endpoint(
        "PATCH",
        "/subscriptions/{subscription}",
        update_subscription,
        "update_subscription",
        "Change options, pause or resume a subscription (keeps its consumer group)",
        _SUB,
        {200: SubscriptionResponse, 409: None, **_ERR},
        body=UpdateSubscriptionRequest,
    ),
    Endpoint(
        "POST",
        "/subscriptions/{subscription}/reset",
        reset_offsets,
        "reset_subscription_offsets",
        "Reset the consumer group's offsets to earliest, latest or a timestamp",
        _SUB,
        {200: ResetOffsetsResponse, 409: None, 503: None, **_ERR},
        body=ResetOffsetsRequest,
    ),
]
