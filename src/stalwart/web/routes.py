"""Operational HTTP routes served next to the Streamlit UI: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from stalwart import __version__
from stalwart.bootstrap import current_app
from stalwart.core.logs import log_error
from stalwart.monitoring import health_checks


async def healthz(_request: Request) -> JSONResponse:
    """Liveness: the process is up and serving; touches nothing else (no database)."""
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(_request: Request) -> JSONResponse:
    """Readiness: every dependency answers; 200 if all do, 503 otherwise, with one entry each.

    The checks (``core/health.py``) run at once, each bounded by
    ``STALWART_HEALTH_CHECK_TIMEOUT_S``. The route is as public as the UI, so a failure names
    only its kind and error id; host names and messages go to the log under that id.
    """
    try:
        # Blocking I/O goes to a thread so a slow database never stalls the websockets here.
        report = await asyncio.to_thread(health_checks().run)
    except Exception as err:  # a probe must answer 503, never 500, whatever broke
        error_id = log_error(err, {"check": "readiness"})
        body = {"status": "unavailable", "version": __version__, "error_id": error_id}
        return JSONResponse(body, status_code=503)
    return JSONResponse(
        {**report.as_dict(), "version": __version__},
        status_code=200 if report.ready else 503,
    )


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's metrics, for allowed scrapers only.

    With ``STALWART_METRICS_TOKEN`` set, a scraper sends ``Authorization: Bearer <token>``;
    without it, only clients on this machine (loopback) are answered.
    """
    ctx = current_app()
    token = ctx.config.metrics_token
    if token is not None:
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return JSONResponse(
                {"error": "send the metrics token as 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    elif not _is_loopback(request):
        return JSONResponse(
            {"error": "/metrics answers this machine only; set STALWART_METRICS_TOKEN"},
            status_code=403,
        )
    body = await asyncio.to_thread(ctx.metrics.exposition)
    return Response(body, media_type=ctx.metrics.content_type)


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def health_routes() -> list[BaseRoute]:
    """The routes to add to the ``st.App``."""
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
