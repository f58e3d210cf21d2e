"""Sign-in through an OIDC provider (``st.login``) on a real server, in a real browser.

The provider is the only fake (``tests.oidc_provider``: discovery, authorize, token, JWKS, an
RS256-signed id_token). Everything else is the app as it runs: the sign-in page's button, the
shell's ``st.login`` step, Streamlit's ``/oauth2callback``, the one-time code and
``/auth/oidc/complete`` that sets the login cookie.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from stalwart.core.rbac import Principal
from stalwart.core.session import new_token
from stalwart.models import User
from stalwart.models.user import OidcHandoff
from stalwart.services.auth_service import AuthService
from tests.e2e.browser import wait_for_app_idle
from tests.e2e.conftest import SECRET, LiveApp
from tests.e2e.test_auth import accounts_for, start_auth_server, user
from tests.oidc_provider import FakeOidcProvider, OidcUser

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route

SETTLE_MS = 30_000  # bounds for a hung page to fail the test; not performance claims
SIGNED_IN = "[data-testid=stSidebar] nav[aria-label=Account]"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOidcProvider]:
    idp = FakeOidcProvider().start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, provider: FakeOidcProvider
) -> Iterator[LiveApp]:
    app = start_auth_server(tmp_path_factory, **provider.settings())
    yield app
    app.stop()


@pytest.fixture(scope="module")
def accounts(server: LiveApp) -> Iterator[AuthService]:
    service = accounts_for(server)
    user(service, "root", "admin")  # an account exists: the page offers sign-in, not set-up
    yield service
    service.db.dispose()


def oidc_users(accounts: AuthService, subject: str) -> list[tuple[int, str, str, str, str]]:
    """(id, username, role, e-mail, issuer) of the users linked to ``subject``."""
    query = select(User.id, User.username, User.role, User.email, User.oidc_issuer).where(
        User.oidc_subject == subject
    )
    with accounts.db.unit_of_work(read_only=True) as uow:
        return [tuple(row) for row in uow.session.execute(query)]  # type: ignore[misc]


def sign_in_with_provider(page: Page, server: LiveApp, start: str = "/?page=jobs") -> None:
    """From a page of the app, through the sign-in page's button, to wherever it ends."""
    page.goto(f"{server.url}{start}")
    page.wait_for_url(re.compile(r"/auth/login\?next="), timeout=SETTLE_MS)
    page.click("#oidc-sign-in")


def test_sign_in_with_the_provider_maps_the_subject_to_a_local_user(
    server: LiveApp, provider: FakeOidcProvider, accounts: AuthService, page: Page
) -> None:
    from playwright.sync_api import expect

    provider.user = OidcUser("sub-olivia-1", "olivia@example.com", "Olivia Example")
    page.goto(f"{server.url}/?page=jobs")
    page.wait_for_url(re.compile(r"/auth/login\?next="), timeout=SETTLE_MS)
    expect(page.locator("#oidc-sign-in")).to_have_text("Sign in with Test IdP")
    expect(page.locator("form[action='/auth/login']")).to_be_visible()  # passwords stay
    page.click("#oidc-sign-in")
    # Back in the app, on the page it was asked for, signed in as the mapped user.
    page.wait_for_url(re.compile(r"/\?page=jobs$"), timeout=SETTLE_MS)
    page.wait_for_selector(SIGNED_IN, timeout=SETTLE_MS)
    wait_for_app_idle(page)
    expect(page.locator("[data-testid=stSidebar]")).to_contain_text("Signed in as olivia (viewer)")
    [olivia] = oidc_users(accounts, "sub-olivia-1")
    assert olivia[1:] == ("olivia", "viewer", "olivia@example.com", provider.issuer)
    # The provider was asked with PKCE and a nonce, for this app's callback.
    asked = provider.authorize_requests[-1]
    assert asked["code_challenge_method"] == "S256"
    assert asked["nonce"]
    assert asked["redirect_uri"] == f"{server.url}/oauth2callback"

    cookies = {c["name"]: c for c in page.context.cookies()}
    login = cookies["stalwart_login"]
    assert login["httpOnly"]
    assert login["sameSite"] == "Lax"
    assert login["path"] == "/"
    assert "_streamlit_user" not in cookies  # the provider's word does not outlive our session
    assert "stalwart_login" not in page.evaluate("() => document.cookie")

    # Sign out: our session ends, both cookies are gone.
    page.click("[data-testid=stSidebar] nav[aria-label=Account] a")
    page.wait_for_url(re.compile(r"/auth/login\?.*reason=signed_out"), timeout=SETTLE_MS)
    left = {c["name"] for c in page.context.cookies()}
    assert "stalwart_login" not in left
    assert "_streamlit_user" not in left

    # The same subject again: the same user, not a second one.
    page.goto(f"{server.url}/?page=home")
    page.wait_for_url(re.compile(r"/auth/login\?next="), timeout=SETTLE_MS)
    page.click("#oidc-sign-in")
    page.wait_for_url(re.compile(r"/\?page=home$"), timeout=SETTLE_MS)
    page.wait_for_selector(SIGNED_IN, timeout=SETTLE_MS)
    assert oidc_users(accounts, "sub-olivia-1") == [olivia]
    with accounts.db.unit_of_work(read_only=True) as uow:
        assert uow.session.scalar(select(func.count()).select_from(OidcHandoff)) == 0


def test_a_disabled_user_is_refused(
    server: LiveApp, provider: FakeOidcProvider, accounts: AuthService, page: Page
) -> None:
    from playwright.sync_api import expect

    system = Principal.system("test")
    accounts.create_user(
        system, "dora", role="editor", oidc_issuer=provider.issuer, oidc_subject="sub-dora"
    )
    accounts.disable(system, "dora")
    provider.user = OidcUser("sub-dora", "dora@example.com", "Dora")
    sign_in_with_provider(page, server)
    page.wait_for_url(re.compile(r"/auth/login\?.*reason=disabled"), timeout=SETTLE_MS)
    expect(page.locator("main")).to_contain_text("Your account is disabled")
    names = {c["name"] for c in page.context.cookies()}
    assert "stalwart_login" not in names
    assert "_streamlit_user" not in names


def capture_code(context: BrowserContext, page: Page, server: LiveApp) -> tuple[str, str]:
    """Go through the provider, stop the tab before /auth/oidc/complete; (code, identity)."""
    seen: list[str] = []

    def hold(route: Route) -> None:
        seen.append(route.request.url)
        route.abort()

    page.route("**/auth/oidc/complete*", hold)
    try:
        sign_in_with_provider(page, server)
        page.wait_for_function("() => true")  # let the page run
        deadline = 0
        while not seen and deadline < SETTLE_MS:
            page.wait_for_timeout(100)
            deadline += 100
    finally:
        page.unroute("**/auth/oidc/complete*")
    assert seen, "the shell never sent the tab to /auth/oidc/complete"
    [code] = parse_qs(urlsplit(seen[0]).query)["code"]
    identity = {c["name"]: c["value"] for c in context.cookies()}["stalwart_sid"]
    return code, identity


def complete(server: LiveApp, code: str, identity: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/auth/oidc/complete",
        params={"code": code},
        cookies={"stalwart_sid": identity},
        headers=headers,
    )


def set_cookies(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


def test_the_one_time_code_works_once_and_only_in_its_browser(
    server: LiveApp, provider: FakeOidcProvider, context: BrowserContext, page: Page
) -> None:
    provider.user = OidcUser("sub-carl", "carl@example.com", "Carl")
    code, identity = capture_code(context, page, server)

    # Another browser (another identity cookie, or none) cannot use it: login CSRF.
    stolen = complete(server, code, new_token())
    assert stolen.status_code == 303
    assert "reason=oidc_failed" in stolen.headers["location"]
    assert "stalwart_login" not in set_cookies(stolen)
    # ... and it is burnt for everyone after that.
    assert "reason=oidc_failed" in complete(server, code, identity).headers["location"]

    code, identity = capture_code(context, page, server)
    # As through nginx with TLS (127.0.0.1 is the server's trusted proxy): Secure cookies.
    first = complete(server, code, identity, **{"X-Forwarded-Proto": "https"})
    assert first.status_code == 303
    assert first.headers["location"] == "/?page=jobs"
    jar = set_cookies(first)
    login = jar["stalwart_login"]
    assert login["httponly"]
    assert login["samesite"].lower() == "lax"
    assert login["path"] == "/"
    assert int(login["max-age"]) > 0
    assert login["secure"]
    assert jar["_streamlit_user"].value == ""  # cleared
    assert first.headers["cache-control"] == "no-store"
    again = complete(server, code, identity)
    assert "reason=oidc_failed" in again.headers["location"]
    assert "stalwart_login" not in set_cookies(again)
    # Nonsense is refused the same way.
    assert "reason=oidc_failed" in complete(server, "x" * 43, identity).headers["location"]


def test_auto_create_off_refuses_an_unknown_subject(
    tmp_path_factory: pytest.TempPathFactory, provider: FakeOidcProvider, page: Page
) -> None:
    from playwright.sync_api import expect

    app = start_auth_server(
        tmp_path_factory, STALWART_OIDC_AUTO_CREATE="false", **provider.settings()
    )
    try:
        provider.user = OidcUser("sub-stranger", "stranger@example.com", "Stranger")
        sign_in_with_provider(page, app)
        page.wait_for_url(re.compile(r"/auth/login\?.*reason=oidc_unknown"), timeout=SETTLE_MS)
        expect(page.locator("main")).to_contain_text("No account is linked to that sign-in")
        accounts = accounts_for(app)
        try:
            assert oidc_users(accounts, "sub-stranger") == []
        finally:
            accounts.db.dispose()
    finally:
        app.stop()


def test_without_password_login_the_page_offers_only_the_provider(
    tmp_path_factory: pytest.TempPathFactory, provider: FakeOidcProvider
) -> None:
    app = start_auth_server(
        tmp_path_factory, STALWART_PASSWORD_LOGIN="false", **provider.settings()
    )
    try:
        body = httpx.get(f"{app.url}/auth/login").text
        assert 'id="oidc-sign-in"' in body
        assert "<form" not in body
        refused = httpx.post(
            f"{app.url}/auth/login",
            data={"username": "x", "password": "y"},
            headers={"Origin": app.url},
        )
        assert refused.status_code == 403
    finally:
        app.stop()


def test_a_leftover_streamlit_identity_cookie_alone_signs_no_one_in(
    server: LiveApp, provider: FakeOidcProvider, accounts: AuthService, context: BrowserContext
) -> None:
    """A valid ``_streamlit_user`` without a sign-in started in this browser is ignored."""
    from streamlit.web.server.starlette.starlette_app_utils import create_signed_value

    from stalwart.core.config import load_config
    from stalwart.web.oidc import cookie_secret

    secret = cookie_secret(load_config(secret_key=SECRET))
    claims = {
        "origin": server.url,
        "is_logged_in": True,
        "provider": "testidp",
        "iss": provider.issuer,
        "sub": "sub-leftover",
        "email": "leftover@example.com",
    }
    value = create_signed_value(secret, "_streamlit_user", json.dumps(claims)).decode()
    context.add_cookies([{"name": "_streamlit_user", "value": value, "url": server.url}])
    page = context.new_page()
    page.goto(f"{server.url}/?page=jobs")
    page.wait_for_url(re.compile(r"/auth/login\?next="), timeout=SETTLE_MS)
    assert oidc_users(accounts, "sub-leftover") == []
    assert "stalwart_login" not in {c["name"] for c in context.cookies()}
