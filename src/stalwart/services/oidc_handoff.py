"""The hand-over of an OIDC sign-in from the Streamlit script to the login cookie.

``st.login`` ends in the script (``st.user``), but the login token belongs in an HttpOnly
cookie, which only an HTTP response can set. So the script never opens the session itself:

1. ``begin``: the browser asked to sign in with the provider; remember where it goes afterwards,
   for its identity (``stalwart_sid``), for ``PENDING_TTL_S``.
2. ``issue``: the provider vouched for the user (``st.user``) in a tab of that same identity;
   store the identity's issuer, subject, e-mail and name under a random one-time code (only its
   SHA-256 is stored) valid for ``CODE_TTL_S``, and return the code.
3. ``consume``: ``GET /auth/oidc/complete?code=`` takes the code back, once, and only from the
   browser identity it was issued to (so a code cannot be replayed from another browser: no
   login CSRF); the route then calls ``AuthService.login_oidc`` and sets the cookie.

The rows are in the database, so any app process can finish what another began.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, select

from stalwart.core.database import DB, UnitOfWork
from stalwart.models.base import utcnow
from stalwart.models.user import OidcHandoff

#: how long after "Sign in with ..." the provider may take to send the user back
PENDING_TTL_S: Final = 600.0
#: how long a one-time code may take to come back to /auth/oidc/complete
CODE_TTL_S: Final = 60.0


@dataclass(frozen=True)
class OidcIdentity:
    """What the provider vouched for, and where the browser goes after signing in."""

    issuer: str
    subject: str
    email: str | None
    name: str | None
    next_path: str


def code_hash(code: str) -> str:
    """The stored form of a one-time code."""
    return hashlib.sha256(code.encode()).hexdigest()


def begin(db: DB, identity: str, next_path: str, *, now: datetime | None = None) -> None:
    """A sign-in with the provider starts for this browser identity (replacing any earlier)."""
    moment = now or utcnow()

    def work(uow: UnitOfWork) -> None:
        uow.session.execute(delete(OidcHandoff).where(OidcHandoff.identity == identity))
        uow.session.add(
            OidcHandoff(
                identity=identity,
                next_path=next_path,
                created_at=moment,
                expires_at=moment + timedelta(seconds=PENDING_TTL_S),
            )
        )

    db.run_tx(work)


def issue(
    db: DB,
    identity: str,
    *,
    issuer: str,
    subject: str,
    email: str | None,
    name: str | None,
    now: datetime | None = None,
) -> tuple[str, str] | None:
    """A one-time code for this identity's pending sign-in, and its ``next``; None if none."""
    moment = now or utcnow()
    code = secrets.token_urlsafe(32)

    def work(uow: UnitOfWork) -> str | None:
        row = uow.session.scalars(
            select(OidcHandoff)
            .where(
                OidcHandoff.identity == identity,
                OidcHandoff.code_hash.is_(None),
                OidcHandoff.expires_at > moment,
            )
            .order_by(OidcHandoff.id.desc())
            .limit(1)
            .with_for_update()
        ).first()
        if row is None:
            return None
        row.code_hash = code_hash(code)
        row.issuer, row.subject = issuer[:255], subject[:255]
        row.email = (email or "")[:320] or None
        row.display_name = (name or "")[:200] or None
        row.expires_at = moment + timedelta(seconds=CODE_TTL_S)
        return row.next_path

    next_path = db.run_tx(work)
    return None if next_path is None else (code, next_path)


def pending(db: DB, identity: str, *, now: datetime | None = None) -> bool:
    """True while this identity has a sign-in with the provider under way (no code yet)."""
    moment = now or utcnow()
    with db.unit_of_work(read_only=True) as uow:
        found = uow.session.scalars(
            select(OidcHandoff.id).where(
                OidcHandoff.identity == identity,
                OidcHandoff.code_hash.is_(None),
                OidcHandoff.expires_at > moment,
            )
        ).first()
    return found is not None


def consume(
    db: DB, code: str, identity: str | None, *, now: datetime | None = None
) -> OidcIdentity | None:
    """The identity behind a one-time code, once; None if unknown, used, expired or not ours.

    A code presented by another browser identity is burnt as well: whoever holds a leaked code
    cannot use it, and neither can anyone after them.
    """
    moment = now or utcnow()
    if not code or len(code) > 100:
        return None
    digest = code_hash(code)

    def work(uow: UnitOfWork) -> OidcIdentity | None:
        row = uow.session.scalars(
            select(OidcHandoff).where(OidcHandoff.code_hash == digest).with_for_update()
        ).first()
        if row is None:
            return None
        uow.session.delete(row)
        if row.identity != identity or row.expires_at <= moment:
            return None
        if row.issuer is None or row.subject is None:
            return None
        return OidcIdentity(row.issuer, row.subject, row.email, row.display_name, row.next_path)

    return db.run_tx(work)
