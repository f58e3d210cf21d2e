"""The Users page (admin): accounts, roles, disabling, password resets, signing out everywhere.

Everything goes through ``AuthService``, which checks ``admin`` again for each action with the
sign-in as of the click (a page reached by a crafted request still cannot act) and audits it.
The same operations exist on the command line as ``app users ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import streamlit as st

from stalwart.core.rbac import OPEN_ADMIN, Principal
from stalwart.errors import StalwartError
from stalwart.pages.base import Page, PageRequest
from stalwart.services.auth_service import AuthService, UserInfo
from stalwart.widgets.auth import fresh_principal
from stalwart.widgets.interactions import traced

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext

_NOTICE_KEY: Final = "_stalwart_users_notice"
_PREFIX: Final = "users-"


class UsersPage(Page):
    """Who may use the app, with which role."""

    slug = "users"
    title = "Users"
    icon = ":material/manage_accounts:"
    action = OPEN_ADMIN

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """The users table, the new-user form and the actions on one user."""
        auth = ctx.auth
        st.title(self.title)
        st.caption("Accounts and roles. Every change here is audited.")
        notice = st.session_state.pop(_NOTICE_KEY, None)
        if notice:
            level, text = notice
            (st.success if level == "ok" else st.error)(text)
        users = auth.list_users(req.principal)
        st.dataframe(user_rows(users), hide_index=True, width="stretch", key="users-table")
        left, right = st.columns(2, gap="large")
        with left:
            _new_user_form(auth)
        with right:
            _one_user(auth, users)


def user_rows(users: list[UserInfo]) -> list[dict[str, Any]]:
    """One row per user; no password hashes, no e-mail addresses (PII stays out of tables)."""
    return [
        {
            "username": u.username,
            "name": u.display_name,
            "role": u.role,
            "status": "disabled" if u.disabled else "active",
            "sign-in": "password" if u.has_password else ("OIDC" if u.oidc_linked else "none"),
            "last sign-in (UTC)": (
                u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
            ),
        }
        for u in users
    ]


def _new_user_form(auth: AuthService) -> None:
    st.subheader("Add a user")
    with st.form("users-new", clear_on_submit=True, enter_to_submit=False):
        st.text_input("Username", key=_PREFIX + "new-name", max_chars=100)
        st.text_input("Password", key=_PREFIX + "new-password", type="password", max_chars=1024)
        st.selectbox("Role", auth.roles.names, index=0, key=_PREFIX + "new-role")
        st.form_submit_button(
            "Add user", on_click=_act, args=(partial(_create, auth),), type="primary"
        )


def _one_user(auth: AuthService, users: list[UserInfo]) -> None:
    st.subheader("Change a user")
    if not users:
        st.caption("No users yet.")
        return
    names = [u.username for u in users]
    chosen = st.selectbox("User", names, key=_PREFIX + "chosen")
    user = next((u for u in users if u.username == chosen), None)
    if user is None:
        return
    roles = list(auth.roles.names)
    st.selectbox(
        "Role",
        roles,
        index=roles.index(user.role) if user.role in roles else 0,
        key=_PREFIX + f"role-{user.id}",
    )
    one, two, three = st.columns(3)
    one.button(
        "Set role", key=_PREFIX + "set-role", on_click=_act, args=(partial(_set_role, auth, user),)
    )
    if user.disabled:
        two.button(
            "Enable", key=_PREFIX + "enable", on_click=_act, args=(partial(_enable, auth, user),)
        )
    else:
        two.button(
            "Disable", key=_PREFIX + "disable", on_click=_act, args=(partial(_disable, auth, user),)
        )
    three.button(
        "Sign out everywhere",
        key=_PREFIX + "revoke",
        on_click=_act,
        args=(partial(_revoke, auth, user),),
    )
    with st.form("users-reset", clear_on_submit=True, enter_to_submit=False):
        st.text_input(
            "New password", key=_PREFIX + "reset-password", type="password", max_chars=1024
        )
        st.form_submit_button(
            "Reset password",
            on_click=_act,
            args=(partial(_reset, auth, user),),
            help="Also signs them out.",
        )


@traced
def _act(work: Callable[[Principal], str]) -> None:
    """Button callback: ``work`` as the user signed in now; what it says becomes the notice.

    ``AuthService`` checks ``admin`` for every action and audits it; a refusal or a failure
    is shown with what to do.
    """
    try:
        text = work(fresh_principal())
    except StalwartError as err:
        st.session_state[_NOTICE_KEY] = ("error", f"{err.message} {err.action}")
    else:
        st.session_state[_NOTICE_KEY] = ("ok", text)


def _field(name: str, default: str = "") -> str:
    return str(st.session_state.get(_PREFIX + name, default))


def _create(auth: AuthService, actor: Principal) -> str:
    info = auth.create_user(
        actor,
        _field("new-name"),
        password=_field("new-password"),
        role=_field("new-role", "viewer"),
    )
    return f"Added {info.username} ({info.role})."


def _set_role(auth: AuthService, user: UserInfo, actor: Principal) -> str:
    info = auth.set_role(actor, user.id, _field(f"role-{user.id}", user.role))
    return f"{info.username} is now {info.role}."


def _disable(auth: AuthService, user: UserInfo, actor: Principal) -> str:
    auth.disable(actor, user.id)
    return f"Disabled {user.username}; their sign-ins ended."


def _enable(auth: AuthService, user: UserInfo, actor: Principal) -> str:
    auth.enable(actor, user.id)
    return f"Enabled {user.username}."


def _revoke(auth: AuthService, user: UserInfo, actor: Principal) -> str:
    count = auth.revoke_all(actor, user.id)
    return f"Ended {count} sign-in(s) of {user.username}."


def _reset(auth: AuthService, user: UserInfo, actor: Principal) -> str:
    auth.reset_password(actor, user.id, _field("reset-password"))
    return f"Reset the password of {user.username}; their sign-ins ended."
