"""Who is using this tab: the principal of each run, the sign-in prompt, the sign-out link.

Every full run of the shell resolves the principal from the login cookie
(``AuthService.resume``: one indexed read). Actions that run in a fragment (Save, Apply, job
buttons) ask ``fresh_principal()``, which checks the login session again, so a disabled user or
a revoked session is refused at the next action, not at the next page load.

With ``STALWART_AUTH_MODE=off`` (development and tests) there is no sign-in: every browser acts
as a user named after its identity, with ``STALWART_AUTH_OFF_ROLE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

import streamlit as st

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.logs import get_logger
from stalwart.core.rbac import Principal
from stalwart.core.router import PAGE_PARAM
from stalwart.core.session import LOGIN_COOKIE, UserSession
from stalwart.errors import (
    AccountDisabledError,
    AuthenticationRequiredError,
    SessionExpiredError,
    SessionRevokedError,
    SessionUnknownError,
    StalwartError,
)
from stalwart.web.auth_routes import LOGOUT_PATH, login_url
from stalwart.widgets.nav import Link, nav_links

_STATE_KEY: Final = "_stalwart_auth"
_REDIRECT: Final = st.components.v2.component(
    "stalwart.redirect",
    # Replace, not assign: the page that only said "sign in" is not worth a history entry.
    js="export default function ({ data }) { if (data && data.url) location.replace(data.url); }",
)

log = get_logger(__name__)


@dataclass(frozen=True)
class SignInNeeded:
    """This run has no usable sign-in: why, in the user's words, and the sign-in page's reason."""

    message: str
    reason: str


@dataclass(frozen=True)
class _AuthState:
    principal: Principal
    token: str | None
    session: UserSession


def off_principal(ctx: AppContext, session: UserSession) -> Principal:
    """The principal of a browser when sign-in is off: named after its identity."""
    role = ctx.config.auth_off_role
    name = session.id[:12] if session.persistent else session.id
    return Principal(
        kind="user", username=name, role=role, permissions=ctx.auth.roles.permissions(role)
    )


def _resume(ctx: AppContext, session: UserSession, token: str | None) -> Principal | SignInNeeded:
    try:
        principal = ctx.auth.resume(token)
    except AccountDisabledError:
        return SignInNeeded(
            "Your account is disabled. Ask an administrator to enable it.", "disabled"
        )
    except SessionExpiredError as err:
        return SignInNeeded(err.message, "idle" if err.kind == "idle" else "expired")
    except SessionRevokedError as err:
        return SignInNeeded(err.message, "revoked")
    except SessionUnknownError:
        return SignInNeeded("Sign in to continue.", "required")
    except AuthenticationRequiredError as err:
        return SignInNeeded(err.message, "required")
    if session.user_id is not None and session.user_id != str(principal.user_id):
        # The identity cookie was tied to another user's sign-in: its drafts are not theirs.
        return SignInNeeded("This browser's pages belong to another sign-in.", "switch")
    return principal


def authenticate(ctx: AppContext, session: UserSession) -> Principal | SignInNeeded:
    """The principal of this run (kept for the fragments of this tab), or why there is none."""
    if ctx.config.auth_mode == "off":
        principal: Principal | SignInNeeded = off_principal(ctx, session)
        token = None
    else:
        token = st.context.cookies.get(LOGIN_COOKIE)
        principal = _resume(ctx, session, token)
    if isinstance(principal, Principal):
        st.session_state[_STATE_KEY] = _AuthState(principal, token, session)
    else:
        st.session_state.pop(_STATE_KEY, None)
    return principal


def current_principal() -> Principal:
    """The principal the last full run found (anonymous if none): for drawing, not for acting."""
    state = st.session_state.get(_STATE_KEY)
    return state.principal if isinstance(state, _AuthState) else Principal.anonymous()


def fresh_principal() -> Principal:
    """The principal as of now: the login session is checked again (for an action).

    Anonymous if the sign-in ended meanwhile; the service's access check then refuses the
    action with "You need to sign in", and the user's input stays in the draft.
    """
    state = st.session_state.get(_STATE_KEY)
    if not isinstance(state, _AuthState):
        return Principal.anonymous()
    ctx = current_app()
    if ctx.config.auth_mode == "off":
        return state.principal
    try:
        resumed = _resume(ctx, state.session, state.token)
    except StalwartError as err:  # the database is down: no one is vouched for
        log.warning("could not check the sign-in", error=err.message)
        return Principal.anonymous()
    return resumed if isinstance(resumed, Principal) else Principal.anonymous()


def current_url() -> str:
    """This tab's app URL (path and query), to come back to after signing in."""
    query = st.query_params.to_dict()
    if PAGE_PARAM not in query:
        return "/"
    return "/?" + urlencode(query)


def sign_in_prompt(needed: SignInNeeded) -> None:
    """Say why a sign-in is needed, link to it, and go there (this tab's page comes back)."""
    url = login_url(current_url(), needed.reason)
    st.title("Sign in")
    st.info(f"{needed.message} Your page and your unsaved input are kept.", icon=":material/lock:")
    nav_links("sign-in", [Link("Go to the sign-in page", "", url=url)], label="Sign in")
    _REDIRECT(key="sign-in-redirect", data={"url": url})


def redirect_tab(url: str, *, key: str) -> None:
    """Send this tab to ``url`` (an app path), replacing the current history entry."""
    _REDIRECT(key=key, data={"url": url})


def sign_out_link(principal: Principal) -> None:
    """Who is signed in, and a sign-out link (a POST, so no other site can sign anyone out)."""
    st.caption(f"Signed in as **{principal.username}** ({principal.role})")
    nav_links("account", [Link("Sign out", "", url=LOGOUT_PATH, method="post")], label="Account")
