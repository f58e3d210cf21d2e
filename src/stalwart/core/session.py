"""Who is this browser? ``bootstrap_session()`` maps the identity cookie to a stored session.

The ``st.App`` middleware gives every browser an opaque random token in an HttpOnly cookie;
Streamlit hands the cookies of the websocket's opening request to the script through
``st.context.cookies``. We store only the token's SHA-256, so a database leak gives no one a
usable cookie. A refresh, a new tab, a restarted server or a second app process therefore find
the same session, with its place and drafts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final

import streamlit as st
from sqlalchemy import update

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import get_logger
from stalwart.models import SessionRecord
from stalwart.models.base import utcnow

COOKIE_NAME: Final = "stalwart_sid"
#: the login session's token (set by ``web.auth_routes``; HttpOnly, separate from the identity)
LOGIN_COOKIE: Final = "stalwart_login"
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_STATE_KEY: Final = "_stalwart_user_session"

log = get_logger(__name__)


@dataclass(frozen=True)
class UserSession:
    """This browser's identity, and this tab (one Streamlit session) within it."""

    id: str
    tab: str
    persistent: bool
    page: str
    params: dict[str, str]
    #: the user last signed in on this browser (``users.id`` as text), if any
    user_id: str | None = None


def new_token() -> str:
    """A fresh identity token for the cookie."""
    return secrets.token_urlsafe(32)


def valid_token(token: object) -> bool:
    """True for a token of the shape ``new_token`` makes (anything else is not one)."""
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


def session_id_for(token: str) -> str:
    """The stored id of a token: its SHA-256, so the database never holds the cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def bootstrap_session(db: DB, *, default_page: str = "home") -> UserSession:
    """The UserSession of this browser tab, loaded (or created) once per Streamlit session."""
    cached = st.session_state.get(_STATE_KEY)
    if isinstance(cached, UserSession):
        return cached
    token = st.context.cookies.get(COOKIE_NAME)
    persistent = valid_token(token)
    if persistent:
        sid = session_id_for(str(token))
    else:
        # No cookie reached us (a client that refuses cookies): the session works, but a
        # refresh cannot find it again. Said in the log so that an operator can see it.
        sid = "ephemeral-" + secrets.token_hex(16)
        log.warning("no identity cookie: session will not survive a refresh")

    def load(uow: UnitOfWork) -> tuple[str, dict[str, str], str | None]:
        record = uow.session.get(SessionRecord, sid)
        if record is None:
            record = SessionRecord(id=sid, page=default_page, params={})
            uow.session.add(record)
        else:
            record.last_seen_at = utcnow()
        return record.page, dict(record.params), record.user_id

    page, params, user_id = db.run_tx(load)
    session = UserSession(sid, secrets.token_hex(8), persistent, page, params, user_id)
    st.session_state[_STATE_KEY] = session
    return session


def remember_place(db: DB, session: UserSession, page: str, params: dict[str, str]) -> UserSession:
    """Store where the user is, so a new tab or a restarted server returns there.

    Written behind the interaction (``DB.write_behind``): the URL already holds the place for
    a refresh, so a page switch does not wait for this commit, and of quick successive
    switches only the last is written.
    """
    if (session.page, session.params) == (page, params):
        return session
    place = dict(params)

    def store(uow: UnitOfWork) -> None:
        uow.session.execute(
            update(SessionRecord)
            .where(SessionRecord.id == session.id)
            .values(page=page, params=place)
        )

    db.write_behind(f"place:{session.id}", store)
    moved = dataclasses.replace(session, page=page, params=dict(params))
    st.session_state[_STATE_KEY] = moved
    return moved
