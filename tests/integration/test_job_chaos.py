"""A worker SIGKILLed mid-job: its heartbeat lapses, the job is re-queued and finishes on
another worker, once (one succeeded result, attempts = 2)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stalwart.core.database import DB
from stalwart.core.job_engines import RQDispatcher
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.migrations import migrate
from tests import job_functions as fns
from tests.conftest import REDIS_URL, need, redis_problem
from tests.jobs_harness import (
    FAST,
    clean_redis,
    kill,
    pid_of,
    start_worker,
    stop_worker,
    unique_queue,
    wait_for,
    wait_status,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "setup",
    [
        "embedded-sqlite",
        pytest.param("embedded-postgresql", marks=pytest.mark.postgres),
        pytest.param("rq-postgresql", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
)
def test_a_job_survives_its_worker_being_killed(
    setup: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine, dialect = setup.split("-")
    if engine == "rq":
        need("redis", redis_problem())
    url = (
        f"sqlite:///{tmp_path / 'data' / 'stalwart.db'}"
        if dialect == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    db = DB(url)
    migrate(db)
    queue_name = unique_queue()
    dispatcher = RQDispatcher(REDIS_URL, queue_name, FAST) if engine == "rq" else None
    queue = JobQueue(db, dispatcher)
    first = start_worker(tmp_path, url, engine, queue_name=queue_name, name="first")
    second = None
    horse = 0
    try:
        job_id = queue.enqueue(Job.of(fns.steps, {"steps": 20, "step_s": 0.1}, max_attempts=3))
        running = wait_for(
            queue, job_id, lambda j: j.status == "running" and j.progress > 0, what="progress"
        )
        horse = pid_of(running.worker_id)  # the RQ work horse, or the embedded worker itself
        assert running.attempts == 1
        # The machine dies: the worker and (for RQ) its work horse, with no chance to clean up.
        os.killpg(first.pid, signal.SIGKILL)
        kill(horse)
        first.wait(timeout=10)

        second = start_worker(tmp_path, url, engine, queue_name=queue_name, name="second")
        done = wait_status(queue, job_id, "succeeded")
        assert (done.attempts, done.result, done.error) == (2, {"steps": 20}, None)
        assert pid_of(done.worker_id) not in (first.pid, horse)
        assert [j.status for j in queue.list_jobs()] == ["succeeded"]
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_worker(proc)
        kill(horse)
        if engine == "rq":
            clean_redis(queue_name)
        db.dispose()
