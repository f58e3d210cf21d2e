"""The app in a real browser: the home page loads, the sidebar switches pages, back goes back."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.e2e.browser import expect_app_run, wait_for_app_idle

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.e2e.conftest import LiveApp, LiveAppFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def sqlite_app(live_app_factory: LiveAppFactory) -> LiveApp:
    return live_app_factory("sqlite")


def heading(page: Page) -> str:
    return page.locator('[data-testid="stMain"] h1').first.inner_text().strip()


def test_sidebar_switches_to_settings_and_back_returns_home(
    sqlite_app: LiveApp, page: Page
) -> None:
    from playwright.sync_api import expect

    page.goto(sqlite_app.url)
    wait_for_app_idle(page)
    assert heading(page) == "Welcome to Stalwart"

    with expect_app_run(page):
        page.locator('.st-key-nav a[data-target="settings"]').click()

    expect(page.locator('[data-testid="stMain"] h1').first).to_have_text("Settings")
    assert re.search(r"[?&]page=settings(&|$)", page.url), page.url
    expect(page.locator('.st-key-nav a[data-target="settings"]')).to_have_attribute(
        "aria-current", "page"
    )

    page.go_back()
    expect(page.locator('[data-testid="stMain"] h1').first).to_have_text("Welcome to Stalwart")
    wait_for_app_idle(page)
    assert "page=settings" not in page.url
