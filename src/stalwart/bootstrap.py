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
from stalwart.core.logs import configure_logging, get_logger
from stalwart.core.metrics import Metrics
from stalwart.core.migrations import migrate


@dataclass(frozen=True)
class AppContext:
    """What the running app is made of; handed to every layer that needs it."""

    config: AppConfig
    db: DB
    #: get_or_compute for pages and services; the DB's units of work invalidate it
    cache: Cache
    #: what /metrics serves for this process
    metrics: Metrics


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
        configure_logging(cfg.log_level, json=cfg.log_json, stream=log_stream)
        cache = Cache.from_config(cfg)
        db = DB.from_config(cfg, invalidator=cache)
        if cfg.migrate_on_start if run_migrations is None else run_migrations:
            migrate(db)
        metrics = Metrics()
        metrics.watch_cache(cache)
        ctx = AppContext(config=cfg, db=db, cache=cache, metrics=metrics)
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
            _current.db.dispose()
            _current.cache.close()
            _current = None
