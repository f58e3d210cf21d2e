"""Security headers and XSRF protection on the real server, and the CSP in a real browser.

Over HTTP: Streamlit's page, its static files, the /_stcore endpoints and our routes all carry
the headers; HSTS follows ``STALWART_TRUSTED_PROXIES``; the upload endpoint refuses a request
without Streamlit's XSRF token. In Chromium: the pages render under the policy with no CSP
violation at all, while an injected inline script is blocked (so the listener is live).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from stalwart.web.security_headers import HSTS
from tests.e2e.browser import expect_app_run, wait_for_app_idle
from tests.e2e.conftest import LAUNCHERS

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Page

    from tests.e2e.conftest import LiveApp, LiveAppFactory

HEADERS = {
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-opener-policy",
}
XSRF_COOKIE = "_streamlit_xsrf"

# Records every violation the page reports, from before its first script runs.
VIOLATION_LISTENER_JS = """
(() => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__cspViolations.push({
      directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile,
      line: e.lineNumber, sample: e.sample,
    });
  });
})();
"""


def assets_of(html: str) -> list[str]:
    """The page's own script and stylesheet URLs (relative, as Streamlit writes them)."""
    return re.findall(r'(?:src|href)="\./(static/(?:js|css)/[^"]+)"', html)


def directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


@pytest.mark.parametrize(
    ("trusted", "hsts"),
    [("127.0.0.1/32", True), ("10.0.0.0/8", False)],
    ids=["trusted-proxy", "untrusted-peer"],
)
def test_every_route_of_the_real_server_has_the_headers(
    live_app_factory: LiveAppFactory, trusted: str, hsts: bool
) -> None:
    app = live_app_factory(
        "sqlite",
        STALWART_TRUSTED_PROXIES=trusted,
        STALWART_AUTH_MODE="off",
        # Uvicorn (Streamlit's server) believes X-Forwarded-* from 127.0.0.1 and ::1 unless
        # told otherwise, and rewrites the request's scheme before our middleware sees it;
        # switched off here so that this test sees the middleware's own decision.
        FORWARDED_ALLOW_IPS="",
    )
    index = httpx.get(app.url + "/", timeout=10)
    assets = assets_of(index.text)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    paths = [
        "/",
        "/?page=form-demo",
        *(f"/{asset}" for asset in assets[:3]),
        "/favicon.png",
        "/_stcore/health",
        "/_stcore/host-config",
        "/healthz",
        "/readyz",
        "/metrics",  # 200 here: the test runs on the server's machine (loopback)
        "/static/js/no-such-file.js",  # Streamlit's 404
    ]
    for path in paths:
        for proto in ("https", None):
            extra = {"X-Forwarded-Proto": proto} if proto else {}
            response = httpx.get(app.url + path, headers=extra, timeout=10)
            assert HEADERS.issubset(response.headers), (path, dict(response.headers))
            assert response.headers.get_list("content-security-policy") == [
                response.headers["content-security-policy"]
            ], path  # once, not once per layer
            expected = HSTS if hsts and proto == "https" else None
            assert response.headers.get("strict-transport-security") == expected, (path, proto)
    # Streamlit sets nosniff on some responses itself; it is not sent twice.
    script = httpx.get(f"{app.url}/{assets[0]}", timeout=10)
    assert script.headers.get_list("x-content-type-options") == ["nosniff"]


@pytest.mark.parametrize("launcher", [name for name in LAUNCHERS if name != "app run"])
def test_every_launcher_serves_the_headers(live_app_factory: LiveAppFactory, launcher: str) -> None:
    app = live_app_factory("sqlite", command=LAUNCHERS[launcher], STALWART_AUTH_MODE="off")
    for path in ("/", "/_stcore/health", "/healthz"):
        response = httpx.get(app.url + path, timeout=10)
        assert HEADERS.issubset(response.headers), (launcher, path)


def test_xsrf_protection_is_on(live_app_factory: LiveAppFactory) -> None:
    app = live_app_factory("sqlite", STALWART_AUTH_MODE="off")
    upload = f"{app.url}/_stcore/upload_file/no-such-session/file-1"
    files = {"file": ("a.csv", b"a,b\n1,2\n", "text/csv")}

    # No token: refused before anything else is looked at.
    refused = httpx.put(upload, files=files, timeout=10)
    assert refused.status_code == 403
    assert "XSRF" in refused.text

    # A token that does not match the cookie: refused too.
    with httpx.Client(timeout=10) as browser:
        browser.get(app.url + "/_stcore/health")  # Streamlit sets its XSRF cookie here
        token = browser.cookies.get(XSRF_COOKIE)
        assert token, "Streamlit set no XSRF cookie: server.enableXsrfProtection is off"
        forged = browser.put(upload, files=files, headers={"X-Xsrftoken": "2|00|00|1"})
        assert forged.status_code == 403

        # The cookie's token in the header passes the XSRF check and reaches the next one
        # (the session id), so the 403s above were the XSRF check.
        passed = browser.put(upload, files=files, headers={"X-Xsrftoken": token})
        assert passed.status_code == 400
        assert "session" in passed.text.lower()


# --- the browser --------------------------------------------------------------------------


@pytest.mark.browser
def test_pages_render_under_the_csp_with_no_violation(
    live_app_factory: LiveAppFactory, page: Page
) -> None:
    from playwright.sync_api import expect

    app: LiveApp = live_app_factory("sqlite", STALWART_AUTH_MODE="off")
    page.context.add_init_script(VIOLATION_LISTENER_JS)
    console: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "content security policy" in message.text.lower() or "csp" in message.text.lower():
            console.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))

    def violations() -> list[dict[str, Any]]:
        return list(page.evaluate("() => window.__cspViolations || []"))

    def heading() -> Any:
        return expect(page.locator('[data-testid="stMain"] h1').first)

    def go(slug: str) -> None:
        with expect_app_run(page):
            page.locator(f'.st-key-nav a[data-target="{slug}"]').click()

    # The page itself is served under the policy (the test fails if it is taken away).
    response = page.goto(app.url)
    assert response is not None
    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    wait_for_app_idle(page)
    heading().to_have_text("Welcome to Stalwart")
    # The navigation links are a component v2: they appear once its script ran, unless the
    # policy blocked it (which shows up as a violation).
    page.wait_for_function("""() => window.__cspViolations.length > 0
                 || !!document.querySelector('.st-key-nav a[data-target="form-demo"]')""")
    assert violations() == [], "the home page broke the CSP"

    # The form page: the navigation and journal components (components v2) run, typing is
    # journalled and sent.
    go("form-demo")
    heading().to_contain_text("Project brief")
    name = page.locator(".st-key-sw__project-brief-1__name input")
    name.click()
    page.keyboard.type("Under a strict CSP", delay=15)
    with expect_app_run(page):
        page.locator('[data-testid="stMain"] h1').first.click()  # blur commits the field
    expect(name).to_have_value(re.compile("Under a strict CSP"))

    go("job-demo")
    heading().to_have_text("Job demo")
    page.wait_for_selector(".st-key-jd-paths input")

    go("jobs")
    heading().to_have_text("Jobs")

    # A fresh load straight onto the form page (the journal replays from localStorage).
    page.goto(f"{app.url}/?page=form-demo&brief=1")
    wait_for_app_idle(page)
    expect(name).to_have_value(re.compile("Under a strict CSP"))

    assert violations() == []
    assert console == []

    # The listener is live: an injected inline script is refused and reported.
    ran = page.evaluate("""() => {
             window.__injected = false;
             const s = document.createElement("script");
             s.textContent = "window.__injected = true";
             document.head.appendChild(s);
             return window.__injected;
           }""")
    assert ran is False
    page.wait_for_function("() => window.__cspViolations.length > 0")
    assert [v["directive"] for v in violations()] == ["script-src-elem"]
