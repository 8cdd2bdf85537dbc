"""``kafka-ingress apply``: make a poller's clusters, deployments and subscriptions match a file.

::

    kafka-ingress apply -f subscriptions.yaml [--dry-run] [--prune] [--force]
    kafka-ingress apply --serverless serverless.yml --stage prod [--region …] [--account-id …]

The file is read and checked here; the admin API (``POST /apply``) compares it with what
exists. The plan is printed first (``+`` create, ``~`` update, ``-/+`` replace, ``-`` delete);
then, unless ``--dry-run`` or nothing changes, exactly that plan is applied (the API refuses
with 409 if what exists changed in between). Exit codes as for the other admin commands:
2 bad document, 4 refused (a consumer group would lose its position: ``--force``) or changed
meanwhile.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from adapter.api.plan import parse_document, render
from adapter.errors import ConfigError

__all__ = ["add_apply_parser", "run_apply"]


def add_apply_parser(sub: Any, parent: argparse.ArgumentParser) -> None:
    apply = sub.add_parser(
        "apply",
        help="make clusters, deployments and subscriptions match a file (prints the plan first)",
        parents=[parent],
    )
    source = apply.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--file", help="YAML or JSON document ('-' reads stdin)")
    source.add_argument(
        "--serverless", metavar="FILE", help="serverless.yml with a custom.kafkaIngress section"
    )
    apply.add_argument("--stage", default="dev", help="with --serverless (default dev)")
    apply.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        help="with --serverless: the functions' region (default $AWS_REGION or us-east-1)",
    )
    apply.add_argument(
        "--account-id", help="with --serverless: the functions' account (default: asked of STS)"
    )
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--prune", action="store_true", help="delete what the file does not name")
    apply.add_argument(
        "--force", action="store_true", help="also changes that lose a consumer group's position"
    )


def _read(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML or JSON: {_yaml_problem(exc)}") from None


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the quoted line PyYAML adds to its message (``str(exc)``): that
    line may hold a secret (``sasl.password: …``). The problem texts name characters, tokens
    and tags, not values."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = []
        if exc.context:
            where = f" (from {_at(exc.context_mark)})" if exc.context_mark else ""
            parts.append(f"{exc.context}{where}")
        if exc.problem:
            where = f"{_at(exc.problem_mark)}: " if exc.problem_mark else ""
            parts.append(f"{where}{exc.problem}")
        return "; ".join(parts) or type(exc).__name__
    if isinstance(exc, yaml.reader.ReaderError):
        return f"position {exc.position}: {exc.reason}"
    return type(exc).__name__


def _account_id() -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(boto3.client("sts").get_caller_identity()["Account"])
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(
            f"--account-id not given and STS cannot say which account this is ({exc})"
        ) from exc


def load_document(args: argparse.Namespace) -> dict[str, Any]:
    """The apply document the arguments name, checked (ConfigError / ValidationError)."""
    if args.serverless:
        from adapter.api.serverless import document_from_serverless

        parsed = _read(args.serverless)
        if not isinstance(parsed, dict):
            raise ConfigError(f"{args.serverless}: not a serverless.yml mapping")
        document = document_from_serverless(
            parsed,
            stage=args.stage,
            region=args.region,
            account_id=args.account_id or _account_id(),
        )
    else:
        document = _read(args.file) or {}
    parse_document(document, source=args.file or args.serverless)
    if not isinstance(document, dict):
        raise ConfigError(
            f"{args.file}: expected a mapping of clusters, deployments, subscriptions"
        )
    return document


def run_apply(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Show the plan, then apply it; AdminApiError (with the plan in ``body``) on refusal."""
    document = load_document(args)
    body = {"document": document, "prune": args.prune, "force": args.force}
    shown: dict[str, Any] = client.request("POST", "/apply", body={**body, "dry_run": True})
    if not args.json:
        print("\n".join(render(shown)), flush=True)
    if args.dry_run or not shown["actions"]:
        return shown
    refused = [a for a in shown["actions"] if a.get("refused")]
    if refused and not args.force:
        from adapter.api.client import AdminApiError

        names = ", ".join(f"{a['kind']} {a['name']}" for a in refused)
        raise AdminApiError(409, f"nothing applied: refused without --force: {names}")
    result: dict[str, Any] = client.request(
        "POST", "/apply", body={**body, "plan": shown["fingerprint"]}
    )
    if not args.json:
        print(f"applied {len(result['applied'])} change(s)")
    return result


def print_refusal(body: Any) -> None:
    """What a refused or failed apply answered: the plan and what was done before."""
    if not isinstance(body, dict) or "actions" not in body:
        return
    print("\n".join(render(body)), file=sys.stderr)
    for action in body.get("applied", []):
        print(f"applied: {action['verb']} {action['kind']} {action['name']}", file=sys.stderr)
