"""The dashboard in a real browser: headless Chromium driven by Playwright, against the
real server (``justpipe dashboard`` in a subprocess, uvicorn on a free loopback port).

Playwright cannot download browsers here: the tests launch the system's
``chromium-headless-shell`` (``scripts/install-browser``; or ``JUSTPIPE_CHROMIUM``).
Without it they are skipped with that message, and fail under
``JUSTPIPE_EXTRAS_REQUIRED=1`` (make test).

Screenshots of every page, light and dark, go to ``$JUSTPIPE_SCREENSHOTS`` when set
(``JUSTPIPE_SCREENSHOTS=docs`` refreshes the README's), else to a temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from extras import REQUIRED_ENV, extras_required, require

pytestmark = pytest.mark.backend_agnostic

require("uvicorn", "dashboard")
sync_api = require("playwright.sync_api", "dashboard")

from justpipe import Pipe  # noqa: E402
from test_dashboard_cli import serve  # noqa: E402
from test_dashboard_fixtures import (  # noqa: E402
    XSS_IMG,
    XSS_SCRIPT,
    Store,
    add_large_run,
    build_store,
)

BROWSER_ENV = "JUSTPIPE_CHROMIUM"
SCREENSHOTS_ENV = "JUSTPIPE_SCREENSHOTS"
CANDIDATES = (
    "chromium-headless-shell",
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium-headless-shell/chromium-headless-shell",
    "chromium",
)
WAIT_MS = 20_000
"""Upper bound for a condition the page must reach (not a timing assertion)."""


def chromium_path() -> str:
    """The headless Chromium to launch, or skip (fail when extras are required)."""
    configured = os.environ.get(BROWSER_ENV)
    for candidate in (configured, *CANDIDATES):
        if candidate and (found := shutil.which(candidate)):
            return found
    reason = (
        "no headless Chromium for the dashboard's browser tests: run scripts/install-browser "
        f"(apt-get install chromium-headless-shell) or set {BROWSER_ENV}"
    )
    if extras_required():
        pytest.fail(f"{reason}; {REQUIRED_ENV}=1 demands it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    # after `site`: the store is built with asyncio.run, which cannot run inside the
    # event loop Playwright's sync API keeps on this thread
    path = chromium_path()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


@dataclass
class Site:
    store: Store
    url: str
    screenshots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("e2e-store")
    store = build_store(root)
    target = os.environ.get(SCREENSHOTS_ENV)
    shots = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with serve(root) as served:
        yield Site(store, served.url.rstrip("/"), shots)


@dataclass
class Tab:
    """A page plus every console error and uncaught exception it produced."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def goto(self, url: str) -> Any:
        response = self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
        return response

    def assert_clean(self) -> None:
        assert self.errors == []


def open_tab(browser: Any, color_scheme: str = "light") -> tuple[Any, Tab]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, color_scheme=color_scheme
    )
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    tab = Tab(page)
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    return context, tab


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context, opened = open_tab(browser)
    yield opened
    context.close()


def expect(locator: Any) -> Any:
    return sync_api.expect(locator)


def pages_of(store: Store) -> list[tuple[str, str]]:
    run = store.failed_run
    return [
        ("pipelines", "/"),
        ("pipeline", f"/pipelines/{store.orders_hash}"),
        ("pipeline-graph", f"/pipelines/{store.routing_hash}"),
        ("run-subpipeline", f"/runs/{store.routing_run}?tab=timeline"),
        ("run-timeline", f"/runs/{run}?tab=timeline"),
        ("run-events", f"/runs/{run}?tab=events"),
        ("run-metrics", f"/runs/{run}?tab=metrics"),
        ("run-steps", f"/runs/{run}?tab=steps&step=done"),
        ("compare", f"/compare?run1={store.order_runs[0]}&run2={run}"),
        ("search", "/search?q=or"),
        ("broken-store", f"/pipelines/{store.broken_hash}"),
    ]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_loads_without_console_errors(browser: Any, site: Site, theme: str) -> None:
    context, tab = open_tab(browser, theme)
    try:
        for name, path in pages_of(site.store):
            response = tab.goto(site.url + path)
            assert response.status == 200, path
            assert tab.page.evaluate("document.documentElement.dataset.theme") == theme
            shot = site.screenshots / f"dashboard-{name}-{theme}.png"
            tab.page.screenshot(path=str(shot), full_page=True)
            tab.assert_clean()
    finally:
        context.close()


def test_xss_payloads_stay_inert(tab: Tab, site: Site) -> None:
    store = site.store
    paths = [
        "/",
        f"/pipelines/{store.hostile_hash}",
        *(f"/runs/{store.hostile_run}?tab={t}" for t in ("timeline", "events", "metrics", "steps")),
        f"/compare?run1={store.hostile_run}&run2={store.failed_run}",
        "/search?q=hostile",
    ]
    for path in paths:
        tab.goto(site.url + path)
        for details in tab.page.locator("details").all()[:20]:
            details.evaluate("d => d.open = true")
        assert tab.page.evaluate("window.__xss") is None, path
        assert tab.page.locator("img").count() == 0, path
    tab.goto(f"{site.url}/runs/{store.hostile_run}")
    # the payloads are shown as text, exactly as stored
    expect(tab.page.locator("#autopsy-message")).to_contain_text(XSS_SCRIPT)
    expect(tab.page.locator("#autopsy-message")).to_contain_text(XSS_IMG)
    tab.page.goto(f"{site.url}/pipelines/{store.hostile_hash}")
    tab.page.locator(".dag .node").first.click()
    assert tab.page.evaluate("window.__xss") is None
    tab.assert_clean()


def test_name_filter_and_status_filter(tab: Tab, site: Site) -> None:
    tab.goto(site.url + "/")
    rows = tab.page.locator("#pipelines-table tbody tr")
    assert rows.count() == 5
    tab.page.fill("#name-filter", "ord")
    expect(tab.page.locator("#pipelines-table tbody tr:visible")).to_have_count(1)
    expect(tab.page.locator("#pipelines-table tbody tr:visible")).to_contain_text("orders")
    tab.page.locator("#pipelines-table a", has_text="orders").click()
    tab.page.locator(".chips a.chip", has_text="failed").click()
    expect(tab.page.locator("table.runs tbody tr")).to_have_count(1)
    expect(tab.page.locator("table.runs tbody tr")).to_contain_text("failed")
    tab.assert_clean()


def test_search_from_the_keyboard(tab: Tab, site: Site) -> None:
    tab.goto(f"{site.url}/pipelines/{site.store.orders_hash}")
    tab.page.keyboard.press("/")
    assert tab.page.evaluate("document.activeElement.id") == "global-search"
    tab.page.keyboard.type(site.store.failed_run[:6])
    tab.page.keyboard.press("Enter")
    results = tab.page.locator("#search-results")
    expect(results).to_contain_text(site.store.failed_run[:12])
    results.locator("a", has_text=site.store.failed_run[:12]).click()
    expect(tab.page.locator("h1")).to_contain_text(site.store.failed_run)
    tab.assert_clean()


def test_run_tabs_from_the_keyboard_and_deep_links(tab: Tab, site: Site) -> None:
    run = site.store.failed_run
    tab.goto(f"{site.url}/runs/{run}")
    tab.page.keyboard.press("2")
    expect(tab.page.locator("#tab-events")).to_have_attribute("aria-selected", "true")
    tab.page.keyboard.press("4")
    expect(tab.page.locator("#tab-steps")).to_have_attribute("aria-selected", "true")
    tab.goto(f"{site.url}/runs/{run}#7")  # a bare event number opens the events tab there
    expect(tab.page.locator("#e7")).to_have_class("ev t-map_worker flash")
    expect(tab.page.locator("#e7 details")).to_have_attribute("open", "")
    tab.page.click("#time-toggle")
    expect(tab.page.locator("#e7 .abs")).to_be_visible()
    expect(tab.page.locator("#e7 .rel")).to_be_hidden()
    tab.assert_clean()


def test_dag_node_inspector_by_mouse_and_keyboard(tab: Tab, site: Site) -> None:
    tab.goto(f"{site.url}/pipelines/{site.store.orders_hash}")
    node = tab.page.locator(".dag .node[data-name='done']")
    expect(node).to_have_attribute("data-status", "error")  # coloured by the latest run
    node.click()
    inspector = tab.page.locator("#node-inspector")
    expect(inspector).to_be_visible()
    expect(inspector.locator("h3")).to_have_text("done")
    tab.page.locator(".dag .node[data-name='fan']").focus()
    tab.page.keyboard.press("Enter")
    expect(inspector.locator("h3")).to_have_text("fan")
    expect(inspector).to_contain_text("map")
    tab.assert_clean()


def test_theme_toggle_persists(tab: Tab, site: Site) -> None:
    tab.goto(site.url + "/")
    before = tab.page.evaluate("document.documentElement.dataset.theme")
    tab.page.click("#theme-toggle")
    after = tab.page.evaluate("document.documentElement.dataset.theme")
    assert {before, after} == {"light", "dark"}
    tab.page.reload()
    assert tab.page.evaluate("document.documentElement.dataset.theme") == after
    tab.page.keyboard.press("t")
    assert tab.page.evaluate("document.documentElement.dataset.theme") == before
    tab.assert_clean()


class GatedRun:
    """A persisted two-step run in a background thread; each step waits for its gate."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gates = [threading.Event(), threading.Event()]
        self.run_ids: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        pipe: Pipe[Any, Any] = Pipe(name="live-demo", persist=True, flush_interval=1)
        gates = self.gates

        async def wait(gate: threading.Event) -> None:
            while not gate.is_set():
                await asyncio.sleep(0.01)

        @pipe.step(to="second")
        async def first(state: dict[str, Any]) -> None:
            await wait(gates[0])

        @pipe.step
        async def second(state: dict[str, Any]) -> None:
            await wait(gates[1])

        async def drive() -> None:
            async for event in pipe.run({}):
                if event.seq == 1:
                    self.run_ids.put(event.run_id)

        asyncio.run(drive())

    def start(self) -> str:
        self.thread.start()
        return self.run_ids.get(timeout=30)

    def finish(self) -> None:
        for gate in self.gates:
            gate.set()
        self.thread.join(timeout=30)


def test_a_live_run_updates_while_you_watch(
    browser: Any, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUSTPIPE_STORAGE_PATH", str(site.store.root))
    gated = GatedRun(site.store.root)
    run_id = gated.start()
    context, tab = open_tab(browser)
    list_context, runs_tab = open_tab(browser)
    try:
        tab.goto(f"{site.url}/runs/{run_id}")
        expect(tab.page.locator("#run-status")).to_have_text("running")
        expect(tab.page.locator(".waterfall")).to_contain_text("first")
        expect(tab.page.locator(".waterfall")).not_to_contain_text("second")
        runs_tab.goto(f"{site.url}/search?q=live-demo")
        pipeline_link = runs_tab.page.locator("#search-results a", has_text="live-demo")
        pipeline_link.click()
        row = runs_tab.page.locator("table.runs tbody tr").first
        expect(row).to_contain_text("running")

        gated.gates[0].set()  # the timeline grows: the second step appears
        expect(tab.page.locator(".waterfall")).to_contain_text("second")
        expect(tab.page.locator("#run-status")).to_have_text("running")

        gated.finish()  # the run ends: the page reloads as finished, the run list updates
        expect(tab.page.locator("#run-status")).to_have_text("success")
        expect(row).to_contain_text("success")
        tab.assert_clean()
        runs_tab.assert_clean()
    finally:
        gated.finish()
        context.close()
        list_context.close()


def test_a_dead_run_is_not_shown_as_running(tab: Tab, site: Site) -> None:
    tab.goto(f"{site.url}/runs/{site.store.dead_run}")
    expect(tab.page.locator("#run-status")).to_have_text("failed")
    expect(tab.page.locator(".run-head")).to_contain_text("process died")
    tab.assert_clean()


def test_a_large_run_opens_and_scrolls(browser: Any, tmp_path: Path) -> None:
    run_id = add_large_run(tmp_path, 20_000, 2_000)
    context, tab = open_tab(browser)
    try:
        with serve(tmp_path) as served:
            base = served.url.rstrip("/")
            tab.goto(f"{base}/runs/{run_id}")
            fold = tab.page.locator("tr.fold a")
            expect(fold).to_contain_text("2000")
            fold.click()
            expect(tab.page.locator("tr.span.nested")).to_have_count(100)
            last_worker = tab.page.locator("tr.span.nested").last
            last_worker.scroll_into_view_if_needed()
            expect(last_worker).to_be_in_viewport()
            assert tab.page.evaluate("window.scrollY") > 0
            tab.goto(f"{base}/runs/{run_id}?tab=events&type=token")
            expect(tab.page.locator("tr.ev")).to_have_count(200)
            tab.page.keyboard.press("End")
            assert tab.page.evaluate("document.querySelectorAll('tr.ev').length") == 200
            tab.assert_clean()
    finally:
        context.close()


def test_cleanup_needs_an_explicit_confirmation(tab: Tab, site: Site) -> None:
    store = site.store
    tab.goto(f"{site.url}/pipelines/{store.orders_hash}")
    tab.page.fill("input[name='keep']", "1")
    tab.page.click("button[name='preview']")
    expect(tab.page.locator("h2")).to_contain_text("3 run(s) would be deleted")
    confirm = tab.page.locator("#confirm-delete")
    expect(confirm).to_be_disabled()
    runs = tab.page.request.get(f"{site.url}/api/pipelines/{store.orders_hash}/runs")
    assert len(runs.json()) == 4  # the preview deleted nothing
    tab.page.check("#confirm-check")
    expect(confirm).to_be_enabled()
    confirm.click()
    expect(tab.page.locator("h2")).to_have_text("Deleted 3 run(s)")
    tab.goto(f"{site.url}/pipelines/{store.orders_hash}")
    expect(tab.page.locator("table.runs tbody tr")).to_have_count(1)
    tab.assert_clean()
