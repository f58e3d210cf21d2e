"""The page shell: the script that ``st.App`` runs on every rerun.

It takes the app context, binds a trace id for the rerun, draws the navigation and renders the
current page. The current page is the ``page`` query parameter, so a refresh or a shared link
lands on the same page. Kept thin on purpose: the Router (core/router.py) will replace it.
"""

from __future__ import annotations

from typing import Final

import streamlit as st

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.logs import get_logger, log_error, trace
from stalwart.errors import StalwartError
from stalwart.pages import DEFAULT_PAGE, PAGES, Page

PAGE_PARAM: Final = "page"

_log = get_logger("stalwart.pages.shell")


def main() -> None:
    """Render one rerun: navigation in the sidebar, the current page in the main area."""
    requested = st.query_params.get(PAGE_PARAM, DEFAULT_PAGE)
    page = PAGES.get(requested)
    with trace(page=page.slug if page else None):
        current = page or PAGES[DEFAULT_PAGE]
        st.set_page_config(page_title=f"{current.title} · Stalwart", layout="wide")
        draw_navigation(current)
        if page is None:
            _log.info("unknown page requested", requested=requested[:100])
            # The requested name is not echoed: it comes from the URL, and markdown in a warning
            # on our own domain would let a crafted link show someone else's text or links.
            st.warning("There is no such page; here is the home page.")
        render_page(current)


def draw_navigation(current: Page) -> None:
    """One sidebar button per page; the current one is highlighted."""
    with st.sidebar:
        st.markdown("### Stalwart")
        for page in PAGES.values():
            st.button(
                page.title,
                key=f"nav-{page.slug}",
                icon=page.icon,
                type="primary" if page is current else "tertiary",
                width="stretch",
                on_click=go_to,
                args=(page.slug,),
            )


def go_to(slug: str) -> None:
    """Make ``slug`` the current page (a widget callback; Streamlit reruns right after it)."""
    st.query_params[PAGE_PARAM] = slug


def render_page(page: Page) -> None:
    """Render ``page``; a failure is logged with an error id and shown, the sidebar stays usable."""
    try:
        ctx: AppContext = current_app()
        page.render(ctx)
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
