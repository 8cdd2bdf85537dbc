"""``/ui``: the dashboard's files are served from the package to anyone, with a strict
Content-Security-Policy, while every data route behind them still wants the token; and the
files themselves neither render data as markup nor fetch anything from elsewhere."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from adapter.api import AdminState, ClusterCatalog, create_app
from adapter.api.ui import CONTENT_SECURITY_POLICY, load_assets
from adapter.config import load_settings
from adapter.store.dynamo import DynamoStore

TOKEN = "dashboard-assets-token-0123456789"
ASSETS = load_assets()


@pytest.fixture
async def client(store: DynamoStore) -> AsyncIterator[httpx.AsyncClient]:
    conf = load_settings(None, env={"KAFKA_INGRESS_ADMIN_TOKEN": TOKEN})
    state = AdminState(settings=conf, store=store, catalog=ClusterCatalog(conf, store))
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        yield http


@pytest.mark.promise("p-ui-served")
async def test_every_file_is_public_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    assert {"index.html", "app.js", "api.js", "style.css"} <= set(ASSETS.files)
    redirect = await client.get("/ui")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "ui/"
    for path in ["/ui/", *(f"/ui/{name}" for name in ASSETS.files)]:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    page = await client.get("/ui/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js">' in page.text
    script = await client.get("/ui/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    # Behind a version prefix too, as Restate's tooling calls the API.
    assert (await client.get("/v3/ui/api.js")).status_code == 200
    # Unchanged files are not sent again.
    again = await client.get("/ui/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.promise("p-ui-auth")
async def test_the_data_behind_the_page_still_wants_the_token(client: httpx.AsyncClient) -> None:
    for path in ("/subscriptions", "/invocations", "/metrics", "/deployments", "/services"):
        refused = await client.get(path)
        assert refused.status_code == 401, path
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/subscriptions", headers=headers)).status_code == 200
    # Only the package's own files: no other name, and no way out of the folder.
    for path in ("/ui/nothing.js", "/ui/static/app.js", "/ui/__init__.py", "/ui/%2e%2e/app.py"):
        response = await client.get(path)
        assert response.status_code in (401, 404), path
        assert "import" not in response.text, path


def test_the_scripts_render_text_only_and_fetch_nothing_from_elsewhere() -> None:
    # Data reaches the page as text nodes and attribute values (dom.js), never as markup.
    markup = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|Function\(")
    # The only absolute URLs: the SVG namespace and the register form's placeholder.
    allowed = {"http://www.w3.org/2000/svg", "http://host:port/"}
    for name, asset in ASSETS.files.items():
        text = asset.body.decode()
        assert not markup.search(text), name
        urls = set(re.findall(r"[a-z]+://[^\s'\"`)]+", text))
        assert urls <= allowed, (name, urls - allowed)
        for module in re.findall(r"\bfrom '([^']+)'", text):
            assert module.startswith("./"), (name, module)
        if name != "api.js":
            assert "fetch(" not in text, name  # every request goes through api.js (the token)
        if name.endswith(".html"):
            assert "<script>" not in text, name
            assert "style=" not in text, name
            assert not re.search(r"(src|href)=\"(?!#|[a-z]+\.(js|css|svg)\")", text), name
        if name.endswith(".css"):
            assert "url(" not in text, name
            assert "@import" not in text, name
    assert ASSETS.total_bytes < 100_000
