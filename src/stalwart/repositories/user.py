"""Repositories of accounts: users, their login sessions, the sign-in throttle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update

from stalwart.core.database import UnitOfWork
from stalwart.core.throttle import ThrottleState
from stalwart.models import LoginSession, LoginThrottle, User
from stalwart.repositories.base import Repository


class UserRepository(Repository[User]):
    """Audited CRUD for users; e-mail, display name and password hash never reach the audit."""

    model = User
    entity = "user"

    def find(self, username: str, *, for_update: bool = False) -> User | None:
        """The user with this (normalised, lower-case) username, or None."""
        query = select(User).filter_by(username=username)
        if for_update:
            query = query.with_for_update()
        return self.session.execute(query).scalar_one_or_none()

    def find_oidc(self, issuer: str, subject: str) -> User | None:
        """The user linked to this OIDC identity, or None."""
        query = select(User).filter_by(oidc_issuer=issuer, oidc_subject=subject)
        return self.session.execute(query).scalar_one_or_none()

    def taken(self, username: str) -> bool:
        """True if a user has this username."""
        query = select(func.count()).select_from(User).filter_by(username=username)
        return bool(self.session.execute(query).scalar_one())

    def enabled_with_role(self, roles: Sequence[str]) -> list[User]:
        """Enabled users whose role is one of ``roles``, locked until the transaction ends."""
        query = (
            select(User)
            .where(User.role.in_(list(roles)), User.disabled_at.is_(None))
            .order_by(User.id)
            .with_for_update()
        )
        return list(self.session.execute(query).scalars())


class LoginSessionRepository(Repository[LoginSession]):
    """Login sessions: sign-ins and revocations are audited by the auth service, one row each."""

    model = LoginSession
    entity = "login_session"
    audited = False

    def revoke_all(self, user_id: int, *, now: datetime, reason: str) -> int:
        """Revoke every live session of the user; returns how many there were."""
        result = self.session.execute(
            update(LoginSession)
            .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def touch(self, session_id: str, now: datetime) -> None:
        """Record that the session was used at ``now`` (if it is still live)."""
        self.session.execute(
            update(LoginSession)
            .where(
                LoginSession.id == session_id,
                LoginSession.revoked_at.is_(None),
                LoginSession.last_seen_at < now,
            )
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )

    def prune(self, *, ended_before: datetime) -> int:
        """Delete sessions that expired or were revoked before ``ended_before``."""
        result = self.session.execute(
            delete(LoginSession).where(
                (LoginSession.expires_at < ended_before) | (LoginSession.revoked_at < ended_before)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class ThrottleRepository:
    """Failure counters of accounts and clients (working state: the auth service audits)."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.session = uow.session

    def load(self, scope: str, key: str) -> ThrottleState:
        """The state of ``scope``/``key``, locked until the transaction ends."""
        self.uow.lock(f"login-throttle:{scope}:{key}")
        row = self.session.get(LoginThrottle, (scope, key), with_for_update=True)
        if row is None:
            return ThrottleState()
        return ThrottleState(row.failures, row.last_failure_at, row.locked_until)

    def store(self, scope: str, key: str, state: ThrottleState) -> None:
        """Write ``state`` for ``scope``/``key``; a clean state deletes the row."""
        row = self.session.get(LoginThrottle, (scope, key))
        if state == ThrottleState():
            if row is not None:
                self.session.delete(row)
            return
        if row is None:
            row = LoginThrottle(scope=scope, key=key)
            self.session.add(row)
        row.failures = state.failures
        row.last_failure_at = state.last_failure_at
        row.locked_until = state.locked_until
        self.session.flush()

    def prune(self, *, quiet_since: datetime, now: datetime) -> int:
        """Delete counters without a failure since ``quiet_since`` and without a live lock."""
        result = self.session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.last_failure_at < quiet_since,
                (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now),
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
