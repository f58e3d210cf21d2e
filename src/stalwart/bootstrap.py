"""The composition root: ``init_app()`` builds config, logging, cache, database and metrics once.

Nothing else in Stalwart builds process-wide objects; pages, the CLI and the web routes ask
``current_app()`` for the context that ``init_app()`` made.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TextIO

from stalwart.core.cache import Cache
from stalwart.core.config import AppConfig, load_config
from stalwart.core.database import DB
from stalwart.core.error_reports import install_error_reports
from stalwart.core.jobs import count_jobs
from stalwart.core.logs import configure_logging, get_logger
from stalwart.core.metrics import BuildInfo, Metrics
from stalwart.core.migrations import migrate
from stalwart.core.tracking import Tracker, install_tracker
from stalwart.services.auth_service import AuthService


@dataclass(frozen=True)
class AppContext:
    """What the running app is made of; handed to every layer that needs it."""

    config: AppConfig
    db: DB
    #: get_or_compute for pages and services; the DB's units of work invalidate it
    cache: Cache
    #: what /metrics serves for this process
    metrics: Metrics
    #: accounts, sign-in, login sessions and the audited access check
    auth: AuthService
    #: what ``core.tracking.track`` records events with (installed for this process)
    tracker: Tracker


_lock = threading.Lock()
_current: AppContext | None = None


def init_app(
    config: AppConfig | None = None,
    *,
    run_migrations: bool | None = None,
    log_stream: TextIO | None = None,
) -> AppContext:
    """Build (once per process) the app's context; migrate the schema if configured to."""
    global _current
    with _lock:
        if _current is not None and config is None:
            return _current
        cfg = config or load_config()
        configure_logging(
            cfg.log_level,
            json=cfg.log_json,
            stream=log_stream,
            pii_mode=cfg.pii_log_mode,
            pii_key=cfg.secret_key.get_secret_value(),
        )
        cache = Cache.from_config(cfg)
        # Before the database: every transaction of it is measured, migrations included.
        metrics = Metrics.from_config(cfg, build=BuildInfo.detect())
        db = DB.from_config(cfg, invalidator=cache, monitor=metrics)
        if cfg.migrate_on_start if run_migrations is None else run_migrations:
            migrate(db)
        metrics.watch_cache(cache)
        metrics.watch_jobs(lambda: count_jobs(db))
        metrics.count_errors()
        install_error_reports(db)  # log_error's reports, also stored for the System page
        auth = AuthService(db, cfg)
        tracker = Tracker(db, cfg.secret_key.get_secret_value())
        install_tracker(tracker)
        ctx = AppContext(
            config=cfg, db=db, cache=cache, metrics=metrics, auth=auth, tracker=tracker
        )
        _current = ctx
        get_logger(__name__).info(
            "app initialised",
            environment=cfg.environment,
            database=db.safe_url,
            cache=cfg.cache_backend,
        )
        return ctx


def current_app() -> AppContext:
    """The context built by ``init_app()``; builds it on first use."""
    return _current if _current is not None else init_app()


def shutdown_app() -> None:
    """Release the database connections of the current context (used at shutdown and in tests)."""
    global _current
    with _lock:
        if _current is not None:
            install_tracker(None)
            install_error_reports(None)
            _current.db.dispose()  # writes the events still pending first
            _current.cache.close()
            _current.metrics.close()
            _current = None
