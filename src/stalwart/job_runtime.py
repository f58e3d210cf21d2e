"""Jobs in a running process: the ``JobQueue`` pages use, and the engine and scheduler it runs.

The app's lifespan calls ``start_job_engine(ctx)`` after ``init_app()`` and
``stop_job_engine()`` before ``shutdown_app()``. Pages call ``job_queue()`` to enqueue, poll,
cancel, retry and list. With ``STALWART_JOBS_ENGINE=rq`` this process runs no jobs itself:
``app jobs worker --engine rq`` processes do.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.job_engines import EmbeddedEngine, build_dispatcher
from stalwart.core.jobs import JobQueue, JobSettings
from stalwart.core.logs import get_logger
from stalwart.core.schedules import Schedule, Scheduler
from stalwart.services.job_service import JobService

log = get_logger(__name__)

#: Schedules every app process offers to run (one process wins the lock). Backups and the
#: restore drill add theirs here.
SCHEDULES: tuple[Schedule, ...] = ()


@dataclass
class JobRuntime:
    """What this process runs for jobs."""

    queue: JobQueue
    engine: EmbeddedEngine | None
    scheduler: Scheduler | None


_lock = threading.Lock()
_runtime: JobRuntime | None = None


def start_job_engine(
    ctx: AppContext,
    *,
    schedules: Sequence[Schedule] | None = None,
    workers: int | None = None,
) -> JobRuntime:
    """Start this process's job workers (embedded engine) and scheduler, once."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        cfg = ctx.config
        settings = JobSettings.from_config(cfg)
        count = cfg.jobs_workers if workers is None else workers
        engine: EmbeddedEngine | None = None
        if cfg.jobs_engine == "embedded" and count > 0:
            engine = EmbeddedEngine(ctx.db, settings, workers=count, metrics=ctx.metrics)
            queue = JobQueue(ctx.db, engine)
        else:
            queue = JobQueue(ctx.db, build_dispatcher(cfg, settings))
        chosen = SCHEDULES if schedules is None else tuple(schedules)
        scheduler = Scheduler(queue, chosen) if cfg.scheduler_enabled and chosen else None
        if engine is not None:
            engine.start()
        if scheduler is not None:
            scheduler.start()
        _runtime = JobRuntime(queue, engine, scheduler)
        log.info(
            "job runtime started",
            engine=cfg.jobs_engine,
            workers=count if engine else 0,
            schedules=len(chosen) if scheduler else 0,
        )
        return _runtime


def stop_job_engine(wait_s: float | None = None) -> None:
    """Stop the scheduler and the workers; unfinished jobs go back to the queue."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is None:
        return
    if runtime.scheduler is not None:
        runtime.scheduler.stop()
    if runtime.engine is not None:
        runtime.engine.stop(wait_s)
    log.info("job runtime stopped")


def current_runtime() -> JobRuntime | None:
    """What ``start_job_engine`` started in this process (None before, or after the stop)."""
    return _runtime


def job_queue(ctx: AppContext | None = None) -> JobQueue:
    """The JobQueue to use: the started runtime's, else one for the configured engine."""
    runtime = _runtime
    if runtime is not None and (ctx is None or runtime.queue.db is ctx.db):
        return runtime.queue
    ctx = ctx or current_app()
    return JobQueue(ctx.db, build_dispatcher(ctx.config))


def job_service(ctx: AppContext | None = None) -> JobService:
    """Jobs on behalf of users: the queue of ``job_queue`` behind the audited access check."""
    ctx = ctx or current_app()
    return JobService(job_queue(ctx), ctx.auth.access)
