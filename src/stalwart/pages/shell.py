"""The page shell: the script that ``st.App`` runs on every rerun.

It finds the browser's session (identity cookie -> stored session), resolves the URL to a page
with the Router, binds a trace id for the rerun, and renders navigation and the page into a
fixed layout: the sidebar, then one main container keyed by page, so a page switch replaces
the main area in place and nothing above the user's scroll position moves.
"""

from __future__ import annotations

from typing import Final

import streamlit as st

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.logs import get_logger, log_error, trace
from stalwart.core.router import Router, RouteSpec
from stalwart.core.session import UserSession, bootstrap_session
from stalwart.errors import StalwartError
from stalwart.job_runtime import job_queue
from stalwart.pages import DEFAULT_PAGE, PAGES, Page
from stalwart.pages.base import PageRequest
from stalwart.widgets.forms import HIDDEN_JOURNAL_CSS
from stalwart.widgets.jobs import job_notifier, job_owner
from stalwart.widgets.nav import NAV_CSS, Link, nav_links

# Streamlit fades elements of the previous run while a run is in progress (opacity 0.33 after
# 0.5 s); with runs this short that only flickers. The journal component has no visible part.
SHELL_CSS: Final = (
    '[data-stale="true"]{opacity:1 !important;transition:none !important}'
    + HIDDEN_JOURNAL_CSS
    + NAV_CSS
)
ROUTES: Final = {slug: RouteSpec(slug, page.params_model) for slug, page in PAGES.items()}

_log = get_logger("stalwart.pages.shell")


def main() -> None:
    """Render one rerun: navigation in the sidebar, the current page in the main area."""
    ctx = current_app()
    with trace():
        st.html(f"<style>{SHELL_CSS}</style>")
        session = bootstrap_session(ctx.db, default_page=DEFAULT_PAGE)
        router = Router(ctx.db, session, ROUTES, default=DEFAULT_PAGE)
        route = router.resolve()
        page = PAGES[route.page]
        with trace(page=page.slug, session=session.id[:8]):
            st.set_page_config(page_title=f"{page.title} · Stalwart", layout="wide")
            draw_navigation(page)
            if route.notice:
                st.toast(route.notice, icon=":material/info:")
            with st.container(key=f"page-{page.slug}"):
                render_page(page, ctx, PageRequest(router.session, route.params, router))
            watch_jobs(ctx, router.session)


def draw_navigation(current: Page) -> None:
    """One sidebar link per page; the current one is marked."""
    links = [Link(page.title, page.slug) for page in PAGES.values()]
    with st.sidebar:
        st.markdown("### Stalwart")
        nav_links("nav", links, current=next(x for x in links if x.page == current.slug))


def watch_jobs(ctx: AppContext, session: UserSession) -> None:
    """Toast when one of the user's jobs finishes, whatever page is shown (see job_notifier)."""
    try:
        with st.sidebar:
            job_notifier(job_queue(ctx), job_owner(session))
    except StalwartError as err:
        # A notification is not worth breaking the page for; the Jobs page shows the jobs.
        log_error(err, {"where": "job notifier"})


def render_page(page: Page, ctx: AppContext, req: PageRequest) -> None:
    """Render ``page``; a failure is logged with an error id and shown, the sidebar stays usable."""
    try:
        page.render(ctx, req)
    except StalwartError as err:
        error_id = log_error(err, {"page": page.slug})
        st.error(err.message)
        st.caption(f"{err.action} (error id {error_id})")
    except Exception as err:
        error_id = log_error(err, {"page": page.slug})
        st.error(
            "This page could not be shown because of an unexpected error. Reload to try "
            f"again; if it keeps happening, give the operator this error id: {error_id}"
        )
    else:
        _log.debug("page rendered")


if __name__ == "__main__":
    main()
