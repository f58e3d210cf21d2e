"""``app jobs``: run workers; list, cancel and retry jobs."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Literal

import typer

from stalwart.cli.context import cli_context
from stalwart.cli.errors import EXIT_FAILURE, EXIT_USAGE, fail
from stalwart.core.job_engines import EmbeddedEngine, run_rq_worker
from stalwart.core.jobs import JobQueue, JobResult, JobSettings, JobStatus
from stalwart.core.logs import get_logger
from stalwart.errors import JobNotFoundError, StalwartError
from stalwart.job_runtime import job_queue

jobs_app = typer.Typer(help="Background jobs: workers, and the jobs table.", no_args_is_help=True)


@jobs_app.command("worker")
def worker_command(
    engine: Annotated[
        str | None,
        typer.Option(help="embedded or rq (default: $STALWART_JOBS_ENGINE, else embedded)."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Jobs run at once: threads (embedded) or RQ worker processes (rq). "
            "Default: $STALWART_JOBS_WORKERS for embedded, 1 for rq.",
        ),
    ] = None,
) -> None:
    """Run jobs until SIGTERM or Ctrl+C; running jobs finish (or are re-queued) first."""
    chosen = engine
    if chosen is not None and chosen not in ("embedded", "rq"):
        typer.echo(f"error: unknown engine {chosen!r}; use embedded or rq", err=True)
        raise typer.Exit(EXIT_USAGE)
    ctx = cli_context(migrate=True)
    cfg = ctx.config
    chosen = chosen or cfg.jobs_engine
    try:
        if chosen == "rq":
            run_rq_worker(cfg, ctx.db, concurrency=concurrency or 1)
            return
        pool = EmbeddedEngine(
            ctx.db,
            JobSettings.from_config(cfg),
            workers=concurrency or max(1, cfg.jobs_workers),
            metrics=ctx.metrics,  # reaches the app's /metrics through STALWART_METRICS_DIR
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        pool.start()
        # A worker is a service: its stderr is its log, so these are log lines, not text.
        log = get_logger("stalwart.cli.jobs")
        log.info("embedded worker running; Ctrl+C to stop", threads=pool.workers)
        stop.wait()
        log.info("stopping: letting running jobs finish")
        pool.stop()
    except StalwartError as err:
        fail(err, EXIT_FAILURE)


@jobs_app.command("list")
def list_command(
    status: Annotated[
        list[str] | None,
        typer.Option(help=f"Only jobs in this status (repeatable): {', '.join(JobStatus)}."),
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only jobs of this owner.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
) -> None:
    """List jobs, newest first: id, status, progress, attempts, owner, function, error."""
    for value in status or []:
        if value not in JobStatus.__members__.values():
            typer.echo(
                f"error: unknown status {value!r}; use one of {', '.join(JobStatus)}", err=True
            )
            raise typer.Exit(EXIT_USAGE)
    try:
        jobs = _queue().list_jobs(owner=owner, status=status or None, limit=limit)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    if not jobs:
        typer.echo("no jobs")
        return
    typer.echo(f"{'id':32}  {'status':10}  {'progress':>8}  tries  {'owner':12}  function")
    for job in jobs:
        typer.echo(_line(job))


@jobs_app.command("cancel")
def cancel_command(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a job: a waiting one at once, a running one at its next progress report."""
    _act(job_id, "cancel")


@jobs_app.command("retry")
def retry_command(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Run a failed or cancelled job again from the start, with all its attempts."""
    _act(job_id, "retry")


def _act(job_id: str, action: Literal["cancel", "retry"]) -> None:
    queue = _queue()
    try:
        job = (
            queue.cancel(job_id, user="cli")
            if action == "cancel"
            else queue.retry(job_id, user="cli")
        )
    except JobNotFoundError as err:
        fail(err, EXIT_USAGE)
    except StalwartError as err:
        fail(err, EXIT_FAILURE)
    typer.echo(f"{job.id}: {job.status.value}")


def _queue() -> JobQueue:
    return job_queue(cli_context())


def _line(job: JobResult) -> str:
    progress = f"{job.progress:.0f}%"
    line = (
        f"{job.id:32}  {job.status.value:10}  {progress:>8}  "
        f"{job.attempts}/{job.max_attempts:<3}  {job.owner[:12]:12}  {job.function}"
    )
    if job.error and job.status != JobStatus.SUCCEEDED:
        line += f"\n{'':34}error: {job.error.splitlines()[0][:200]}"
    return line
