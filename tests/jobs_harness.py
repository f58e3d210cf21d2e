"""Helpers for job tests: fast settings, worker processes, waiting on the jobs table, Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stalwart.core.database import DB
from stalwart.core.jobs import JobQueue, JobResult, JobSettings
from stalwart.core.migrations import migrate
from tests.conftest import PYTHON, REDIS_URL, ROOT, child_env, need, redis_problem
from tests.log_check import watch_log_file

# Short intervals so that heartbeats, leases, grace periods and backoffs pass quickly; tests
# wait for what happens (with a generous bound), never for how long it took.
FAST = JobSettings(
    heartbeat_s=0.1,
    lease_s=1.0,
    cancel_grace_s=0.5,
    poll_interval_s=0.05,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
)
FAST_ENV = {
    "STALWART_JOBS_HEARTBEAT_S": str(FAST.heartbeat_s),
    "STALWART_JOBS_LEASE_S": str(FAST.lease_s),
    "STALWART_JOBS_CANCEL_GRACE_S": str(FAST.cancel_grace_s),
    "STALWART_JOBS_POLL_INTERVAL_S": str(FAST.poll_interval_s),
    "STALWART_JOBS_BACKOFF_INITIAL_S": str(FAST.backoff_initial_s),
    "STALWART_JOBS_BACKOFF_MAX_S": str(FAST.backoff_max_s),
}
BOUND_S = 30.0


def wait_for(
    queue: JobQueue,
    job_id: str,
    predicate: Callable[[JobResult], bool],
    *,
    what: str = "the expected state",
    timeout_s: float = BOUND_S,
) -> JobResult:
    """Poll the table until ``predicate`` holds for the job; fail with its last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = queue.poll(job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job never reached {what}: {job}")
        time.sleep(0.03)


def wait_status(queue: JobQueue, job_id: str, *statuses: str) -> JobResult:
    """Poll until the job is in one of ``statuses``."""
    return wait_for(queue, job_id, lambda j: j.status in statuses, what=f"status {statuses}")


def start_worker(
    tmp: Path, db_url: str, engine: str, *, queue_name: str = "stalwart", name: str = "w"
) -> subprocess.Popen[bytes]:
    """Start ``app jobs worker`` in its own process group; output goes to tmp/<name>.log."""
    env = child_env(
        STALWART_DATABASE_URL=db_url,
        STALWART_DATA_DIR=str(tmp / "data"),
        STALWART_JOBS_ENGINE=engine,
        STALWART_JOBS_QUEUE=queue_name,
        STALWART_REDIS_URL=REDIS_URL,
        STALWART_LOG_LEVEL="INFO",
        **FAST_ENV,
    )
    watch_log_file(tmp / f"{name}.log", "job worker")
    log = (tmp / f"{name}.log").open("ab")
    return subprocess.Popen(
        [PYTHON, "-m", "stalwart.cli.main", "jobs", "worker", "--concurrency", "1"],
        cwd=ROOT,  # so that the worker can import tests.job_functions
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen[bytes], *, horse_pids: list[int] | None = None) -> None:
    """Stop a worker (and any RQ work horse) for good."""
    for pid in horse_pids or []:
        kill(pid)
    if proc.poll() is None:
        with_signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with_signal(proc, signal.SIGKILL)
            proc.wait(timeout=5)


def with_signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def pid_of(worker_id: str | None) -> int:
    """The process id in a worker id (host/pid/thread)."""
    assert worker_id is not None
    return int(worker_id.split("/")[1])


def job_setup(param: str, tmp_path: Path, request: Any) -> tuple[str, str, DB]:
    """For a ``<engine>-<dialect>`` test parameter: the engine, the database URL and a migrated
    DB on it (SQLite in ``tmp_path``, or the test's own PostgreSQL database)."""
    engine, dialect = param.split("-")
    if engine == "rq":
        need("redis", redis_problem())
    url = (
        f"sqlite:///{tmp_path / 'data' / 'stalwart.db'}"
        if dialect == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    db = DB(url)
    migrate(db)
    return engine, url, db


def unique_queue() -> str:
    return f"stalwart-test-{uuid.uuid4().hex[:10]}"


def clean_redis(queue_name: str) -> None:
    """Remove every key RQ made for ``queue_name`` from the test Redis."""
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        clean_rq_keys(client, queue_name)
    finally:
        client.close()


def clean_rq_keys(client: Any, queue_name: str) -> None:
    """Remove every key RQ made for ``queue_name`` (its queue, registries, jobs, workers)."""
    job_ids = []
    for key in client.scan_iter("rq:job:*"):
        if client.type(key) == b"hash" and client.hget(key, "origin") == queue_name.encode():
            job_ids.append(key.decode().split(":", 2)[2])
    doomed = set(client.scan_iter(f"*{queue_name}*"))
    for job_id in job_ids:
        doomed |= set(client.scan_iter(f"*{job_id}*"))
    if doomed:
        client.delete(*doomed)
    for registry in ("rq:queues", "rq:workers"):  # RQ's global sets name ours too
        ours = [m for m in client.smembers(registry) if queue_name.encode() in m]
        if ours:
            client.srem(registry, *ours)
