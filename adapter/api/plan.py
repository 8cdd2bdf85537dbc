"""Declarative configuration: a desired set of Kafka clusters, deployments and subscriptions,
compared with what exists, becomes a plan of admin API calls. Pure: no I/O.

The document (YAML for ``kafka-ingress apply -f``, JSON for ``POST /apply``)::

    clusters:                        # dynamic clusters, as POST /kafka-clusters
      - name: msk
        properties: {bootstrap.servers: "b-1…:9098", security.protocol: SASL_SSL, …}
    deployments:                     # as POST /deployments
      - uri: http://orders.internal:9080
      - arn: arn:aws:lambda:eu-west-1:123456789012:function:orders
    subscriptions:
      - name: orders-place           # the consumer group (group.id): the identity
        source: kafka://msk/orders
        sink: service://Orders/place
        options: {auto.offset.reset: earliest}
        paused: false

Identity: a cluster by ``name``, a deployment by its address (``uri`` or ``arn``), a
subscription by ``name``, which becomes its consumer group. Keying subscriptions on the group
keeps what Kafka remembers (the group's committed offsets) tied to what the file names:

- a new name is created; changed options or ``paused`` are a PATCH (same consumer group);
- a changed sink replaces the subscription (delete, create) in the same group, so it carries on
  from the group's committed offsets;
- a changed source (cluster or topic) would make the group's offsets those of another topic:
  refused unless forced; so is a dynamic cluster's ``bootstrap.servers`` change while
  subscriptions use it (another Kafka cluster has no such group);
- with ``prune``, what the document does not name is deleted (subscriptions first, then
  deployments, then dynamic clusters); without it, it is kept and listed.

Clusters from the settings file cannot be managed here (they are named by subscriptions only).
What a plan shows (``describe``, the API's answer and the CLI's output) holds no secret, though
it is built from decrypted rows:

- secret-named options (``is_secret``) are compared but never shown: a changed one reads
  "changed (secret)";
- a deployment header's value is never shown (any header may carry a credential): "set",
  "changed", "removed";
- credentials in a URL are masked wherever one appears (``https://***@idp/token``), and other
  values go through the masker, as the API's ``GET`` shows them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from adapter.api.declared import (
    GROUP_OPTION,
    Document,
    SubscriptionSpec,
    address,
    lower_keys,
    option_text,
    parse_document,
)
from adapter.api.refs import parse_source
from adapter.kafka.options import is_secret
from adapter.masking import mask_secrets, mask_userinfo
from adapter.model import Deployment, Subscription

__all__ = [
    "Action",
    "ActualCluster",
    "ApiCall",
    "Document",
    "Plan",
    "parse_document",
    "plan",
    "render",
]

_BOOTSTRAP = ("bootstrap.servers", "metadata.broker.list")


# --------------------------------------------------------------------------------------------
# What exists


@dataclass(frozen=True, slots=True)
class ActualCluster:
    name: str
    properties: Mapping[str, str]
    static: bool  # from the settings file: read-only


# --------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One admin API request. ``{created}`` in ``path`` is the ID the previous call created."""

    method: Literal["POST", "PATCH", "DELETE"]
    path: str
    body: Mapping[str, Any] | None = None
    params: Mapping[str, str] = field(default_factory=dict)


Verb = Literal["create", "update", "replace", "delete"]
Kind = Literal["cluster", "deployment", "subscription"]


@dataclass(frozen=True, slots=True)
class Action:
    verb: Verb
    kind: Kind
    name: str
    changes: tuple[str, ...] = ()
    calls: tuple[ApiCall, ...] = ()
    refused: str | None = None  # why this loses a consumer group's position (unless forced)

    def describe(self) -> dict[str, Any]:
        """The action as shown (CLI, API): no call bodies, no credentials in URLs."""
        return {
            "verb": self.verb,
            "kind": self.kind,
            "name": mask_userinfo(self.name),
            "changes": [mask_userinfo(c) for c in self.changes],
            "refused": mask_userinfo(self.refused) if self.refused else None,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    unchanged: tuple[str, ...]
    kept: tuple[str, ...]  # exists, not named, not pruned
    errors: tuple[str, ...]

    @property
    def refusals(self) -> list[Action]:
        return [a for a in self.actions if a.refused]

    @property
    def fingerprint(self) -> str:
        """Changes when anything this plan would do changes (secrets only hashed)."""
        data = [
            [a.verb, a.kind, a.name, [[c.method, c.path, c.body, dict(c.params)] for c in a.calls]]
            for a in self.actions
        ]
        encoded = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "actions": [a.describe() for a in self.actions],
            "unchanged": [mask_userinfo(u) for u in self.unchanged],
            "kept": [mask_userinfo(k) for k in self.kept],
            "errors": [mask_userinfo(e) for e in self.errors],
        }


def _shown(value: str) -> str:
    """A value that is not secret by its name, as shown: credentials in it masked."""
    return repr(mask_secrets(value))


def _option_changes(
    old: Mapping[str, str], new: Mapping[str, str], label: str = "options."
) -> tuple[list[str], dict[str, str | None]]:
    lines: list[str] = []
    patch: dict[str, str | None] = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        patch[name] = after
        if before is None:
            shown = "(secret)" if is_secret(name) else _shown(after or "")
            lines.append(f"{label}{name}: set to {shown}")
        elif after is None:
            lines.append(f"{label}{name}: removed")
        elif is_secret(name) or _shown(before) == _shown(after):
            # Equal once masked: what changed is the credentials in it.
            lines.append(f"{label}{name}: changed (secret)")
        else:
            lines.append(f"{label}{name}: {_shown(before)} -> {_shown(after)}")
    return lines, patch


def _header_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Which headers change, never their values: any header may carry a credential."""
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        verb = "set" if before is None else "removed" if after is None else "changed"
        lines.append(f"headers.{name}: {verb} (value not shown)")
    return lines


def _group(sub: Subscription) -> str:
    return sub.options.get(GROUP_OPTION) or sub.id


def _subscription_body(spec: SubscriptionSpec) -> dict[str, Any]:
    return {
        "source": spec.source,
        "sink": spec.sink,
        "options": {**spec.text_options(), GROUP_OPTION: spec.name},
    }


def _create_subscription(spec: SubscriptionSpec) -> list[ApiCall]:
    calls = [ApiCall("POST", "/subscriptions", _subscription_body(spec))]
    if spec.paused:
        calls.append(ApiCall("PATCH", "/subscriptions/{created}", {"paused": True}))
    return calls


def _plan_clusters(
    doc: Document,
    clusters: Sequence[ActualCluster],
    subs: Sequence[Subscription],
    *,
    prune: bool,
) -> tuple[list[Action], list[Action], list[str], list[str], list[str]]:
    actual = {c.name: c for c in clusters}
    first: list[Action] = []
    last: list[Action] = []
    unchanged: list[str] = []
    kept: list[str] = []
    errors: list[str] = []
    named = {c.name for c in doc.clusters}
    for spec in doc.clusters:
        properties = {k: option_text(v) for k, v in spec.properties.items()}
        have = actual.get(spec.name)
        if have is None:
            lines = [
                f"{k} = {'(secret)' if is_secret(k) else _shown(v)}" for k, v in properties.items()
            ]
            body = {"name": spec.name, "properties": properties}
            first.append(
                Action(
                    "create",
                    "cluster",
                    spec.name,
                    tuple(lines),
                    (ApiCall("POST", "/kafka-clusters", body),),
                )
            )
        elif have.static:
            errors.append(
                f"cluster {spec.name!r} is defined in the settings file; it cannot be managed "
                "here (leave it out of clusters; subscriptions may still name it)"
            )
        else:
            lines, _ = _option_changes(have.properties, properties, label="")
            if not lines:
                unchanged.append(f"cluster {spec.name}")
                continue
            users = sorted(_group(s) for s in subs if s.cluster == spec.name)
            moved = any(have.properties.get(k) != properties.get(k) for k in _BOOTSTRAP)
            refused = (
                f"its brokers change while subscriptions {', '.join(users)} use it: their "
                "consumer groups' positions would not exist on other brokers"
                if moved and users
                else None
            )
            call = ApiCall("PATCH", f"/kafka-clusters/{spec.name}", {"properties": properties})
            first.append(Action("update", "cluster", spec.name, tuple(lines), (call,), refused))
    for have in clusters:
        if have.static or have.name in named:
            continue
        if prune:
            call = ApiCall("DELETE", f"/kafka-clusters/{have.name}")
            last.append(Action("delete", "cluster", have.name, (), (call,)))
        else:
            kept.append(f"cluster {have.name}")
    return first, last, unchanged, kept, errors


def _plan_deployments(
    doc: Document, deployments: Sequence[Deployment], *, prune: bool, force: bool
) -> tuple[list[Action], list[Action], list[str], list[str]]:
    actual = {address(d.uri, d.arn): d for d in deployments}
    first: list[Action] = []
    last: list[Action] = []
    unchanged: list[str] = []
    kept: list[str] = []
    for spec in doc.deployments:
        body: dict[str, Any] = {"uri": spec.uri} if spec.uri else {"arn": spec.arn}
        if spec.headers:
            body["additional_headers"] = dict(spec.headers)
        if spec.use_http_11:
            body["use_http_11"] = True
        have = actual.get(spec.address)
        if have is None:
            call = ApiCall("POST", "/deployments", body)
            first.append(
                Action("create", "deployment", spec.address, ("discover and register",), (call,))
            )
            continue
        lines = _header_changes(lower_keys(have.additional_headers), lower_keys(spec.headers))
        if not lines:
            unchanged.append(f"deployment {spec.address}")
            continue
        call = ApiCall("POST", "/deployments", {**body, "force": True})
        first.append(Action("update", "deployment", spec.address, tuple(lines), (call,)))
    named = {d.address for d in doc.deployments}
    for where, have in sorted(actual.items()):
        if where in named:
            continue
        if prune:
            params = {"force": "true"} if force else {}
            call = ApiCall("DELETE", f"/deployments/{have.id}", params=params)
            last.append(Action("delete", "deployment", where, (), (call,)))
        else:
            kept.append(f"deployment {where}")
    return first, last, unchanged, kept


def _plan_subscriptions(
    doc: Document, subs: Sequence[Subscription], *, prune: bool
) -> tuple[list[Action], list[Action], list[str], list[str]]:
    by_group: dict[str, list[Subscription]] = {}
    for sub in sorted(subs, key=lambda s: s.id):
        by_group.setdefault(_group(sub), []).append(sub)
    deletes: list[Action] = []
    writes: list[Action] = []
    unchanged: list[str] = []
    kept: list[str] = []
    matched: set[str] = set()
    for spec in doc.subscriptions:
        candidates = by_group.get(spec.name, [])
        if not candidates:
            lines = [
                f"{spec.source} -> {spec.sink}",
                *(_option_changes({}, spec.text_options())[0]),
            ]
            if spec.paused:
                lines.append("paused")
            writes.append(
                Action(
                    "create",
                    "subscription",
                    spec.name,
                    tuple(lines),
                    tuple(_create_subscription(spec)),
                )
            )
            continue
        have = next(
            (s for s in candidates if (s.source, s.sink) == (spec.source, spec.sink)),
            next((s for s in candidates if s.source == spec.source), candidates[0]),
        )
        matched.add(have.id)
        if have.source != spec.source or have.sink != spec.sink:
            lines = []
            refused = None
            if have.source != spec.source:
                lines.append(f"source: {have.source} -> {spec.source}")
                refused = (
                    f"consumer group {spec.name!r} holds positions in {have.source}; consuming "
                    f"{spec.source} in it would start from auto.offset.reset instead (give the "
                    "subscription a new name to keep both, or force)"
                )
            if have.sink != spec.sink:
                lines.append(f"sink: {have.sink} -> {spec.sink} (same consumer group)")
            calls = [ApiCall("DELETE", f"/subscriptions/{have.id}"), *_create_subscription(spec)]
            writes.append(
                Action("replace", "subscription", spec.name, tuple(lines), tuple(calls), refused)
            )
            continue
        current = {k: v for k, v in have.options.items() if k != GROUP_OPTION}
        lines, patch = _option_changes(current, spec.text_options())
        body: dict[str, Any] = {}
        if patch:
            body["options"] = patch
        if have.paused != spec.paused:
            body["paused"] = spec.paused
            lines.append("paused" if spec.paused else "resumed")
        if not body:
            unchanged.append(f"subscription {spec.name}")
            continue
        call = ApiCall("PATCH", f"/subscriptions/{have.id}", body)
        writes.append(Action("update", "subscription", spec.name, tuple(lines), (call,)))
    for sub in sorted(subs, key=lambda s: s.id):
        if sub.id in matched:
            continue
        label = f"{_group(sub)} ({sub.id}: {sub.source} -> {sub.sink})"
        if prune:
            call = ApiCall("DELETE", f"/subscriptions/{sub.id}")
            deletes.append(Action("delete", "subscription", label, (), (call,)))
        else:
            kept.append(f"subscription {label}")
    return deletes, writes, unchanged, kept


def plan(
    doc: Document,
    *,
    clusters: Sequence[ActualCluster],
    deployments: Sequence[Deployment],
    subscriptions: Sequence[Subscription],
    prune: bool = False,
    force: bool = False,
) -> Plan:
    """What to do so that what exists matches ``doc``; in the order it must be done."""
    cluster_first, cluster_last, unchanged, kept, errors = _plan_clusters(
        doc, clusters, subscriptions, prune=prune
    )
    dep_first, dep_last, dep_same, dep_kept = _plan_deployments(
        doc, deployments, prune=prune, force=force
    )
    sub_deletes, sub_writes, sub_same, sub_kept = _plan_subscriptions(
        doc, subscriptions, prune=prune
    )
    known = {c.name for c in doc.clusters} | {c.name for c in clusters if c.static or not prune}
    for spec in doc.subscriptions:
        cluster = parse_source(spec.source).cluster
        if cluster not in known:
            errors.append(
                f"subscription {spec.name!r}: unknown cluster {cluster!r} (name it under "
                f"clusters, or in the settings file; known: {', '.join(sorted(known)) or 'none'})"
            )
    actions = [*cluster_first, *dep_first, *sub_deletes, *sub_writes, *dep_last, *cluster_last]
    return Plan(
        actions=tuple(actions),
        unchanged=(*unchanged, *dep_same, *sub_same),
        kept=(*kept, *dep_kept, *sub_kept),
        errors=tuple(errors),
    )


# --------------------------------------------------------------------------------------------
# Showing a plan (from its JSON description, as the CLI receives it)

_SIGNS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}


def render(described: Mapping[str, Any]) -> list[str]:
    """Lines of a plan as ``Plan.describe()`` gives it (``+`` create, ``~`` update, …)."""
    lines: list[str] = [f"error: {e}" for e in described.get("errors", [])]
    for action in described.get("actions", []):
        sign = _SIGNS.get(str(action.get("verb")), "?")
        lines.append(f"{sign} {action['kind']} {action['name']}")
        lines.extend(f"    {change}" for change in action.get("changes", []))
        if action.get("refused"):
            lines.append(f"    REFUSED without --force: {action['refused']}")
    kept: Iterable[str] = described.get("kept", [])
    lines.extend(f"  {k} (not in the document; kept, --prune deletes it)" for k in kept)
    unchanged = len(described.get("unchanged", []))
    if not described.get("actions"):
        lines.append(f"no changes ({unchanged} unchanged)")
    else:
        lines.append(f"{len(described['actions'])} change(s), {unchanged} unchanged")
    return lines
