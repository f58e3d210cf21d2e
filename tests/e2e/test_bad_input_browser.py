"""Hostile input in a real browser: HTML typed into the form stays text after a reload, and a
refused upload is shown under its field while the page keeps working (SQLite only: the
database side runs on both engines in tests/integration/test_bad_input.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.browser import expect_app_run
from tests.e2e.test_zero_loss import SETTLE_TIMEOUT_MS, Brief, stored_draft

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.e2e.conftest import LiveApp, LiveAppFactory

pytestmark = pytest.mark.browser

IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
UPLOAD_LIMIT = 4096


@pytest.fixture
def app(live_app_factory: LiveAppFactory) -> LiveApp:
    return live_app_factory(
        "sqlite", STALWART_AUTH_MODE="off", STALWART_UPLOAD_MAX_BYTES=str(UPLOAD_LIMIT)
    )


def wait_stored(brief: Brief, **values: str) -> None:
    """Wait until the database holds ``values`` in the brief's draft."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_MS / 1000
    while True:
        draft = stored_draft(brief)
        if all(draft.get(k) == v for k, v in values.items()) or time.monotonic() > deadline:
            break
        brief.page.wait_for_timeout(200)
    assert {k: draft.get(k) for k in values} == values


def no_script_ran(page: Page) -> None:
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("[data-testid=stMain] script").count() == 0


def test_html_typed_into_the_form_is_kept_as_text(app: LiveApp, page: Page) -> None:
    from playwright.sync_api import expect

    brief = Brief(page, app).open()
    brief.type("name", IMG)
    brief.type("summary", SCRIPT)
    wait_stored(brief, name=IMG, summary=SCRIPT)
    no_script_ran(page)

    page.reload()
    brief.ready()
    expect(brief.field("name")).to_have_value(IMG, timeout=SETTLE_TIMEOUT_MS)
    expect(brief.field("summary")).to_have_value(SCRIPT, timeout=SETTLE_TIMEOUT_MS)
    brief.click("Apply")  # the page recomputes from the applied draft: still nothing runs
    no_script_ran(page)


def upload(page: Page, filename: str, content: bytes) -> None:
    # The uploader gets a new key after a refusal (so the refused file does not look attached).
    with expect_app_run(page):
        page.locator("[class*='attachment__upload'] input[type=file]").set_input_files(
            {"name": filename, "mimeType": "text/plain", "buffer": content}
        )


def test_a_refused_upload_is_shown_and_the_form_keeps_working(app: LiveApp, page: Page) -> None:
    from playwright.sync_api import expect

    brief = Brief(page, app).open()
    brief.type("name", "Apollo")
    error = page.get_by_test_id("stAlert")

    upload(page, "big.txt", b"x" * (UPLOAD_LIMIT + 1))
    expect(error).to_contain_text("“big.txt” is 4.0 KB; files may be at most 4.0 KB.")
    expect(page.get_by_text("No file attached.")).to_be_visible()

    # A program renamed to .png, under a name that is Markdown for a link and emphasis
    # (a "*" is not allowed in a file name and becomes "_", emphasis all the same).
    upload(page, "[**pay**](evil.example).png", b"MZ\x90\x00" + b"\x00" * 64)
    expect(error).to_contain_text("“[__pay__](evil.example).png” is not a valid .png file")
    expect(error).to_contain_text("it is a Windows program")
    assert error.locator("a, strong").count() == 0

    upload(page, "plan.txt", b"the plan")
    expect(page.get_by_text("Attached: plan.txt")).to_be_visible()
    expect(error).to_have_count(0)
    brief.type("name", " 11")
    wait_stored(brief, name="Apollo 11")
    assert stored_draft(brief)["attachment"]["name"] == "plan.txt"
