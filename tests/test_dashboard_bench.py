"""Benchmark (not a timed test): how long the run page takes to render in the browser.

Opens runs of 1k, 20k and 100k events (the larger ones with a 2,000-worker map) in
headless Chromium against the real server, and records, per tab, the navigation's
load time (request start to the load event: server render + transfer + layout) for
the first open and a second one. Nothing is asserted about the numbers; they are
printed and written to ``$JUSTPIPE_BENCH_OUT`` (JSON) when set. Marked slow: run with
``--run-slow`` (about a minute, most of it building the 100k-event store).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from extras import require

pytestmark = [pytest.mark.backend_agnostic, pytest.mark.slow]

SIZES = ((1_000, 100), (20_000, 2_000), (100_000, 2_000))
TABS = ("timeline", "events", "steps")


def test_run_page_render_times(tmp_path: Path) -> None:
    sync_api = require("playwright.sync_api", "dashboard")
    from test_dashboard_cli import serve
    from test_dashboard_e2e import chromium_path
    from test_dashboard_fixtures import add_large_run

    runs = {
        events: add_large_run(tmp_path, events, workers, pipeline_hash=f"{events:016d}")
        for events, workers in SIZES
    }
    results: list[dict[str, Any]] = []
    with serve(tmp_path) as served, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        for events, run_id in runs.items():
            for tab in TABS:
                for attempt in ("first", "again"):
                    page.goto(f"{served.url}runs/{run_id}?tab={tab}", timeout=120_000)
                    timing = page.evaluate(
                        "() => { const n = performance.getEntriesByType('navigation')[0];"
                        " return {load: n.loadEventEnd - n.startTime,"
                        " server: n.responseStart - n.requestStart,"
                        " bytes: n.transferSize}; }"
                    )
                    results.append({"events": events, "tab": tab, "open": attempt, **timing})
        browser.close()
    for row in results:
        print(
            f"{row['events']:>7} events  {row['tab']:<8} {row['open']:<5}"
            f"  load {row['load']:8.1f} ms  (server {row['server']:8.1f} ms,"
            f" {row['bytes'] / 1024:6.0f} KiB)"
        )
    target = os.environ.get("JUSTPIPE_BENCH_OUT")
    if target:
        Path(target).write_text(json.dumps(results, indent=2))
    assert len(results) == len(SIZES) * len(TABS) * 2
