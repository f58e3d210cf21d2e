"""Health and alerts in a running process: the readiness checks that /readyz, ``app health``
and the alert dispatcher share, built once per app context.

The app's lifespan calls ``start_monitoring(ctx)`` after ``start_job_engine(ctx)`` (so the jobs
check sees the engine) and ``stop_monitoring()`` before stopping it. ``start_monitoring`` puts
the readiness gauges on ``/metrics``, starts the metric sampler (the System page's history,
``core.metric_history``; off with ``STALWART_METRICS_SAMPLE_INTERVAL_S=0``) and, with
``STALWART_ALERT_WEBHOOK_URL`` set, the embedded alert dispatcher.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.alerts import (
    AlertDispatcher,
    AlertState,
    MetricWindow,
    WebhookSender,
    default_rules,
    read_job_stats,
)
from stalwart.core.health import (
    HealthChecks,
    HealthCollector,
    cache_check,
    database_check,
    filesystem_check,
    free_bytes,
    job_backend_check,
    migrations_check,
)
from stalwart.core.job_engines import EmbeddedEngine
from stalwart.core.logs import get_logger
from stalwart.core.metric_history import MetricSampler
from stalwart.job_runtime import current_runtime

log = get_logger(__name__)

_lock = threading.Lock()
_checks: tuple[AppContext, HealthChecks] | None = None
_dispatcher: AlertDispatcher | None = None
_sampler: MetricSampler | None = None


def _engine() -> EmbeddedEngine | None:
    runtime = current_runtime()
    return runtime.engine if runtime is not None else None


def build_health_checks(ctx: AppContext) -> HealthChecks:
    """The readiness checks of ``ctx``: database, migrations, filesystem, cache, jobs.

    There is no object store setting yet; its check joins these when one exists.
    """
    cfg = ctx.config
    return HealthChecks(
        [
            database_check(ctx.db),
            migrations_check(ctx.db),
            filesystem_check(cfg.data_dir.resolve(), cfg.min_free_bytes),
            cache_check(ctx.cache),
            job_backend_check(cfg, _engine),
        ],
        timeout_s=cfg.health_check_timeout_s,
    )


def health_checks(ctx: AppContext | None = None) -> HealthChecks:
    """The readiness checks of ``ctx`` (the current app's by default), built once per context;
    building them puts the readiness gauges on the context's ``/metrics``."""
    global _checks
    ctx = ctx or current_app()
    with _lock:
        if _checks is not None and _checks[0] is ctx:
            return _checks[1]
        checks = build_health_checks(ctx)
        ctx.metrics.registry.register(
            HealthCollector(checks, ctx.config.data_dir.resolve(), ctx.config.min_free_bytes)
        )
        _checks = (ctx, checks)
        return checks


def build_alert_dispatcher(
    ctx: AppContext, url: str, checks: HealthChecks | None = None
) -> AlertDispatcher:
    """A dispatcher of the default rules over ``ctx``'s state, posting to ``url``."""
    checks = checks or health_checks(ctx)
    window = MetricWindow(ctx.metrics.registry)
    data_dir = ctx.config.data_dir.resolve()

    def read_state() -> AlertState:
        # Each part is read on its own: a database that is down must not hide a full disk.
        state = AlertState(report=checks.run(), min_free_bytes=ctx.config.min_free_bytes)
        try:
            window.take(time.monotonic())
            state.metrics = window
        except Exception as err:
            log.warning("alerts could not read the metrics", error=str(err))
        try:
            state.free_bytes = free_bytes(data_dir)
        except Exception as err:
            log.warning("alerts could not read the free space", error=str(err))
        database = state.report.get("database") if state.report else None
        if database is not None and database.status == "ok":
            try:
                state.jobs = read_job_stats(ctx.db)
            except Exception as err:
                log.warning("alerts could not read the jobs table", error=str(err))
        return state

    return AlertDispatcher(
        default_rules(),
        read_state,
        WebhookSender(url).send,
        interval_s=ctx.config.alert_interval_s,
    )


def build_metric_sampler(ctx: AppContext) -> MetricSampler:
    """The sampler of ``ctx``'s metrics into ``metric_samples`` (see ``core.metric_history``)."""
    cfg = ctx.config
    return MetricSampler(
        ctx.db,
        ctx.metrics.instruments,
        interval_s=cfg.metrics_sample_interval_s,
        retention=timedelta(days=cfg.history_retention_days),
    )


def start_monitoring(ctx: AppContext) -> AlertDispatcher | None:
    """Expose the readiness gauges, start the metric sampler (unless its interval is 0) and,
    if a webhook is configured, the alert dispatcher."""
    global _dispatcher, _sampler
    checks = health_checks(ctx)
    if ctx.config.metrics_sample_interval_s > 0:
        with _lock:
            if _sampler is None:
                _sampler = build_metric_sampler(ctx)
                _sampler.start()
    url = ctx.config.alert_webhook_url
    if url is None:
        return None
    with _lock:
        if _dispatcher is None:
            _dispatcher = build_alert_dispatcher(ctx, url.get_secret_value(), checks)
            _dispatcher.start()
        return _dispatcher


def stop_monitoring() -> None:
    """Stop the alert dispatcher and the metric sampler, if they run."""
    global _dispatcher, _sampler
    with _lock:
        dispatcher, _dispatcher = _dispatcher, None
        sampler, _sampler = _sampler, None
    if dispatcher is not None:
        dispatcher.stop()
    if sampler is not None:
        sampler.stop()
