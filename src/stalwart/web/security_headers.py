"""Security headers on every HTTP response of the ``st.App``: CSP, framing, sniffing, HSTS, ...

A plain ASGI middleware, like those in ``middleware.py``. It wraps Streamlit's own routes (the
page, ``/static/...``, ``/_stcore/...``) as well as ours, because ``st.App`` puts user
middleware outside Streamlit's. A header a route set itself is left as the route set it.

The Content-Security-Policy is the narrowest one Streamlit 1.67's frontend runs under; each
source beyond ``'self'`` is there for a reason that ``SECURITY.md`` ("Transport and headers")
gives with its evidence, and ``tests/e2e/test_security_headers_browser.py`` loads the pages in
Chromium and fails on any violation.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stalwart.web.proxies import IPNetwork, TrustedProxies

#: one year, with subdomains; not ``preload``: that is a promise only the domain's owner makes
HSTS: Final = "max-age=31536000; includeSubDomains"

_INLINE_SCRIPT_RE: Final = re.compile(
    r"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.IGNORECASE | re.DOTALL
)


def streamlit_index_html() -> Path | None:
    """Streamlit's page shell (``streamlit/static/index.html``), found without importing it."""
    spec = find_spec("streamlit")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static" / "index.html"
    return path if path.is_file() else None


def inline_script_hashes(html: str) -> list[str]:
    """CSP sources (``'sha256-…'``) for each inline ``<script>`` of ``html``, in order."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT_RE.findall(html)
    ]


def _streamlit_script_hashes() -> list[str]:
    # Read from the installed Streamlit, so an upgrade that changes its one inline script
    # (`window.prerenderReady = false`) keeps the page working without editing this file.
    path = streamlit_index_html()
    return inline_script_hashes(path.read_text(encoding="utf-8")) if path is not None else []


def content_security_policy(script_hashes: Iterable[str] | None = None) -> str:
    """The CSP for the app; ``script_hashes`` default to those of Streamlit's ``index.html``."""
    hashes = list(_streamlit_script_hashes() if script_hashes is None else script_hashes)
    directives = {
        "default-src": ["'self'"],
        # blob: components v2 given as strings (nav.js, journal.js) are wrapped in a Blob by
        # the frontend and import()ed from its object URL. 'wasm-unsafe-eval': protobuf's
        # long.js compiles a tiny WebAssembly module at start-up; it allows WebAssembly only,
        # not eval() or new Function().
        "script-src": ["'self'", *hashes, "blob:", "'wasm-unsafe-eval'"],
        # Emotion (Streamlit's CSS-in-JS) and st.html("<style>") insert <style> elements
        # without a nonce, with rules computed at run time: no hash can list them.
        "style-src": ["'self'", "'unsafe-inline'"],
        # data: the data grid's SVG icons (st.dataframe, st.data_editor) and a KaTeX font
        # that Streamlit's CSS inlines.
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        # 'self' matches ws: and wss: to the page's own host and port (CSP Level 3), so the
        # websocket to /_stcore/stream needs no more. Workers, frames and media fall back to
        # default-src.
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def security_headers(csp: str) -> dict[str, str]:
    """The headers set on every HTTP response (HSTS aside: that one depends on the request)."""
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def trusted_proxies_from_environment() -> list[str] | None:
    """``STALWART_TRUSTED_PROXIES`` read at app build time; None if the settings do not load.

    None makes the middleware read the running app's config on its first request instead
    (invalid settings stop the app in its lifespan anyway, with the message that names them).
    """
    from stalwart.core.config import load_config
    from stalwart.errors import ConfigError

    try:
        return list(load_config().trusted_proxies)
    except ConfigError:
        return None


class SecurityHeadersMiddleware:
    """Add the security headers to each HTTP response that does not already carry them.

    ``Strict-Transport-Security`` is added only to requests that came over TLS: the ASGI scheme
    is ``https``, or the peer is one of ``trusted_proxies`` (CIDRs) and says
    ``X-Forwarded-Proto: https``. With ``trusted_proxies=None`` the list is read from the
    running app's config on the first request. Websocket and lifespan scopes pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: Sequence[str] | None = None,
        csp: str | None = None,
    ) -> None:
        self.app = app
        self._proxies = TrustedProxies(trusted_proxies)
        self._headers = list(security_headers(csp or content_security_policy()).items())

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """The proxies whose ``X-Forwarded-Proto`` is believed."""
        return self._proxies.networks

    def over_tls(self, scope: Scope) -> bool:
        """Whether the browser reached us over TLS, directly or through a trusted proxy."""
        return self._proxies.is_tls(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = self._headers
        if self.over_tls(scope):
            headers = [*headers, ("Strict-Transport-Security", HSTS)]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response = MutableHeaders(scope=message)
                for name, value in headers:
                    if name not in response:
                        response[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
