"""The security headers middleware over HTTP (Starlette's TestClient): every header, HSTS only
over TLS, X-Forwarded-Proto believed only from a trusted proxy, a route's own header kept.

The same middleware in front of the real server (Streamlit's page, static files and /_stcore
endpoints) is tested in ``tests/e2e/test_security_headers.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from stalwart.bootstrap import init_app, shutdown_app
from stalwart.core.config import load_config
from stalwart.web.asgi import app_options
from stalwart.web.middleware import IdentityCookieMiddleware
from stalwart.web.security_headers import (
    HSTS,
    SecurityHeadersMiddleware,
    content_security_policy,
    inline_script_hashes,
    streamlit_index_html,
)

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 behind its TestClient; httpx is what is installed.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TRUSTED = ["10.0.0.0/8", "fd00::/8"]
ALWAYS = {
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-opener-policy",
}


async def page(_request: Request) -> HTMLResponse:
    return HTMLResponse("<h1>hi</h1>")


async def own_headers(_request: Request) -> PlainTextResponse:
    # A route that deliberately sets its own policy: the middleware must leave it alone.
    return PlainTextResponse(
        "framed",
        headers={"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "default-src *"},
    )


async def fails(_request: Request) -> JSONResponse:
    return JSONResponse({"error": "nope"}, status_code=500)


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def make_app(trusted_proxies: list[str] | None = TRUSTED) -> Starlette:
    middleware = [Middleware(SecurityHeadersMiddleware, trusted_proxies=trusted_proxies)]
    routes = [
        Route("/", page),
        Route("/own", own_headers),
        Route("/fails", fails),
        WebSocketRoute("/ws", echo),
    ]
    return Starlette(routes=routes, middleware=middleware)


def client(
    *, peer: str = "203.0.113.9", tls: bool = False, app: Starlette | None = None
) -> TestClient:
    return TestClient(
        app or make_app(),
        base_url="https://testserver" if tls else "http://testserver",
        client=(peer, 40000),
    )


def test_every_response_gets_the_headers() -> None:
    with client() as http:
        for path in ("/", "/fails", "/no-such-page"):
            response = http.get(path)
            assert ALWAYS.issubset(response.headers), path
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
            assert response.headers["cross-origin-opener-policy"] == "same-origin"
            policy = response.headers["permissions-policy"]
            assert {"camera=()", "microphone=()", "geolocation=()"} <= {
                item.strip() for item in policy.split(",")
            }
            assert response.headers["content-security-policy"] == content_security_policy()
            # Plain HTTP from an untrusted peer: no HSTS (a browser would ignore it anyway).
            assert "strict-transport-security" not in response.headers


def test_the_policy_has_the_required_directives() -> None:
    directives = {
        part.split()[0]: part.split()[1:]
        for part in content_security_policy().split(";")
        if part.strip()
    }
    assert directives["default-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"]
    assert directives["form-action"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    # Scripts: never eval() or inline scripts in general; only the page's own inline script
    # by hash.
    scripts = directives["script-src"]
    assert "'unsafe-eval'" not in scripts
    assert "'unsafe-inline'" not in scripts
    assert "'self'" in scripts


def test_streamlit_inline_scripts_are_allowed_by_hash() -> None:
    index = streamlit_index_html()
    assert index is not None, "Streamlit's index.html not found"
    hashes = inline_script_hashes(index.read_text(encoding="utf-8"))
    assert hashes, "Streamlit's page has no inline script any more: drop the hash code"
    script_src = content_security_policy().split("script-src", 1)[1].split(";", 1)[0]
    for source in hashes:
        assert source in script_src


def test_inline_script_hashes_match_the_csp_spec_example() -> None:
    # The example in CSP Level 2's "hash-source" section (alert('Hello, world.');).
    html = "<script>alert('Hello, world.');</script><script src='x.js'></script>"
    assert inline_script_hashes(html) == ["'sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng='"]


def test_a_header_the_route_set_is_kept() -> None:
    with client() as http:
        response = http.get("/own")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["content-security-policy"] == "default-src *"
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    # ... and the ones it did not set are added.
    assert response.headers["x-content-type-options"] == "nosniff"


def test_hsts_over_tls() -> None:
    with client(tls=True) as http:
        response = http.get("/")
    assert response.headers["strict-transport-security"] == HSTS
    assert HSTS == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize("peer", ["10.1.2.3", "fd00::5", "::ffff:10.9.9.9"])
def test_hsts_when_a_trusted_proxy_says_https(peer: str) -> None:
    with client(peer=peer) as http:
        assert http.get("/", headers={"X-Forwarded-Proto": "https"}).headers[
            "strict-transport-security"
        ] == (HSTS)
        # The same proxy saying http: no HSTS.
        plain = http.get("/", headers={"X-Forwarded-Proto": "http"})
        assert "strict-transport-security" not in plain.headers
        assert "strict-transport-security" not in http.get("/").headers


def test_a_proxy_chain_counts_the_nearest_proxy() -> None:
    with client(peer="10.1.2.3") as http:
        # A client sent "https" itself and the trusted proxy appended what it saw: "http".
        spoofed = http.get("/", headers={"X-Forwarded-Proto": "https, http"})
        assert "strict-transport-security" not in spoofed.headers
        chained = http.get("/", headers={"X-Forwarded-Proto": "http, HTTPS"})
        assert chained.headers["strict-transport-security"] == HSTS


@pytest.mark.parametrize("peer", ["203.0.113.9", "127.0.0.1", "192.168.1.1", "fe80::1", "x"])
def test_x_forwarded_proto_from_an_untrusted_peer_is_ignored(peer: str) -> None:
    with client(peer=peer) as http:
        response = http.get("/", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in response.headers
    assert ALWAYS.issubset(response.headers)


def test_no_trusted_proxies_means_none_is_believed() -> None:
    with client(peer="10.1.2.3", app=make_app([])) as http:
        response = http.get("/", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in response.headers


def test_websockets_pass_through() -> None:
    with client() as http, http.websocket_connect("/ws") as ws:
        ws.send_text("ping")
        assert ws.receive_text() == "ping"


@pytest.fixture
def running_app_trusting_10_8(tmp_path: Path) -> Iterator[None]:
    init_app(load_config(data_dir=tmp_path, trusted_proxies=["10.0.0.0/8"]), run_migrations=True)
    try:
        yield
    finally:
        shutdown_app()


@pytest.mark.usefixtures("running_app_trusting_10_8")
def test_without_a_list_the_running_apps_config_is_read() -> None:
    app = make_app(trusted_proxies=None)
    with client(peer="10.1.2.3", app=app) as http:
        trusted = http.get("/", headers={"X-Forwarded-Proto": "https"})
    with client(peer="203.0.113.9", app=app) as http:
        untrusted = http.get("/", headers={"X-Forwarded-Proto": "https"})
    assert trusted.headers["strict-transport-security"] == HSTS
    assert "strict-transport-security" not in untrusted.headers


def test_app_options_put_the_headers_outermost_with_the_configured_proxies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STALWART_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STALWART_TRUSTED_PROXIES", "10.0.0.5, 172.16.0.0/12")
    first = app_options()["middleware"][0]
    assert first.cls is SecurityHeadersMiddleware
    assert first.kwargs["trusted_proxies"] == ["10.0.0.5/32", "172.16.0.0/12"]

    # Settings that do not load: the list is read from the running app on first use instead.
    monkeypatch.setenv("STALWART_TRUSTED_PROXIES", "not-an-address")
    assert app_options()["middleware"][0].kwargs["trusted_proxies"] is None


@pytest.mark.parametrize(
    ("peer", "tls", "proto", "secure"),
    [
        ("203.0.113.9", True, None, True),  # TLS to us directly
        ("10.1.2.3", False, "https", True),  # a trusted proxy terminated TLS
        ("10.1.2.3", False, "http", False),
        ("203.0.113.9", False, "https", False),  # anyone else saying so is not believed
        ("127.0.0.1", False, "https", False),
    ],
)
def test_the_identity_cookie_is_secure_only_over_tls_or_from_a_trusted_proxy(
    peer: str, tls: bool, proto: str | None, secure: bool
) -> None:
    app = Starlette(
        routes=[Route("/", page)],
        middleware=[Middleware(IdentityCookieMiddleware, trusted_proxies=TRUSTED)],
    )
    with client(peer=peer, tls=tls, app=app) as http:
        response = http.get("/", headers={"X-Forwarded-Proto": proto} if proto else {})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("stalwart_sid=")
    assert "HttpOnly" in cookie
    assert ("; Secure" in cookie) is secure


def test_app_options_give_the_identity_cookie_the_same_proxies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STALWART_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STALWART_TRUSTED_PROXIES", "10.0.0.5")
    (identity,) = [m for m in app_options()["middleware"] if m.cls is IdentityCookieMiddleware]
    assert identity.kwargs["trusted_proxies"] == ["10.0.0.5/32"]
