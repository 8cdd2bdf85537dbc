"""The web dashboard: ``/ui`` serves static files shipped in this package, nothing else.

The page is a thin client of the admin API's JSON routes (and ``/metrics`` for rates and
lag); it holds no data of its own, so serving it needs no token: the files are public, the
data behind them is not (every API call the page makes carries the bearer token the user
typed, kept in the tab's session storage). The files are read once from the package with
:mod:`importlib.resources`, served by exact name only (no path from the request ever reaches
the file system), with a strict Content-Security-Policy: scripts, styles and fetches from
this origin only, no inline script, no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

__all__ = ["UI_PREFIX", "UiAssets", "load_assets", "ui_routes"]

UI_PREFIX = "/ui"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class UiAssets:
    files: dict[str, Asset]

    @property
    def total_bytes(self) -> int:
        return sum(len(a.body) for a in self.files.values())

    def public_paths(self) -> list[str]:
        return [UI_PREFIX, f"{UI_PREFIX}/", *(f"{UI_PREFIX}/{name}" for name in self.files)]


def load_assets() -> UiAssets:
    """Every file of ``static/`` with a known type, read from the installed package."""
    files: dict[str, Asset] = {}
    for entry in resources.files(__name__).joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[entry.name] = Asset(body, _TYPES[suffix], etag)
    return UiAssets(files)


def _serve(asset: Asset, request: Request) -> Response:
    headers = {**_SECURITY_HEADERS, "etag": asset.etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def ui_routes(assets: UiAssets) -> list[Route]:
    index = assets.files["index.html"]

    async def page(request: Request) -> Response:
        return _serve(index, request)

    async def redirect(request: Request) -> Response:
        # Relative, so it holds behind a version prefix or a proxy's path too.
        return RedirectResponse("ui/", status_code=308)

    routes: list[Route] = [
        Route(UI_PREFIX, redirect, methods=["GET"]),
        Route(f"{UI_PREFIX}/", page, methods=["GET"]),
    ]
    for name, asset in assets.files.items():

        async def file(request: Request, asset: Asset = asset) -> Response:
            return _serve(asset, request)

        routes.append(Route(f"{UI_PREFIX}/{name}", file, methods=["GET"]))
    return routes
