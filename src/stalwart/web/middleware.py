"""ASGI middleware of the ``st.App``.

Written as plain ASGI callables rather than Starlette's ``BaseHTTPMiddleware``: that class wraps
every response in a task and a memory stream, and these run on every request of every user.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stalwart.core.logs import new_trace_id, trace

TRACE_HEADER: Final = "X-Trace-Id"

# Same shape as new_trace_id() and nginx's $request_id. Anything else from a client is replaced,
# so a forged header cannot inject text into the logs.
_TRACE_ID_RE: Final = re.compile(r"[0-9a-f]{32}")


class TraceIdMiddleware:
    """Bind a trace id to each HTTP request's logs and return it in the ``X-Trace-Id`` header.

    A well-formed incoming ``X-Trace-Id`` (set by a proxy in front) is kept so that one id
    follows the request through every hop. Websocket and lifespan scopes pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = Headers(scope=scope).get(TRACE_HEADER, "").lower()
        trace_id = incoming if _TRACE_ID_RE.fullmatch(incoming) else new_trace_id()

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[TRACE_HEADER] = trace_id
            await send(message)

        with trace(trace_id):
            await self.app(scope, receive, send_with_trace_id)
