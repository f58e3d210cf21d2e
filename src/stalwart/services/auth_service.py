"""Accounts, sign-in, login sessions and access checks: what the UI and the CLI call.

- **Passwords** are hashed with argon2id (argon2-cffi). A sign-in for an unknown username
  still verifies a password against a dummy hash, so the time taken does not tell which
  usernames exist; a hash made with older parameters is replaced at the next sign-in.
- **Sign-in** returns a new random token (256 bits) every time; the database keeps only its
  SHA-256. No caller-provided id is ever accepted, so a session id planted before sign-in
  cannot become a signed-in one (no fixation).
- **Brute force**: failures are counted per account and per client (``core.throttle``).
  An attempt is counted *before* its password is checked, in a short transaction, and taken
  back if it succeeds: concurrent guesses cannot slip past the limit, and no transaction
  (on SQLite: no write lock) is held while argon2 runs. A locked key is refused without
  checking the password.
- **Sessions** end on logout, revocation, the idle timeout or the absolute timeout; ``resume``
  says which, with a typed error. Last use is written at most once per touch interval.
- **Every sign-in attempt and every admin action is audited** in the transaction that makes
  its change. Passwords never reach an audit row or a log; client addresses and usernames
  that match no account are audited as keyed pseudonyms (HMAC with the secret key).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError

from stalwart.core.access import AccessControl
from stalwart.core.config import AppConfig
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import get_logger
from stalwart.core.rbac import (
    MANAGE_USERS,
    Action,
    Permission,
    Principal,
    Roles,
)
from stalwart.core.throttle import ThrottlePolicy, ThrottleState
from stalwart.errors import (
    AccountDisabledError,
    IntegrityViolationError,
    InvalidAccountDataError,
    InvalidCredentialsError,
    LastAdminError,
    LoginThrottledError,
    SessionExpiredError,
    SessionRevokedError,
    SessionUnknownError,
    StalwartError,
    UserExistsError,
    UserNotFoundError,
)
from stalwart.models import LoginSession, User
from stalwart.models.base import utcnow
from stalwart.models.user import OidcHandoff
from stalwart.repositories import LoginSessionRepository, ThrottleRepository, UserRepository

log = get_logger(__name__)

Clock = Callable[[], datetime]
#: a user named by id or by username (any case)
UserRef = int | str

TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
USERNAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._@-]{0,99}")
#: names the audit log uses for non-users; no account may take them
RESERVED_USERNAMES: Final = frozenset({"system", "cli", "anonymous", "unknown"})
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+")
_MAX_PASSWORD: Final = 1024
#: argon2 runs at most this many at once per process: each takes the configured memory
#: (64 MiB by default), and a burst of sign-ins must not take the process's memory with it
_HASH_SLOTS: Final = threading.BoundedSemaphore(4)
ANONYMOUS: Final = "anonymous"
#: how long ended sessions and quiet throttle counters are kept before ``prune`` drops them
PRUNE_RETENTION_S: Final = 7 * 86_400.0

_REVOKED: Final = {
    "logout": "You signed out.",
    "superseded": "You signed in again in this browser, which ended this sign-in.",
    "disabled": "An administrator ended this sign-in (the account was disabled).",
    "password_reset": "The password was reset, which ended this sign-in.",
    "revoked": "This sign-in was ended on the server (signed out everywhere).",
}


# ---------------------------------------------------------------------------------------------
# What callers get back


@dataclass(frozen=True)
class UserInfo:
    """A user as the UI and the CLI show it (no password hash)."""

    id: int
    username: str
    display_name: str
    email: str | None
    role: str
    disabled_at: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    has_password: bool
    oidc_linked: bool
    version: int

    @property
    def disabled(self) -> bool:
        """True while the account may not sign in."""
        return self.disabled_at is not None

    @classmethod
    def of(cls, user: User) -> UserInfo:
        """The info of a stored user."""
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            role=user.role,
            disabled_at=user.disabled_at,
            last_login_at=user.last_login_at,
            created_at=user.created_at,
            has_password=user.password_hash is not None,
            oidc_linked=user.oidc_subject is not None,
            version=user.version,
        )


@dataclass(frozen=True)
class LoginResult:
    """A new login session: its token (for the cookie only), who signed in, when it ends."""

    #: the only copy of the session token: put it in an HttpOnly cookie, show it nowhere
    token: str = field(repr=False)
    principal: Principal
    user: UserInfo
    #: the absolute end of the session (a cookie's Max-Age should not outlive it)
    expires_at: datetime
    idle_timeout_s: float


@dataclass(frozen=True)
class _Admission:
    """What the counting transaction of a sign-in found."""

    locked_until: datetime | None = None
    locked_scope: str = ""
    user_id: int | None = None
    username: str = ""
    password_hash: str | None = None
    disabled: bool = False
    account: ThrottleState = field(default_factory=ThrottleState)
    client: ThrottleState = field(default_factory=ThrottleState)


# ---------------------------------------------------------------------------------------------
# Tokens, names, hashes


def new_token() -> str:
    """A fresh session token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def login_session_id(token: str) -> str:
    """The stored id of a session token: its SHA-256 (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_username(raw: str) -> str:
    """The stored form of a username: NFKC, trimmed, lower-case."""
    return unicodedata.normalize("NFKC", raw).strip().lower()


def password_hasher(cfg: AppConfig) -> PasswordHasher:
    """An argon2id hasher with the configured parameters."""
    return PasswordHasher(
        time_cost=cfg.password_hash_time_cost,
        memory_cost=cfg.password_hash_memory_kib,
        parallelism=cfg.password_hash_parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def _duration(seconds: float) -> str:
    # Rounded up: "try again in 2 minutes" must not send someone back too early.
    whole = max(0, math.ceil(seconds))
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if whole >= size and (whole % size == 0 or whole >= 2 * size):
            count = math.ceil(whole / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{whole} second{'' if whole == 1 else 's'}"


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else None


# ---------------------------------------------------------------------------------------------
# The service


class AuthService:
    """Accounts, sign-in, sessions and access checks over one database."""

    def __init__(
        self,
        db: DB,
        config: AppConfig,
        *,
        clock: Clock = utcnow,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.hasher = hasher or password_hasher(config)
        self.roles = Roles(config.custom_roles)
        self.access = AccessControl(db, self.roles)
        self.account_policy = ThrottlePolicy(
            config.login_max_failures,
            config.login_lockout_s,
            config.login_lockout_max_s,
            config.login_failure_window_s,
        )
        self.client_policy = ThrottlePolicy(
            config.login_client_max_failures,
            config.login_lockout_s,
            config.login_lockout_max_s,
            config.login_failure_window_s,
        )
        self._secret = config.secret_key.get_secret_value().encode()
        self._dummy_hash: str | None = None

    # -- access checks ------------------------------------------------------------------------

    def authorize(
        self,
        principal: Principal,
        what: Permission | Action,
        *,
        entity: str = "",
        entity_id: object = "",
    ) -> None:
        """Return if ``principal`` may do ``what``; otherwise audit the denial and raise.

        ``PermissionDeniedError`` says what was refused and which roles allow it (see
        ``AccessControl.authorize``).
        """
        self.access.authorize(principal, what, entity=entity, entity_id=entity_id)

    def has_users(self) -> bool:
        """True once any account exists (before that, the first admin may be set up)."""
        try:
            with self.db.unit_of_work(read_only=True) as uow:
                return uow.session.execute(select(User.id).limit(1)).first() is not None
        except DBAPIError as exc:
            raise self.db.translate_final(exc) from exc

    # -- sign-in ------------------------------------------------------------------------------

    def login(
        self,
        username: str,
        password: str,
        *,
        client_key: str,
        previous_token: str | None = None,
    ) -> LoginResult:
        """Check a username and password; on success open a new session and return its token.

        ``client_key`` identifies where the attempt came from (the client's address) for the
        per-client throttle. ``previous_token``, if given, is this browser's earlier session:
        it is revoked (never reused). Raises ``LoginThrottledError`` (locked: the password is
        not checked), ``InvalidCredentialsError`` or ``AccountDisabledError``.
        """
        name = normalise_username(username)
        client = _client(client_key)
        now = self.clock()
        admission = self.db.run_tx(lambda uow: self._admit(uow, name, client, now), user=ANONYMOUS)
        if admission.locked_until is not None:
            raise self._throttled(admission.locked_scope, admission.locked_until, now)
        ok = self._verify(admission.password_hash, password)
        stored = admission.password_hash
        if ok and stored is not None and admission.user_id is not None and not admission.disabled:
            new_hash = self._rehash(stored, password)
            result = self.db.run_tx(
                lambda uow: self._succeed(uow, admission, client, previous_token, new_hash),
                user=admission.username,
            )
            if result is not None:
                log.info("sign-in", user_id=admission.user_id, method="password")
                return result
            ok = False  # the account changed while the password was being checked
        if admission.user_id is None:
            reason = "unknown_user"
        elif ok:
            reason = "disabled"
        else:
            reason = "bad_password" if admission.password_hash else "no_password"
        self.db.run_tx(
            lambda uow: self._record_failure(uow, admission, name, client, reason),
            user=admission.username or ANONYMOUS,
        )
        log.info("sign-in failed", reason=reason, user_id=admission.user_id)
        if reason == "disabled":
            raise AccountDisabledError(f"The account {admission.username!r} is disabled.")
        raise self._bad_credentials(admission, now)

    def login_oidc(
        self,
        *,
        issuer: str,
        subject: str,
        email: str | None = None,
        name: str | None = None,
        username_hint: str | None = None,
        client_key: str = "",
        previous_token: str | None = None,
    ) -> LoginResult:
        """Sign in a user the OIDC provider (``st.login``) vouched for; returns a new session.

        The identity is ``issuer`` + ``subject`` (``st.user``'s ``iss`` and ``sub``). An
        unknown identity gets a new user with ``STALWART_OIDC_DEFAULT_ROLE`` (unless
        ``STALWART_OIDC_AUTO_CREATE`` is false: ``InvalidCredentialsError``); a known one gets
        its e-mail and name refreshed. A disabled user gets ``AccountDisabledError``.
        """
        issuer, subject = issuer.strip(), subject.strip()
        if not (0 < len(issuer) <= 255 and 0 < len(subject) <= 255):
            raise InvalidAccountDataError("The OIDC issuer and subject must be 1-255 characters.")
        email = _clean_email(email)
        display = (name or "").strip()[:200]
        client = _client(client_key)

        def work(uow: UnitOfWork) -> LoginResult | str:
            users = UserRepository(uow)
            user = users.find_oidc(issuer, subject)
            details = {"method": "oidc", "client": self._pseudonym(client)}
            if user is None:
                if not self.config.oidc_auto_create:
                    details["reason"] = "oidc_unknown"
                    uow.audit.record("login_failed", "user", "unknown", None, details)
                    return "unknown"
                username = self._free_username(users, username_hint or (email or "").split("@")[0])
                user = users.create(
                    username=username,
                    display_name=display,
                    email=email,
                    password_hash=None,
                    role=self.config.oidc_default_role,
                    oidc_issuer=issuer,
                    oidc_subject=subject,
                )
            elif user.disabled:
                details["reason"] = "disabled"
                uow.audit.record("login_failed", "user", user.id, None, details)
                return "disabled"
            else:
                changes: dict[str, Any] = {
                    k: v
                    for k, v in (("email", email), ("display_name", display))
                    if v and getattr(user, k) != v
                }
                if changes:
                    user = users.update(user.id, **changes)
            uow.user = user.username  # the audit rows of a sign-in are the user's own
            return self._open_session(uow, user, "oidc", client, previous_token, rehashed=False)

        outcome = self.db.run_tx(work, user=ANONYMOUS)
        if outcome == "unknown":
            raise InvalidCredentialsError(
                "No account is linked to this sign-in.",
                "Ask an administrator to create your account, then sign in again.",
            )
        if outcome == "disabled":
            raise AccountDisabledError("Your account is disabled.")
        assert isinstance(outcome, LoginResult)
        log.info("sign-in", user_id=outcome.user.id, method="oidc")
        return outcome

    def logout(self, token: str | None) -> bool:
        """End the session of ``token`` on the server; False if it was not a live session."""
        if not token or not TOKEN_PATTERN.fullmatch(token):
            return False
        sid = login_session_id(token)
        now = self.clock()

        def work(uow: UnitOfWork) -> bool:
            record = uow.session.get(LoginSession, sid, with_for_update=True)
            if record is None or record.revoked_at is not None:
                return False
            record.revoked_at, record.revoked_reason = now, "logout"
            owner = uow.session.get(User, record.user_id)
            uow.user = owner.username if owner is not None else ANONYMOUS
            uow.audit.record("logout", "user", record.user_id, None, {"session": sid[:12]})
            return True

        return self.db.run_tx(work, user=ANONYMOUS)

    def resume(self, token: str | None) -> Principal:
        """The principal of a live session, or a typed error saying why it is not live.

        ``SessionUnknownError`` (no such session), ``AccountDisabledError``,
        ``SessionRevokedError`` (logout, revoked, superseded), ``SessionExpiredError`` (idle
        or absolute timeout). Reads only, except for writing the last use at most once per
        ``STALWART_SESSION_TOUCH_INTERVAL_S``.
        """
        if not token or not TOKEN_PATTERN.fullmatch(token):
            raise SessionUnknownError("You are not signed in.")
        sid = login_session_id(token)
        now = self.clock()
        try:
            with self.db.unit_of_work(read_only=True) as uow:
                row = uow.session.execute(
                    select(
                        LoginSession.revoked_at,
                        LoginSession.revoked_reason,
                        LoginSession.expires_at,
                        LoginSession.last_seen_at,
                        User.id,
                        User.username,
                        User.role,
                        User.disabled_at,
                    )
                    .join(User, User.id == LoginSession.user_id)
                    .where(LoginSession.id == sid)
                ).one_or_none()
        except DBAPIError as exc:
            raise self.db.translate_final(exc) from exc
        if row is None:
            raise SessionUnknownError("You are not signed in (the session is unknown or ended).")
        if row.disabled_at is not None:
            raise AccountDisabledError(f"The account {row.username!r} is disabled.")
        if row.revoked_at is not None:
            reason = row.revoked_reason or "revoked"
            raise SessionRevokedError(_REVOKED.get(reason, _REVOKED["revoked"]), reason=reason)
        if now >= row.expires_at:
            hours = _duration(self.config.session_absolute_timeout_s)
            raise SessionExpiredError(
                f"Your sign-in expired: sessions last at most {hours}.", kind="absolute"
            )
        idle = timedelta(seconds=self.config.session_idle_timeout_s)
        if now - row.last_seen_at >= idle:
            raise SessionExpiredError(
                f"You were signed out after {_duration(idle.total_seconds())} without activity.",
                kind="idle",
            )
        if (now - row.last_seen_at).total_seconds() >= self.config.session_touch_interval_s:
            try:
                self.db.run_tx(lambda uow: LoginSessionRepository(uow).touch(sid, now))
            except StalwartError as err:  # the session is valid; only its last use is unsaved
                log.warning("could not record a session's last use", error=err.message)
        return self.roles.principal(
            user_id=row.id, username=row.username, role=row.role, session_id=sid
        )

    # -- accounts (admin) ---------------------------------------------------------------------

    def create_user(
        self,
        actor: Principal,
        username: str,
        *,
        password: str | None = None,
        role: str = "viewer",
        display_name: str = "",
        email: str | None = None,
        oidc_issuer: str | None = None,
        oidc_subject: str | None = None,
    ) -> UserInfo:
        """Create a user (admin). Without a password the user signs in only through OIDC."""
        self.authorize(actor, MANAGE_USERS, entity="user", entity_id=username)
        name = self._valid_username(username)
        self._valid_role(role)
        if (oidc_issuer is None) != (oidc_subject is None):
            raise InvalidAccountDataError("Give both the OIDC issuer and the subject, or neither.")
        hashed = self._hash_new_password(password, name) if password is not None else None
        display = display_name.strip()
        if len(display) > 200:
            raise InvalidAccountDataError("The display name is longer than 200 characters.")
        address = _clean_email(email, strict=True)

        def work(uow: UnitOfWork) -> UserInfo:
            users = UserRepository(uow)
            if users.taken(name):
                raise UserExistsError(f"A user named {name!r} exists already.")
            if oidc_issuer is not None and users.find_oidc(oidc_issuer, oidc_subject or ""):
                raise UserExistsError("Another user is linked to this OIDC identity already.")
            user = users.create(
                username=name,
                display_name=display,
                email=address,
                password_hash=hashed,
                role=role,
                oidc_issuer=oidc_issuer,
                oidc_subject=oidc_subject,
            )
            return UserInfo.of(user)

        try:
            info = self.db.run_tx(work, user=actor.username)
        except IntegrityViolationError as err:  # created concurrently by someone else
            raise UserExistsError(f"A user named {name!r} exists already.") from err
        log.info("user created", user_id=info.id, role=role, by=actor.username)
        return info

    def set_role(self, actor: Principal, user: UserRef, role: str) -> UserInfo:
        """Give a user another role (admin); takes effect at their next interaction."""
        self.authorize(actor, MANAGE_USERS, entity="user", entity_id=user)
        self._valid_role(role)

        def work(uow: UnitOfWork) -> UserInfo:
            record = self._find(uow, user)
            if not self._is_admin_role(role):
                self._keep_an_admin(uow, record)
            return UserInfo.of(UserRepository(uow).update(record.id, role=role))

        return self.db.run_tx(work, user=actor.username)

    def disable(self, actor: Principal, user: UserRef) -> UserInfo:
        """Disable a user (admin) and end all their sessions; disabling twice changes nothing."""
        self.authorize(actor, MANAGE_USERS, entity="user", entity_id=user)
        now = self.clock()

        def work(uow: UnitOfWork) -> UserInfo:
            record = self._find(uow, user)
            if record.disabled:
                return UserInfo.of(record)
            self._keep_an_admin(uow, record)
            record = UserRepository(uow).update(record.id, disabled_at=now)
            self._revoke_all(uow, record.id, now, "disabled")
            return UserInfo.of(record)

        return self.db.run_tx(work, user=actor.username)

    def enable(self, actor: Principal, user: UserRef) -> UserInfo:
        """Enable a user again (admin); also lifts a sign-in lock on the account."""
        self.authorize(actor, MANAGE_USERS, entity="user", entity_id=user)

        def work(uow: UnitOfWork) -> UserInfo:
            record = self._find(uow, user)
            if record.disabled:
                record = UserRepository(uow).update(record.id, disabled_at=None)
            self._unlock(uow, record)
            return UserInfo.of(record)

        return self.db.run_tx(work, user=actor.username)

    def reset_password(self, actor: Principal, user: UserRef, new_password: str) -> UserInfo:
        """Set a new password (admin), end all the user's sessions and lift any sign-in lock."""
        self.authorize(actor, MANAGE_USERS, entity="user", entity_id=user)
        now = self.clock()

        with self.db.unit_of_work(read_only=True) as uow:
            name = self._find(uow, user).username
        hashed = self._hash_new_password(new_password, name)  # outside the transaction: slow

        def work(uow: UnitOfWork) -> UserInfo:
            record = self._find(uow, user)
            record = UserRepository(uow).update(record.id, password_hash=hashed)
            self._revoke_all(uow, record.id, now, "password_reset")
            self._unlock(uow, record)
            return UserInfo.of(record)

        return self.db.run_tx(work, user=actor.username)

    def revoke_all(self, actor: Principal, user: UserRef, *, reason: str = "revoked") -> int:
        """End every session of a user (admin, or the user themselves); returns how many."""

        def work(uow: UnitOfWork) -> int:
            record = self._find(uow, user)
            return self._revoke_all(uow, record.id, self.clock(), reason)

        if not _is_self(actor, user):
            self.authorize(actor, MANAGE_USERS, entity="user", entity_id=user)
        return self.db.run_tx(work, user=actor.username)

    def get_user(self, actor: Principal, user: UserRef) -> UserInfo:
        """One user (admin, or the user themselves)."""
        if not _is_self(actor, user):
            self.authorize(actor, MANAGE_USERS, entity="user", entity_id=user)
        with self.db.unit_of_work(read_only=True) as uow:
            return UserInfo.of(self._find(uow, user))

    def list_users(self, actor: Principal) -> list[UserInfo]:
        """Every user, by username (admin)."""
        self.authorize(actor, MANAGE_USERS, entity="user")
        with self.db.unit_of_work(read_only=True) as uow:
            users = UserRepository(uow).list(limit=1_000_000, order_by="username")
            return [UserInfo.of(u) for u in users]

    def prune(self, *, retention_s: float = PRUNE_RETENTION_S) -> dict[str, int]:
        """Delete sessions ended more than ``retention_s`` ago and long-quiet throttle rows."""
        now = self.clock()
        cutoff = now - timedelta(seconds=retention_s)

        def work(uow: UnitOfWork) -> dict[str, int]:
            sessions = LoginSessionRepository(uow).prune(ended_before=cutoff)
            quiet = now - timedelta(seconds=self.config.login_failure_window_s)
            throttles = ThrottleRepository(uow).prune(quiet_since=quiet, now=now)
            # Abandoned OIDC sign-ins (services.oidc_handoff): minutes old at most.
            handoffs = uow.session.execute(delete(OidcHandoff).where(OidcHandoff.expires_at <= now))
            return {
                "sessions": sessions,
                "throttles": throttles,
                "oidc_handoffs": int(getattr(handoffs, "rowcount", 0) or 0),
            }

        return self.db.run_tx(work)

    # -- internals: sign-in -------------------------------------------------------------------

    def _admit(self, uow: UnitOfWork, name: str, client: str, now: datetime) -> _Admission:
        """Refuse a locked attempt, or count it as a failure in advance and load the user."""
        throttles = ThrottleRepository(uow)
        account_key, client_key = self._pseudonym(name), self._pseudonym(client)
        account = self.account_policy.current(throttles.load("account", account_key), now)
        by_client = self.client_policy.current(throttles.load("client", client_key), now)
        users = UserRepository(uow)
        user = users.find(name) if USERNAME_PATTERN.fullmatch(name) else None
        locks = [
            (scope, until)
            for scope, until in (
                ("account", self.account_policy.locked_until(account, now)),
                ("client", self.client_policy.locked_until(by_client, now)),
            )
            if until is not None
        ]
        if locks:
            scope, until = max(locks, key=lambda lock: lock[1])
            details = {
                "reason": "locked",
                "scope": scope,
                "locked_until": _iso(until),
                "client": client_key,
                **({} if user else {"username": self._pseudonym(name)}),
            }
            uow.audit.record("login_locked", "user", user.id if user else "unknown", None, details)
            return _Admission(locked_until=until, locked_scope=scope)
        account = self.account_policy.after_failure(account, now)
        by_client = self.client_policy.after_failure(by_client, now)
        throttles.store("account", account_key, account)
        throttles.store("client", client_key, by_client)
        if user is None:
            return _Admission(account=account, client=by_client)
        return _Admission(
            user_id=user.id,
            username=user.username,
            password_hash=user.password_hash,
            disabled=user.disabled,
            account=account,
            client=by_client,
        )

    def _succeed(
        self,
        uow: UnitOfWork,
        admission: _Admission,
        client: str,
        previous_token: str | None,
        new_hash: str | None,
    ) -> LoginResult | None:
        """Take back the counted failure and open the session (None: the account changed)."""
        user = uow.session.get(User, admission.user_id, with_for_update=True)
        if user is None or user.disabled or user.password_hash != admission.password_hash:
            return None
        throttles = ThrottleRepository(uow)
        account_key, client_key = self._pseudonym(user.username), self._pseudonym(client)
        throttles.load("account", account_key)  # locks it
        throttles.store("account", account_key, ThrottleState())
        by_client = throttles.load("client", client_key)
        throttles.store("client", client_key, self.client_policy.withdraw_failure(by_client))
        if new_hash is not None:
            user.password_hash = new_hash
        return self._open_session(
            uow, user, "password", client, previous_token, rehashed=new_hash is not None
        )

    def _open_session(
        self,
        uow: UnitOfWork,
        user: User,
        method: str,
        client: str,
        previous_token: str | None,
        *,
        rehashed: bool,
    ) -> LoginResult:
        now = self.clock()
        if previous_token and TOKEN_PATTERN.fullmatch(previous_token):
            old = uow.session.get(LoginSession, login_session_id(previous_token))
            if old is not None and old.revoked_at is None:
                old.revoked_at, old.revoked_reason = now, "superseded"
        token = new_token()
        sid = login_session_id(token)
        expires_at = now + timedelta(seconds=self.config.session_absolute_timeout_s)
        uow.session.add(
            LoginSession(
                id=sid,
                user_id=user.id,
                method=method,
                created_at=now,
                last_seen_at=now,
                expires_at=expires_at,
                client_key=client,
            )
        )
        user.last_login_at = now
        uow.session.flush()
        details: dict[str, Any] = {
            "method": method,
            "session": sid[:12],
            "client": self._pseudonym(client),
        }
        if rehashed:
            details["rehashed"] = True
        uow.audit.record("login", "user", user.id, None, details)
        principal = self.roles.principal(
            user_id=user.id, username=user.username, role=user.role, session_id=sid
        )
        return LoginResult(
            token=token,
            principal=principal,
            user=UserInfo.of(user),
            expires_at=expires_at,
            idle_timeout_s=self.config.session_idle_timeout_s,
        )

    def _record_failure(
        self, uow: UnitOfWork, admission: _Admission, name: str, client: str, reason: str
    ) -> None:
        details: dict[str, Any] = {
            "reason": reason,
            "failures": admission.account.failures,
            "client": self._pseudonym(client),
        }
        if admission.user_id is None:
            details["username"] = self._pseudonym(name)
        locked = [s.locked_until for s in (admission.account, admission.client) if s.locked_until]
        if locked:
            details["locked_until"] = _iso(max(locked))
        uow.audit.record("login_failed", "user", admission.user_id or "unknown", None, details)

    def _verify(self, stored: str | None, password: str) -> bool:
        # An unknown user (or one without a password) is checked against a dummy hash with
        # the same parameters, so that the time taken does not tell whether the name exists.
        candidate = password if len(password) <= _MAX_PASSWORD else ""
        target = stored or self._dummy()  # before taking a slot: _dummy() may take one
        try:
            with _HASH_SLOTS:
                self.hasher.verify(target, candidate)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.error("a stored password hash cannot be verified (corrupt or unknown format)")
            return False
        return stored is not None and bool(candidate)

    def _rehash(self, stored: str, password: str) -> str | None:
        try:
            needs = self.hasher.check_needs_rehash(stored)
        except InvalidHashError:  # pragma: no cover - verify() refused it already
            return None
        return self._hash(password) if needs else None

    def _hash(self, password: str) -> str:
        with _HASH_SLOTS:
            return self.hasher.hash(password)

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _throttled(self, scope: str, until: datetime, now: datetime) -> LoginThrottledError:
        wait = max(0.0, (until - now).total_seconds())
        whom = "for this account" if scope == "account" else "from your network"
        return LoginThrottledError(
            f"Too many failed sign-ins {whom}: try again in {_duration(wait)} "
            f"(at {until.astimezone(UTC):%H:%M:%S} UTC).",
            retry_after_s=wait,
        )

    def _bad_credentials(self, admission: _Admission, now: datetime) -> InvalidCredentialsError:
        message = "Wrong username or password."
        locks = [s.locked_until for s in (admission.account, admission.client) if s.locked_until]
        if locks and max(locks) > now:
            wait = (max(locks) - now).total_seconds()
            message += f" Too many failures: sign-in is paused for {_duration(wait)}."
        return InvalidCredentialsError(message)

    def _pseudonym(self, value: str) -> str:
        """A keyed digest of ``value``: linkable within this deployment, not reversible."""
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()

    # -- internals: accounts ------------------------------------------------------------------

    def _find(self, uow: UnitOfWork, user: UserRef) -> User:
        users = UserRepository(uow)
        if isinstance(user, int):
            record = uow.session.get(User, user, with_for_update=not uow.read_only)
        else:
            record = users.find(normalise_username(user), for_update=not uow.read_only)
        if record is None:
            raise UserNotFoundError(f"There is no user {user!r}.")
        return record

    def _revoke_all(self, uow: UnitOfWork, user_id: int, now: datetime, reason: str) -> int:
        count = LoginSessionRepository(uow).revoke_all(user_id, now=now, reason=reason)
        uow.audit.record(
            "revoke_sessions", "user", user_id, None, {"sessions": count, "reason": reason}
        )
        return count

    def _unlock(self, uow: UnitOfWork, user: User) -> None:
        throttles = ThrottleRepository(uow)
        key = self._pseudonym(user.username)
        if throttles.load("account", key) != ThrottleState():
            throttles.store("account", key, ThrottleState())
            uow.audit.record("unlock", "user", user.id, None, {"throttle": "cleared"})

    def _is_admin_role(self, role: str) -> bool:
        return Permission.ADMIN in self.roles.permissions(role)

    def _keep_an_admin(self, uow: UnitOfWork, target: User) -> None:
        """Refuse a change that would leave no enabled user able to administer users."""
        if target.disabled or not self._is_admin_role(target.role):
            return
        uow.lock("users:admins")
        admins = UserRepository(uow).enabled_with_role(self.roles.granting(Permission.ADMIN))
        if not [u for u in admins if u.id != target.id]:
            raise LastAdminError(
                f"{target.username!r} is the last enabled user who can administer users."
            )

    def _valid_username(self, raw: str) -> str:
        name = normalise_username(raw)
        if not USERNAME_PATTERN.fullmatch(name):
            raise InvalidAccountDataError(
                f"{raw!r} is not a valid username: use 1-100 characters a-z, 0-9, '.', '_', "
                "'@' or '-', starting with a letter or a digit."
            )
        if name in RESERVED_USERNAMES:
            raise InvalidAccountDataError(f"{name!r} is reserved; pick another username.")
        return name

    def _valid_role(self, role: str) -> None:
        if not self.roles.exists(role):
            raise InvalidAccountDataError(
                f"There is no role {role!r}; roles: {', '.join(self.roles.names)}.",
                "Pick one of those roles (custom roles come from STALWART_CUSTOM_ROLES).",
            )

    def _hash_new_password(self, password: str, username: str) -> str:
        minimum = self.config.password_min_length
        if len(password) < minimum:
            raise InvalidAccountDataError(
                f"The password is too short: use at least {minimum} characters.",
                "Choose a longer password; a passphrase of several words is easiest.",
            )
        if len(password) > _MAX_PASSWORD:
            raise InvalidAccountDataError(
                f"The password is longer than {_MAX_PASSWORD} characters."
            )
        if normalise_username(password) == username:
            raise InvalidAccountDataError("The password must not be the username.")
        return self._hash(password)

    def _free_username(self, users: UserRepository, hint: str) -> str:
        base = re.sub(r"[^a-z0-9._@-]+", "-", normalise_username(hint)).strip("._@-")[:90]
        if not base or base in RESERVED_USERNAMES:
            base = "user"
        candidate, n = base, 1
        while users.taken(candidate):
            n += 1
            candidate = f"{base}-{n}"
        return candidate


def _is_self(actor: Principal, user: UserRef) -> bool:
    if actor.kind != "user" or actor.user_id is None:
        return False
    if isinstance(user, int):
        return user == actor.user_id
    return normalise_username(user) == actor.username


def _client(client_key: str) -> str:
    return client_key.strip()[:200] or "unknown"


def _clean_email(email: str | None, *, strict: bool = False) -> str | None:
    value = (email or "").strip()
    if not value:
        return None
    if len(value) > 320 or not _EMAIL.fullmatch(value):
        if strict:
            raise InvalidAccountDataError(f"{value!r} is not an e-mail address.")
        return None
    return value


__all__: Sequence[str] = [
    "AuthService",
    "LoginResult",
    "UserInfo",
    "login_session_id",
    "new_token",
    "normalise_username",
    "password_hasher",
]
