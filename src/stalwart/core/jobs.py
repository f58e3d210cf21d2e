"""Background jobs: what to run (``Job``), how it is going (``JobResult``), and the API.

The ``jobs`` table is the single source of truth; engines (``core/job_engines.py``) only decide
*where* a job runs. The status machine is ``TRANSITIONS`` below, written down once: every
status change goes through ``check_transition``, and every change is one ``run_tx``.

    queued ----> running ----> succeeded
      |   ^        |  |  \\----> failed ----(retry)----> queued
      |   |        |  |   \\---> retrying --> running (after the backoff)
      |   \\--------/  |             \\-----> cancelled
      v   (worker died)  \\--> cancelling --> cancelled | succeeded
    cancelled ----(retry)----> queued

Job functions are registered with ``@job_function(args=Model)``: a row in the table can only
run a function that was registered, never an arbitrary callable it names.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func, select

from stalwart.core.config import AppConfig
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import current_trace_id, get_logger, new_trace_id
from stalwart.errors import (
    IllegalTransitionError,
    JobCancelled,
    JobDefinitionError,
    JobNotFoundError,
)
from stalwart.models import JobRecord
from stalwart.models.base import utcnow

log = get_logger(__name__)


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    RETRYING = "retrying"


S = JobStatus
#: The status machine: which statuses each status may change to. Nothing else is allowed.
TRANSITIONS: Final[Mapping[JobStatus, frozenset[JobStatus]]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    # A failed attempt waiting for its backoff to pass.
    S.RETRYING: frozenset({S.RUNNING, S.CANCELLED}),
    # QUEUED: the worker died or stopped (lease lapsed, graceful shutdown); run it again.
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING, S.CANCELLING, S.QUEUED}),
    # SUCCEEDED: the work finished before it noticed the cancel; its result is kept.
    S.CANCELLING: frozenset({S.CANCELLED, S.SUCCEEDED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),  # retry
    S.CANCELLED: frozenset({S.QUEUED}),  # retry
}
#: Statuses a worker may claim a job from (those that can become RUNNING).
CLAIMABLE: Final = frozenset(s for s, targets in TRANSITIONS.items() if S.RUNNING in targets)
#: Statuses in which a worker holds the job (and heartbeats).
ACTIVE: Final = frozenset({S.RUNNING, S.CANCELLING})
#: Statuses that end a job until someone retries it.
FINISHED: Final = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})


def check_transition(current: str, new: str, *, job_id: str | None = None) -> JobStatus:
    """Return ``new`` as a JobStatus if ``current`` may change to it; raise otherwise."""
    try:
        old, target = JobStatus(current), JobStatus(new)
    except ValueError as exc:
        raise IllegalTransitionError(f"Unknown job status: {exc}") from None
    if target not in TRANSITIONS[old]:
        who = f"Job {job_id}" if job_id else "The job"
        allowed = ", ".join(sorted(TRANSITIONS[old])) or "nothing (it is final)"
        raise IllegalTransitionError(
            f"{who} is {old.value} and cannot become {target.value} "
            f"(a {old.value} job can become: {allowed})."
        )
    return target


def move(record: JobRecord, new: JobStatus) -> None:
    """Change ``record``'s status after checking the transition (the only way statuses change)."""
    check_transition(record.status, new, job_id=record.id)
    record.status = new.value


# ---------------------------------------------------------------------------------------------
# Job functions


A = TypeVar("A", bound=BaseModel)


@dataclass(frozen=True)
class JobSpec(Generic[A]):
    """A registered job function and the pydantic model its arguments must satisfy."""

    reference: str
    fn: Callable[[A, Reporter], Any]
    args_model: type[A]

    def validate(self, args: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """The arguments as JSON-ready data, or ``JobDefinitionError`` naming what is wrong."""
        try:
            model = (
                args
                if isinstance(args, self.args_model)
                else self.args_model.model_validate(
                    args.model_dump() if isinstance(args, BaseModel) else dict(args)
                )
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}"
                for err in exc.errors()
            )
            raise JobDefinitionError(
                f"Invalid arguments for {self.reference}: {problems}"
            ) from None
        data: dict[str, Any] = model.model_dump(mode="json")
        return data

    def call(self, args: Mapping[str, Any], reporter: Reporter) -> Any:
        """Run the function on stored arguments."""
        return self.fn(self.args_model.model_validate(dict(args)), reporter)


class NoArgs(BaseModel):
    """The arguments of a job function that takes none."""

    model_config = ConfigDict(extra="forbid")


_registry: dict[str, JobSpec[Any]] = {}
_registry_lock = threading.Lock()


def job_function(
    args: type[A] = NoArgs,  # type: ignore[assignment]
) -> Callable[[Callable[[A, Reporter], Any]], Callable[[A, Reporter], Any]]:
    """Register a function as runnable by jobs, with the pydantic model of its arguments."""

    def register(fn: Callable[[A, Reporter], Any]) -> Callable[[A, Reporter], Any]:
        reference = function_reference(fn)
        with _registry_lock:
            _registry[reference] = JobSpec(reference, fn, args)
        return fn

    return register


def function_reference(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, as stored in the ``jobs`` table."""
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve(reference: str) -> JobSpec[Any]:
    """The registered job function named ``module:qualname`` (imports its module if needed)."""
    module, _, qualname = reference.partition(":")
    if not module or not qualname:
        raise JobDefinitionError(f"{reference!r} is not a function reference (module:qualname).")
    spec = _registry.get(reference)
    if spec is None:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise JobDefinitionError(
                f"The module of job function {reference} cannot be imported: {exc}",
                "Install the code that defines it on every worker, or fix the reference.",
            ) from None
        spec = _registry.get(reference)
    if spec is None:
        raise JobDefinitionError(
            f"{reference} is not a registered job function.",
            "Decorate it with @job_function(args=...) in the module named.",
        )
    return spec


# ---------------------------------------------------------------------------------------------
# What to run, and what happened


class Job(BaseModel):
    """A job to enqueue: a registered function, its arguments, and how to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    function: str = Field(min_length=3, max_length=300)
    args: dict[str, Any] = Field(default_factory=dict)
    owner: str = Field(default="system", min_length=1, max_length=200)
    #: higher runs first
    priority: int = Field(default=0, ge=-1000, le=1000)
    timeout_s: float = Field(default=600.0, gt=0, le=7 * 86_400)
    max_attempts: int = Field(default=3, ge=1, le=100)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    trace_id: str | None = Field(default=None, max_length=64)

    @field_validator("args")
    @classmethod
    def _json_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"arguments must be JSON data: {exc}") from None
        return value

    @classmethod
    def of(
        cls,
        fn: Callable[..., Any],
        args: BaseModel | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """A Job running registered ``fn`` with ``args`` (validated by its model now)."""
        reference = function_reference(fn)
        data = resolve(reference).validate(args if args is not None else {})
        return cls(function=reference, args=data, **options)


@dataclass(frozen=True)
class JobResult:
    """A job as the table holds it: a read-only view for the UI, the CLI and tests."""

    id: str
    function: str
    args: dict[str, Any]
    owner: str
    priority: int
    timeout_s: float
    max_attempts: int
    attempts: int
    idempotency_key: str | None
    trace_id: str
    status: JobStatus
    progress: float
    progress_message: str
    result: Any
    error: str | None
    error_detail: str | None
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    next_attempt_at: datetime | None
    worker_id: str | None
    cancel_requested: bool
    engine: str

    @classmethod
    def from_record(cls, record: JobRecord) -> JobResult:
        """The view of one row."""
        values = {name: getattr(record, name) for name in cls.__dataclass_fields__}
        values["status"] = JobStatus(record.status)
        values["args"] = dict(record.args)
        return cls(**values)

    @property
    def finished(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.status in FINISHED

    @property
    def can_cancel(self) -> bool:
        """True if ``cancel`` would change something."""
        return S.CANCELLED in TRANSITIONS[self.status] or S.CANCELLING in TRANSITIONS[self.status]

    @property
    def can_retry(self) -> bool:
        """True if ``retry`` is allowed (the job failed or was cancelled)."""
        return self.status in (S.FAILED, S.CANCELLED)

    @property
    def duration_s(self) -> float | None:
        """Seconds the latest attempt ran (so far, if it is still running)."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished and self.finished_at else utcnow()
        return max(0.0, (end - self.started_at).total_seconds())


# ---------------------------------------------------------------------------------------------
# Progress


class Reporter:
    """Handed to a job function: ``report(pct, msg)`` shows progress and stops a cancelled job.

    ``write(pct, msg)`` stores progress and answers whether cancel was requested; it is called
    at most every ``min_interval_s`` (the worker's heartbeat stores what was skipped).
    """

    def __init__(self, write: Callable[[float, str], bool], *, min_interval_s: float = 0.2) -> None:
        self._write = write
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last_write = float("-inf")
        self._pending: tuple[float, str] | None = None
        self._cancelled = threading.Event()
        self.progress = 0.0
        self.message = ""

    @property
    def cancelled(self) -> bool:
        """True once cancel was requested: the function should stop soon."""
        return self._cancelled.is_set()

    def mark_cancelled(self) -> None:
        """Record that cancel was requested (the worker calls this when it sees it)."""
        self._cancelled.set()

    def report(self, pct: float, message: str = "") -> None:
        """Show ``pct`` (0-100) and ``message``; raise ``JobCancelled`` if cancel was requested."""
        pct = min(100.0, max(0.0, float(pct)))
        with self._lock:
            self.progress, self.message = pct, message[:500]
            now = time.monotonic()
            due = now - self._last_write >= self._min_interval_s or pct >= 100.0
            self._pending = None if due else (pct, self.message)
            if due:
                self._last_write = now
        if due and self._write(pct, self.message):
            self.mark_cancelled()
        self.raise_if_cancelled()

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` if cancel was requested (a check without progress)."""
        if self.cancelled:
            raise JobCancelled("The job was cancelled.")

    def take_pending(self) -> tuple[float, str] | None:
        """Progress reported but not yet written (for the heartbeat to write)."""
        with self._lock:
            pending, self._pending = self._pending, None
            return pending


# ---------------------------------------------------------------------------------------------
# Settings and dispatch


@dataclass(frozen=True)
class JobSettings:
    """How workers run jobs (from ``AppConfig``; tests use short intervals)."""

    heartbeat_s: float = 2.0
    lease_s: float = 30.0
    cancel_grace_s: float = 10.0
    poll_interval_s: float = 1.0
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 300.0

    @classmethod
    def from_config(cls, cfg: AppConfig) -> JobSettings:
        """The settings ``STALWART_JOBS_*`` describe."""
        return cls(
            heartbeat_s=cfg.jobs_heartbeat_s,
            lease_s=cfg.jobs_lease_s,
            cancel_grace_s=cfg.jobs_cancel_grace_s,
            poll_interval_s=cfg.jobs_poll_interval_s,
            backoff_initial_s=cfg.jobs_backoff_initial_s,
            backoff_max_s=cfg.jobs_backoff_max_s,
        )


class Dispatcher(Protocol):
    """Hands a committed job to the engine that will run it."""

    name: str

    def dispatch(
        self, job_id: str, *, timeout_s: float, not_before: datetime | None = None
    ) -> None:
        """Make a worker pick up ``job_id`` (not before ``not_before``)."""

    def in_flight(self, job_id: str) -> bool:
        """True while an earlier dispatch of ``job_id`` still waits or runs in the engine
        (then the sweeper does not dispatch it again); False when unknown."""


class NoDispatch:
    """For processes that only read and write the table (a worker elsewhere polls it)."""

    def __init__(self, name: str = "embedded") -> None:
        self.name = name

    def dispatch(
        self, job_id: str, *, timeout_s: float, not_before: datetime | None = None
    ) -> None:
        """Nothing to do: pollers find the job in the table."""

    def in_flight(self, job_id: str) -> bool:
        """Nothing is held outside the table."""
        return False


# ---------------------------------------------------------------------------------------------
# The API


class JobQueue:
    """enqueue / poll / cancel / retry / list over the ``jobs`` table and one engine."""

    def __init__(self, db: DB, dispatcher: Dispatcher | None = None) -> None:
        self.db = db
        self.dispatcher: Dispatcher = dispatcher or NoDispatch()

    def enqueue(self, job: Job, *, user: str | None = None) -> str:
        """Store ``job`` as queued and hand it to the engine; returns its id.

        With an idempotency key already used, returns the first job's id and changes nothing.
        """
        spec = resolve(job.function)
        args = spec.validate(job.args)
        trace_id = job.trace_id or current_trace_id() or new_trace_id()

        def write(uow: UnitOfWork) -> tuple[str, bool]:
            if job.idempotency_key is not None:
                uow.lock(f"job-idempotency:{job.idempotency_key}")
                existing = uow.session.execute(
                    select(JobRecord.id).filter_by(idempotency_key=job.idempotency_key)
                ).scalar_one_or_none()
                if existing is not None:
                    return existing, False
            now = utcnow()
            record = JobRecord(
                id=uuid.uuid4().hex,
                function=spec.reference,
                args=args,
                owner=job.owner,
                priority=job.priority,
                timeout_s=job.timeout_s,
                max_attempts=job.max_attempts,
                attempts=0,
                idempotency_key=job.idempotency_key,
                trace_id=trace_id,
                status=S.QUEUED.value,
                progress=0.0,
                progress_message="",
                cancel_requested=False,
                created_at=now,
                queued_at=now,
                engine=self.dispatcher.name,
            )
            uow.session.add(record)
            uow.session.flush()
            uow.audit.record("enqueue", "job", record.id, None, _audited(record))
            uow.after_commit(lambda: self._dispatch(record.id, job.timeout_s))
            return record.id, True

        job_id, created = self.db.run_tx(write, user=user or job.owner)
        log.info("job enqueued" if created else "job already enqueued", job_id=job_id)
        return job_id

    def poll(self, job_id: str) -> JobResult:
        """The job as the table holds it now; ``JobNotFoundError`` if there is none."""
        with self.db.unit_of_work(read_only=True) as uow:
            record = uow.session.get(JobRecord, job_id)
            if record is None:
                raise JobNotFoundError(f"There is no job {job_id}.")
            return JobResult.from_record(record)

    def cancel(self, job_id: str, *, user: str = "system") -> JobResult:
        """Cancel a job: a waiting one at once; a running one at its next progress report.

        Cancelling a job that is already cancelled or cancelling changes nothing. A running
        job that does not stop within the grace period is stopped hard by its worker.
        """

        def write(uow: UnitOfWork) -> JobResult:
            record = _locked(uow, job_id)
            if record.status in (S.CANCELLED, S.CANCELLING):
                return JobResult.from_record(record)
            before = record.status
            if record.status == S.RUNNING:
                move(record, S.CANCELLING)
            else:
                move(record, S.CANCELLED)
                record.finished_at = utcnow()
                record.progress_message = "Cancelled before it ran."
            record.cancel_requested = True
            uow.audit.record("cancel", "job", job_id, {"status": before}, {"status": record.status})
            return JobResult.from_record(record)

        result = self.db.run_tx(write, user=user)
        log.info("job cancel requested", job_id=job_id, status=result.status.value, by=user)
        return result

    def retry(self, job_id: str, *, user: str = "system") -> JobResult:
        """Run a failed or cancelled job again, as a fresh job with all its attempts.

        The id stays the same (so the UI keeps following it); attempts, progress, error and
        result start over.
        """

        def write(uow: UnitOfWork) -> JobResult:
            record = _locked(uow, job_id)
            before = record.status
            move(record, S.QUEUED)
            now = utcnow()
            record.attempts = 0
            record.progress, record.progress_message = 0.0, ""
            record.result = record.error = record.error_detail = None
            record.started_at = record.finished_at = record.heartbeat_at = None
            record.next_attempt_at = None
            record.worker_id = None
            record.cancel_requested = False
            record.queued_at = now
            uow.audit.record("retry", "job", job_id, {"status": before}, {"status": "queued"})
            uow.after_commit(lambda: self._dispatch(job_id, record.timeout_s))
            return JobResult.from_record(record)

        result = self.db.run_tx(write, user=user)
        log.info("job retried", job_id=job_id, by=user)
        return result

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        status: str | Collection[str] | None = None,
        limit: int = 100,
    ) -> list[JobResult]:
        """Jobs, newest first, optionally of one owner and in some statuses."""
        query = select(JobRecord).order_by(JobRecord.created_at.desc(), JobRecord.id).limit(limit)
        if owner is not None:
            query = query.where(JobRecord.owner == owner)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            query = query.where(JobRecord.status.in_([JobStatus(s).value for s in wanted]))
        with self.db.unit_of_work(read_only=True) as uow:
            return [JobResult.from_record(r) for r in uow.session.execute(query).scalars()]

    def _dispatch(self, job_id: str, timeout_s: float) -> None:
        # After the commit: a broker that is down leaves the job queued in the table, where
        # the engine's sweeper finds it again.
        self.dispatcher.dispatch(job_id, timeout_s=timeout_s)


@dataclass(frozen=True)
class JobCounts:
    """Jobs per status (every status, 0 if none) and how long the oldest queued one waits."""

    by_status: Mapping[str, int]
    oldest_queued_age_s: float


def count_jobs(db: DB) -> JobCounts:
    """One grouped read of the ``jobs`` table (for the metrics gauges)."""
    query = select(JobRecord.status, func.count(), func.min(JobRecord.queued_at)).group_by(
        JobRecord.status
    )
    with db.unit_of_work(read_only=True) as uow:
        rows = uow.session.execute(query).all()
    counts = {status.value: 0 for status in JobStatus}
    oldest: datetime | None = None
    for status, count, first_queued in rows:
        counts[str(status)] = int(count)
        if status == S.QUEUED and first_queued is not None:
            oldest = first_queued if first_queued.tzinfo else first_queued.replace(tzinfo=UTC)
    age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
    return JobCounts(counts, age)


def _locked(uow: UnitOfWork, job_id: str) -> JobRecord:
    record = uow.session.get(JobRecord, job_id, with_for_update=True)
    if record is None:
        raise JobNotFoundError(f"There is no job {job_id}.")
    return record


def _audited(record: JobRecord) -> dict[str, Any]:
    return {
        "function": record.function,
        "args": record.args,
        "owner": record.owner,
        "priority": record.priority,
        "timeout_s": record.timeout_s,
        "max_attempts": record.max_attempts,
        "idempotency_key": record.idempotency_key,
        "status": record.status,
    }
