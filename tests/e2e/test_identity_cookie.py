"""The identity cookie, over real HTTP: set once per browser, with the right flags."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from stalwart.core.session import COOKIE_NAME, valid_token

if TYPE_CHECKING:
    from tests.e2e.conftest import LiveAppFactory


def set_cookie(response: httpx.Response) -> str | None:
    ours = [
        v
        for k, v in response.headers.multi_items()
        if k == "set-cookie" and v.startswith(f"{COOKIE_NAME}=")
    ]
    assert len(ours) <= 1
    return ours[0] if ours else None


def token_of(cookie: str) -> str:
    return cookie.split(";")[0].split("=", 1)[1]


def test_identity_cookie_is_random_httponly_lax_and_kept(live_app_factory: LiveAppFactory) -> None:
    # The test client is the loopback peer: as a trusted proxy, its X-Forwarded-Proto counts
    # (an untrusted peer's does not: tests/integration/test_security_headers.py).
    app = live_app_factory("sqlite", STALWART_TRUSTED_PROXIES="127.0.0.1")
    first = set_cookie(httpx.get(app.url + "/"))
    second = set_cookie(httpx.get(app.url + "/"))
    assert first is not None
    assert second is not None
    assert valid_token(token_of(first))
    assert token_of(first) != token_of(second)  # one per browser, random
    flags = {part.strip().lower() for part in first.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= flags
    assert "secure" not in flags  # plain HTTP here

    # A browser that has a valid cookie keeps it; a forged one gets a fresh one.
    assert set_cookie(httpx.get(app.url + "/", cookies={COOKIE_NAME: token_of(first)})) is None
    assert set_cookie(httpx.get(app.url + "/", cookies={COOKIE_NAME: "x<script>"})) is not None

    # Behind a trusted TLS proxy the cookie is Secure.
    behind_tls = set_cookie(httpx.get(app.url + "/", headers={"X-Forwarded-Proto": "https"}))
    assert behind_tls is not None
    assert "secure" in behind_tls.lower()

    # Only page loads mint identities: routes and assets fired in parallel do not.
    for path in ("/healthz", "/readyz", "/_stcore/health"):
        assert set_cookie(httpx.get(app.url + path)) is None, path
