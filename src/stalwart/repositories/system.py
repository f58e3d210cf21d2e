"""Metric samples and error reports: the queries behind the System page.

Neither table is audited: both are written by the system (the sampler, ``log_error``'s sink,
in ``core``), never changed by anyone, and pruned by age.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from stalwart.models import ErrorReport, JobRecord, MetricSample
from stalwart.repositories.base import Repository


class MetricSampleRepository(Repository[MetricSample]):
    """One row per app process per sampling interval."""

    model = MetricSample
    entity = "metric_sample"
    audited = False

    def since(self, since: datetime) -> list[MetricSample]:
        """Samples taken at or after ``since``, oldest first."""
        query = (
            select(MetricSample)
            .where(MetricSample.ts >= since)
            .order_by(MetricSample.ts, MetricSample.id)
        )
        return list(self.session.execute(query).scalars())


class ErrorReportRepository(Repository[ErrorReport]):
    """Stored ``log_error`` reports."""

    model = ErrorReport
    entity = "error_report"
    audited = False

    def recent(
        self, *, since: datetime | None = None, error_id: str | None = None, limit: int = 50
    ) -> list[ErrorReport]:
        """Reports at or after ``since`` (all if None), or the one with ``error_id``; newest
        first."""
        query = select(ErrorReport)
        if since is not None:
            query = query.where(ErrorReport.ts >= since)
        if error_id:
            query = query.where(ErrorReport.error_id == error_id)
        query = query.order_by(ErrorReport.ts.desc(), ErrorReport.id.desc()).limit(limit)
        return list(self.session.execute(query).scalars())


class JobFailureRepository(Repository[JobRecord]):
    """The jobs that failed most recently (read only: jobs change through ``core.jobs``)."""

    model = JobRecord
    entity = "job"
    audited = False

    def recent_failures(self, limit: int = 10) -> list[JobRecord]:
        """Failed jobs, the latest to finish first."""
        query = (
            select(JobRecord)
            .where(JobRecord.status == "failed")
            .order_by(JobRecord.finished_at.desc(), JobRecord.id)
            .limit(limit)
        )
        return list(self.session.execute(query).scalars())
