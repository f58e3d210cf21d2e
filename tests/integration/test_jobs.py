"""Jobs on each engine: embedded on SQLite and PostgreSQL, RQ on the real Redis.

The same tests run against every engine: the jobs table must tell the same story whichever
worker ran the job.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from stalwart.core.database import DB
from stalwart.core.job_engines import EmbeddedEngine, RQDispatcher
from stalwart.core.jobs import Job, JobQueue, JobStatus
from stalwart.core.migrations import migrate
from stalwart.errors import IllegalTransitionError, JobNotFoundError
from stalwart.models import AuditEntry
from tests import job_functions as fns
from tests.conftest import REDIS_URL, need, redis_problem
from tests.jobs_harness import (
    FAST,
    clean_redis,
    job_setup,
    start_worker,
    stop_worker,
    unique_queue,
    wait_for,
    wait_status,
)

S = JobStatus


@dataclass
class Jobs:
    queue: JobQueue
    db: DB
    tmp: Path
    engine: str

    def gate(self) -> Path:
        return self.tmp / f"gate-{uuid.uuid4().hex[:8]}"


@pytest.fixture(
    params=[
        "embedded-sqlite",
        pytest.param("embedded-postgresql", marks=pytest.mark.postgres),
        pytest.param("rq-postgresql", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Jobs]:
    engine, url, db = job_setup(request.param, tmp_path, request)
    if engine == "embedded":
        pool = EmbeddedEngine(db, FAST, workers=1)
        pool.start()
        try:
            yield Jobs(JobQueue(db, pool), db, tmp_path, engine)
        finally:
            pool.stop(wait_s=1.0)
            db.dispose()
        return
    queue_name = unique_queue()
    worker = start_worker(tmp_path, url, "rq", queue_name=queue_name)
    dispatcher = RQDispatcher(REDIS_URL, queue_name, FAST)
    try:
        yield Jobs(JobQueue(db, dispatcher), db, tmp_path, engine)
    finally:
        running = [j.worker_id for j in JobQueue(db).list_jobs(status=["running", "cancelling"])]
        horses = [int(w.split("/")[1]) for w in running if w]
        stop_worker(worker, horse_pids=horses)
        clean_redis(queue_name)
        dispatcher.redis.close()
        db.dispose()
        if worker.returncode not in (0, -15, -9):
            print((tmp_path / "w.log").read_text())


def test_enqueue_runs_and_poll_shows_the_result(jobs: Jobs) -> None:
    job_id = jobs.queue.enqueue(Job.of(fns.add, {"a": 2, "b": 3}, owner="alice"))
    done = wait_status(jobs.queue, job_id, "succeeded")
    assert done.result == {"sum": 5}
    assert (done.attempts, done.progress, done.owner, done.error) == (1, 100.0, "alice", None)
    assert done.engine == jobs.engine
    assert done.finished
    assert not done.can_cancel
    assert not done.can_retry
    assert done.duration_s is not None
    assert done.started_at
    assert done.finished_at
    with jobs.db.get_conn() as conn:
        audit = conn.execute(
            select(AuditEntry.action, AuditEntry.actor).where(AuditEntry.entity_id == job_id)
        ).all()
    assert audit == [("enqueue", "alice")]
    assert [j.id for j in jobs.queue.list_jobs(owner="alice")] == [job_id]
    assert jobs.queue.list_jobs(owner="alice", status="failed") == []


def test_progress_is_visible_while_the_job_runs(jobs: Jobs) -> None:
    gate = jobs.gate()
    job_id = jobs.queue.enqueue(Job.of(fns.wait_for_gate, {"gate": str(gate), "steps_after": 5}))
    running = wait_for(
        jobs.queue, job_id, lambda j: j.status == "running" and j.progress >= 10, what="10%"
    )
    assert running.progress_message == "waiting for the gate"
    assert running.heartbeat_at is not None
    assert running.worker_id
    assert not running.finished
    assert running.can_cancel
    assert [j.id for j in jobs.queue.list_jobs(status="running")] == [job_id]
    gate.touch()
    done = wait_status(jobs.queue, job_id, "succeeded")
    assert done.result == {"gate": "open"}


def test_the_same_idempotency_key_gives_the_first_job(jobs: Jobs) -> None:
    job = Job.of(fns.add, {"a": 1, "b": 1}, idempotency_key="report-2026-11")
    first = jobs.queue.enqueue(job)
    second = jobs.queue.enqueue(job.model_copy(update={"owner": "someone-else"}))
    assert first == second
    wait_status(jobs.queue, first, "succeeded")
    assert len(jobs.queue.list_jobs()) == 1


def test_cancel_stops_a_queued_job_at_once_and_a_running_one_at_its_next_report(
    jobs: Jobs,
) -> None:
    gate = jobs.gate()
    running_id = jobs.queue.enqueue(Job.of(fns.wait_for_gate, {"gate": str(gate)}))
    wait_status(jobs.queue, running_id, "running")
    # One worker, busy: this one waits in the queue.
    waiting_id = jobs.queue.enqueue(Job.of(fns.add, {"a": 1, "b": 2}))
    cancelled = jobs.queue.cancel(waiting_id, user="alice")
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert cancelled.can_retry

    cancelling = jobs.queue.cancel(running_id, user="alice")
    assert cancelling.status == "cancelling"
    assert cancelling.cancel_requested
    assert jobs.queue.cancel(running_id).status in ("cancelling", "cancelled")  # idempotent
    done = wait_status(jobs.queue, running_id, "cancelled")
    assert done.progress_message == "The job was cancelled."
    assert jobs.queue.poll(waiting_id).attempts == 0  # it never ran

    # Retry starts it over (same id, fresh attempts); this time the gate is open.
    gate.touch()
    again = jobs.queue.retry(running_id, user="bob")
    assert (again.status, again.attempts, again.cancel_requested) == ("queued", 0, False)
    done = wait_status(jobs.queue, running_id, "succeeded")
    assert done.attempts == 1
    with jobs.db.get_conn() as conn:
        actions = conn.execute(
            select(AuditEntry.action, AuditEntry.actor)
            .where(AuditEntry.entity_id == running_id)
            .order_by(AuditEntry.id)
        ).all()
    assert actions == [("enqueue", "system"), ("cancel", "alice"), ("retry", "bob")]
    with pytest.raises(IllegalTransitionError, match="is succeeded and cannot become cancelled"):
        jobs.queue.cancel(running_id)
    with pytest.raises(IllegalTransitionError, match="cannot become queued"):
        jobs.queue.retry(running_id)


def test_a_job_that_ignores_cancel_is_stopped_hard_after_the_grace_period(jobs: Jobs) -> None:
    job_id = jobs.queue.enqueue(Job.of(fns.stubborn, {"seconds": 60}))
    wait_status(jobs.queue, job_id, "running")
    jobs.queue.cancel(job_id)
    done = wait_status(jobs.queue, job_id, "cancelled")
    assert "stopped hard after a grace period" in done.progress_message
    # The worker is free again.
    after = jobs.queue.enqueue(Job.of(fns.add, {"a": 0, "b": 0}))
    assert wait_status(jobs.queue, after, "succeeded").result == {"sum": 0}


def test_a_job_over_its_timeout_fails_with_a_clear_message(jobs: Jobs) -> None:
    job_id = jobs.queue.enqueue(
        Job.of(fns.stubborn, {"seconds": 60}, timeout_s=0.5, max_attempts=1)
    )
    done = wait_status(jobs.queue, job_id, "failed")
    assert done.error == (
        "The job ran longer than its limit of 0.5 s (attempt 1 of 1) and was stopped."
    )
    assert done.can_retry


def test_a_job_stopped_during_a_progress_write_stops_and_frees_its_worker(jobs: Jobs) -> None:
    # The hard stop waits for the write (database, logging) to end, then stops the function;
    # if it never came, the worker would be busy for two minutes and the next job would wait.
    for _ in range(3):
        job_id = jobs.queue.enqueue(
            Job.of(fns.chatty, {"seconds": 120}, timeout_s=0.3, max_attempts=1)
        )
        done = wait_status(jobs.queue, job_id, "failed")
        assert done.error == (
            "The job ran longer than its limit of 0.3 s (attempt 1 of 1) and was stopped."
        )
    after = jobs.queue.enqueue(Job.of(fns.add, {"a": 2, "b": 3}))
    assert wait_status(jobs.queue, after, "succeeded").result == {"sum": 5}


def test_errors_retry_with_backoff_then_fail_with_the_message(jobs: Jobs) -> None:
    job_id = jobs.queue.enqueue(Job.of(fns.flaky, {"message": "the data is bad"}, max_attempts=3))
    done = wait_status(jobs.queue, job_id, "failed")
    assert (done.attempts, done.error) == (3, "ValueError: the data is bad")
    assert done.error_detail
    assert "Traceback" in done.error_detail
    assert done.can_retry


def test_a_flaky_job_succeeds_on_a_later_attempt(jobs: Jobs) -> None:
    counter = jobs.tmp / "calls"
    job_id = jobs.queue.enqueue(
        Job.of(fns.flaky, {"counter": str(counter), "fail_times": 2}, max_attempts=3)
    )
    seen_retrying = wait_for(
        jobs.queue, job_id, lambda j: j.status in ("retrying", "succeeded"), what="retrying"
    )
    done = wait_status(jobs.queue, job_id, "succeeded")
    assert (done.attempts, done.result, done.error) == (3, {"calls": 3}, None)
    assert seen_retrying.status == "succeeded" or "Attempt" in seen_retrying.progress_message


def test_unknown_ids_are_reported(jobs: Jobs) -> None:
    for call in (jobs.queue.poll, jobs.queue.cancel, jobs.queue.retry):
        with pytest.raises(JobNotFoundError, match="There is no job nope"):
            call("nope")


def test_worker_log_is_clean(jobs: Jobs) -> None:
    if jobs.engine != "rq":
        pytest.skip("only the rq worker writes a log file")
    job_id = jobs.queue.enqueue(Job.of(fns.add, {"a": 1, "b": 1}))
    wait_status(jobs.queue, job_id, "succeeded")
    assert "Traceback" not in (jobs.tmp / "w.log").read_text()


@pytest.mark.postgres
@pytest.mark.redis
def test_an_rq_worker_in_this_process_runs_what_is_queued(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RQ's SimpleWorker runs jobs without forking: the same entry point, in this process."""
    need("redis", redis_problem())
    from rq import SimpleWorker

    from stalwart.core.config import load_config
    from stalwart.core.job_engines import run_rq_worker
    from tests.jobs_harness import FAST_ENV

    queue_name = unique_queue()
    for name, value in {
        **FAST_ENV,
        "STALWART_DATABASE_URL": pg_url,
        "STALWART_JOBS_ENGINE": "rq",
        "STALWART_JOBS_QUEUE": queue_name,
        "STALWART_REDIS_URL": REDIS_URL,
    }.items():
        monkeypatch.setenv(name, value)
    cfg = load_config()
    db = DB(cfg.resolved_database_url)
    migrate(db)
    dispatcher = RQDispatcher(REDIS_URL, queue_name, FAST)
    queue = JobQueue(db, dispatcher)
    try:
        ok = queue.enqueue(Job.of(fns.add, {"a": 20, "b": 22}))
        bad = queue.enqueue(Job.of(fns.flaky, {}, max_attempts=1))
        dispatcher.dispatch(ok, timeout_s=5)  # a duplicate dispatch runs nothing twice
        run_rq_worker(cfg, db, burst=True, worker_class=SimpleWorker)
        assert queue.poll(ok).result == {"sum": 42}
        assert queue.poll(ok).attempts == 1
        assert queue.poll(bad).error == "ValueError: boom"
    finally:
        clean_redis(queue_name)
        dispatcher.redis.close()
        db.dispose()


def test_an_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    from stalwart.errors import JobBackendUnavailableError

    dispatcher = RQDispatcher("redis://127.0.0.1:1/0", "nowhere", FAST)
    with pytest.raises(JobBackendUnavailableError, match="Redis does not answer"):
        dispatcher.check()
    with pytest.raises(JobBackendUnavailableError, match="could not be handed to Redis"):
        dispatcher.dispatch("j1", timeout_s=1)
    db = DB(f"sqlite:///{tmp_path / 'j.db'}")
    migrate(db)
    # The job is saved even though Redis is down; the sweeper dispatches it later.
    job_id = JobQueue(db, dispatcher).enqueue(Job.of(fns.add, {"a": 1, "b": 1}))
    assert JobQueue(db).poll(job_id).status == "queued"
    db.dispose()


def test_the_app_lifecycle_starts_and_stops_the_engine_and_scheduler(tmp_path: Path) -> None:
    from stalwart.bootstrap import init_app, shutdown_app
    from stalwart.core.config import load_config
    from stalwart.core.schedules import Schedule
    from stalwart.job_runtime import job_queue, start_job_engine, stop_job_engine

    cfg = load_config(data_dir=tmp_path, jobs_heartbeat_s=0.1, jobs_lease_s=1.0)
    ctx = init_app(cfg, run_migrations=True)
    tick = Schedule("tick", Job.of(fns.add, {"a": 1, "b": 1}), every_s=0.2)
    try:
        runtime = start_job_engine(ctx, schedules=[tick], workers=1)
        assert start_job_engine(ctx) is runtime  # once per process
        assert job_queue() is runtime.queue
        job_id = job_queue(ctx).enqueue(Job.of(fns.add, {"a": 4, "b": 5}))
        assert wait_status(runtime.queue, job_id, "succeeded").result == {"sum": 9}
        wait_for(
            runtime.queue,
            job_id,
            lambda _j: len(runtime.queue.list_jobs(status="succeeded")) >= 2,
            what="a scheduled job run",
        )
    finally:
        stop_job_engine(wait_s=1.0)
        stop_job_engine()  # twice is harmless
        shutdown_app()


@pytest.mark.redis
def test_the_sweeper_dispatches_again_only_jobs_whose_rq_dispatch_is_lost(
    tmp_path: Path,
) -> None:
    """A job waiting behind busy workers is not dispatched again every lease (that filled
    Redis with duplicates, each costing a fork and a claim); a dispatch Redis lost is."""
    need("redis", redis_problem())
    from datetime import datetime, timedelta

    from sqlalchemy import update

    from stalwart.core.job_runner import redispatch_stale
    from stalwart.models.base import utcnow
    from stalwart.models.job import JobRecord

    db = DB(f"sqlite:///{tmp_path / 'j.db'}")
    migrate(db)
    queue_name = unique_queue()
    dispatcher = RQDispatcher(REDIS_URL, queue_name, FAST)

    old = utcnow() - timedelta(seconds=3 * FAST.lease_s)

    def age_past_the_lease() -> None:
        db.run_tx(
            lambda uow: uow.session.execute(
                update(JobRecord).values(queued_at=old, dispatched_at=old)
            )
        )

    def queued_at(job_id: str) -> datetime:
        return jobs_queue.poll(job_id).queued_at

    jobs_queue = JobQueue(db, dispatcher)
    try:
        waiting = jobs_queue.enqueue(Job.of(fns.add, {"a": 1, "b": 2}))
        lost = jobs_queue.enqueue(Job.of(fns.add, {"a": 3, "b": 4}))
        assert dispatcher.queue.count == 2
        assert dispatcher.in_flight(waiting)
        assert dispatcher.in_flight(lost)

        # No worker runs: both wait in RQ's queue, older than a lease by the table's clock.
        age_past_the_lease()
        assert redispatch_stale(db, FAST, dispatcher) == []
        assert dispatcher.queue.count == 2

        # Redis loses one dispatch (its data gone, as after a restart without persistence).
        lost_rq_ids = [j.id for j in dispatcher.queue.jobs if j.args == (lost,)]
        assert len(lost_rq_ids) == 1
        dispatcher.queue.remove(lost_rq_ids[0])
        dispatcher.redis.delete(f"rq:job:{lost_rq_ids[0]}")
        assert not dispatcher.in_flight(lost)

        age_past_the_lease()
        assert redispatch_stale(db, FAST, dispatcher) == [lost]
        assert sorted(j.args[0] for j in dispatcher.queue.jobs) == sorted([waiting, lost])
        assert dispatcher.in_flight(lost)
        # Nothing to catch up on: a sweep right after dispatches nothing.
        assert redispatch_stale(db, FAST, dispatcher) == []
        # The sweeps left the queue's age alone (what JobQueueStuck and the System page show).
        assert queued_at(waiting) == queued_at(lost) == old
    finally:
        clean_redis(queue_name)
        dispatcher.redis.close()
        db.dispose()
