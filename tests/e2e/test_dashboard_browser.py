"""The dashboard (``/ui``) in Debian's headless Chromium, driven by Playwright, against a real
poller (in-process, with its admin API on loopback), the test broker and the moto server.

Checked through the browser and then through the API: the token prompt (the poller has a
token), the overview listing every subscription, lag rising while the handler holds the
records and falling once it lets them go, a pause click stopping the consumer, a failing
invocation's page showing its error and a retry-now click making the handler see a second
attempt, and register/remove of a deployment. Screenshots of every page go to
``.cache/ui-screenshots/`` (the overview light, dark and at phone width); the page's load
time and asset size go to ``.cache/ui-screenshots/figures.json``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.api.ui import load_assets
from adapter.engine.lifecycle import AdminAction, InvocationStatus, allowed_admin_actions
from adapter.local.moto import MotoServer
from adapter.model import HandlerType, InputKind, ServiceType
from adapter.poller import Poller
from adapter.store.dynamo import DynamoStore
from tests._http_fixtures import HandlerServer
from tests._kafka_fixtures import TopicFactory
from tests.harness import Call, Ingress, RecordingHandler, eventually, produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".cache" / "ui-screenshots"
TOKEN = "dashboard-test-token-0123456789"
WAIT_MS = 30_000  # every browser wait; the dashboard refreshes every 2 s
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
HELD = 12  # records produced while the handler holds them
BACKOFF_MS = 120_000  # far longer than the test: only a retry-now click re-invokes


# The page's navigation timing and what its own files weighed on the wire (gzip, 304s).
NAVIGATION = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const files = performance.getEntriesByType('resource').filter((r) => r.name.includes('/ui/'));
  return {
    domContentLoadedEventEnd: nav.domContentLoadedEventEnd,
    loadEventEnd: nav.loadEventEnd,
    transferred: nav.encodedBodySize + files.reduce((n, r) => n + r.encodedBodySize, 0),
  };
}"""


def chromium_path() -> str:
    path = shutil.which("chromium")
    assert path, (
        "Debian's chromium is needed for the dashboard tests: `make test` installs it when run "
        "as root, otherwise run `sudo apt-get install -y chromium`"
    )
    return path


@dataclass
class Dashboard:
    url: str
    api: httpx.AsyncClient
    browser: Browser
    poller: Poller

    async def page(self, *, dark: bool = False, phone: bool = False) -> Page:
        context = await self.browser.new_context(
            viewport=PHONE if phone else DESKTOP,
            color_scheme="dark" if dark else "light",
            is_mobile=phone,
        )
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", _console)
        return page


errors: list[str] = []
"""What the pages reported: exceptions and console errors. The browser logs every 4xx answer
to a fetch; expected here: the 401s before sign-in, the 404 of an invocation without a command
and the 409 of a refused remove."""
EXPECTED = re.compile(r"^Failed to load resource: .* status of (401|404|409) ")


def _console(message: ConsoleMessage) -> None:
    if message.type == "error" and not EXPECTED.match(message.text):
        errors.append(message.text)


async def sign_in(page: Page, url: str) -> None:
    await page.goto(f"{url}/ui/")
    await page.fill("#token-form input[name=token]", TOKEN)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#subscriptions")).to_be_visible()


@pytest.fixture
async def stack(
    kafka_bootstrap: str,
    moto_server: MotoServer,
    store: DynamoStore,
    # Set up before the poller so they are torn down after it: a topic deleted under a running
    # consumer, or a handler gone, would slow its stop down.
    topic_factory: TopicFactory,
    handler_server: HandlerServer,
) -> AsyncIterator[tuple[Ingress, Any]]:
    harness = Ingress(kafka_bootstrap, store, moto_server.endpoint_url)

    async def start() -> Dashboard:
        settings = harness.build_settings()
        harness.settings = settings.model_copy(
            update={"admin": settings.admin.model_copy(update={"token": TOKEN})}
        )
        harness.poller = Poller(harness.settings, store)
        harness.task = asyncio.create_task(harness.poller.run())
        await asyncio.wait_for(harness.poller.started(), 10)
        url = f"http://{harness.poller.admin_address}"
        api = httpx.AsyncClient(
            base_url=url, timeout=10, headers={"authorization": f"Bearer {TOKEN}"}
        )
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"]
        )
        running.append((api, browser))
        return Dashboard(url, api, browser, harness.poller)

    running: list[tuple[httpx.AsyncClient, Browser]] = []
    errors.clear()
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        try:
            yield harness, start
        finally:
            for api, browser in running:
                await browser.close()
                await api.aclose()
            await harness.stop()
    assert not errors, f"the page reported errors: {errors}"


@pytest.mark.promise("p-ui-pages", "p-ui-auth")
async def test_token_overview_lag_and_pause(
    stack: tuple[Ingress, Any],
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    harness, start = stack
    gate = asyncio.Event()

    async def hold(call: Call) -> Response | None:
        await gate.wait()
        return None

    handler = RecordingHandler(hold)
    url = await handler_server(handler.app)
    await harness.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, InputKind.JSON)}
    )
    held_topic, other_topic = await topic_factory(2), await topic_factory(1)
    held = await harness.subscribe(held_topic, "Greeter", "greet")
    other = await harness.subscribe(other_topic, "Greeter", "greet")
    dash: Dashboard = await start()

    # Without the token the API refuses; the page asks for it and keeps it for the tab.
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as stranger:
        assert (await stranger.get("/subscriptions")).status_code == 401
        assert (await stranger.get("/ui/app.js")).status_code == 200
    page = await dash.page()
    await page.goto(f"{dash.url}/ui/")
    await page.fill("#token-form input[name=token]", "not-the-token-at-all")
    await page.click("#token-form button[type=submit]")
    await expect(page.get_by_text("That token was refused.")).to_be_visible()
    await page.fill("#token-form input[name=token]", TOKEN)
    await page.click("#token-form button[type=submit]")
    rows = page.locator("#subscriptions tbody tr")
    await expect(rows).to_have_count(2)
    assert await page.evaluate("sessionStorage.length") == 1
    cold = await page.evaluate(NAVIGATION)
    # A reload keeps the tab's token: no prompt, straight to the data (the load time measured).
    started = time.monotonic()
    await page.reload()
    await expect(rows).to_have_count(2)
    reload_data_s = time.monotonic() - started
    warm = await page.evaluate(NAVIGATION)
    for sub, topic in ((held, held_topic), (other, other_topic)):
        row = page.locator(f"tr[data-subscription='{sub.id}']")
        await expect(row).to_contain_text(f"kafka://local/{topic}")
        await expect(row).to_contain_text("service://Greeter/greet")
        await expect(row.locator("td").nth(3)).to_have_text("running")

    # Lag rises while the handler holds every record ...
    lag = page.locator(f"tr[data-subscription='{held.id}'] [data-field=lag]")
    await produce(
        kafka_bootstrap,
        held_topic,
        [(f"k{n}".encode(), json.dumps({"n": n}).encode()) for n in range(HELD)],
    )
    await expect(lag).to_have_text(str(HELD))
    await page.screenshot(path=SHOTS / "overview-light.png", full_page=True)
    dark = await dash.page(dark=True)
    await sign_in(dark, dash.url)
    await expect(dark.locator(f"tr[data-subscription='{held.id}'] [data-field=lag]")).to_have_text(
        str(HELD)
    )
    await dark.screenshot(path=SHOTS / "overview-dark.png", full_page=True)
    phone = await dash.page(phone=True)
    await sign_in(phone, dash.url)
    await expect(phone.locator(f"tr[data-subscription='{held.id}']")).to_be_visible()
    await phone.screenshot(path=SHOTS / "overview-phone.png", full_page=True)

    # ... shows per partition on the subscription page, with its chart ...
    await page.click(f"a[href='#/subscriptions/{held.id}']")
    partitions = page.locator("#partitions tbody tr")
    await expect(partitions).to_have_count(2)
    await expect(page.locator("#partitions svg.chart polyline")).to_have_count(2)
    for cell in await page.locator("#partitions [data-field=lag]").all():
        await expect(cell).to_have_text(re.compile(r"^[0-9,]+$"))
    per_partition = [
        int(t.replace(",", ""))
        for t in await page.locator("#partitions [data-field=lag]").all_text_contents()
    ]
    assert sum(per_partition) == HELD, per_partition
    await page.screenshot(path=SHOTS / "subscription-held.png", full_page=True)

    # ... and falls once the handler lets them go.
    gate.set()
    for cell in await page.locator("#partitions [data-field=lag]").all():
        await expect(cell).to_have_text("0")
    assert len(handler.acked()) >= HELD
    await page.screenshot(path=SHOTS / "subscription.png", full_page=True)

    # The reset form says what a reset to latest would skip before anything moves.
    await page.select_option("#reset-to", "latest")
    await page.click("text=Review reset…")
    await expect(page.locator("#reset-confirm")).to_contain_text("skips 0 record(s)")
    await page.click("#reset-confirm >> text=Cancel")

    # A pause click stops the consumer on this poller (checked through the API) ...
    await page.click("#pause-button")
    await expect(page.locator("#pause-button")).to_have_text("Resume")

    async def stopped() -> bool:
        doc = (await dash.api.get(f"/subscriptions/{held.id}")).json()
        return bool(doc["paused"]) and doc["runtime"] is None

    await eventually(stopped, timeout=30, interval=0.2)
    await expect(page.locator(".title .badge")).to_have_text("paused")
    before = len(handler.calls)
    await produce(kafka_bootstrap, held_topic, [(b"late", b'{"n": "late"}')])
    # ... and a resume click delivers what arrived meanwhile.
    await page.click("#pause-button")
    await expect(page.locator("#pause-button")).to_have_text("Pause")
    assert not (await dash.api.get(f"/subscriptions/{held.id}")).json()["paused"]
    await eventually(lambda: len(handler.calls) > before, timeout=30)
    assert handler.calls[-1].body == b'{"n": "late"}'
    for cell in await page.locator("#partitions [data-field=lag]").all():
        await expect(cell).to_have_text("0")

    # A reset to earliest, confirmed after the page said what comes again, re-delivers all.
    delivered = len(handler.calls)
    await page.select_option("#reset-to", "earliest")
    await page.click("text=Review reset…")
    confirm = page.locator("#reset-confirm")
    for partition in (0, 1):
        await expect(confirm).to_contain_text(f"{held_topic} partition {partition}: re-delivers")
    await expect(confirm).to_contain_text("already processed record(s)")
    await page.click("#reset-go")
    await expect(confirm).to_contain_text("Reset done", timeout=60_000)
    await eventually(lambda: len(handler.calls) >= delivered + HELD + 1, timeout=60)
    again = sorted(c.body for c in handler.calls[delivered:])
    assert again == sorted(c.body for c in handler.calls[:delivered])

    assets = load_assets()
    figures = {
        "first_load_dom_content_loaded_ms": round(cold["domContentLoadedEventEnd"]),
        "first_load_event_ms": round(cold["loadEventEnd"]),
        "first_load_transferred_bytes": cold["transferred"],
        "reload_event_ms": round(warm["loadEventEnd"]),
        "reload_to_data_s": round(reload_data_s, 3),
        "asset_files": len(assets.files),
        "asset_bytes": assets.total_bytes,
    }
    (SHOTS / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("dashboard figures:", figures)
    assert figures["asset_bytes"] < 100_000


def discovery_app(service: str) -> Starlette:
    document = {
        "protocol_version": 1,
        "services": [
            {"name": service, "ty": "SERVICE", "handlers": [{"name": "record", "input": "JSON"}]}
        ],
    }

    async def discover(request: Request) -> Response:
        return JSONResponse(document)

    return Starlette(routes=[Route("/discover", discover)])


@pytest.mark.promise("p-ui-pages", "p-api-invocation-record")
async def test_failing_invocation_retry_and_deployments(
    stack: tuple[Ingress, Any],
    handler_server: HandlerServer,
    topic_factory: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    harness, start = stack

    async def fail_first(call: Call) -> Response | None:
        if call.headers.get("x-kafka-ingress-attempt", "1") == "1":
            return JSONResponse({"message": "inventory service unavailable"}, status_code=500)
        return None

    handler = RecordingHandler(fail_first)
    url = await handler_server(handler.app)
    await harness.register(
        url, "Greeter", ServiceType.SERVICE, {"greet": (HandlerType.SERVICE, InputKind.JSON)}
    )
    topic = await topic_factory(1)
    sub = await harness.subscribe(
        topic,
        "Greeter",
        "greet",
        {
            "retry.initial.interval.ms": str(BACKOFF_MS),
            "retry.max.interval.ms": str(BACKOFF_MS),
            "retry.jitter": "0",
        },
    )
    dash: Dashboard = await start()
    headers = [("authorization", b"Bearer s3cr3t-bearer-value"), ("trace-id", b"trace-0007")]
    await produce(
        kafka_bootstrap,
        topic,
        [(b"order-7", b'{"order": 7, "password": "hunter2-not-shown"}', headers)],
    )

    async def backing_off() -> bool:
        listing = await dash.api.get("/invocations", params={"subscription": sub.id})
        return [i["status"] for i in listing.json()["invocations"]] == ["BACKING_OFF"]

    await eventually(backing_off, timeout=60, interval=0.2)

    page = await dash.page()
    await sign_in(page, dash.url)
    # The failed attempt counts as an error on the overview.
    await expect(
        page.locator(f"tr[data-subscription='{sub.id}'] [data-field=errors]")
    ).to_have_text("1")
    await page.click("nav >> text=Invocations")
    await page.select_option("#invocation-filters select[name=status]", "BACKING_OFF")
    await page.fill("#invocation-filters input[name=key]", "order-7")
    await page.click("#invocation-filters button[type=submit]")
    rows = page.locator("#invocations tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("order-7")
    await page.screenshot(path=SHOTS / "invocations.png", full_page=True)

    await rows.first.locator("a").click()
    await expect(page.locator("#last-error")).to_contain_text("500")
    await expect(page.locator("[data-action=purge]")).to_be_disabled()
    # The record, read again from Kafka: headers and payload with their secrets masked.
    await expect(page.locator("#payload")).to_contain_text('"order": 7')
    assert "hunter2-not-shown" not in await page.locator("#payload").inner_text()
    await expect(page.locator("#record-headers")).to_contain_text("trace-0007")
    assert "s3cr3t-bearer-value" not in await page.locator("#record").inner_text()
    await page.screenshot(path=SHOTS / "invocation.png", full_page=True)
    # The buttons' rules are the engine's (adapter.engine.lifecycle), status by status.
    shown = await page.evaluate(
        """async ([url, statuses]) => {
            const { allowedActions } = await import(url);
            return Object.fromEntries(statuses.map((s) => [s, allowedActions(s)]));
        }""",
        [f"{dash.url}/ui/invocations.js", [s.value for s in InvocationStatus]],
    )
    names = {"retry": AdminAction.RETRY_NOW}
    for status in InvocationStatus:
        enabled = {names.get(a, a) for a, on in shown[status.value].items() if on}
        assert enabled == {a.value for a in allowed_admin_actions(status)}, status
    await page.click("[data-action=retry]")
    await expect(page.locator("#action-result")).to_contain_text("retry")
    await eventually(lambda: len(handler.calls) == 2, timeout=30)
    assert [c.headers["x-kafka-ingress-attempt"] for c in handler.calls] == ["1", "2"]
    await expect(page.locator(".title .badge")).to_have_text("SUCCEEDED")
    await expect(page.locator("[data-action=retry]")).to_be_disabled()
    await expect(page.locator("[data-action=purge]")).to_be_enabled()

    # The subscription page lists it among its recent invocations.
    inv_id = await page.locator("[data-action=purge]").evaluate("() => location.hash.split('/')[2]")
    await page.click(f"a[href='#/subscriptions/{sub.id}']")
    await expect(page.locator(f"tr[data-invocation='{inv_id}']")).to_contain_text("SUCCEEDED")
    # Purge, once completed, after a confirmation: the row is gone from the API too.
    await page.click(f"a[href='#/invocations/{inv_id}']")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("[data-action=purge]")
    await expect(page.get_by_text(f"{inv_id} purged.")).to_be_visible()
    assert (await dash.api.get(f"/invocations/{inv_id}")).status_code == 404

    # Deployments: the handler types, then register and remove one through the page.
    audit_url = await handler_server(discovery_app("Audit"))
    await page.click("nav >> text=Deployments")
    await expect(page.locator("tr[data-service=Greeter]")).to_contain_text("greet Shared")
    await page.fill("#register-address", audit_url)
    await page.click("#register-form button[type=submit]")
    audit = page.locator("article:has(tr[data-service=Audit])")
    await expect(audit).to_contain_text("record Shared, input JSON")
    await page.screenshot(path=SHOTS / "deployments.png", full_page=True)
    # The API's conflict rule stands: a deployment a subscription uses is not removed.
    greeter = page.locator("article:has(tr[data-service=Greeter])")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await greeter.locator("[data-remove]").click()
    await expect(page.get_by_role("alert")).to_contain_text("Remove refused")
    await expect(greeter).to_be_visible()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await audit.locator("[data-remove]").click()
    await expect(page.locator("tr[data-service=Audit]")).to_have_count(0)
    services = (await dash.api.get("/services")).json()["services"]
    assert [s["name"] for s in services] == ["Greeter"]
