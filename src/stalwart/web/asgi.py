"""Build the ``st.App``: Streamlit's UI plus Stalwart's routes, middleware and lifespan.

``app run`` serves ``build_app()``; ``app.py`` at the repository root builds the same app from
``SHELL_SCRIPT`` and ``app_options()``, so ``streamlit run app.py``, ``uvicorn app:app`` and the
CLI all run the same thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import streamlit as st
from starlette.middleware import Middleware

from stalwart import __version__
from stalwart.bootstrap import init_app, shutdown_app
from stalwart.core.logs import get_logger, log_error
from stalwart.errors import StalwartError
from stalwart.job_runtime import start_job_engine, stop_job_engine
from stalwart.web.middleware import IdentityCookieMiddleware, TraceIdMiddleware
from stalwart.web.routes import health_routes
from stalwart.web.server_tuning import (
    HEAVY_MODULES,
    freeze_startup_heap,
    nodelay_on_listening_sockets,
    skip_collection_after_every_run,
)

# Absolute, so the script is found whatever the working directory or launcher (st.App resolves a
# relative path against sys.argv[0], which is the `app` console script when run from the CLI).
SHELL_SCRIPT: Final = Path(__file__).resolve().parent.parent / "pages" / "shell.py"

_log = get_logger(__name__)


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[None]:
    """Build the app context and start the job engine before the first request; stop both after."""
    try:
        # init_app() runs migrations: keep that blocking work off the event loop.
        ctx = await asyncio.to_thread(init_app)
    except StalwartError as err:
        _log.error("app failed to start", error=err.message, action=err.action)
        raise
    # Workers (embedded engine) and the scheduler run beside the server; with the rq engine this
    # starts no workers, only the queue pages enqueue through.
    await asyncio.to_thread(start_job_engine, ctx)
    # After init_app() and Streamlit's runtime start, before the first session: from here on the
    # collection Streamlit runs after every script run skips everything alive now.
    await asyncio.to_thread(freeze_startup_heap, (*HEAVY_MODULES, "stalwart.pages"))
    if not ctx.config.gc_after_every_run:
        skip_collection_after_every_run()
    # `streamlit run app.py` bound its socket before this code loaded: set TCP_NODELAY now.
    nodelay_on_listening_sockets()
    _log.info(
        "app started",
        version=__version__,
        environment=ctx.config.environment,
        database=ctx.db.safe_url,
    )
    try:
        yield
    finally:
        _log.info("app stopping")
        # Before the database goes: running jobs are handed back to the queue, not cut off.
        await asyncio.to_thread(stop_job_engine)
        await asyncio.to_thread(shutdown_app)
        _log.info("app stopped")


def log_script_error(err: Exception) -> bool:
    """Log an exception that escaped the page shell; Streamlit still shows its default error."""
    log_error(err, {"where": "script"})
    return False


def app_options() -> dict[str, Any]:
    """Everything ``st.App`` takes besides the script: lifespan, routes, middleware, hooks."""
    return {
        "lifespan": lifespan,
        "routes": health_routes(),
        "middleware": [Middleware(TraceIdMiddleware), Middleware(IdentityCookieMiddleware)],
        "on_script_error": log_script_error,
    }


def build_app() -> st.App:
    """The ASGI app: the page shell, /healthz, /readyz, the trace-id middleware and lifespan."""
    return st.App(SHELL_SCRIPT, **app_options())
