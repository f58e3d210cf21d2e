"""The script's part of an OIDC sign-in (``st.login``): start it, and hand it to the cookie.

The sign-in page's "Sign in with <provider>" leads to ``/?page=oidc-login&next=...``; the shell
calls ``oidc_step`` before it looks for a sign-in:

- on that page, it remembers ``next`` for this browser identity and calls ``st.login``, which
  sends the tab to the provider;
- when the provider sent the tab back (Streamlit's ``/oauth2callback`` lands on ``/`` with
  ``st.user`` filled in) and this browser identity has such a sign-in under way, it issues a
  one-time code for what the provider vouched for and sends the tab to
  ``/auth/oidc/complete?code=...``, which signs the user in and sets the HttpOnly login cookie
  (a script cannot).

``st.user`` without a sign-in under way (a leftover Streamlit cookie) is ignored: only a click on
the sign-in page, in this browser, minutes ago, leads to a sign-in. ``st.user`` is read from the
cookie once per Streamlit session, so it is looked at once per session too (no database work on
every run of a tab that has such a leftover cookie).
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from stalwart.bootstrap import AppContext
from stalwart.core.logs import get_logger, log_error
from stalwart.core.router import PAGE_PARAM
from stalwart.core.session import UserSession
from stalwart.errors import StalwartError
from stalwart.services import oidc_handoff as handoff
from stalwart.web.auth_routes import OIDC_COMPLETE_PATH, OIDC_LOGIN_PAGE, login_url, safe_next
from stalwart.web.oidc import provider_label
from stalwart.widgets.auth import redirect_tab
from stalwart.widgets.nav import Link, nav_links

log = get_logger(__name__)

#: this Streamlit session's st.user was looked at (st.user does not change within a session)
_CHECKED_KEY = "_stalwart_oidc_checked"


def oidc_step(ctx: AppContext, session: UserSession) -> bool:
    """Run this tab's step of an OIDC sign-in, if it is in one; True if it drew the page."""
    if not ctx.config.oidc_enabled or ctx.config.auth_mode != "local":
        return False
    if st.query_params.get(PAGE_PARAM) == OIDC_LOGIN_PAGE:
        _start(ctx, session, safe_next(st.query_params.get("next")))
        return True
    if st.session_state.get(_CHECKED_KEY) or not session.persistent:
        return False
    st.session_state[_CHECKED_KEY] = True
    if not st.user.get("is_logged_in"):
        return False
    try:
        issued = handoff.issue(
            ctx.db,
            session.id,
            issuer=str(st.user.get("iss") or ""),
            subject=str(st.user.get("sub") or ""),
            email=_text(st.user.get("email")),
            name=_text(st.user.get("name")),
        )
    except StalwartError as err:
        log_error(err, {"where": "oidc sign-in"})
        return False
    if issued is None:
        return False  # no sign-in under way in this browser: a leftover Streamlit cookie
    code, next_path = issued
    url = f"{OIDC_COMPLETE_PATH}?{urlencode({'code': code})}"
    log.info("oidc sign-in vouched for; handing over", next=next_path)
    _page("Signing you in…")
    redirect_tab(url, key="oidc-complete")
    return True


def _start(ctx: AppContext, session: UserSession, next_path: str) -> None:
    label = provider_label(ctx.config)
    _page(f"Sign in with {label}")
    if not session.persistent:
        st.error("This browser did not keep the app's cookie, which signing in needs.")
        return
    try:
        handoff.begin(ctx.db, session.id, next_path)
    except StalwartError as err:
        error_id = log_error(err, {"where": "oidc sign-in"})
        st.error(f"Sign-in is not possible right now (error id {error_id}). Try again later.")
        return
    st.caption(f"Taking you to {label}…")
    nav_links("sign-in", [Link("Back to the sign-in page", "", url=login_url(next_path))])
    st.login(ctx.config.oidc_provider_name)


def _page(title: str) -> None:
    st.set_page_config(page_title=f"{title} · Stalwart", layout="wide")
    with st.sidebar:
        st.markdown("### Stalwart")
    st.title(title)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
