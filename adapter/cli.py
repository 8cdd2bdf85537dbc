"""The ``kafka-ingress`` command.

``serve``          run a poller (consumers, invokers, ledger, admin API) with the configuration
``dev``            run the whole stack locally: Kafka broker, DynamoDB (moto), poller
``init-tables``    create the DynamoDB tables (idempotent)
``apply``          make clusters, deployments, subscriptions match a file (``-f``, ``--serverless``)
``health``         exit 0 when a poller's admin API answers ``/health`` (container health check)
``subscriptions``  create | list | describe | update | delete | pause | resume | reset
``deployments``    register | list | describe | remove
``services``       list | describe
``invocations``    list | describe | cancel | kill | retry | purge

The admin commands talk to a running poller's admin API: ``--admin-url`` (or
``KAFKA_INGRESS_ADMIN_URL``, default http://127.0.0.1:9070) and ``--token`` (or
``KAFKA_INGRESS_ADMIN_TOKEN``). They print aligned tables, or the API's JSON with ``--json``.

Exit codes: 0 success; 1 runtime failure (server error); 2 bad usage, configuration or request
(400); 3 not found (404); 4 conflict with the current state (409); 5 token missing or refused
(401/403); 6 admin API unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import quote

from adapter import __version__, gc_tuning
from adapter.config import Settings, load_settings
from adapter.engine import tracing
from adapter.errors import ConfigError, IngressError, ValidationError
from adapter.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("kafka_ingress")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_AUTH, EXIT_UNREACHABLE = 3, 4, 5, 6

_ADMIN_COMMANDS = ("subscriptions", "deployments", "services", "invocations", "health", "apply")


def _admin_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--admin-url",
        default=os.environ.get("KAFKA_INGRESS_ADMIN_URL", "http://127.0.0.1:9070"),
        help="admin API base URL (default: $KAFKA_INGRESS_ADMIN_URL or http://127.0.0.1:9070)",
    )
    parent.add_argument(
        "--token",
        default=os.environ.get("KAFKA_INGRESS_ADMIN_TOKEN") or None,
        help="bearer token (default: $KAFKA_INGRESS_ADMIN_TOKEN)",
    )
    parent.add_argument("--json", action="store_true", help="print the API's JSON")
    parent.add_argument("--timeout", type=float, default=90.0, help="seconds per request")
    return parent


def _group(
    sub: Any, name: str, help_text: str, parent: argparse.ArgumentParser
) -> Callable[..., argparse.ArgumentParser]:
    parser = sub.add_parser(name, help=help_text)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def add(action: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(action, help=help_text, parents=[parent])  # type: ignore[no-any-return]

    return add


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafka-ingress",
        description="Invoke serverless handlers from Kafka records.",
    )
    parser.add_argument("--version", action="version", version=f"kafka-ingress {__version__}")
    parser.add_argument(
        "--config-file", help="TOML settings file (default: $KAFKA_INGRESS_CONFIG_FILE)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run a poller")
    dev = sub.add_parser("dev", help="run the whole stack on this machine")
    dev.add_argument("--no-demo", action="store_true", help="do not create demo subscriptions")
    dev.add_argument(
        "--admin-port",
        type=int,
        default=None,
        metavar="PORT",
        help="the admin API's port on 127.0.0.1 (default: $KAFKA_INGRESS_DEV_ADMIN_PORT or 9070; "
        "0 = any free port)",
    )
    sub.add_parser("init-tables", help="create the DynamoDB tables")
    parent = _admin_parent()

    sub.add_parser(
        "health",
        help="exit 0 if the poller's admin API answers /health (a container health check)",
        parents=[parent],
    )

    from adapter.cli_apply import add_apply_parser

    add_apply_parser(sub, parent)

    subs = _group(sub, "subscriptions", "manage subscriptions", parent)
    create = subs("create", "subscribe a handler, or a plain Lambda function, to a topic")
    create.add_argument("source", help="kafka://<cluster>/<topic>")
    create.add_argument(
        "sink",
        help="service://<service>/<handler>, or lambda://<function ARN> for an unchanged AWS "
        "Kafka consumer (no discovery; it gets AWS's Kafka event)",
    )
    create.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE")
    listing = subs("list", "list subscriptions")
    listing.add_argument("--sink")
    listing.add_argument("--source")
    for action, text in (
        ("describe", "show one subscription"),
        ("delete", "delete a subscription (stops consuming)"),
        ("pause", "stop consuming, keep the offsets"),
        ("resume", "consume again"),
    ):
        subs(action, text).add_argument("id")
    update = subs("update", "change options (keeps the consumer group)")
    update.add_argument("id")
    update.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE")
    update.add_argument("--unset", action="append", default=[], metavar="NAME")
    reset = subs("reset", "move the consumer group's offsets")
    reset.add_argument("id")
    reset.add_argument(
        "--to", required=True, help="earliest, latest, an RFC 3339 time or epoch milliseconds"
    )
    reset.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the group")

    deps = _group(sub, "deployments", "manage deployments", parent)
    register = deps("register", "register a deployment (discovers its services)")
    register.add_argument("address", help="http(s) base URL or Lambda function ARN")
    register.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    register.add_argument("--force", action="store_true", help="overwrite a changed deployment")
    register.add_argument("--dry-run", action="store_true", help="discover, register nothing")
    register.add_argument("--use-http-11", action="store_true")
    deps("list", "list deployments")
    deps("describe", "show one deployment").add_argument("id")
    remove = deps("remove", "remove a deployment")
    remove.add_argument("id")
    remove.add_argument("--force", action="store_true", help="even if subscriptions use it")

    services = _group(sub, "services", "show registered services", parent)
    services("list", "list services")
    services("describe", "show one service").add_argument("name")

    invs = _group(sub, "invocations", "inspect and act on invocations", parent)
    inv_list = invs("list", "list invocations")
    inv_list.add_argument("--subscription")
    inv_list.add_argument("--status", help="comma-separated, e.g. BACKING_OFF,FAILED")
    inv_list.add_argument("--key")
    inv_list.add_argument("--handler", help="Service/handler")
    inv_list.add_argument(
        "--limit", type=int, default=100, help="list up to this many, following page tokens"
    )
    inv_list.add_argument("--page-token", help="continue a listing ('more:' of the last one)")
    inv_list.add_argument(
        "--max-requests",
        type=_positive_int,
        default=_LIST_REQUESTS,
        help=f"stop after this many requests (default {_LIST_REQUESTS}; each reads a bounded "
        "part of the ledger), with the token to go on with",
    )
    for action, text in (
        ("describe", "show one invocation"),
        ("cancel", "cancel an unfinished invocation"),
        ("kill", "kill an unfinished invocation"),
        ("retry", "retry a backing-off invocation now"),
        ("purge", "delete a completed invocation from the ledger"),
    ):
        invs(action, text).add_argument("id")
    return parser


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config_file)
    configure_logging(settings.log_level, settings.log_format)
    return settings


async def _serve(settings: Settings) -> None:
    from adapter.poller import Poller, build_store

    store = build_store(settings)
    try:
        await store.ping()
    except IngressError as exc:
        # Start anyway: the poller retries DynamoDB with backoff and reports not-ready until
        # it answers, instead of crash-looping through an outage.
        log.warning("DynamoDB not reachable yet (will keep retrying): %s", exc)
    poller = Poller(settings, store)
    # Traces only when OTEL_EXPORTER_OTLP_ENDPOINT is set (adapter.engine.tracing).
    tracing.install(tracing.configure())
    gc_tuning.tune_for_throughput()
    try:
        await poller.run(handle_signals=True)
    finally:
        await asyncio.to_thread(tracing.shutdown)  # flushes the last spans over HTTP


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (measured: 25-35% less CPU per invocation)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# -- admin commands ---------------------------------------------------------------------------


_NAME_START = re.compile(r"[A-Za-z0-9._-]+")
_HEADER_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})


def _known_name(item: str, sep: str) -> str | None:
    """The option or header name a malformed ``NAME{sep}VALUE`` argument starts with, when it
    is a known one followed by something else (``Authorization Bearer …``); None otherwise,
    since anything else may be (part of) the secret value."""
    text = item.strip()
    match = _NAME_START.match(text)
    if match is None or match.end() == len(text):
        return None
    word = match.group()
    if sep == "=":
        from adapter.kafka.options import OPTION_TABLE

        return word if word.lower() in OPTION_TABLE else None
    lowered = word.lower()
    return word if lowered in _HEADER_NAMES or lowered.startswith("x-") else None


def _pairs(items: list[str], sep: str, flag: str) -> dict[str, str]:
    """``NAME{sep}VALUE`` arguments as a mapping. A malformed one is named by its position,
    length and, if known, its option or header name: never by its text, which may hold a
    secret (a header missing its ':' is ``Authorization Bearer <token>``)."""
    out: dict[str, str] = {}
    for number, item in enumerate(items, start=1):
        name, found, value = item.partition(sep)
        if not found or not name.strip():
            known = _known_name(item, sep)
            starts = f", starting {known!r}" if known else ""
            raise ConfigError(
                f"{flag} #{number} ({len(item)} characters{starts}): expected NAME{sep}VALUE "
                "(the argument is not shown: it may hold a secret)"
            )
        out[name.strip()] = value.strip() if sep == ":" else value
    return out


def _seg(value: str) -> str:
    return quote(value, safe="")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _fields(doc: dict[str, Any]) -> None:
    rows = [
        (k, json.dumps(v) if isinstance(v, dict | list) else v)
        for k, v in doc.items()
        if not isinstance(v, list) or v
    ]
    _table(("field", "value"), rows)


def _subscription_rows(subs: list[dict[str, Any]]) -> None:
    _table(
        ("ID", "SOURCE", "SINK", "STATE", "GROUP"),
        [
            (
                s["id"],
                s["source"],
                s["sink"],
                "paused" if s.get("paused") else "active",
                s["options"].get("group.id", ""),
            )
            for s in subs
        ],
    )


def _run_admin(args: argparse.Namespace) -> int:
    from adapter.api.client import AdminClient

    with AdminClient(args.admin_url, token=args.token, timeout_s=args.timeout) as client:
        if args.command == "apply":
            from adapter.cli_apply import run_apply

            result = run_apply(client, args)
            if args.json:
                print(json.dumps(result, indent=2, sort_keys=True))
            return EXIT_OK
        result = _dispatch(client, args)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        _render(args, result)
    return EXIT_OK


def _dispatch(client: Any, args: argparse.Namespace) -> Any:
    command, action = args.command, getattr(args, "action", None)
    call = client.request
    if command == "health":
        return call("GET", "/health")
    if command == "subscriptions":
        if action == "create":
            body = {"source": args.source, "sink": args.sink}
            if args.option:
                body["options"] = _pairs(args.option, "=", "--option")
            return call("POST", "/subscriptions", body=body)
        if action == "list":
            return call("GET", "/subscriptions", params={"sink": args.sink, "source": args.source})
        path = f"/subscriptions/{_seg(args.id)}"
        if action == "describe":
            return call("GET", path)
        if action == "delete":
            call("DELETE", path)
            return {"id": args.id, "deleted": True}
        if action in ("pause", "resume"):
            return call("PATCH", path, body={"paused": action == "pause"})
        if action == "update":
            options: dict[str, str | None] = dict(_pairs(args.option, "=", "--option"))
            options.update(dict.fromkeys(args.unset))
            return call("PATCH", path, body={"options": options})
        if action == "reset":
            to: str | int = int(args.to) if args.to.isascii() and args.to.isdigit() else args.to
            return call("POST", f"{path}/reset", body={"to": to, "timeout_s": args.wait})
    if command == "deployments":
        if action == "register":
            key = "arn" if args.address.startswith("arn:") else "uri"
            body = {key: args.address, "dry_run": args.dry_run, "force": args.force}
            if args.header:
                body["additional_headers"] = _pairs(args.header, ":", "--header")
            if args.use_http_11:
                body["use_http_11"] = True
            return call("POST", "/deployments", body=body)
        if action == "list":
            return call("GET", "/deployments")
        path = f"/deployments/{_seg(args.id)}"
        if action == "describe":
            return call("GET", path)
        if action == "remove":
            call("DELETE", path, params={"force": "true" if args.force else None})
            return {"id": args.id, "removed": True}
    if command == "services":
        if action == "list":
            return call("GET", "/services")
        return call("GET", f"/services/{_seg(args.name)}")
    if command == "invocations":
        if action == "list":
            return _list_invocations(call, args)
        path = f"/invocations/{_seg(args.id)}"
        if action == "describe":
            return call("GET", path)
        return call("PATCH", f"{path}/{action}")
    raise ConfigError(f"unknown command {command} {action}")


_LIST_PAGE_MAX = 1000  # the API's largest page (GET /invocations?limit=)
_LIST_REQUESTS = 10  # as the dashboard's listing: at most ~50 DynamoDB pages read


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _list_invocations(call: Callable[..., Any], args: argparse.Namespace) -> dict[str, Any]:
    """Up to ``--limit`` invocations, following ``next_page_token``: a filtered listing reads a
    bounded part of the ledger per request, so a page may hold fewer than asked, even none,
    while more follow. Stops when ``--limit`` are listed, the token is gone, or after
    ``--max-requests`` requests: a filter that matches nothing on a large ledger would otherwise
    read all of it, request after request, with nothing on screen."""
    listed: list[Any] = []
    token = args.page_token
    for _ in range(args.max_requests):
        params = {
            "subscription": args.subscription,
            "status": args.status,
            "key": args.key,
            "handler": args.handler,
            "limit": min(args.limit - len(listed), _LIST_PAGE_MAX),
            "page_token": token,
        }
        page = call("GET", "/invocations", params=params)
        listed += page["invocations"]
        token = page.get("next_page_token")
        if token is None or len(listed) >= args.limit:
            return {"invocations": listed, "next_page_token": token}
    print(
        f"stopped after {args.max_requests} requests with {len(listed)} listed; more may "
        "follow (--page-token below, or a larger --max-requests)",
        file=sys.stderr,
    )
    return {"invocations": listed, "next_page_token": token}


def _render(args: argparse.Namespace, result: Any) -> None:
    command, action = args.command, getattr(args, "action", None)
    if command == "subscriptions" and action == "list":
        _subscription_rows(result["subscriptions"])
    elif command == "subscriptions" and action == "reset":
        print(f"subscription {result['id']}: group {result['group_id']} reset")
        _table(
            ("TOPIC", "PARTITION", "OFFSET"),
            [(o["topic"], o["partition"], o["offset"]) for o in result["offsets"]],
        )
    elif command == "deployments" and action == "list":
        _table(
            ("ID", "ADDRESS", "SERVICES", "CREATED"),
            [
                (
                    d["id"],
                    d.get("uri") or d.get("arn"),
                    ", ".join(f"{s['name']} (rev {s['revision']})" for s in d["services"]),
                    d["created_at"],
                )
                for d in result["deployments"]
            ],
        )
    elif (command == "deployments" and action in ("register", "describe")) or (
        command == "services" and action == "list"
    ):
        if command == "deployments":
            print(f"deployment {result['id']}")
        _table(
            ("SERVICE", "TYPE", "HANDLER", "HANDLER TYPE", "INPUT", "REVISION"),
            [
                (s["name"], s["ty"], h["name"], h["ty"], h["input"], s["revision"])
                for s in result["services"]
                for h in s["handlers"]
            ],
        )
    elif command == "services" and action == "describe":
        print(f"service {result['name']} ({result['ty']}), deployment {result['deployment_id']}")
        _table(
            ("HANDLER", "TYPE", "INPUT"),
            [(h["name"], h["ty"], h["input"]) for h in result["handlers"]],
        )
    elif command == "invocations" and action == "list":
        _table(
            ("ID", "STATUS", "TARGET", "KEY", "RECORD", "ATTEMPTS", "LAST ERROR"),
            [
                (
                    i["id"],
                    i["status"],
                    i["target"],
                    i["key"],
                    f"{i['topic']}/{i['partition']}@{i['offset']}",
                    i["attempts"],
                    (i["last_error"] or "")[:80],
                )
                for i in result["invocations"]
            ],
        )
        if result.get("next_page_token"):
            print(f"more: --page-token {result['next_page_token']}")
    elif command == "subscriptions" and action in ("create", "pause", "resume", "update"):
        _subscription_rows([result])
    elif isinstance(result, dict):
        _fields(result)
    else:
        print(result)


def _admin_exit(status: int) -> int:
    if status == 0:
        return EXIT_UNREACHABLE
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status in (401, 403):
        return EXIT_AUTH
    if 400 <= status < 500:
        return EXIT_USAGE
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in _ADMIN_COMMANDS:
            from adapter.api.client import AdminApiError

            try:
                return _run_admin(args)
            except AdminApiError as exc:
                if args.command == "apply":
                    from adapter.cli_apply import print_refusal

                    print_refusal(exc.body)
                print(f"kafka-ingress: {exc}", file=sys.stderr)
                return _admin_exit(exc.status)
        if args.command == "dev":
            from adapter.local.stack import run_dev

            return int(run_dev(args))
        settings = _load(args)
        if args.command == "init-tables":
            from adapter.poller import build_store

            created = build_store(settings).create_tables()
            print(f"created {len(created)} table(s): {', '.join(created) or '-'}")
            return EXIT_OK
        if args.command == "serve":
            _run_loop(_serve(settings))
            return EXIT_OK
    except ConfigError as exc:
        print(f"kafka-ingress: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:  # a document checked before it is sent (apply)
        print(f"kafka-ingress: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IngressError as exc:
        print(f"kafka-ingress: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_USAGE
