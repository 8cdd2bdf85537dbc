"""``/kafka-clusters``: Restate 1.7's Kafka cluster routes.

Conflicts (409), as in Restate: creating a name that exists, deleting a cluster that
subscriptions use without ``force=true``. Clusters from the settings file are listed but are
read-only here (changing or deleting one is a 409: edit the settings file instead).
Changing a cluster's properties restarts its subscriptions (their revisions are bumped).

A subscription's own secret options (``sasl.password`` …) go to the brokers and token endpoint
it inherits, under the TLS settings it inherits: a change of those that would send them
elsewhere or less protected is refused (400) naming the subscriptions, as is creating a
cluster under the name of one deleted with ``force`` while its subscriptions hold secrets of
their own (docs/security.md#p-sec-credentials-stay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response

from adapter.api.bodies import (
    CreateKafkaClusterRequest,
    KafkaClusterResponse,
    ListKafkaClustersResponse,
    OptionValue,
    SimpleKafkaClusterResponse,
    UpdateKafkaClusterRequest,
)
from adapter.api.catalog import ClusterEntry, cluster_from_properties
from adapter.api.checked_writes import ChangedMeanwhile, versions
from adapter.api.endpoint import (
    AdminState,
    Endpoint,
    QueryParam,
    json_response,
    query_bool,
    read_body,
)
from adapter.api.refs import check_cluster_name
from adapter.api.wire import rfc3339, subscription_response
from adapter.errors import (
    ConditionFailedError,
    ConfigError,
    ConflictError,
    UnknownResourceError,
    ValidationError,
)
from adapter.ids import restate_form
from adapter.kafka.options import (
    cluster_change_may_take_secrets,
    joined,
    mask_options,
    restore_masked,
    secrets_following_cluster,
)
from adapter.model import Subscription

__all__ = ["ENDPOINTS"]

log = logging.getLogger(__name__)


def _text(properties: dict[str, OptionValue]) -> dict[str, str]:
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else str(v)
        for k, v in properties.items()
    }


def _restore(given: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    # The properties are replaced as a whole; a "***" kept for a new broker or token endpoint
    # address is refused (adapter.kafka.options.restore_masked).
    try:
        return restore_masked(given, stored, replaces=True)
    except ConfigError as exc:
        raise ValidationError(str(exc)) from None


_NAMED = 10
"""Subscriptions named in one refusal; the rest are counted."""


def _followers_refusal(
    name: str,
    stored: Mapping[str, str],
    properties: Mapping[str, str],
    subscriptions: Sequence[Subscription],
) -> str | None:
    """Why ``name``'s properties going from ``stored`` to ``properties`` (``stored`` empty: a
    cluster created under that name) would take secrets its subscriptions give themselves
    elsewhere or less protected, naming at most :data:`_NAMED` of them; None if it would not."""
    found: dict[tuple[str, bool, str], tuple[list[str], set[str]]] = {}
    for sub in sorted(subscriptions, key=lambda s: s.id):
        for following in secrets_following_cluster(stored, properties, sub.options):
            key = (following.option, following.moves, following.canonical)
            ids, secrets = found.setdefault(key, ([], set()))
            ids.append(restate_form(sub.id))
            secrets.update(following.secrets)
    problems = []
    for (option, moves, canonical), (ids, secrets) in found.items():
        one = len(ids) == 1
        subs, hold = (
            (f"subscription {ids[0]}", "holds")
            if one
            else (f"subscriptions {joined(ids, limit=_NAMED, separator=', ')}", "hold")
        )
        their, them = ("its", "it") if one else ("their", "them")
        held = f"secret options of {their} own ({', '.join(sorted(secrets))})"
        change = repr(option) if option in properties else f"leaving {option!r} out"
        if not stored:
            problems.append(
                f"{subs} of a Kafka cluster of this name deleted with force=true {hold} {held}; "
                f"this cluster's {option!r} is not known to be the same address, so they would "
                f"be sent there: delete {them} first, or give this cluster another name"
            )
        elif moves:
            problems.append(
                f"{option!r} changes where credentials are sent, and {subs} {hold} {held} that "
                f"would be sent there: give {them} {their} own {canonical} first, or remove "
                "those secret options"
            )
        else:
            problems.append(
                f"{change} weakens the protection credentials travel under, and {subs} {hold} "
                f"{held} that would travel under it: give {them} {their} own {canonical} (as "
                "the cluster has it now) first, or remove those secret options"
            )
    if not problems:
        return None
    return f"Kafka cluster {name!r}: {'; '.join(problems)}"


async def _check_followers(
    state: AdminState, name: str, stored: Mapping[str, str], properties: Mapping[str, str]
) -> None:
    """400 if the change would take its subscriptions' own secrets along (see above)."""
    subscriptions = [s for s in await state.store.list_subscriptions() if s.cluster == name]
    refusal = _followers_refusal(name, stored, properties, subscriptions)
    if refusal is not None:
        raise ValidationError(refusal)


def _simple(entry: ClusterEntry) -> SimpleKafkaClusterResponse:
    return SimpleKafkaClusterResponse(
        name=entry.name,
        properties=mask_options(entry.properties),
        created_at=rfc3339(entry.created_at_ms) or "",
        origin="config" if entry.static else "api",
    )


async def _entry(state: AdminState, name: str) -> ClusterEntry:
    check_cluster_name(name)
    await state.catalog.refresh([name])  # by key: one GetItem however many clusters
    entry = state.catalog.get(name)
    if entry is None:
        raise UnknownResourceError(f"the requested Kafka cluster {name!r} does not exist")
    return entry


def _read_only(entry: ClusterEntry, verb: str) -> None:
    if entry.static:
        raise ConflictError(
            f"Kafka cluster {entry.name!r} is defined in the settings file and cannot be "
            f"{verb} through the API; change the settings file and restart the pollers"
        )


async def list_clusters(request: Request, state: AdminState) -> Response:
    await state.catalog.refresh()
    clusters = [_simple(e) for e in state.catalog.entries()]
    return json_response(ListKafkaClustersResponse(clusters=clusters))


async def get_cluster(request: Request, state: AdminState) -> Response:
    entry = await _entry(state, request.path_params["cluster_name"])
    subscriptions = []
    if query_bool(request, "include_subscriptions"):
        subscriptions = [
            subscription_response(s)
            for s in await state.store.list_subscriptions()
            if s.cluster == entry.name
        ]
    body = KafkaClusterResponse(**_simple(entry).model_dump(), subscriptions=subscriptions)
    return json_response(body)


async def create_cluster(request: Request, state: AdminState) -> Response:
    body = await read_body(request, CreateKafkaClusterRequest)
    name = check_cluster_name(body.name)
    properties = _restore(_text(body.properties), {})
    await state.catalog.refresh([name])
    if state.catalog.get(name) is not None:
        raise ConflictError(f"Kafka cluster {name!r} already exists")
    cluster_from_properties(name, properties)
    created = int(time.time() * 1000)
    async for since in versions(state, f"Kafka cluster {name!r}", guarded=True):
        # Subscriptions left by a cluster of this name deleted with force=true.
        await _check_followers(state, name, {}, properties)
        try:
            await state.store.create_cluster(
                {"name": name, "properties": properties, "created_at": created}, since=since
            )
        except ChangedMeanwhile:
            continue  # a subscription may have come meanwhile: check again
        except ConditionFailedError:
            raise ConflictError(f"Kafka cluster {name!r} already exists") from None
        break
    await state.catalog.refresh([name])
    log.info("Kafka cluster %s created", name)
    entry = ClusterEntry(name, properties, created, static=False)
    return json_response(_simple(entry), 201, headers={"Location": f"kafka-clusters/{name}"})


async def update_cluster(request: Request, state: AdminState) -> Response:
    name = request.path_params["cluster_name"]
    first = await _entry(state, name)
    _read_only(first, "changed")
    body = await read_body(request, UpdateKafkaClusterRequest)
    # Properties written back exactly as GET showed them keep the stored secrets.
    guarded = cluster_change_may_take_secrets(
        first.properties, _restore(_text(body.properties), first.properties)
    )
    async for since in versions(state, f"Kafka cluster {name!r}", guarded=guarded):
        # Read after the version: a guarded write happens only if nothing changed since.
        entry = await _entry(state, name)
        properties = _restore(_text(body.properties), entry.properties)
        cluster_from_properties(entry.name, properties)
        if since is None and cluster_change_may_take_secrets(entry.properties, properties):
            raise ConflictError(
                f"Kafka cluster {name!r} was changed by another request meanwhile; read it "
                "again and retry"
            )
        await _check_followers(state, entry.name, entry.properties, properties)
        try:
            await state.store.replace_cluster(
                {"name": entry.name, "properties": properties, "created_at": entry.created_at_ms},
                since=since,
            )
        except ChangedMeanwhile:
            continue  # a subscription may have come or changed meanwhile: check again
        except ConditionFailedError:
            raise UnknownResourceError(
                f"the requested Kafka cluster {entry.name!r} does not exist"
            ) from None
        break
    await state.catalog.refresh([entry.name])
    for sub in await state.store.list_subscriptions():
        if sub.cluster == entry.name:
            try:
                await state.store.update_subscription(
                    replace(sub, revision=sub.revision + 1), expected_revision=sub.revision
                )
            except ConditionFailedError:
                continue  # changed meanwhile, so it restarts anyway
    state.wake()
    log.info("Kafka cluster %s updated; its subscriptions restart", entry.name)
    return json_response(_simple(replace(entry, properties=properties)))


async def delete_cluster(request: Request, state: AdminState) -> Response:
    entry = await _entry(state, request.path_params["cluster_name"])
    _read_only(entry, "deleted")
    users = [
        restate_form(s.id)
        for s in await state.store.list_subscriptions()
        if s.cluster == entry.name
    ]
    if users and not query_bool(request, "force"):
        raise ConflictError(
            f"Kafka cluster {entry.name!r} is used by subscriptions {', '.join(users)}; "
            "delete them first, or pass force=true to leave them without a cluster"
        )
    if not await state.store.delete_cluster(entry.name):
        raise UnknownResourceError(f"the requested Kafka cluster {entry.name!r} does not exist")
    await state.catalog.refresh([entry.name])
    state.wake()
    log.info("Kafka cluster %s deleted", entry.name)
    return Response(status_code=202)


_TAG = "kafka_cluster"
_PATH = "/kafka-clusters/{cluster_name}"

ENDPOINTS = [
    Endpoint(
        "POST",
        "/kafka-clusters",
        create_cluster,
        "create_kafka_cluster",
        "Create Kafka cluster",
        _TAG,
        {201: SimpleKafkaClusterResponse, 400: None, 409: None},
        body=CreateKafkaClusterRequest,
    ),
    Endpoint(
        "GET",
        "/kafka-clusters",
        list_clusters,
        "list_kafka_clusters",
        "List Kafka clusters",
        _TAG,
        {200: ListKafkaClustersResponse},
    ),
    Endpoint(
        "GET",
        _PATH,
        get_cluster,
        "get_kafka_cluster",
        "Get Kafka cluster",
        _TAG,
        {200: KafkaClusterResponse, 400: None, 404: None},
        query=(
            QueryParam(
                "include_subscriptions",
                {"type": "boolean"},
                "Also list the subscriptions that use this cluster.",
            ),
        ),
    ),
    Endpoint(
        "PATCH",
        _PATH,
        update_cluster,
        "update_kafka_cluster",
        "Update Kafka cluster (replaces its properties, restarts its subscriptions)",
        _TAG,
        {200: SimpleKafkaClusterResponse, 400: None, 404: None, 409: None},
        body=UpdateKafkaClusterRequest,
    ),
    Endpoint(
        "DELETE",
        _PATH,
        delete_cluster,
        "delete_kafka_cluster",
        "Delete Kafka cluster",
        _TAG,
        {202: None, 400: None, 404: None, 409: None},
        query=(
            QueryParam(
                "force", {"type": "boolean"}, "Delete even if subscriptions use the cluster."
            ),
        ),
    ),
]
