"""The dashboard in headless Chromium (Debian's package, driven by Playwright).

The browser may reach the dashboard only: every other request is aborted and recorded, so
the tests also show that the pages work with no network.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import REPO_ROOT
from tests.ui.conftest import REJECT_REASONS, Home, write_sample

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed: bin/test installs it with apt-get when run as root",
)
# Generous, because the suite runs on two busy cores; a pass usually takes well under 1 s.
WAIT_MS = 60_000
SCREENSHOT = REPO_ROOT / "docs" / "images" / "dashboard.png"
# Read at import, because a fixture clears every PREPFLOW_ variable before each test.
UPDATE_SCREENSHOT = os.environ.get("PREPFLOW_UPDATE_SCREENSHOT") == "1"
VIEWPORT = {"width": 1100, "height": 900}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    # Chromium's sandbox cannot start as root; elsewhere it stays on.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    """A fresh page that may load from the dashboard only; it records every other request."""
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    dashboard = urlsplit(server).netloc
    blocked: list[str] = []
    problems: list[str] = []

    def only_dashboard(route: Route) -> None:
        if urlsplit(route.request.url).netloc == dashboard:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    def console(message: Any) -> None:
        # A Content-Security-Policy violation or a script error is reported here. HTTP error
        # responses to the page's own requests are too, and the tests check those themselves.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    context.route("**/*", only_dashboard)
    opened.on("console", console)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert blocked == [], "the dashboard asked for something outside itself"
    assert problems == [], "the browser reported errors"


def test_job_page_shows_report(page: Page, server: str, home: Home) -> None:
    name = home.job["job_name"]
    report = home.report()
    page.goto(server)

    row = page.locator(f'tr[data-job="{name}"]')
    row.wait_for(timeout=WAIT_MS)
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == name
    assert cells[1] == "Completed"
    assert cells[2] == home.job["inputs"][0]
    assert cells[5:] == [str(report["rows"]["in"]), str(report["rows"]["out"]), "3"]

    row.get_by_role("link", name=name).click()
    page.wait_for_url(f"**/jobs/{name}", timeout=WAIT_MS)
    missing = page.locator('svg[data-chart="missing"] rect.bar')
    # A bar of value 0 has no width, so Playwright calls it hidden: wait for it to exist.
    missing.first.wait_for(state="attached", timeout=WAIT_MS)
    page.locator("#rejected tbody tr").first.wait_for(timeout=WAIT_MS)

    columns = report["columns"]
    assert missing.count() == len(columns)
    assert [missing.nth(i).get_attribute("data-label") for i in range(len(columns))] == [
        column["name"] for column in columns
    ]
    assert [missing.nth(i).get_attribute("data-value") for i in range(len(columns))] == [
        # Columns that steps add were not in the input: no count, and an empty attribute.
        "" if column["missing_before"] is None else str(column["missing_before"])
        for column in columns
    ]
    rows = page.locator('svg[data-chart="rows"] rect.bar')
    assert [rows.nth(i).get_attribute("data-value") for i in range(4)] == [
        str(report["rows"][part]) for part in ("in", "out", "rejected", "removed")
    ]
    reasons = page.locator('svg[data-chart="reasons"] rect.bar')
    assert reasons.count() == len(report["rejected"]["by_reason"])
    histograms = page.locator('svg[data-chart="histogram"]')
    assert histograms.count() == sum(1 for column in columns if column.get("histogram"))

    rejected = page.locator("#rejected tbody tr")
    assert rejected.count() == len(REJECT_REASONS)
    header = page.locator("#rejected thead th").all_inner_texts()
    reason_cells = rejected.locator(f"td:nth-child({header.index('reason') + 1})")
    assert reason_cells.all_inner_texts() == REJECT_REASONS
    assert page.locator("#job-status").inner_text() == "Completed"
    assert name in page.locator("#spec").inner_text()
    assert page.locator('pre.log[data-host="algo-1"]').count() == 1
    links = page.locator("#outputs a").evaluate_all("links => links.map(a => a.href)")
    assert len(links) == len(home.job["outputs"]) + 3
    assert all("/files/" in link for link in links)

    path = SCREENSHOT if UPDATE_SCREENSHOT else home.path.parent / "dashboard.png"
    saved = save_screenshot(page, path)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def save_screenshot(page: Page, path: Path) -> Path:
    """Save the job page's top (summary, outputs and charts) as a PNG of the viewport."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#reports").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=False)
    return path


def test_new_job_appears_live(page: Page, server: str, home: Home) -> None:
    page.goto(server)
    page.locator(f'tr[data-job="{home.job["job_name"]}"]').wait_for(timeout=WAIT_MS)
    # A reload would drop this mark, so finding it afterwards shows the page stayed.
    page.evaluate("window.loadedOnce = true")

    job = home.run_job(write_sample(home.path.parent / "late.csv", rows=10))

    row = page.locator(f'tr[data-job="{job["job_name"]}"]')
    row.wait_for(timeout=WAIT_MS)
    assert page.evaluate("window.loadedOnce") is True
    row.locator("td.status", has_text="Completed").wait_for(timeout=WAIT_MS)
    assert page.locator("#jobs tbody tr[data-job]").count() == 2


def test_status_filter_hides_jobs(page: Page, server: str, home: Home) -> None:
    page.goto(server)
    page.locator(f'tr[data-job="{home.job["job_name"]}"]').wait_for(timeout=WAIT_MS)

    page.select_option("#status-filter", "Failed")

    page.locator("#jobs tbody tr.empty").wait_for(timeout=WAIT_MS)
    assert page.locator("#jobs tbody tr[data-job]").count() == 0
    assert page.url.endswith("?status=Failed")


def test_unknown_job_page_says_not_found(page: Page, server: str) -> None:
    page.goto(server + "jobs/prepflow-no-such-job")

    error = page.locator("#error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    assert "processing job not found" in error.inner_text()
