"""The Analytics page (admin): a funnel over the tracked events, and the recent deployments.

The administrator picks a time window and, in order, the steps (page views per page, other
events by name); the page shows how many distinct sessions reached each step after the ones
before it, and the conversion from step to step. Everything is read through
``AnalyticsService``, which checks ``admin`` again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import streamlit as st

from stalwart.core.rbac import OPEN_ADMIN
from stalwart.models.base import utcnow
from stalwart.pages.base import Page, PageRequest
from stalwart.services.analytics_service import (
    MAX_STEPS,
    AnalyticsService,
    FunnelRow,
    StepChoice,
)
from stalwart.services.deployments import DeploymentInfo

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext

#: the windows offered, by label
WINDOWS: Final = {
    "24 hours": timedelta(hours=24),
    "7 days": timedelta(days=7),
    "30 days": timedelta(days=30),
}
_DEFAULT_STEPS: Final = 3


class AnalyticsPage(Page):
    """Where users go and how far they get: a funnel over page views, saves, jobs, exports."""

    slug = "analytics"
    title = "Analytics"
    icon = ":material/filter_alt:"
    action = OPEN_ADMIN

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """The window and step pickers, the funnel (chart and table), the deployments."""
        service = AnalyticsService(ctx.db, ctx.auth.access)
        st.title(self.title)
        st.caption(
            "Distinct sessions that reached each step in order. Events hold pseudonyms only; "
            "see OPERATIONS.md, Tracking."
        )
        window = st.segmented_control(
            "Window", list(WINDOWS), default="7 days", required=True, key="analytics-window"
        )
        until = utcnow()
        since = until - WINDOWS[str(window or "7 days")]
        choices = service.step_choices(req.principal, since, until)
        if not choices:
            st.info("No events recorded in this window yet.", icon=":material/info:")
        else:
            by_label = {choice.step.label: choice for choice in choices}
            picked = st.multiselect(
                "Steps, in order",
                list(by_label),
                default=list(by_label)[:_DEFAULT_STEPS],
                format_func=lambda label: _choice_label(by_label[label]),
                max_selections=MAX_STEPS,
                key=f"analytics-steps-{window}",
            )
            if picked:
                rows = service.funnel(
                    req.principal, [by_label[label].step for label in picked], since, until
                )
                _draw_funnel(rows)
            else:
                st.info("Pick the funnel's steps, in order.", icon=":material/info:")
        st.subheader("Deployments")
        deployments = service.deployments(req.principal, since=since, limit=20)
        if deployments:
            st.dataframe(
                deployment_rows(deployments),
                hide_index=True,
                width="stretch",
                key="analytics-deployments",
            )
        else:
            st.caption("No app start recorded in this window.")


def _choice_label(choice: StepChoice) -> str:
    return f"{choice.step.label} ({choice.sessions} sessions)"


def funnel_table(rows: list[FunnelRow]) -> list[dict[str, Any]]:
    """One row per step: sessions, and the conversion from the step before and from the first."""
    return [
        {
            "step": f"{number}. {row.step.label}",
            "sessions": row.sessions,
            "from previous": _percent(row.of_previous),
            "from first": _percent(row.of_first),
        }
        for number, row in enumerate(rows, start=1)
    ]


def deployment_rows(deployments: list[DeploymentInfo]) -> list[dict[str, Any]]:
    """One row per recorded app start, newest first."""
    return [
        {
            "started (UTC)": d.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "version": d.version,
            "commit": d.commit[:12],
            "schema": d.migration_head or "",
            "host": d.host,
            "pid": d.pid,
        }
        for d in deployments
    ]


def _percent(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.0%}"


def _draw_funnel(rows: list[FunnelRow]) -> None:
    table = funnel_table(rows)
    st.bar_chart(
        {"step": [r["step"] for r in table], "sessions": [r["sessions"] for r in table]},
        x="step",
        y="sessions",
        sort=False,
        horizontal=True,
    )
    st.dataframe(table, hide_index=True, width="stretch", key="analytics-funnel")
