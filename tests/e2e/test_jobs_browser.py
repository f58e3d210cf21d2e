"""Background jobs as a user meets them: headless Chromium against ``app run`` (embedded engine,
SQLite and PostgreSQL). Jobs are real ``portfolio_risk`` runs sized by their parameters.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from stalwart.models import AuditEntry, JobRecord
from tests.e2e.browser import expect_app_run, wait_for_app_idle

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

    from tests.e2e.conftest import LiveApp

pytestmark = pytest.mark.browser

WAIT_MS = 20_000  # a bound so that a stuck job fails the test; not a performance claim
# 10 to 25 s of simulation on the 2-core machines seen so far (the CPU differs between runs):
# long enough to see progress move, close the tab and come back while it still runs.
MOVING_PATHS = 2_400_000
# A bound on waiting for that job to finish: a hung job fails the test, a slow CPU does not.
FINISH_WAIT_MS = 180_000
# Far longer than any test: a job that is still running when the test acts on it.
LONG_PATHS = 5_000_000


class JobDemo:
    """The job demo page in one tab (a page object)."""

    def __init__(self, page: Page, app: LiveApp) -> None:
        self.page, self.app = page, app

    def open(self) -> JobDemo:
        self.page.goto(f"{self.app.url}/?page=job-demo")
        wait_for_app_idle(self.page)
        self.page.wait_for_selector(".st-key-jd-paths input")
        return self

    def set(self, name: str, value: object) -> None:
        field = self.page.locator(f".st-key-jd-{name} input")
        field.fill(str(value))

    def open_options(self) -> None:
        self.page.get_by_text("Job options").click()
        self.page.wait_for_selector(".st-key-jd-timeout_s input")

    def start(self) -> None:
        with expect_app_run(self.page):
            self.page.locator(".st-key-jd-start button").click()

    def card(self) -> Locator:
        """The newest job's card."""
        return self.page.locator("[class*='st-key-jobcard-']").first

    def progress(self) -> float:
        bar = self.card().get_by_role("progressbar")
        return float(bar.get_attribute("aria-valuenow") or 0)


def wait_progress(demo: JobDemo, above: float) -> float:
    """Wait until the card's progress bar shows more than ``above`` (and less than 100)."""
    demo.page.wait_for_function(
        """(above) => {
             const bar = document.querySelector("[class*='st-key-jobcard-'] [role=progressbar]");
             const now = bar ? Number(bar.getAttribute('aria-valuenow')) : -1;
             return now > above && now < 100;
           }""",
        arg=above,
        timeout=WAIT_MS,
    )
    return demo.progress()


def go_to(page: Page, slug: str) -> None:
    with expect_app_run(page):
        page.locator(f'.st-key-nav a[data-target="{slug}"]').click()


def wait_text(locator: Locator, pattern: str, timeout_ms: float = WAIT_MS) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(re.compile(pattern), timeout=timeout_ms)


def job_rows(app: LiveApp) -> list[dict[str, Any]]:
    """Every row of the jobs table, as the database holds it."""
    engine = _engine(app)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(JobRecord.__table__))]
    engine.dispose()
    return rows


def retries_audited(app: LiveApp, job_id: str) -> int:
    engine = _engine(app)
    with engine.connect() as conn:
        count = len(
            conn.execute(
                select(AuditEntry.id).where(
                    AuditEntry.action == "retry", AuditEntry.entity_id == job_id
                )
            ).all()
        )
    engine.dispose()
    return count


def _engine(app: LiveApp) -> Any:
    assert app.db_url is not None
    url = make_url(app.db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url)


def wait_row(app: LiveApp, job_id: str, predicate: Any, what: str) -> dict[str, Any]:
    """Poll the table (bounded) until the job's row satisfies ``predicate``."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        (row,) = [r for r in job_rows(app) if r["id"] == job_id]
        if predicate(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"job never reached {what}: {row}")
        time.sleep(0.1)


def test_a_job_shows_progress_survives_a_closed_tab_and_is_announced_and_listed(
    live_app: LiveApp, context: BrowserContext, page: Page
) -> None:
    demo = JobDemo(page, live_app).open()
    demo.set("paths", MOVING_PATHS)
    demo.start()

    # The progress bar moves while the user stays on the page.
    first = wait_progress(demo, 0)
    wait_progress(demo, first)

    # Away, tab closed, a new one opened (same browser identity): the job is where it is.
    go_to(page, "home")
    page.close()
    page = context.new_page()
    demo = JobDemo(page, live_app).open()
    wait_progress(demo, first)

    # On another page, the finish is announced.
    go_to(page, "settings")
    toast = page.get_by_test_id("stToast").filter(has_text="finished")
    wait_text(toast, r"Portfolio risk job [0-9a-f]{8} finished\.", FINISH_WAIT_MS)

    # The dashboard shows it succeeded, with its duration and attempts.
    go_to(page, "jobs")
    detail = page.locator(".st-key-jobs-detail")
    wait_text(detail, r"succeeded · attempt 1 of 3 · ran \d+(\.\d)? s")
    wait_text(detail, r"Value at risk \d")
    (row,) = job_rows(live_app)
    assert row["status"] == "succeeded"
    assert row["args"]["paths"] == MOVING_PATHS


def test_a_double_click_on_start_starts_one_job(live_app: LiveApp, page: Page) -> None:
    demo = JobDemo(page, live_app).open()
    demo.set("paths", 20_000)
    with expect_app_run(page):
        page.locator(".st-key-jd-start button").dblclick()
    wait_text(demo.card(), r"succeeded")

    assert len(job_rows(live_app)) == 1


def test_cancel_from_the_dashboard_stops_a_running_job(live_app: LiveApp, page: Page) -> None:
    demo = JobDemo(page, live_app).open()
    demo.set("paths", LONG_PATHS)
    demo.start()
    wait_progress(demo, 0)  # it runs

    go_to(page, "jobs")
    detail = page.locator(".st-key-jobs-detail")
    wait_text(detail, r"running")
    with expect_app_run(page):
        detail.locator("[class*='st-key-jobs-cancel-'] button").click()

    wait_text(detail, r"cancelled")
    (row,) = job_rows(live_app)
    assert row["status"] == "cancelled"
    assert row["progress"] < 100
    # The job can be run again from here.
    assert detail.locator("[class*='st-key-jobs-retry-'] button").is_visible()


def test_a_failed_job_shows_its_error_and_retry_runs_it_again(
    live_app: LiveApp, page: Page
) -> None:
    # The natural failure: a time limit shorter than the work; one attempt, so no backoff.
    demo = JobDemo(page, live_app).open()
    demo.set("paths", LONG_PATHS)
    demo.open_options()
    demo.set("timeout_s", 1)
    demo.set("max_attempts", 1)
    demo.start()

    card = demo.card()
    wait_text(card, r"failed")
    wait_text(card, r"ran longer than its limit of 1 s \(attempt 1 of 1\)")
    (failed,) = job_rows(live_app)
    first_end: datetime = failed["finished_at"]

    with expect_app_run(page):
        card.locator("[class*='st-key-jd-retry-'] button").click()

    again = wait_row(
        live_app,
        failed["id"],
        lambda r: r["status"] == "failed" and r["finished_at"] > first_end,
        "a second failure after the retry",
    )
    assert again["attempts"] == 1  # attempts started over
    assert retries_audited(live_app, failed["id"]) == 1
    wait_text(demo.card(), r"ran longer than its limit of 1 s")
