"""What the System page shows, for administrators: readiness, metric history, jobs, sessions,
stored error reports and deployments.

Every read checks ``admin`` (``OPEN_ADMIN``) first, as ``AnalyticsService`` does: stack traces
and error context are for operators only. The queries are the repository's
(``repositories.system``); this adds the access check and folds the per-process samples of
``metric_samples`` into one timeline for the charts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from sqlalchemy.exc import DBAPIError

from stalwart.core.access import AccessControl
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.health import HealthChecks, HealthReport
from stalwart.core.jobs import count_jobs
from stalwart.core.metrics import Metrics
from stalwart.core.rbac import OPEN_ADMIN, Principal
from stalwart.models import ErrorReport, JobRecord, MetricSample
from stalwart.repositories.system import (
    ErrorReportRepository,
    JobFailureRepository,
    MetricSampleRepository,
)
from stalwart.services.deployments import DeploymentInfo, recent_deployments

T = TypeVar("T")
#: about this many points per chart, whatever the window
TIMELINE_POINTS: Final = 120
#: the smallest step of a timeline (the default sampling interval)
MIN_STEP: Final = timedelta(minutes=1)


@dataclass(frozen=True)
class TimelinePoint:
    """The installation over one step of a timeline: every process's samples in it, folded."""

    #: the start of the step
    ts: datetime
    #: its end: every sample in the step was written before it (charts draw the point here,
    #: so that what a sample measured is never drawn before a deployment it followed)
    end: datetime
    interactions: int
    #: the worst p95 of the processes' samples in the step (None: no interaction)
    interaction_p95_ms: float | None
    page_switches: int
    errors: int
    transactions: int
    db_retries: int
    db_failures: int
    jobs_run: int
    jobs_failed: int
    #: browser tabs connected: per process the most seen in the step, added up
    sessions: int


@dataclass(frozen=True)
class ErrorReportInfo:
    """One stored ``log_error`` report (masked)."""

    error_id: str
    ts: datetime
    error_type: str
    message: str
    stack: str
    context: Mapping[str, Any]
    trace_id: str | None
    instance: str

    @classmethod
    def of(cls, row: ErrorReport) -> ErrorReportInfo:
        """The info of a stored row."""
        return cls(
            row.error_id,
            row.ts,
            row.error_type,
            row.message,
            row.stack,
            dict(row.context or {}),
            row.trace_id,
            row.instance,
        )


@dataclass(frozen=True)
class JobFailure:
    """A job whose last attempt failed."""

    id: str
    function: str
    error: str | None
    attempts: int
    finished_at: datetime | None
    trace_id: str

    @classmethod
    def of(cls, row: JobRecord) -> JobFailure:
        """The info of a stored row."""
        return cls(row.id, row.function, row.error, row.attempts, row.finished_at, row.trace_id)


@dataclass(frozen=True)
class JobsOverview:
    """Jobs per status, the oldest queued job's wait, and the latest failures."""

    by_status: Mapping[str, int]
    oldest_queued_age_s: float
    failures: Sequence[JobFailure]


def timeline_step(window: timedelta, points: int = TIMELINE_POINTS) -> timedelta:
    """The step that shows ``window`` in about ``points`` points, in whole minutes."""
    minutes = max(1, int(window / MIN_STEP / points + 0.999))
    return MIN_STEP * minutes


def fold_samples(
    samples: Sequence[MetricSample], since: datetime, step: timedelta
) -> list[TimelinePoint]:
    """One point per step from ``since`` that holds samples: counts added up over processes
    and samples, the worst p95, and sessions as each process's most, added up."""
    counted = (
        "interactions",
        "page_switches",
        "errors",
        "transactions",
        "db_retries",
        "db_failures",
        "jobs_run",
        "jobs_failed",
    )
    sums: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(counted, 0))
    worst: dict[int, float | None] = {}
    sessions: dict[int, dict[str, int]] = defaultdict(dict)
    for s in samples:
        index = int((s.ts - since) / step)
        total = sums[index]
        for name in counted:
            total[name] += int(getattr(s, name))
        if s.interaction_p95_s is not None:
            worst[index] = max(worst.get(index) or 0.0, s.interaction_p95_s)
        seen = sessions[index]
        seen[s.instance] = max(seen.get(s.instance, 0), s.sessions)
    return [
        TimelinePoint(
            ts=since + step * index,
            end=since + step * (index + 1),
            interaction_p95_ms=_ms(worst.get(index)),
            sessions=sum(sessions[index].values()),
            **sums[index],
        )
        for index in sorted(sums)
    ]


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


class SystemService:
    """The System page's reads, for users whose role has ``admin``."""

    def __init__(
        self,
        db: DB,
        access: AccessControl,
        *,
        metrics: Metrics | None = None,
        checks: HealthChecks | None = None,
    ) -> None:
        self.db = db
        self.access = access
        self.metrics = metrics
        self.checks = checks

    def health(self, actor: Principal) -> HealthReport | None:
        """One run of the readiness checks (the report /readyz shows); None without checks."""
        self._authorize(actor, "health")
        return self.checks.run() if self.checks is not None else None

    def active_sessions(self, actor: Principal) -> int | None:
        """Browser tabs connected to the app now (every process's); None without metrics."""
        self._authorize(actor, "sessions")
        return round(self.metrics.active_sessions()) if self.metrics is not None else None

    def timeline(
        self, actor: Principal, since: datetime, until: datetime | None = None
    ) -> list[TimelinePoint]:
        """The metric samples from ``since``, folded into about ``TIMELINE_POINTS`` steps."""
        self._authorize(actor, "timeline")
        until = until or datetime.now(UTC)
        step = timeline_step(until - since)
        return self._read(
            lambda uow: fold_samples(
                [s for s in MetricSampleRepository(uow).since(since) if s.ts <= until], since, step
            )
        )

    def recent_errors(
        self,
        actor: Principal,
        *,
        since: datetime | None = None,
        error_id: str | None = None,
        limit: int = 50,
    ) -> list[ErrorReportInfo]:
        """Stored error reports, newest first (only the one with ``error_id`` if given)."""
        self._authorize(actor, "errors")
        rows = self._read(
            lambda uow: [
                ErrorReportInfo.of(r)
                for r in ErrorReportRepository(uow).recent(
                    since=since, error_id=error_id, limit=limit
                )
            ]
        )
        return rows

    def jobs(self, actor: Principal, *, failures: int = 10) -> JobsOverview:
        """Jobs per status, the oldest queued job's wait, and the latest ``failures``."""
        self._authorize(actor, "jobs")
        counts = count_jobs(self.db)
        failed = self._read(
            lambda uow: [
                JobFailure.of(r) for r in JobFailureRepository(uow).recent_failures(failures)
            ]
        )
        return JobsOverview(dict(counts.by_status), counts.oldest_queued_age_s, failed)

    def deployments(
        self, actor: Principal, *, since: datetime | None = None, limit: int = 50
    ) -> list[DeploymentInfo]:
        """Recent deployments, newest first."""
        self._authorize(actor, "deployments")
        return recent_deployments(self.db, since=since, limit=limit)

    def _authorize(self, actor: Principal, what: str) -> None:
        self.access.authorize(actor, OPEN_ADMIN, entity="system", entity_id=what)

    def _read(self, fn: Callable[[UnitOfWork], T]) -> T:
        try:
            with self.db.unit_of_work(read_only=True) as uow:
                return fn(uow)
        except DBAPIError as exc:
            raise self.db.translate_final(exc) from exc
