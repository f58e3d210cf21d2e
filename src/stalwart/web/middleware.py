"""ASGI middleware of the ``st.App``.

Written as plain ASGI callables rather than Starlette's ``BaseHTTPMiddleware``: that class wraps
every response in a task and a memory stream, and these run on every request of every user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stalwart.core.logs import new_trace_id, trace
from stalwart.core.metrics import Metrics
from stalwart.core.session import COOKIE_NAME, new_token, valid_token
from stalwart.web.proxies import TrustedProxies

TRACE_HEADER: Final = "X-Trace-Id"
#: the websocket each browser tab holds open to the Streamlit server
STREAM_PATH: Final = "/_stcore/stream"

# Same shape as new_trace_id() and nginx's $request_id. Anything else from a client is replaced,
# so a forged header cannot inject text into the logs.
_TRACE_ID_RE: Final = re.compile(r"[0-9a-f]{32}")
#: W3C trace context: version, trace id, parent span id, flags (what our outbound calls send)
_TRACEPARENT_RE: Final = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class TraceIdMiddleware:
    """Bind a trace id to each HTTP request's logs and return it in the ``X-Trace-Id`` header.

    A well-formed incoming ``X-Trace-Id`` (set by a proxy in front), else the trace id of a
    W3C ``traceparent`` (``app health --url`` sends one), is kept so that one id follows the
    request through every hop. Websocket and lifespan scopes pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        incoming = headers.get(TRACE_HEADER, "").lower()
        parent = _TRACEPARENT_RE.fullmatch(headers.get("traceparent", "").lower())
        if _TRACE_ID_RE.fullmatch(incoming):
            trace_id = incoming
        elif parent is not None:
            trace_id = parent.group(1)
        else:
            trace_id = new_trace_id()

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[TRACE_HEADER] = trace_id
            await send(message)

        with trace(trace_id):
            await self.app(scope, receive, send_with_trace_id)


class IdentityCookieMiddleware:
    """Give every browser an opaque random identity in an HttpOnly, SameSite=Lax cookie.

    Set on HTML page responses only: the page load is the first request of a visit, and
    asset requests fired in parallel with it would otherwise each mint a different identity.
    ``Secure`` is added when the request came over TLS: directly, or through a proxy in
    ``trusted_proxies`` that says so in ``X-Forwarded-Proto`` (anyone else could say it).
    The Streamlit script reads the cookie from the websocket's opening request
    (``st.context.cookies``) in ``bootstrap_session()``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_age_s: int = 400 * 24 * 3600,
        trusted_proxies: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.max_age_s = max_age_s
        self._proxies = TrustedProxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if valid_token(_cookie(headers.get("cookie", ""), COOKIE_NAME)):
            await self.app(scope, receive, send)
            return
        secure = self._proxies.is_tls(scope)
        cookie = (
            f"{COOKIE_NAME}={new_token()}; Path=/; Max-Age={self.max_age_s}; HttpOnly; "
            f"SameSite=Lax{'; Secure' if secure else ''}"
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                response = MutableHeaders(scope=message)
                if response.get("content-type", "").startswith("text/html"):
                    response.append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _cookie(header: str, name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


class SessionGaugeMiddleware:
    """Count the browser tabs connected to this process (``stalwart_active_sessions``).

    A tab is connected while its Streamlit websocket (``/_stcore/stream``) is open: one gauge
    increment when it opens and one decrement when it closes, nothing per message.
    """

    def __init__(self, app: ASGIApp, *, metrics: Callable[[], Metrics]) -> None:
        self.app = app
        #: the app's metrics, looked up when a tab connects (they exist only after start-up)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "websocket" or not scope["path"].endswith(STREAM_PATH):
            await self.app(scope, receive, send)
            return
        metrics = self.metrics()
        metrics.session_opened()
        try:
            await self.app(scope, receive, send)
        finally:
            metrics.session_closed()
