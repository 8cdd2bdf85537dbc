"""The HTTP side of a deployment: a Starlette app serving the routes of ``docs/protocol.md``.

    GET  /discover                          the manifest
    POST /invoke/{service}/{handler}        a service handler
    POST /invoke/{service}/{key}/{handler}  a virtual-object / workflow handler

Routes are matched on the raw (still percent-encoded) path, each segment decoded exactly
once, so an object key may contain ``/``, ``%`` or anything else. Mounted under a prefix
(``Mount("/api", app)``) the routes are relative to the mount point (ASGI ``root_path``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.sdk.identity import IdentityError, IdentityVerifier
from adapter.sdk.protocol import discover_path
from adapter.sdk.runtime import Registry, run_invocation

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["build_asgi_app", "split_invoke_path"]


def split_invoke_path(path: str) -> tuple[str, str | None, str] | None:
    """``/invoke/S/H`` or ``/invoke/S/K/H`` (encoded) → (service, key, handler), decoded."""
    parts = path.split("/")
    if len(parts) not in (4, 5) or parts[0] != "" or parts[1] != "invoke":
        return None
    segments = [unquote(p, errors="strict") for p in parts[2:]]
    if any(not s for s in segments):
        return None
    if len(segments) == 2:
        return segments[0], None, segments[1]
    return segments[0], segments[1], segments[2]


def _relative_raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    path: str = raw.decode("latin-1") if raw else request.scope["path"]
    path = path.split("?", 1)[0]
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def build_asgi_app(registry: Registry, verifier: IdentityVerifier | None) -> ASGIApp:
    async def dispatch(request: Request) -> Response:
        path = _relative_raw_path(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if path == discover_path():
            if request.method != "GET":
                return JSONResponse({"message": "use GET /discover"}, status_code=405)
            denied = await _check(verifier, headers, path, b"")
            return denied or JSONResponse(registry.manifest())
        try:
            route = split_invoke_path(path)
        except UnicodeDecodeError:
            route = None
        if route is None:
            return JSONResponse({"message": f"no route for {path}"}, status_code=404)
        if request.method != "POST":
            return JSONResponse({"message": "invoke routes take POST"}, status_code=405)
        # The signature covers the body, so it is read before the check.
        body = await request.body()
        denied = await _check(verifier, headers, path, body)
        if denied is not None:
            return denied
        service, key, handler = route
        result = await run_invocation(
            registry, service=service, handler=handler, key=key, headers=headers, body=body
        )
        return Response(result.body, status_code=result.status, headers=result.headers)

    return Starlette(
        routes=[Route("/{path:path}", dispatch, methods=["GET", "POST", "PUT", "DELETE"])]
    )


async def _check(
    verifier: IdentityVerifier | None, headers: dict[str, str], path: str, body: bytes
) -> Response | None:
    if verifier is None:
        return None
    try:
        await verifier.verify(headers, path, body)
    except IdentityError as exc:
        return JSONResponse({"message": str(exc)}, status_code=exc.status)
    return None
