"""Running jobs: claim one, run it with heartbeats, record how it ended; reap dead workers.

Both engines run a job through ``run_claimed``, so status, progress and results land in the
``jobs`` table the same way whether a thread of the app or an RQ work horse runs it.

A claim fences the job: it stores the worker's id and bumps ``attempts``, and every later write
of that run checks both. A worker presumed dead (its heartbeat older than the lease) loses the
job to the reaper; if it was only slow, its late writes change nothing, so the user sees one
result (delivery is at-least-once; job functions are idempotent).

While a job runs, a monitor thread heartbeats, writes skipped progress, notices a cancel and
enforces the timeout. A job that outlives its timeout, or its cancel grace period, is recorded
as ended by the monitor and then stopped hard: an exception is raised in its thread at its next
Python instruction (an RQ work horse is also killed by RQ at ``timeout + grace + 30`` s).
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import or_, select, update

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.jobs import (
    ACTIVE,
    CLAIMABLE,
    Dispatcher,
    JobSettings,
    JobStatus,
    Reporter,
    move,
    resolve,
)
from stalwart.core.logs import get_logger, trace
from stalwart.errors import JobCancelled, JobDefinitionError, StalwartError
from stalwart.models import JobRecord
from stalwart.models.base import utcnow

if TYPE_CHECKING:
    from stalwart.core.metrics import Metrics

S = JobStatus
log = get_logger(__name__)
_HOST: Final = socket.gethostname()
#: how many stale jobs one sweep looks at (the oldest first)
REDISPATCH_BATCH: Final = 100


class HardStop(BaseException):
    """Raised in a job's thread to stop it; not an Exception, so ``except Exception`` misses it."""


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds: its fence is (``worker_id``, ``attempt``)."""

    job_id: str
    worker_id: str
    attempt: int
    max_attempts: int
    function: str
    args: dict[str, Any]
    timeout_s: float
    trace_id: str


def worker_name(label: str = "") -> str:
    """A worker id naming host, process and thread (so an operator can find it)."""
    thread = label or threading.current_thread().name
    return f"{_HOST}/{os.getpid()}/{thread}"


def claim_next(db: DB, worker_id: str, engine: str) -> Claim | None:
    """Claim the most urgent claimable job (priority, then age), or None if there is none.

    One conditional UPDATE: on PostgreSQL its subquery skips rows other workers have locked
    (``FOR UPDATE SKIP LOCKED``); SQLite's writers are serialised, so it is atomic as it is.
    """
    return _claim(db, worker_id, engine, job_id=None)


def claim_job(db: DB, job_id: str, worker_id: str, engine: str) -> Claim | None:
    """Claim ``job_id`` if it is claimable now (an RQ job names the row it is for)."""
    return _claim(db, worker_id, engine, job_id=job_id)


def _claim(db: DB, worker_id: str, engine: str, *, job_id: str | None) -> Claim | None:
    def write(uow: UnitOfWork) -> Claim | None:
        now = utcnow()
        candidate = (
            select(JobRecord.id)
            .where(
                JobRecord.status.in_([s.value for s in CLAIMABLE]),
                or_(JobRecord.next_attempt_at.is_(None), JobRecord.next_attempt_at <= now),
            )
            .order_by(JobRecord.priority.desc(), JobRecord.created_at, JobRecord.id)
            .limit(1)
        )
        if job_id is not None:
            candidate = candidate.where(JobRecord.id == job_id)
        if db.dialect == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        statement = (
            update(JobRecord)
            .where(
                JobRecord.id == candidate.scalar_subquery(),
                JobRecord.status.in_([s.value for s in CLAIMABLE]),
            )
            .values(
                status=S.RUNNING.value,
                attempts=JobRecord.attempts + 1,
                worker_id=worker_id,
                engine=engine,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                next_attempt_at=None,
                progress=0.0,
            )
            .returning(
                JobRecord.id,
                JobRecord.attempts,
                JobRecord.max_attempts,
                JobRecord.function,
                JobRecord.args,
                JobRecord.timeout_s,
                JobRecord.trace_id,
            )
            .execution_options(synchronize_session=False)
        )
        row = uow.session.execute(statement).first()
        if row is None:
            return None
        return Claim(row[0], worker_id, row[1], row[2], row[3], dict(row[4]), row[5], row[6])

    claim = db.run_tx(write)
    if claim is not None:
        log.info(
            "job claimed",
            job_id=claim.job_id,
            attempt=claim.attempt,
            worker_id=worker_id,
            trace_id=claim.trace_id,
        )
    return claim


def backoff_delay(attempt: int, settings: JobSettings) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential, capped, with jitter."""
    base = min(settings.backoff_max_s, settings.backoff_initial_s * 2.0 ** max(0, attempt - 1))
    return float(base * random.uniform(1.0, 1.5))


@dataclass(frozen=True)
class _Outcome:
    kind: str  # succeeded | cancelled | error | timeout | fatal | released
    result: Any = None
    error: str | None = None
    detail: str | None = None


class Execution:
    """One run of one claimed job: the function in this thread, the monitor beside it."""

    def __init__(
        self,
        db: DB,
        claim: Claim,
        settings: JobSettings,
        dispatcher: Dispatcher,
        *,
        on_end: Callable[[str], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.claim = claim
        self.settings = settings
        self.dispatcher = dispatcher
        self.on_end = on_end
        #: told how long the run took and how it ended
        self.metrics = metrics
        self.reporter = Reporter(self._write_progress)
        self._lock = threading.Lock()
        self._ended = False
        self._final: JobStatus | None = None
        self._thread_id: int | None = None
        self._in_function = False
        # True while the job's thread runs our own code for it (a progress write: database,
        # logging, retries): a hard stop then waits for the write to end (see _interrupt).
        self._in_framework = False
        self._stop_deferred = False
        self._stop_monitor = threading.Event()

    @property
    def final_status(self) -> JobStatus | None:
        """How the run ended (None while it runs, or if another worker took the job over)."""
        return self._final

    def run(self) -> JobStatus | None:
        """Run the job in this thread; return how it ended."""
        claim = self.claim
        with trace(claim.trace_id, job_id=claim.job_id, attempt=claim.attempt):
            self._thread_id = threading.get_ident()
            monitor = threading.Thread(
                target=self._monitor, name=f"job-monitor-{claim.job_id[:8]}", daemon=True
            )
            started = time.monotonic()
            monitor.start()
            try:
                outcome = self._call()
                self._end(outcome)
            except HardStop:
                pass  # the monitor recorded how the job ended
            finally:
                self._stop_monitor.set()
            seconds = time.monotonic() - started
            log.info(
                "job run ended",
                status=self._final.value if self._final else "taken over",
                seconds=round(seconds, 3),
            )
            if self.metrics is not None:
                ended = self._final.value if self._final else "taken_over"
                self.metrics.observe_job(ended, seconds)
            return self._final

    def _call(self) -> _Outcome:
        try:
            spec = resolve(self.claim.function)
            with self._lock:
                self._in_function = True
            try:
                result = spec.call(self.claim.args, self.reporter)
            finally:
                with self._lock:
                    self._in_function = False
            _check_json(result)
            return _Outcome("succeeded", result=result)
        except JobCancelled as exc:
            return _Outcome("cancelled", error=exc.message)
        except JobDefinitionError as exc:
            return _Outcome("fatal", error=exc.message, detail=traceback.format_exc())
        except HardStop:
            raise
        except Exception as exc:
            return _Outcome("error", error=error_message(exc), detail=traceback.format_exc())

    def stop(self, outcome: _Outcome) -> None:
        """Record ``outcome`` now and stop the job's thread (timeout, grace over, shutdown)."""
        if self._end(outcome):
            self._interrupt()

    def release(self) -> None:
        """Give the job back to the queue (worker shutting down) and stop its thread."""
        self.stop(_Outcome("released", error="The worker running it stopped; re-queued."))

    def _interrupt(self) -> None:
        # Only while the job's function runs: the thread may have moved on to other work.
        with self._lock:
            if not self._in_function or self._thread_id is None:
                return
            if self._in_framework:
                # An exception raised asynchronously inside SQLAlchemy, logging or a lock's
                # bookkeeping can leave a connection or a lock half-released; the write
                # raises HardStop itself when it ends.
                self._stop_deferred = True
                return
            self._in_function = False  # one hard stop per run
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(HardStop)
            )

    def _end(self, outcome: _Outcome) -> bool:
        """Record ``outcome`` once; True if this call did (False if the run had ended)."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
        self._stop_monitor.set()
        try:
            self._final = self.db.run_tx(lambda uow: self._record(uow, outcome))
        except StalwartError as err:
            # Nothing recorded: the lease lapses and the reaper gives the job to another worker.
            log.error("job end not recorded", error=err.message, outcome=outcome.kind)
            return True
        if self._final is None:
            log.warning("job was taken over by another worker; result dropped")
        elif self.on_end is not None:
            self.on_end(self._final.value)
        return True

    def _record(self, uow: UnitOfWork, outcome: _Outcome) -> JobStatus | None:
        record = _fenced(uow, self.claim)
        if record is None:
            return None
        now = utcnow()
        kind = outcome.kind
        if record.status == S.CANCELLING and kind != "succeeded":
            kind = "cancelled"  # whatever stopped it, the user asked for it to stop
        elif kind == "cancelled":
            kind = "fatal"  # the function raised JobCancelled though no one cancelled it
        if kind == "succeeded":
            move(record, S.SUCCEEDED)
            record.result = outcome.result
            record.error = record.error_detail = None
            record.progress = 100.0
        elif kind == "cancelled":
            move(record, S.CANCELLED)
            record.progress_message = outcome.error or "Cancelled."
        elif kind == "released":
            move(record, S.QUEUED)
            record.worker_id = None
            record.queued_at = now
            record.error = outcome.error
            job_id, timeout_s = record.id, record.timeout_s
            uow.after_commit(lambda: self.dispatcher.dispatch(job_id, timeout_s=timeout_s))
            return S.QUEUED
        else:
            record.error, record.error_detail = outcome.error, outcome.detail
            if kind != "fatal" and record.attempts < record.max_attempts:
                delay = backoff_delay(record.attempts, self.settings)
                move(record, S.RETRYING)
                record.next_attempt_at = now + timedelta(seconds=delay)
                record.progress_message = (
                    f"Attempt {record.attempts} of {record.max_attempts} failed; "
                    f"next attempt in {delay:.1f} s."
                )
                at, timeout_s = record.next_attempt_at, record.timeout_s
                job_id = record.id
                uow.after_commit(
                    lambda: self.dispatcher.dispatch(job_id, timeout_s=timeout_s, not_before=at)
                )
            else:
                move(record, S.FAILED)
        record.finished_at = now if record.status != S.RETRYING else None
        record.heartbeat_at = now
        log.info(
            "job attempt ended",
            status=record.status,
            attempt=record.attempts,
            error=record.error if record.status != S.SUCCEEDED else None,
        )
        return JobStatus(record.status)

    def _write_progress(self, pct: float, message: str) -> bool:
        # Called in the job's thread, from inside the job function (Reporter.report).
        with self._lock:
            self._in_framework = True
        try:
            cancel = self.db.run_tx(lambda uow: self._beat(uow, (pct, message)))
        finally:
            with self._lock:
                self._in_framework = False
                stop, self._stop_deferred = self._stop_deferred, False
                if stop:
                    self._in_function = False
            if stop:
                # Also when the write failed: a function catching that error must not go
                # on running past its hard stop.
                raise HardStop
        return bool(cancel)

    def _beat(self, uow: UnitOfWork, progress: tuple[float, str] | None) -> bool | None:
        """Heartbeat (and progress); None if the job is no longer this run's."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"], values["progress_message"] = progress
        statement = (
            update(JobRecord)
            .where(
                JobRecord.id == self.claim.job_id,
                JobRecord.worker_id == self.claim.worker_id,
                JobRecord.attempts == self.claim.attempt,
                JobRecord.status.in_([s.value for s in ACTIVE]),
            )
            .values(**values)
            .returning(JobRecord.cancel_requested)
            .execution_options(synchronize_session=False)
        )
        row = uow.session.execute(statement).first()
        return None if row is None else bool(row[0])

    def _monitor(self) -> None:
        settings, claim = self.settings, self.claim
        started = time.monotonic()
        cancel_seen: float | None = None
        while True:
            elapsed = time.monotonic() - started
            wait = min(settings.heartbeat_s, max(0.0, claim.timeout_s - elapsed))
            if cancel_seen is not None:
                wait = min(wait, max(0.0, cancel_seen + settings.cancel_grace_s - time.monotonic()))
            if self._stop_monitor.wait(wait):
                return
            now = time.monotonic()
            if now - started >= claim.timeout_s:
                self.stop(
                    _Outcome(
                        "timeout",
                        error=f"The job ran longer than its limit of {claim.timeout_s:g} s "
                        f"(attempt {claim.attempt} of {claim.max_attempts}) and was stopped.",
                    )
                )
                return
            if cancel_seen is not None and now - cancel_seen >= settings.cancel_grace_s:
                self.stop(
                    _Outcome(
                        "cancelled",
                        error=f"Cancelled; stopped hard after a grace period of "
                        f"{settings.cancel_grace_s:g} s.",
                    )
                )
                return
            try:
                mine = self.db.run_tx(lambda uow: self._beat(uow, self.reporter.take_pending()))
            except StalwartError as err:
                log.warning("job heartbeat failed", error=err.message)
                continue
            if mine is None:
                # Reaped while we were alive (a long pause): someone else runs it now.
                with self._lock:
                    ended, self._ended = self._ended, True
                if not ended:
                    log.warning("job lease lost; stopping this run")
                    self._interrupt()
                return
            if mine and cancel_seen is None:
                cancel_seen = time.monotonic()
                self.reporter.mark_cancelled()


def run_claimed(
    db: DB,
    claim: Claim,
    settings: JobSettings,
    dispatcher: Dispatcher,
    *,
    track: Callable[[Execution | None], None] | None = None,
    metrics: Metrics | None = None,
) -> JobStatus | None:
    """Run a claimed job to its end in this thread (``track`` sees the Execution while it runs;
    ``metrics`` is told its duration and how it ended)."""
    execution = Execution(db, claim, settings, dispatcher, metrics=metrics)
    if track is not None:
        track(execution)
    try:
        return execution.run()
    finally:
        if track is not None:
            track(None)


def error_message(exc: BaseException) -> str:
    """What to tell a person about ``exc``: a Stalwart error's message, else type and text."""
    if isinstance(exc, StalwartError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _fenced(uow: UnitOfWork, claim: Claim) -> JobRecord | None:
    query = (
        select(JobRecord)
        .where(
            JobRecord.id == claim.job_id,
            JobRecord.worker_id == claim.worker_id,
            JobRecord.attempts == claim.attempt,
            JobRecord.status.in_([s.value for s in ACTIVE]),
        )
        .with_for_update()
    )
    return uow.session.execute(query).scalar_one_or_none()


def _check_json(value: Any) -> None:
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the job's result is not JSON data: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Dead workers and lost dispatches


def reap_lapsed(db: DB, settings: JobSettings, dispatcher: Dispatcher) -> list[str]:
    """Take back jobs whose worker stopped heartbeating; returns the ids re-queued.

    A job with attempts left is queued again at once (the worker died, not the job); one that
    has used them all fails; one that was being cancelled is cancelled.
    """
    cutoff = utcnow() - timedelta(seconds=settings.lease_s)

    def write(uow: UnitOfWork) -> list[tuple[str, float]]:
        query = (
            select(JobRecord)
            .where(
                JobRecord.status.in_([s.value for s in ACTIVE]),
                JobRecord.heartbeat_at < cutoff,
            )
            .with_for_update(skip_locked=True)
        )
        requeued: list[tuple[str, float]] = []
        now = utcnow()
        for record in uow.session.execute(query).scalars():
            lost = (
                f"The worker {record.worker_id} stopped responding during attempt "
                f"{record.attempts} (no heartbeat for {settings.lease_s:g} s)."
            )
            if record.status == S.CANCELLING:
                move(record, S.CANCELLED)
                record.finished_at = now
            elif record.attempts < record.max_attempts:
                move(record, S.QUEUED)
                record.queued_at = now
                requeued.append((record.id, record.timeout_s))
                lost += " It was queued again."
            else:
                move(record, S.FAILED)
                record.finished_at = now
            record.error = lost
            record.worker_id = None
            log.warning("job reaped", job_id=record.id, status=record.status, error=lost)
        return requeued

    requeued = db.run_tx(write)
    for job_id, timeout_s in requeued:
        dispatcher.dispatch(job_id, timeout_s=timeout_s)
    return [job_id for job_id, _ in requeued]


def redispatch_stale(db: DB, settings: JobSettings, dispatcher: Dispatcher) -> list[str]:
    """Hand due waiting jobs that no worker picked up within a lease to the engine again.

    Covers a dispatch lost on the way (the broker was down at enqueue, or lost its data). A
    job whose dispatch still waits in the engine (behind busy workers) is not dispatched again
    (``Dispatcher.in_flight``). Either way ``dispatched_at`` notes the look, so the job is not
    looked at again for a lease and the next ones of a long backlog get their turn, while
    ``queued_at`` (the queue's age, which JobQueueStuck watches) is left alone. A duplicate
    dispatch would be harmless (only one worker can claim the job) but costs the engine a run
    each: with a backlog, one per job and lease.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.lease_s)
    stale_filter = (
        JobRecord.status.in_([s.value for s in CLAIMABLE]),
        JobRecord.queued_at < cutoff,
        or_(JobRecord.dispatched_at.is_(None), JobRecord.dispatched_at < cutoff),
        or_(JobRecord.next_attempt_at.is_(None), JobRecord.next_attempt_at < cutoff),
    )
    with db.unit_of_work(read_only=True) as uow:
        candidates = list(
            uow.session.execute(
                select(JobRecord.id)
                .where(*stale_filter)
                .order_by(JobRecord.queued_at)
                .limit(REDISPATCH_BATCH)
            ).scalars()
        )
    if not candidates:
        return []
    # Asked outside the transaction: the engine's answer may take a network round trip.
    flying = {job_id for job_id in candidates if dispatcher.in_flight(job_id)}

    def write(uow: UnitOfWork) -> list[tuple[str, float]]:
        query = (
            select(JobRecord)
            .where(JobRecord.id.in_(candidates), *stale_filter)
            .with_for_update(skip_locked=True)
        )
        lost = []
        for record in uow.session.execute(query).scalars():
            record.dispatched_at = now
            if record.id not in flying:
                lost.append((record.id, record.timeout_s))
        return lost

    stale = db.run_tx(write)
    if flying:
        log.debug("jobs still waiting in the engine", jobs=len(flying))
    for job_id, timeout_s in stale:
        log.warning("job dispatched again", job_id=job_id)
        dispatcher.dispatch(job_id, timeout_s=timeout_s)
    return [job_id for job_id, _ in stale]
