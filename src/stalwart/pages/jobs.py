"""The Jobs page: the dashboard of the user's background jobs, live while any is unfinished.

A table of the user's jobs (status, progress, duration, attempts, error) filtered by status,
and under it one job chosen from the list with its progress bar, error, result and the
Cancel / Retry buttons. Everything is read from the ``jobs`` table, so a browser closed and
opened again finds its jobs where they are.

TODO(RBAC issue): admins will see (and act on) everyone's jobs; until roles exist every user
sees only the jobs their browser identity started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import streamlit as st

from stalwart.core.jobs import JobQueue, JobResult, JobStatus
from stalwart.job_runtime import job_queue
from stalwart.pages.base import Page, PageRequest
from stalwart.widgets.jobs import (
    STATUS_ICONS,
    format_duration,
    job_actions,
    job_label,
    job_owner,
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


class JobsPage(Page):
    """Every job of this user: status, progress, duration, attempts, error; cancel and retry."""

    slug = "jobs"
    title = "Jobs"
    icon = ":material/work_history:"

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """The status filter, then the table and the chosen job (a live fragment)."""
        queue = job_queue(ctx)
        owner = job_owner(req.session)
        st.title(self.title)
        st.caption("Your background jobs, newest first; this page follows them while they run.")
        wanted = st.pills(
            "Status",
            [status.value for status in JobStatus],
            selection_mode="multi",
            key=_FILTER_KEY,
            help="Show only jobs in these statuses (none chosen: all).",
        )
        statuses = list(wanted) or None

        def read() -> list[JobResult]:
            return queue.list_jobs(owner=owner, status=statuses, limit=LIMIT)

        live_jobs("jobs_page", read, lambda jobs: _draw(queue, owner, jobs))


def job_rows(jobs: list[JobResult]) -> list[dict[str, Any]]:
    """The table's rows: one per job."""
    return [
        {
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


def _draw(queue: JobQueue, owner: str, jobs: list[JobResult]) -> None:
    if not jobs:
        st.caption("No jobs to show. Start one on the Job demo page.")
        return
    st.dataframe(
        job_rows(jobs),
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
        job_actions(queue, job, owner, key="jobs")
