"""``app jobs`` as an operator runs it: list, cancel, retry, and a worker that stops cleanly."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from stalwart.core.database import DB
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.migrations import migrate
from tests import job_functions as fns
from tests.integration.test_cli import app
from tests.jobs_harness import start_worker, stop_worker, wait_for, wait_status


def test_jobs_help_lists_every_command() -> None:
    out = app("jobs", "--help")
    assert out.returncode == 0
    for command in ("worker", "list", "cancel", "retry"):
        assert re.search(rf"│ {command}\s+\S", out.stdout), f"jobs {command}: no help"
    assert "--engine" in app("jobs", "worker", "--help").stdout


def test_list_cancel_retry_and_clear_errors(tmp_path: Path) -> None:
    env = {"STALWART_DATA_DIR": str(tmp_path)}
    db = DB(f"sqlite:///{tmp_path / 'stalwart.db'}")
    migrate(db)
    queue = JobQueue(db)  # no worker: the jobs stay queued
    job_id = queue.enqueue(Job.of(fns.add, {"a": 1, "b": 2}, owner="alice"))
    other = queue.enqueue(Job.of(fns.add, {"a": 3, "b": 4}, owner="bob"))
    db.dispose()

    listed = app("jobs", "list", "--owner", "alice", **env)
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout
    assert other not in listed.stdout
    assert "queued" in listed.stdout
    assert "tests.job_functions:add" in listed.stdout

    cancelled = app("jobs", "cancel", job_id, **env)
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, f"{job_id}: cancelled")
    assert job_id not in app("jobs", "list", "--status", "queued", **env).stdout
    retried = app("jobs", "retry", job_id, **env)
    assert (retried.returncode, retried.stdout.strip()) == (0, f"{job_id}: queued")

    again = app("jobs", "retry", job_id, **env)
    assert again.returncode == 1
    assert "is queued and cannot become queued" in again.stderr
    assert "what to do:" in again.stderr

    unknown = app("jobs", "cancel", "no-such-job", **env)
    assert unknown.returncode == 2
    assert "There is no job no-such-job" in unknown.stderr
    assert "app jobs list" in unknown.stderr

    bad = app("jobs", "list", "--status", "lost", **env)
    assert bad.returncode == 2
    assert "unknown status 'lost'" in bad.stderr
    assert app("jobs", "worker", "--engine", "celery", **env).returncode == 2
    assert "no jobs" in app("jobs", "list", "--owner", "nobody", **env).stdout


def test_a_stopped_worker_gives_its_running_job_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'stalwart.db'}"
    db = DB(url)
    migrate(db)
    queue = JobQueue(db)
    worker = start_worker(tmp_path, url, "embedded")
    try:
        job_id = queue.enqueue(Job.of(fns.wait_for_gate, {"gate": str(tmp_path / "never")}))
        wait_status(queue, job_id, "running")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        job = wait_for(queue, job_id, lambda j: j.status == "queued", what="re-queued")
        assert job.error == "The worker running it stopped; re-queued."
        assert job.attempts == 1
    finally:
        stop_worker(worker)
        db.dispose()
    assert "stopping: letting running jobs finish" in (tmp_path / "w.log").read_text()
