"""The landing page: what Stalwart is and where to go next."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from stalwart import __version__
from stalwart.pages.base import Page, PageRequest
from stalwart.services.project_service import project_overview

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext


class HomePage(Page):
    """Welcome text and a summary of what the app does."""

    slug = "home"
    title = "Home"
    icon = ":material/home:"

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """Draw the welcome text."""
        st.title("Welcome to Stalwart")
        st.markdown(
            "Stalwart is a framework and reference app for Streamlit applications that never "
            "lose a user's input. What you type is meant to survive a refresh, a closed tab, "
            "a server restart and a database hiccup."
        )
        st.markdown(
            "- **Durable forms**: every change is saved in one transaction with its audit "
            "record; a save is shown as saved only after the database confirmed it.\n"
            "- **Background jobs**: long work runs outside the page, with progress you can "
            "leave and come back to.\n"
            "- **Import and export**: move data in and out without losing what is on screen.\n"
            "- **Operable**: health checks, structured logs with trace ids, migrations and "
            "backups from the `app` command line."
        )
        st.subheader("Projects")
        overview = project_overview(ctx.db, ctx.cache)
        if overview:
            # A plain table: light to lay out, so the page switch stays fast.
            st.table(
                [
                    {
                        "Status": row["status"],
                        "Projects": row["projects"],
                        "Budget": f"{row['budget']:,.0f}",
                    }
                    for row in overview
                ]
            )
        else:
            st.caption("No projects yet. `app db seed` adds the demo projects.")
        st.caption(f"Version {__version__} · {ctx.config.environment} environment")
