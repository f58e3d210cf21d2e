"""Chaos around jobs, with real processes and real services (nothing of ours is mocked).

- A worker SIGKILLed mid-job: its heartbeat lapses, the job is re-queued and finishes on
  another worker, once (one succeeded result, attempts = 2).
- The app (``app run``, embedded engine) restarted while a job runs: stopped gracefully, its
  lifespan hands the job back to the queue; killed, the restarted app's sweeper takes it back
  once its lease lapses. Either way it ends succeeded, once, with attempts = 2.
- Redis restarted while an RQ worker idles: the same worker process reconnects and runs the
  next job. The shared Redis cannot be restarted, so the test runs a private ``redis-server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

from stalwart.core.compute.schemas import PortfolioRiskParams
from stalwart.core.database import DB
from stalwart.core.job_engines import RQDispatcher
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.migrations import migrate
from stalwart.services.compute_jobs import portfolio_risk
from tests import job_functions as fns
from tests.conftest import PYTHON, REDIS_URL, ROOT, child_env, free_port, need
from tests.e2e.conftest import LiveApp, app_run, server_env
from tests.jobs_harness import (
    FAST,
    FAST_ENV,
    clean_redis,
    job_setup,
    kill,
    pid_of,
    start_worker,
    stop_worker,
    unique_queue,
    wait_for,
    wait_status,
)
from tests.log_check import watch_log_file


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
    engine, url, db = job_setup(setup, tmp_path, request)
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


# ---------------------------------------------------------------------------------------------
# The app restarted while a job runs

# A real job of the reference app, registered in the server process: about 1 s of simulation
# per 200,000 paths on a small machine, so a few seconds, long enough to stop the server mid-run.
RESTART_PATHS = 600_000
# Heartbeat and lease short enough that a killed server's job is taken back soon after the
# restart, long enough that a busy server never reaps its own live job (attempts would be 3).
# A grace period far shorter than the job, so a graceful stop hands it back instead of waiting.
RESTART_ENV = {
    **FAST_ENV,
    "STALWART_JOBS_HEARTBEAT_S": "0.5",
    "STALWART_JOBS_LEASE_S": "3",
    "STALWART_JOBS_CANCEL_GRACE_S": "0.5",
    "STALWART_JOBS_POLL_INTERVAL_S": "0.1",
}


def _events(app: LiveApp, event: str, job_id: str | None = None) -> list[dict[str, object]]:
    return [
        record
        for record in app.log_records()
        if record.get("event") == event and (job_id is None or record.get("job_id") == job_id)
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_job_survives_an_app_restart(
    stop: str, dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'data' / 'stalwart.db'}"
        if dialect == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    port = free_port()
    env = server_env(tmp_path / "data", STALWART_DATABASE_URL=url, **RESTART_ENV)
    app = LiveApp(app_run(port), port, tmp_path, env, db_url=url)
    db: DB | None = None
    try:
        app.start()  # migrates the database and starts the embedded engine
        db = DB(url)
        queue = JobQueue(db)  # writes the row only: the server's workers poll the table
        job = Job.of(
            portfolio_risk, PortfolioRiskParams(paths=RESTART_PATHS), owner="chaos", max_attempts=3
        )
        job_id = queue.enqueue(job)
        running = wait_for(
            queue, job_id, lambda j: j.status == "running" and j.progress > 0, what="progress"
        )
        first_pid = app.pid
        assert (running.attempts, pid_of(running.worker_id)) == (1, first_pid)

        if stop == "sigterm":
            # Graceful: the lifespan stops the engine, which hands the unfinished job back.
            assert app.stop() in {0, -signal.SIGTERM}, app.logs()
            handed_back = queue.poll(job_id)
            assert (handed_back.status, handed_back.attempts, handed_back.worker_id) == (
                "queued",
                1,
                None,
            ), handed_back
            assert "re-queued" in (handed_back.error or "")
            assert [r.get("released") for r in _events(app, "embedded job engine stopped")] == [1]
        else:
            # A crash: nothing is cleaned up, the row still says running on a dead process.
            app.kill()
            orphan = queue.poll(job_id)
            assert (orphan.status, orphan.attempts, orphan.worker_id) == (
                "running",
                1,
                running.worker_id,
            ), orphan

        app.start()
        done = wait_status(queue, job_id, "succeeded", "failed", "cancelled")
        assert done.status == "succeeded", done
        assert (done.attempts, done.error, done.result["paths"]) == (2, None, RESTART_PATHS)
        assert pid_of(done.worker_id) == app.pid != first_pid
        # Once from the user's view: one row, one result, one recorded end of an attempt.
        assert [(j.id, j.status) for j in queue.list_jobs()] == [(job_id, "succeeded")]
        assert [r.get("status") for r in _events(app, "job attempt ended", job_id)] == ["succeeded"]
        if stop == "sigkill":
            reaped = _events(app, "job reaped", job_id)
            assert [r.get("status") for r in reaped] == ["queued"], app.logs()
    finally:
        app.stop()  # before pg_url's teardown drops the database
        if db is not None:
            db.dispose()


# ---------------------------------------------------------------------------------------------
# Redis restarted while an RQ worker idles

REDIS_SERVER = shutil.which("redis-server")
#: A bound so that a worker that never comes back fails the test; not a performance claim.
RECONNECT_BOUND_S = 25.0


class PrivateRedis:
    """A ``redis-server`` of this test's own on ``port``, without persistence: a restart loses
    everything, as a Redis without persistence (or a new replica) does."""

    def __init__(self, workdir: Path, port: int) -> None:
        assert REDIS_SERVER is not None
        self.workdir, self.port = workdir, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        assert REDIS_SERVER is not None
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(
                            f"redis-server on {self.port} did not start: "
                            + (self.workdir / "redis.log").read_text(errors="replace")
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM (a clean shutdown; nothing is saved) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _start_rq_worker(
    tmp: Path, db_url: str, redis_url: str, queue_name: str
) -> subprocess.Popen[bytes]:
    env = child_env(
        STALWART_DATABASE_URL=db_url,
        STALWART_DATA_DIR=str(tmp / "data"),
        STALWART_JOBS_ENGINE="rq",
        STALWART_JOBS_QUEUE=queue_name,
        STALWART_REDIS_URL=redis_url,
        STALWART_LOG_LEVEL="INFO",
        **FAST_ENV,
    )
    watch_log_file(tmp / "worker.log", "rq worker")
    with (tmp / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [PYTHON, "-m", "stalwart.cli.main", "jobs", "worker", "--engine", "rq"],
            cwd=ROOT,  # so that the worker can import tests.job_functions
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_log(path: Path, proc: subprocess.Popen[bytes], *texts: str) -> None:
    """Wait until the worker has logged one of ``texts`` (failing if it exits first)."""
    deadline = time.monotonic() + RECONNECT_BOUND_S
    while not any(text in path.read_text(errors="replace") for text in texts):
        assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{path.read_text()}"
        assert time.monotonic() < deadline, f"none of {texts} logged:\n{path.read_text()}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("when", ["idle", "mid-job"])
def test_an_rq_worker_reconnects_after_redis_restarts(when: str, tmp_path: Path) -> None:
    """Idle: the worker waits on its queue when Redis goes (the case the issue names).
    Mid-job: Redis goes while the worker's work horse runs a job, so the worker meets the
    outage when it records the end of that job, outside RQ's own reconnecting wait."""
    need("redis", None if REDIS_SERVER else "redis-server is not on PATH")
    url = f"sqlite:///{tmp_path / 'data' / 'stalwart.db'}"
    db = DB(url)
    migrate(db)
    redis = PrivateRedis(tmp_path, free_port())
    redis.start()
    queue_name = unique_queue()
    queue = JobQueue(db, RQDispatcher(redis.url, queue_name, FAST))
    worker = _start_rq_worker(tmp_path, url, redis.url, queue_name)
    log = tmp_path / "worker.log"
    try:
        _wait_for_log(log, worker, "Listening on")  # started, swept, waiting on its queue
        if when == "idle":
            first = queue.enqueue(Job.of(fns.add, {"a": 1, "b": 2}))
            assert wait_status(queue, first, "succeeded").result == {"sum": 3}
            _wait_for_log(log, worker, "Job OK")  # RQ recorded it too: back to waiting
            redis.stop()
        else:
            gate = tmp_path / "gate"
            first = queue.enqueue(Job.of(fns.wait_for_gate, {"gate": str(gate)}))
            wait_status(queue, first, "running")
            redis.stop()
            gate.touch()  # the job ends while Redis is down; its result goes to the table
            assert wait_status(queue, first, "succeeded").result == {"gate": "open"}
        # Redis is gone and the worker notices: waiting on its queue, RQ retries; recording the
        # end of a job, RQ's loop gives up and ours waits for Redis (rq would exit here).
        noticed = "could not connect to Redis" if when == "idle" else "rq worker lost Redis"
        _wait_for_log(log, worker, noticed)
        # Redis comes back on the same port, empty: no queue, no worker registration.
        redis.start()

        second = queue.enqueue(Job.of(fns.add, {"a": 2, "b": 3}))
        done = wait_for(
            queue,
            second,
            lambda j: j.status == "succeeded",
            what="succeeded after the restart",
            timeout_s=RECONNECT_BOUND_S,
        )
        assert done.result == {"sum": 5}
        # The same worker process ran it: it never exited and was never started again.
        assert worker.poll() is None, log.read_text()
        assert log.read_text().count("rq worker starting") == 1
        if when == "mid-job":
            assert "rq worker reconnected to Redis" in log.read_text()
    finally:
        stop_worker(worker)
        redis.stop()
        db.dispose()
