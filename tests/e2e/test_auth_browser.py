"""Sign-in in a real browser: login, logout, idle timeout with the draft kept, a disabled user
thrown out, a page the role may not see. Chromium drives the sign-in form and the app."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from stalwart.core.rbac import Principal
from stalwart.services.auth_service import AuthService
from tests.e2e.browser import wait_for_app_idle
from tests.e2e.conftest import LiveApp
from tests.e2e.test_auth import PASSWORD, accounts_for, start_auth_server, user

if TYPE_CHECKING:
    from playwright.sync_api import Page

SETTLE_MS = 20_000  # bounds for a hung page to fail the test; not performance claims
IDLE_S = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """Sign-in on, with a short idle timeout so that a test can outwait it."""
    app = start_auth_server(
        tmp_path_factory,
        STALWART_SESSION_IDLE_TIMEOUT_S=str(IDLE_S),
        STALWART_SESSION_TOUCH_INTERVAL_S="1",
    )
    yield app
    app.stop()


@pytest.fixture(scope="module")
def accounts(server: LiveApp) -> Iterator[AuthService]:
    service = accounts_for(server)
    yield service
    service.db.dispose()


def sign_in_form(page: Page, name: str, password: str = PASSWORD) -> None:
    """Fill and send the sign-in form the browser is on; wait for the app to run."""
    page.wait_for_selector("form[action='/auth/login']", timeout=SETTLE_MS)
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=stApp]", timeout=SETTLE_MS)
    wait_for_app_idle(page)


NAV_LINKS = "[data-testid=stSidebar] nav[aria-label=Pages] a"


def nav_targets(page: Page) -> list[str]:
    return page.eval_on_selector_all(NAV_LINKS, "els => els.map(a => a.dataset.target)")


def test_sign_in_and_sign_out(server: LiveApp, accounts: AuthService, page: Page) -> None:
    from playwright.sync_api import expect

    name = user(accounts, "bella", "editor")
    page.goto(f"{server.url}/?page=jobs")
    # Not signed in: the app sends the browser to the sign-in page, remembering the page.
    page.wait_for_url(re.compile(r"/auth/login\?next="), timeout=SETTLE_MS)
    sign_in_form(page, name)
    assert page.url.endswith("/?page=jobs")
    expect(page.locator("[data-testid=stSidebar]")).to_contain_text(f"Signed in as {name}")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["stalwart_login"]["httpOnly"]
    assert cookies["stalwart_login"]["sameSite"] == "Lax"
    assert page.evaluate("() => document.cookie").find("stalwart_login") == -1  # not for JS

    page.click("[data-testid=stSidebar] nav[aria-label=Account] a")
    page.wait_for_url(re.compile(r"/auth/login\?.*reason=signed_out"), timeout=SETTLE_MS)
    expect(page.locator("main")).to_contain_text("You signed out")
    page.goto(f"{server.url}/?page=jobs")
    page.wait_for_url(re.compile(r"/auth/login"), timeout=SETTLE_MS)


def test_after_the_idle_timeout_signing_in_again_returns_to_the_same_draft(
    server: LiveApp, accounts: AuthService, page: Page
) -> None:
    from playwright.sync_api import expect

    name = user(accounts, "ida", "editor")
    page.goto(f"{server.url}/?page=form-demo&brief=3")
    sign_in_form(page, name)
    field = page.locator(".st-key-sw__project-brief-3__name input")
    field.click()
    page.keyboard.type("Typed before the timeout", delay=10)
    page.wait_for_function(
        "() => document.documentElement.dataset.stalwartJournal_project_brief_3 === '0'",
        timeout=SETTLE_MS,
    )
    time.sleep(IDLE_S + 1)  # the login session passes its idle timeout
    page.keyboard.type(" and after it", delay=10)  # typing goes on into the draft
    page.click(".st-key-swc__project-brief-3__apply button")  # an action: needs the sign-in
    page.wait_for_url(re.compile(r"/auth/login\?.*reason=idle"), timeout=SETTLE_MS)
    expect(page.locator("main")).to_contain_text("without activity")
    sign_in_form(page, name)
    page.wait_for_selector(".st-key-sw__project-brief-3__name input", timeout=SETTLE_MS)
    expect(page.locator(".st-key-sw__project-brief-3__name input")).to_have_value(
        "Typed before the timeout and after it", timeout=SETTLE_MS
    )
    assert "page=form-demo" in page.url
    assert "brief=3" in page.url


def test_a_disabled_user_is_thrown_out_at_the_next_interaction(
    server: LiveApp, accounts: AuthService, page: Page
) -> None:
    from playwright.sync_api import expect

    name = user(accounts, "dan", "editor")
    page.goto(f"{server.url}/?page=home")
    sign_in_form(page, name)
    accounts.disable(Principal.system("test"), name)
    try:
        page.click("[data-testid=stSidebar] a[data-target=jobs]")
        page.wait_for_url(re.compile(r"/auth/login\?.*reason=disabled"), timeout=SETTLE_MS)
        expect(page.locator("main")).to_contain_text("disabled")
        sign_in_form_refused = page.locator("#username")
        sign_in_form_refused.fill(name)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("p.error")).to_contain_text("disabled")
    finally:
        accounts.enable(Principal.system("test"), name)


def test_a_page_the_role_may_not_see_is_not_in_navigation_nor_reachable_by_url(
    server: LiveApp, accounts: AuthService, page: Page
) -> None:
    from playwright.sync_api import expect

    viewer_name = user(accounts, "vera", "viewer")
    page.goto(f"{server.url}/?page=home")
    sign_in_form(page, viewer_name)
    # The navigation is drawn by a component after the run: wait for a page the viewer has.
    page.wait_for_selector(f"{NAV_LINKS}[data-target=jobs]", timeout=SETTLE_MS)
    targets = nav_targets(page)
    assert "users" not in targets
    assert {"home", "jobs"} <= set(targets)
    page.goto(f"{server.url}/?page=users")
    wait_for_app_idle(page)
    expect(page.locator(".st-key-page-home")).to_be_visible()
    expect(page.locator(".st-key-page-users")).to_have_count(0)
    expect(page.locator("[data-testid=stToast]")).to_contain_text("do not have access")
    assert re.search(r"[?&]page=home", page.url)
