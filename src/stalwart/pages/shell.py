"""The page shell: the script that ``st.App`` runs on every rerun.

It finds the browser's session (identity cookie -> stored session), resolves the URL to a page
with the Router, binds a trace id for the rerun, and renders navigation and the page into a
fixed layout: the sidebar, then one main container keyed by page, so a page switch replaces
the main area in place and nothing above the user's scroll position moves.
"""

from __future__ import annotations

import contextlib
from typing import Final

import streamlit as st

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.logs import get_logger, interaction, log_error
from stalwart.core.rbac import Principal
from stalwart.core.router import Router, RouteSpec
from stalwart.core.session import bootstrap_session
from stalwart.core.tracking import PAGE_VIEW, track
from stalwart.errors import PermissionDeniedError, StalwartError
from stalwart.job_runtime import job_queue
from stalwart.pages import DEFAULT_PAGE, PAGES, Page
from stalwart.pages.base import PageRequest
from stalwart.widgets.auth import SignInNeeded, authenticate, sign_in_prompt, sign_out_link
from stalwart.widgets.forms import HIDDEN_JOURNAL_CSS
from stalwart.widgets.interactions import full_run, remember_log_context
from stalwart.widgets.jobs import job_notifier, job_owner
from stalwart.widgets.nav import NAV_CSS, Link, nav_links
from stalwart.widgets.oidc import oidc_step
from stalwart.widgets.safe_text import md_escape

# Streamlit fades elements of the previous run while a run is in progress (opacity 0.33 after
# 0.5 s); with runs this short that only flickers. The journal component has no visible part.
SHELL_CSS: Final = (
    '[data-stale="true"]{opacity:1 !important;transition:none !important}'
    + HIDDEN_JOURNAL_CSS
    + NAV_CSS
)
ROUTES: Final = {slug: RouteSpec(slug, page.params_model) for slug, page in PAGES.items()}
#: the page this tab last showed, so a rerun of the same page is not another page view
_SHOWN_KEY: Final = "_stalwart_page_shown"

_log = get_logger("stalwart.pages.shell")


def main() -> None:
    """Render one rerun: navigation in the sidebar, the current page in the main area."""
    ctx = current_app()
    # The run's trace id: the one its callbacks bound, else a new one; unbound at the end.
    with interaction(), full_run(ctx.metrics) as run:  # run.page labels the run's latency
        st.html(f"<style>{SHELL_CSS}</style>")
        session = bootstrap_session(ctx.db, default_page=DEFAULT_PAGE)
        if oidc_step(ctx, session):  # on the way to or back from the identity provider
            run.page = "sign-in"
            return
        principal = authenticate(ctx, session)
        if isinstance(principal, SignInNeeded):
            run.page = "sign-in"
            ask_to_sign_in(principal)
            return
        allowed = [slug for slug, page in PAGES.items() if principal.can(page.action)]
        router = Router(ctx.db, session, ROUTES, default=DEFAULT_PAGE, allowed=allowed)
        route = router.resolve()
        page = PAGES[route.page]
        run.page = page.slug
        # The user is logged as a keyed pseudonym of the name (core.logs.UserPseudonym).
        log_ctx = {"page": page.slug, "session": session.id[:8], "user": principal.username}
        remember_log_context(**log_ctx)
        with interaction(**log_ctx):
            st.set_page_config(page_title=f"{page.title} · Stalwart", layout="wide")
            if route.denied:
                record_denial(ctx, principal, PAGES[route.denied])
            draw_navigation(page, principal, allowed)
            if route.notice:
                st.toast(route.notice, icon=":material/info:")
            track_page_view(page, principal)
            with st.container(key=f"page-{page.slug}"):
                req = PageRequest(router.session, route.params, router, principal)
                render_page(page, ctx, req)
            watch_jobs(ctx, principal)


def ask_to_sign_in(needed: SignInNeeded) -> None:
    """The run of a tab without a usable sign-in: no navigation, no page, the way to sign in."""
    st.set_page_config(page_title="Sign in · Stalwart", layout="wide")
    with st.sidebar:
        st.markdown("### Stalwart")
    with st.container(key="page-sign-in"):
        sign_in_prompt(needed)


def record_denial(ctx: AppContext, principal: Principal, page: Page) -> None:
    """Audit a URL that named a page this user may not see (the home page is shown instead)."""
    # Expected to refuse: authorize() audits and logs it; the router already showed home.
    with contextlib.suppress(PermissionDeniedError):
        ctx.auth.authorize(principal, page.action, entity="page", entity_id=page.slug)


def track_page_view(page: Page, principal: Principal) -> None:
    """Record a page view when this tab comes to ``page`` (not on each rerun of it)."""
    if st.session_state.get(_SHOWN_KEY) == page.slug:
        return
    st.session_state[_SHOWN_KEY] = page.slug
    track(PAGE_VIEW, actor=principal, page=page.slug)


def draw_navigation(current: Page, principal: Principal, allowed: list[str]) -> None:
    """One sidebar link per page this user may see; the current one is marked; who is in."""
    links = [Link(PAGES[slug].title, slug) for slug in allowed]
    with st.sidebar:
        st.markdown("### Stalwart")
        nav_links("nav", links, current=next(x for x in links if x.page == current.slug))
        if principal.session_id is not None:
            sign_out_link(principal)


def watch_jobs(ctx: AppContext, principal: Principal) -> None:
    """Toast when one of the user's jobs finishes, whatever page is shown (see job_notifier)."""
    try:
        with st.sidebar:
            job_notifier(job_queue(ctx), job_owner(principal))
    except StalwartError as err:
        # A notification is not worth breaking the page for; the Jobs page shows the jobs.
        log_error(err, {"where": "job notifier"})


def render_page(page: Page, ctx: AppContext, req: PageRequest) -> None:
    """Render ``page``; a failure is logged with an error id and shown, the sidebar stays usable."""
    try:
        page.render(ctx, req)
    except StalwartError as err:
        error_id = log_error(err, {"page": page.slug})
        st.error(md_escape(err.message))
        st.caption(md_escape(f"{err.action} (error id {error_id})"))
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
