"""Build the ``st.App``: Streamlit's UI plus Stalwart's routes, middleware and lifespan.

``app run`` serves ``build_app()``; ``app.py`` at the repository root builds the same app from
``SHELL_SCRIPT`` and ``app_options()``, so ``streamlit run app.py``, ``uvicorn app:app`` and the
CLI all run the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import streamlit as st
from starlette.middleware import Middleware

from stalwart import __version__
from stalwart.bootstrap import current_app, init_app, shutdown_app
from stalwart.core.config import AppConfig, load_config
from stalwart.core.logs import (
    capture_foreign_logs,
    configure_logging,
    get_logger,
    log_error,
    logging_configured,
)
from stalwart.errors import ConfigError, StalwartError
from stalwart.job_runtime import start_job_engine, stop_job_engine
from stalwart.monitoring import start_monitoring, stop_monitoring
from stalwart.services.deployments import record_deployment
from stalwart.services.uploads import upload_limit_mb
from stalwart.web.auth_routes import auth_routes
from stalwart.web.middleware import (
    IdentityCookieMiddleware,
    SessionGaugeMiddleware,
    TraceIdMiddleware,
)
from stalwart.web.oidc import oidc_app_options
from stalwart.web.routes import health_routes
from stalwart.web.security_headers import (
    SecurityHeadersMiddleware,
    trusted_proxies_from_environment,
)
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
    # Streamlit is imported by now (not when the CLI configured logging): its loggers too.
    capture_foreign_logs()
    # A deploy marker per process start (not per script run): version, commit, schema.
    await asyncio.to_thread(record_deployment, ctx.db)
    # Workers (embedded engine) and the scheduler run beside the server; with the rq engine this
    # starts no workers, only the queue pages enqueue through.
    await asyncio.to_thread(start_job_engine, ctx)
    # Readiness gauges on /metrics, and the alert dispatcher if a webhook is configured.
    await asyncio.to_thread(start_monitoring, ctx)
    # After init_app() and Streamlit's runtime start, before the first session: from here on the
    # collection Streamlit runs after every script run skips everything alive now.
    await asyncio.to_thread(freeze_startup_heap, (*HEAVY_MODULES, "stalwart.pages"))
    if not ctx.config.gc_after_every_run:
        skip_collection_after_every_run()
    streamlit_limits(ctx.config)
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
        await asyncio.to_thread(stop_monitoring)
        # Before the database goes: running jobs are handed back to the queue, not cut off.
        await asyncio.to_thread(stop_job_engine)
        await asyncio.to_thread(shutdown_app)
        _log.info("app stopped")


def streamlit_limits(cfg: AppConfig) -> None:
    """Streamlit's own limits and run settings from ours, for every launcher (set before the
    first session).

    The upload limit follows ``STALWART_UPLOAD_MAX_BYTES`` (the exact check is the service's);
    tables have no download button of Streamlit's (exports go through ``ExportService``: the
    ``export`` permission, audited, formula-safe CSV); in production an unexpected error shows
    the page's error id, never a traceback.
    """
    from streamlit import config

    config.set_option("client.disableDataExport", True, where_defined="stalwart")
    config.set_option(
        "server.maxUploadSize", upload_limit_mb(cfg.upload_max_bytes), where_defined="stalwart"
    )
    # One script thread per session at a time. With fast reruns, a full rerun (a link followed
    # from a focused text field) stops the running script and starts a second thread at once,
    # while the first is still inside a widget callback storing the field's commit: both then
    # change the same FormRuntime, a commit could be lost with an IndexError shown, or the
    # first thread's fragment rerun could take the user back to the page being left. Streamlit
    # documents this race for session data mutated in place. Without it the rerun waits for
    # the running script's next element (or its end), and our callbacks see the pending full
    # rerun (widgets.forms._full_rerun_pending).
    config.set_option("runner.fastReruns", False, where_defined="stalwart")
    if cfg.environment == "production":
        config.set_option("client.showErrorDetails", "none", where_defined="stalwart")


def log_script_error(err: Exception) -> bool:
    """Log an exception that escaped the page shell; Streamlit still shows its default error."""
    log_error(err, {"where": "script"})
    return False


def log_from_the_start() -> None:
    """JSON log lines from the first line the server writes, whatever the launcher.

    ``uvicorn app:app`` logs "Started server process" and ``streamlit run app.py`` prints its
    "You can now view your Streamlit app" banner before the lifespan runs ``init_app()``: so
    logging is configured (if ``app run`` did not already) and the banner is turned off as soon
    as the app is built. A bad setting is left for ``init_app()`` to report.
    """
    from streamlit import config

    config.set_option("logger.hideWelcomeMessage", True, where_defined="stalwart")
    # An uncaught exception in a script or callback is logged (through our JSON chain, with
    # its traceback) instead of drawn on stderr as a rich panel.
    config.set_option("logger.enableRich", False, where_defined="stalwart")
    # Imported so that its logging config is adopted too (Streamlit's server runs uvicorn).
    with contextlib.suppress(ImportError):
        import uvicorn.config  # noqa: F401
    if not logging_configured():
        try:
            cfg = load_config()
        except ConfigError:
            return
        configure_logging(
            cfg.log_level,
            json=cfg.log_json,
            pii_mode=cfg.pii_log_mode,
            pii_key=cfg.secret_key.get_secret_value(),
        )
    capture_foreign_logs()


def app_options() -> dict[str, Any]:
    """Everything ``st.App`` takes besides the script: lifespan, routes, middleware, hooks."""
    log_from_the_start()
    proxies = trusted_proxies_from_environment()
    return {
        "lifespan": lifespan,
        "routes": [*health_routes(), *auth_routes()],
        "middleware": [
            # Outermost: every response gets the headers, whatever the layers inside answer.
            Middleware(SecurityHeadersMiddleware, trusted_proxies=proxies),
            Middleware(TraceIdMiddleware),
            Middleware(IdentityCookieMiddleware, trusted_proxies=proxies),
            Middleware(SessionGaugeMiddleware, metrics=lambda: current_app().metrics),
        ],
        "on_script_error": log_script_error,
        # With OIDC set up: st.login's [auth] settings, from the environment (web.oidc).
        **oidc_app_options(),
    }


def build_app() -> st.App:
    """The ASGI app: the page shell, /healthz, /readyz, the trace-id middleware and lifespan."""
    return st.App(SHELL_SCRIPT, **app_options())
