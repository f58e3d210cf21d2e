"""The Jobs page: the dashboard of the user's background jobs, live while any is unfinished.

A table of the user's jobs (status, progress, duration, attempts, error) filtered by status,
and under it one job chosen from the list with its progress bar, error, result and the
Cancel / Retry buttons. Everything is read from the ``jobs`` table, so a browser closed and
opened again finds its jobs where they are. A role with ``manage_jobs`` (admin) may switch to
everyone's jobs and cancel or retry any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import streamlit as st

from stalwart.core.jobs import JobResult, JobStatus
from stalwart.core.rbac import EXPORT_DATA
from stalwart.job_runtime import job_service
from stalwart.pages.base import Page, PageRequest
from stalwart.services.export_service import ExportService
from stalwart.services.exports import CSV_MEDIA_TYPE
from stalwart.services.job_service import JobService
from stalwart.widgets.auth import fresh_principal
from stalwart.widgets.jobs import (
    STATUS_ICONS,
    format_duration,
    job_actions,
    job_label,
    job_progress,
    job_title,
    live_jobs,
    result_value,
    status_line,
)

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext

#: How many of the newest jobs the dashboard shows.
LIMIT: Final = 200
_FILTER_KEY: Final = "jobs-status-filter"
_SELECTED_KEY: Final = "jobs-selected"
_EVERYONE_KEY: Final = "jobs-everyone"


class JobsPage(Page):
    """Every job of this user: status, progress, duration, attempts, error; cancel and retry."""

    slug = "jobs"
    title = "Jobs"
    icon = ":material/work_history:"

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """The status filter, then the table and the chosen job (a live fragment)."""
        service = job_service(ctx)
        st.title(self.title)
        everyone = service.may_manage(req.principal) and st.toggle(
            "Everyone's jobs", key=_EVERYONE_KEY, help="Your role may see and act on every job."
        )
        whose = "Every user's" if everyone else "Your"
        st.caption(f"{whose} background jobs, newest first; this page follows them while they run.")
        wanted = st.pills(
            "Status",
            [status.value for status in JobStatus],
            selection_mode="multi",
            key=_FILTER_KEY,
            help="Show only jobs in these statuses (none chosen: all).",
        )
        statuses = list(wanted) or None

        def read() -> list[JobResult]:
            return service.list_jobs(req.principal, everyone=everyone, status=statuses, limit=LIMIT)

        live_jobs("jobs_page", read, lambda jobs: _draw(service, jobs, everyone=everyone))
        if req.principal.can(EXPORT_DATA):
            exporter = ExportService(ctx.auth.access)
            st.download_button(
                "Download as CSV",
                # Made when clicked, for whoever is signed in then (checked again, audited).
                data=lambda: exporter.csv(
                    fresh_principal(), job_rows(read(), owners=everyone), what="jobs"
                ),
                file_name="jobs.csv",
                mime=CSV_MEDIA_TYPE,
                icon=":material/download:",
                key="jobs-export",
            )


def job_rows(jobs: list[JobResult], *, owners: bool = False) -> list[dict[str, Any]]:
    """The table's rows: one per job (with ``owners``, who started it)."""
    return [
        {
            **({"owner": job.owner} if owners else {}),
            "job": job_title(job),
            "status": job.status.value,
            "progress": round(job.progress, 1),
            "message": job.progress_message,
            "duration": format_duration(job.duration_s),
            "attempts": f"{job.attempts}/{job.max_attempts}",
            "created (UTC)": job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "error": job.error or "",
            "id": job.id,
        }
        for job in jobs
    ]


def _draw(service: JobService, jobs: list[JobResult], *, everyone: bool) -> None:
    if not jobs:
        st.caption("No jobs to show. Start one on the Job demo page.")
        return
    st.dataframe(
        job_rows(jobs, owners=everyone),
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn(
                "progress", min_value=0, max_value=100, format="%.0f%%"
            ),
        },
        key="jobs-table",
    )
    by_id = {job.id: job for job in jobs}
    chosen = st.selectbox(
        "Job",
        list(by_id),
        format_func=lambda job_id: f"{job_label(by_id[job_id])} · {by_id[job_id].status.value}",
        key=_SELECTED_KEY,
    )
    job = by_id.get(chosen) if chosen else None
    if job is None:
        return
    with st.container(border=True, key="jobs-detail"):
        st.markdown(f"{STATUS_ICONS[job.status]} {status_line(job)}")
        job_progress(job)
        if job.error:
            st.error(job.error, icon=":material/error:")
        if job.status == JobStatus.SUCCEEDED:
            var = result_value(job, "value_at_risk")
            shortfall = result_value(job, "expected_shortfall")
            if var is not None and shortfall is not None:
                st.markdown(
                    f"Value at risk **{var:,.0f}**, expected shortfall **{shortfall:,.0f}**"
                )
        st.caption(f"id {job.id} · trace {job.trace_id} · engine {job.engine}")
        job_actions(service, job, key="jobs")
