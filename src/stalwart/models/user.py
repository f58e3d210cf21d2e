"""Accounts, login sessions and the sign-in throttle.

A login session is stored under the SHA-256 of its token, never the token: a database leak
yields no usable session. Throttle keys are SHA-256 digests too, so what someone typed as a
username (sometimes a password, by mistake) is not kept in clear.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stalwart.models.base import (
    PII,
    SECRET,
    Base,
    TimestampedMixin,
    UTCDateTime,
    VersionedMixin,
    utcnow,
)


class User(TimestampedMixin, VersionedMixin, Base):
    """A person who can sign in: with a local password, through OIDC, or both."""

    __tablename__ = "users"
    __table_args__ = (
        # Usernames are stored lower-case, which makes the unique constraint case-insensitive.
        CheckConstraint("username = lower(username)", name="username_lower"),
        CheckConstraint("(oidc_issuer IS NULL) = (oidc_subject IS NULL)", name="oidc_pair"),
        UniqueConstraint("oidc_issuer", "oidc_subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False, default="", info=PII)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True, info=PII)
    #: argon2id in PHC format; None for a user who signs in only through OIDC
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True, info=SECRET)
    role: Mapped[str] = mapped_column(String(50), nullable=False)
    #: the OIDC provider (``iss``) and the user's id there (``sub``); both or neither
    oidc_issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: set while the account is disabled
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def disabled(self) -> bool:
        """True while the account may not sign in."""
        return self.disabled_at is not None


class LoginSession(Base):
    """One sign-in: valid until revoked, idle too long, or past its absolute expiry."""

    __tablename__ = "login_sessions"

    #: SHA-256 (hex) of the session token; the token itself is only ever in the cookie
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    #: password or oidc
    method: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: written at most once per STALWART_SESSION_TOUCH_INTERVAL_S, not on every interaction
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: the absolute timeout: no use of the session extends it
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: logout, superseded, disabled, password_reset, revoked
    revoked_reason: Mapped[str | None] = mapped_column(String(50), nullable=True)
    #: where the sign-in came from (the client's address, as the app saw it)
    client_key: Mapped[str] = mapped_column(String(200), nullable=False, default="", info=PII)


class LoginThrottle(Base):
    """Failed sign-ins of one account or one client, and the lock they caused."""

    __tablename__ = "login_throttle"
    __table_args__ = (CheckConstraint("scope IN ('account', 'client')", name="scope"),)

    scope: Mapped[str] = mapped_column(String(10), primary_key=True)
    #: SHA-256 (hex) of the normalised username or of the client key
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OidcHandoff(Base):
    """One sign-in through the OIDC provider, from the click to the login cookie.

    Created *pending* when a browser starts ``st.login`` (where to go afterwards); when the
    provider has vouched for the user, the script adds the identity and a one-time code (only
    its SHA-256 is stored) that ``GET /auth/oidc/complete`` exchanges, once and only from the
    same browser identity, for the login cookie. Rows live for minutes and are deleted when
    used.
    """

    __tablename__ = "oidc_handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: the browser identity that started it (``sessions.id``: SHA-256 of ``stalwart_sid``)
    identity: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    #: SHA-256 (hex) of the one-time code; None while pending
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    next_path: Mapped[str] = mapped_column(String(2000), nullable=False, default="/")
    issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True, info=PII)
    display_name: Mapped[str | None] = mapped_column(String(200), nullable=True, info=PII)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
