"""The System page (admin): is the app ready, how fast and how often failing it has been, with
the deployments on the same time axis, what the jobs and sessions are doing, and the recent
errors with their ids and stack traces.

Everything is read through ``SystemService``, which checks ``admin`` again. The charts draw
``metric_samples`` (written by each app process's sampler, ``core.metric_history``), so they
work without Prometheus and survive restarts; each deployment is a vertical rule at its start
time whose tooltip names the version and commit, so a change in latency or errors can be
tied to the start that preceded it. OPERATIONS.md, "The System dashboard", says how to read it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import altair as alt
import pandas as pd
import streamlit as st

from stalwart.core.rbac import OPEN_ADMIN
from stalwart.models.base import utcnow
from stalwart.monitoring import health_checks
from stalwart.pages.analytics import deployment_rows
from stalwart.pages.base import Page, PageRequest
from stalwart.services.deployments import DeploymentInfo
from stalwart.services.system_service import (
    ErrorReportInfo,
    JobsOverview,
    SystemService,
    TimelinePoint,
)

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext

#: the windows offered, by label
WINDOWS: Final = {
    "1 hour": timedelta(hours=1),
    "24 hours": timedelta(hours=24),
    "7 days": timedelta(days=7),
    "14 days": timedelta(days=14),
}
DEFAULT_WINDOW: Final = "24 hours"
#: error reports listed (newest first)
ERRORS_SHOWN: Final = 20
_TIME: Final = "%Y-%m-%d %H:%M:%S"


class SystemPage(Page):
    """Health, latency and errors over time next to deployments, jobs, sessions, errors."""

    slug = "system"
    title = "System"
    icon = ":material/monitor_heart:"
    action = OPEN_ADMIN

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """Health checks, charts, jobs and sessions, recent errors, deployments."""
        service = SystemService(
            ctx.db, ctx.auth.access, metrics=ctx.metrics, checks=health_checks(ctx)
        )
        actor = req.principal
        st.title(self.title)
        st.caption(
            "Times are UTC. Charts come from the metric samples each app process writes; "
            "deployments are the vertical rules. See OPERATIONS.md, The System dashboard."
        )
        window = st.segmented_control(
            "Window", list(WINDOWS), default=DEFAULT_WINDOW, required=True, key="system-window"
        )
        until = utcnow()
        since = until - WINDOWS[str(window or DEFAULT_WINDOW)]

        _draw_health(service, actor)
        points = service.timeline(actor, since, until)
        deployments = service.deployments(actor, since=since, limit=50)
        jobs = service.jobs(actor)
        sessions = service.active_sessions(actor)
        _draw_summary(points, jobs, sessions)

        st.subheader("Latency and errors")
        if points or deployments:
            for (field, _, _), chart in zip(
                CHARTS, timeline_charts(points, deployments, since, until), strict=True
            ):
                st.altair_chart(chart, width="stretch", key=f"system-chart-{field}")
        if not points:
            st.info(
                "No metric samples in this window yet: each app process writes one every "
                "STALWART_METRICS_SAMPLE_INTERVAL_S seconds.",
                icon=":material/info:",
            )

        _draw_jobs(jobs)
        _draw_errors(service, actor, since)

        st.subheader("Deployments")
        if deployments:
            st.dataframe(
                deployment_rows(deployments),
                hide_index=True,
                width="stretch",
                key="system-deployments",
            )
        else:
            st.caption("No app start recorded in this window.")


def health_rows(service: SystemService, actor: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The app's readiness (``ok``, ``degraded``, ``unavailable``; None without checks), and one
    row per readiness check (as /readyz, with detail)."""
    report = service.health(actor)
    if report is None:
        return None, []
    rows = [
        {
            "check": r.name,
            "status": r.status,
            "critical": r.critical,
            "latency (ms)": round(r.latency_ms, 1),
            "error": r.error or "",
            "error id": r.error_id or "",
            "detail": r.detail or "",
        }
        for r in report.results
    ]
    return report.status, rows


def _draw_health(service: SystemService, actor: Any) -> None:
    st.subheader("Health")
    status, rows = health_rows(service, actor)
    if status is None:
        st.caption("No readiness checks in this process.")
        return
    if status == "ok":
        st.success("Ready: every dependency check passed.", icon=":material/check_circle:")
    elif status == "degraded":
        st.warning(
            "Ready, degraded: a non-critical check fails (Redis: values computed uncached, or "
            "jobs dispatched once it answers). Look its error id up under Recent errors.",
            icon=":material/warning:",
        )
    else:
        st.error(
            "Not ready: a dependency check fails. Look its error id up under Recent errors.",
            icon=":material/error:",
        )
    st.dataframe(rows, hide_index=True, width="stretch", key="system-health")


def _draw_summary(points: list[TimelinePoint], jobs: JobsOverview, sessions: int | None) -> None:
    interactions = sum(p.interactions for p in points)
    errors = sum(p.errors for p in points)
    worst = [p.interaction_p95_ms for p in points if p.interaction_p95_ms is not None]
    cols = st.columns(5)
    cols[0].metric("Sessions now", "" if sessions is None else sessions)
    cols[1].metric("Interactions", interactions)
    cols[2].metric("Worst p95 (ms)", f"{max(worst):.0f}" if worst else "")
    cols[3].metric("Errors", errors)
    cols[4].metric("Jobs queued", jobs.by_status.get("queued", 0))


#: the charts over time: (column, title, mark), one above the other on the same time axis
CHARTS: Final = (
    ("p95_ms", "p95 interaction (ms)", "line"),
    ("interactions", "interactions", "bar"),
    ("errors", "errors", "bar"),
    ("db_retries", "DB retries", "bar"),
)


def timeline_charts(
    points: list[TimelinePoint],
    deployments: list[DeploymentInfo],
    since: datetime,
    until: datetime,
) -> list[alt.LayerChart]:
    """One chart per entry of ``CHARTS``, each on the window's whole time axis (so they line
    up), each with a rule at every deployment (version and commit in its tooltip)."""
    data = pd.DataFrame(
        [
            {
                "ts": p.end,
                "p95_ms": p.interaction_p95_ms,
                "interactions": p.interactions,
                "errors": p.errors,
                "db_retries": p.db_retries,
            }
            for p in points
        ],
        columns=["ts", "p95_ms", "interactions", "errors", "db_retries"],
    )
    marks = pd.DataFrame(
        [
            {
                "ts": d.started_at,
                "version": d.version,
                "commit": d.commit[:12],
                "host": d.host,
                "schema": d.migration_head or "",
            }
            for d in deployments
        ],
        columns=["ts", "version", "commit", "host", "schema"],
    )
    axis = alt.X(
        "ts:T",
        title=None,
        # to the end of the last step, which may lie a little after now
        scale=alt.Scale(
            domain=[since.isoformat(), max([until, *(p.end for p in points)]).isoformat()]
        ),
    )
    rules = (
        alt.Chart(marks)
        .mark_rule(color="#e45756", strokeDash=[4, 3], strokeWidth=2)
        .encode(
            x=axis,
            tooltip=[
                alt.Tooltip("ts:T", title="deployed (UTC)", format="%Y-%m-%d %H:%M:%S"),
                alt.Tooltip("version:N"),
                alt.Tooltip("commit:N"),
                alt.Tooltip("schema:N"),
                alt.Tooltip("host:N"),
            ],
        )
    )
    charts = []
    for field, title, mark in CHARTS:
        base = alt.Chart(data)
        drawn = base.mark_line(point=True) if mark == "line" else base.mark_bar()
        counts = mark == "bar"
        series = drawn.encode(
            x=axis,
            y=alt.Y(
                f"{field}:Q",
                title=title,
                axis=alt.Axis(format="d", tickMinStep=1) if counts else alt.Axis(),
                scale=alt.Scale(domainMin=0),
            ),
            tooltip=[
                alt.Tooltip("ts:T", title="until (UTC)", format="%Y-%m-%d %H:%M"),
                alt.Tooltip(f"{field}:Q", title=title),
            ],
        )
        charts.append(alt.LayerChart(layer=[series, rules], height=150))
    return charts


def _draw_jobs(jobs: JobsOverview) -> None:
    st.subheader("Jobs")
    cols = st.columns(2)
    cols[0].dataframe(
        [{"status": status, "jobs": n} for status, n in sorted(jobs.by_status.items())],
        hide_index=True,
        width="stretch",
        key="system-jobs",
    )
    cols[1].metric("Oldest queued job waits (s)", f"{jobs.oldest_queued_age_s:.0f}")
    if jobs.failures:
        st.caption("Latest failures")
        st.dataframe(
            [
                {
                    "finished (UTC)": f.finished_at.strftime(_TIME) if f.finished_at else "",
                    "job": f.id,
                    "function": f.function,
                    "attempts": f.attempts,
                    "error": f.error or "",
                    "trace id": f.trace_id,
                }
                for f in jobs.failures
            ],
            hide_index=True,
            width="stretch",
            key="system-job-failures",
        )


def _draw_errors(service: SystemService, actor: Any, since: Any) -> None:
    st.subheader("Recent errors")
    wanted = st.text_input(
        "Error id",
        placeholder="the id a user was shown, e.g. 3f2a9c0d1b2e",
        key="system-error-id",
    ).strip()
    reports = (
        service.recent_errors(actor, error_id=wanted, limit=ERRORS_SHOWN)
        if wanted
        else service.recent_errors(actor, since=since, limit=ERRORS_SHOWN)
    )
    if not reports:
        st.caption("No error with this id." if wanted else "No error reported in this window.")
    for report in reports:
        _draw_error(report)


def error_label(report: ErrorReportInfo) -> str:
    """An error's one-line summary: when, its id, its type and message."""
    message = report.message if len(report.message) <= 80 else report.message[:79] + "…"
    return f"{report.ts.strftime(_TIME)} · {report.error_id} · {report.error_type}: {message}"


def _draw_error(report: ErrorReportInfo) -> None:
    with st.expander(error_label(report)):
        st.caption(f"Trace id {report.trace_id or '-'} · process {report.instance}")
        if report.context:
            st.json(dict(report.context), expanded=False)
        st.code(report.stack or "(no stack)", language="python")
