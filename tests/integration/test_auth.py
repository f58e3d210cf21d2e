"""Accounts, sign-in, sessions and access checks on real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from stalwart.core.audit import verify_chain
from stalwart.core.config import AppConfig
from stalwart.core.database import DB
from stalwart.core.rbac import ACTIONS, SAVE_FORM, Permission, Principal, Roles
from stalwart.errors import (
    AccountDisabledError,
    AuthenticationRequiredError,
    InvalidAccountDataError,
    InvalidCredentialsError,
    LastAdminError,
    LoginThrottledError,
    PermissionDeniedError,
    SessionExpiredError,
    SessionRevokedError,
    SessionUnknownError,
    UserExistsError,
    UserNotFoundError,
)
from stalwart.models import AuditEntry, LoginSession, LoginThrottle, User
from stalwart.models.base import utcnow
from stalwart.services.auth_service import (
    AuthService,
    login_session_id,
    new_token,
    password_hasher,
)

PASSWORD = "correct horse battery"
ADMIN = Principal.system("test")
CUSTOM = {"auditor": ["view", "export"], "useradmin": ["view", "admin"]}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class CountingHasher(PasswordHasher):
    """argon2-cffi's hasher, counting verifications (to see that a locked login checks none)."""

    verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


def config(**overrides: Any) -> AppConfig:
    """Settings for tests: cheap argon2 parameters, small limits, short timeouts."""
    values: dict[str, Any] = {
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 8,
        "password_hash_parallelism": 1,
        "password_min_length": 8,
        "login_max_failures": 3,
        "login_client_max_failures": 5,
        "login_lockout_s": 60.0,
        "login_lockout_max_s": 600.0,
        "login_failure_window_s": 3600.0,
        "session_idle_timeout_s": 600.0,
        "session_absolute_timeout_s": 3600.0,
        "session_touch_interval_s": 30.0,
        "custom_roles": CUSTOM,
        "environment": "test",
    }
    values.update(overrides)
    return AppConfig(**values)


def hasher(cfg: AppConfig) -> CountingHasher:
    return CountingHasher(
        time_cost=cfg.password_hash_time_cost,
        memory_cost=cfg.password_hash_memory_kib,
        parallelism=cfg.password_hash_parallelism,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(db: DB, clock: Clock) -> AuthService:
    cfg = config()
    return AuthService(db, cfg, clock=clock, hasher=hasher(cfg))


def audit_rows(db: DB, *actions: str) -> list[AuditEntry]:
    with db.unit_of_work(read_only=True) as uow:
        query = select(AuditEntry).order_by(AuditEntry.id)
        if actions:
            query = query.where(AuditEntry.action.in_(actions))
        rows = list(uow.session.execute(query).scalars())
        uow.session.expunge_all()  # keep them readable after the read's rollback
        return rows


def audit_text(db: DB) -> str:
    return json.dumps(
        [[r.actor, r.action, r.entity, r.entity_id, r.diff] for r in audit_rows(db)], default=str
    )


def throttle_rows(db: DB) -> list[LoginThrottle]:
    with db.unit_of_work(read_only=True) as uow:
        rows = list(uow.session.execute(select(LoginThrottle)).scalars())
        uow.session.expunge_all()
        return rows


def stored_session(db: DB, token: str) -> LoginSession:
    with db.unit_of_work(read_only=True) as uow:
        record = uow.session.get(LoginSession, login_session_id(token))
        assert record is not None
        uow.session.expunge_all()
        return record


# -- sign-in and sessions ---------------------------------------------------------------------


def test_login_issues_a_fresh_token_never_a_pre_login_id(auth: AuthService, db: DB) -> None:
    auth.create_user(ADMIN, "Alice", password=PASSWORD, role="editor")
    planted = new_token()  # an id the browser (or an attacker) had before signing in
    first = auth.login("ALICE", PASSWORD, client_key="10.0.0.1")
    second = auth.login("alice", PASSWORD, client_key="10.0.0.1")
    assert len({planted, first.token, second.token}) == 3
    assert first.principal.username == "alice"
    assert first.principal.role == "editor"
    assert first.principal.permissions == Roles().permissions("editor")
    assert first.token not in repr(first)
    with pytest.raises(SessionUnknownError):
        auth.resume(planted)
    assert auth.resume(first.token).user_id == first.user.id
    assert auth.resume(second.token).session_id == login_session_id(second.token)
    # Only digests are stored, never a token.
    with db.unit_of_work(read_only=True) as uow:
        ids = set(uow.session.execute(select(LoginSession.id)).scalars())
    assert ids == {login_session_id(first.token), login_session_id(second.token)}
    assert first.token not in audit_text(db)


def test_login_in_a_browser_that_had_a_session_revokes_the_old_one(auth: AuthService) -> None:
    auth.create_user(ADMIN, "bob", password=PASSWORD)
    old = auth.login("bob", PASSWORD, client_key="c")
    new = auth.login("bob", PASSWORD, client_key="c", previous_token=old.token)
    assert new.token != old.token
    with pytest.raises(SessionRevokedError) as info:
        auth.resume(old.token)
    assert info.value.reason == "superseded"
    assert auth.resume(new.token).username == "bob"


def test_logout_and_revoke_all_end_sessions_on_the_server(auth: AuthService, db: DB) -> None:
    user = auth.create_user(ADMIN, "carol", password=PASSWORD, role="editor")
    one, two, three = (auth.login("carol", PASSWORD, client_key="c") for _ in range(3))
    assert auth.logout(one.token) is True
    assert auth.logout(one.token) is False  # already ended
    assert auth.logout("not-a-token") is False
    assert auth.logout(None) is False
    with pytest.raises(SessionRevokedError, match="You signed out") as info:
        auth.resume(one.token)
    assert info.value.reason == "logout"
    assert isinstance(info.value, AuthenticationRequiredError)
    # Sign out everywhere: the user may do it for themselves.
    me = auth.resume(two.token)
    assert auth.revoke_all(me, "carol") == 2
    for token in (two.token, three.token):
        with pytest.raises(SessionRevokedError, match="signed out everywhere"):
            auth.resume(token)
    assert auth.revoke_all(ADMIN, user.id) == 0
    logout = audit_rows(db, "logout")[0]
    assert (logout.actor, logout.entity_id) == ("carol", str(user.id))
    assert audit_rows(db, "revoke_sessions")[0].diff["sessions"]["after"] == 2


def test_idle_timeout_with_last_use_written_at_most_once_per_interval(
    auth: AuthService, db: DB, clock: Clock
) -> None:
    auth.create_user(ADMIN, "dave", password=PASSWORD)
    token = auth.login("dave", PASSWORD, client_key="c").token
    signed_in = clock.now
    clock.advance(10)
    auth.resume(token)
    assert stored_session(db, token).last_seen_at == signed_in  # within the touch interval
    clock.advance(25)
    auth.resume(token)
    assert stored_session(db, token).last_seen_at == clock.now
    clock.advance(599)
    auth.resume(token)  # 599 s after the last use: still alive
    clock.advance(600)
    with pytest.raises(SessionExpiredError, match="10 minutes without activity") as info:
        auth.resume(token)
    assert info.value.kind == "idle"
    assert "unsaved input are kept" in info.value.action


def test_absolute_timeout_ends_even_a_busy_session(auth: AuthService, clock: Clock) -> None:
    auth.create_user(ADMIN, "erin", password=PASSWORD)
    result = auth.login("erin", PASSWORD, client_key="c")
    assert result.expires_at == clock.now + timedelta(seconds=3600)
    for _ in range(7):
        clock.advance(500)
        auth.resume(result.token)
    clock.advance(100)  # 3600 s after sign-in
    with pytest.raises(SessionExpiredError, match="at most 1 hour") as info:
        auth.resume(result.token)
    assert info.value.kind == "absolute"


def test_disabled_users_session_is_refused_at_the_next_resume(auth: AuthService, db: DB) -> None:
    auth.create_user(ADMIN, "frank", password=PASSWORD, role="admin")
    auth.create_user(ADMIN, "grace", password=PASSWORD, role="admin")
    token = auth.login("frank", PASSWORD, client_key="c").token
    assert auth.disable(ADMIN, "frank").disabled
    assert auth.disable(ADMIN, "frank").disabled  # twice: nothing more happens
    with pytest.raises(AccountDisabledError, match="'frank' is disabled"):
        auth.resume(token)
    with pytest.raises(AccountDisabledError):
        auth.login("frank", PASSWORD, client_key="c")
    with pytest.raises(InvalidCredentialsError):
        auth.login("frank", "wrong password", client_key="c")  # says nothing about the state
    auth.enable(ADMIN, "frank")
    with pytest.raises(SessionRevokedError, match="disabled") as info:
        auth.resume(token)  # enabling again does not bring old sessions back
    assert info.value.reason == "disabled"
    assert auth.resume(auth.login("frank", PASSWORD, client_key="c").token).username == "frank"
    reasons = [r.diff["reason"]["after"] for r in audit_rows(db, "login_failed")]
    assert reasons == ["disabled", "bad_password"]


def test_resume_refuses_malformed_and_unknown_tokens(auth: AuthService) -> None:
    for token in (None, "", "short", "x" * 43 + "!", new_token()):
        with pytest.raises(SessionUnknownError, match="not signed in"):
            auth.resume(token)


def test_a_role_change_applies_at_the_next_resume(auth: AuthService) -> None:
    auth.create_user(ADMIN, "hank", password=PASSWORD, role="viewer")
    token = auth.login("hank", PASSWORD, client_key="c").token
    assert not auth.resume(token).can(Permission.EDIT_FORMS)
    auth.set_role(ADMIN, "hank", "editor")
    assert auth.resume(token).can(Permission.EDIT_FORMS)


# -- brute force ------------------------------------------------------------------------------


def test_account_lockout_refuses_without_checking_and_expires(
    db: DB, clock: Clock, auth: AuthService
) -> None:
    auth.create_user(ADMIN, "ivan", password=PASSWORD)
    guesses = hasher_of(auth)
    for attempt in range(1, 4):
        with pytest.raises(InvalidCredentialsError) as info:
            auth.login("ivan", f"guess number {attempt}", client_key=f"10.0.0.{attempt}")
    assert "paused for 1 minute" in info.value.message  # the third failure locked it
    checked = guesses.verified
    with pytest.raises(
        LoginThrottledError, match="for this account: try again in 1 minute"
    ) as lock:
        auth.login("ivan", PASSWORD, client_key="10.0.0.9")  # right password, still refused
    assert lock.value.retry_after_s == 60
    assert guesses.verified == checked  # the password was not checked
    clock.advance(60)
    result = auth.login("ivan", PASSWORD, client_key="10.0.0.9")
    assert auth.resume(result.token).username == "ivan"
    assert [r for r in throttle_rows(db) if r.scope == "account"] == []  # success cleared it
    # Success reset the account: three more failures are needed to lock it again.
    for _ in range(2):
        with pytest.raises(InvalidCredentialsError) as info:
            auth.login("ivan", "nope nope nope", client_key="10.0.1.1")
        assert info.value.message == "Wrong username or password."  # not paused
    locked = audit_rows(db, "login_locked")
    assert len(locked) == 1
    assert locked[0].diff["scope"]["after"] == "account"


def test_each_lock_after_the_first_lasts_twice_as_long(auth: AuthService, clock: Clock) -> None:
    auth.create_user(ADMIN, "judy", password=PASSWORD)
    for _ in range(3):
        with pytest.raises(InvalidCredentialsError):
            auth.login("judy", "wrong password", client_key="c1")
    clock.advance(60)
    with pytest.raises(InvalidCredentialsError, match="paused for 2 minutes"):
        auth.login("judy", "wrong password", client_key="c2")
    clock.advance(119)
    with pytest.raises(LoginThrottledError, match="try again in 1 second"):
        auth.login("judy", PASSWORD, client_key="c3")
    clock.advance(1)
    auth.login("judy", PASSWORD, client_key="c3")


def test_client_lockout_spans_usernames_and_spares_other_clients(auth: AuthService, db: DB) -> None:
    auth.create_user(ADMIN, "kim", password=PASSWORD)
    for i in range(5):  # five different (unknown) accounts from one client
        with pytest.raises(InvalidCredentialsError):
            auth.login(f"nobody{i}", "whatever123", client_key="203.0.113.7")
    with pytest.raises(LoginThrottledError, match="from your network"):
        auth.login("kim", PASSWORD, client_key="203.0.113.7")
    assert auth.login("kim", PASSWORD, client_key="198.51.100.1").principal.username == "kim"


def test_a_success_does_not_reset_its_clients_failures(auth: AuthService) -> None:
    auth.create_user(ADMIN, "lee", password=PASSWORD)
    for i in range(4):
        with pytest.raises(InvalidCredentialsError):
            auth.login(f"other{i}", "whatever123", client_key="192.0.2.1")
    auth.login("lee", PASSWORD, client_key="192.0.2.1")  # an attacker may own one account
    with pytest.raises(InvalidCredentialsError, match="paused"):
        auth.login("other9", "whatever123", client_key="192.0.2.1")
    with pytest.raises(LoginThrottledError):
        auth.login("lee", PASSWORD, client_key="192.0.2.1")


def test_unknown_user_and_wrong_password_are_audited_without_secrets(
    auth: AuthService, db: DB
) -> None:
    user = auth.create_user(ADMIN, "mia", password=PASSWORD, email="mia@example.org")
    guesses = hasher_of(auth)
    before = guesses.verified
    with pytest.raises(InvalidCredentialsError, match="Wrong username or password"):
        auth.login("Tr0ub4dor&3-typed-as-name", "hunter2hunter2", client_key="192.0.2.55")
    assert guesses.verified == before + 1  # a dummy hash was checked: same work as a real one
    with pytest.raises(InvalidCredentialsError, match="Wrong username or password"):
        auth.login("mia", "s3cret-wrong-guess", client_key="192.0.2.55")
    auth.login("mia", PASSWORD, client_key="192.0.2.55")
    failed = audit_rows(db, "login_failed")
    assert [(r.entity_id, r.diff["reason"]["after"], r.actor) for r in failed] == [
        ("unknown", "unknown_user", "anonymous"),
        (str(user.id), "bad_password", "mia"),
    ]
    assert len(failed[0].diff["username"]["after"]) == 64  # a keyed pseudonym
    success = audit_rows(db, "login")[0]
    assert (success.actor, success.diff["method"]["after"]) == ("mia", "password")
    text = audit_text(db)
    for secret in (
        PASSWORD,
        "hunter2hunter2",
        "s3cret-wrong-guess",
        "tr0ub4dor",
        "192.0.2.55",
        "mia@example.org",
        "$argon2id$",
    ):
        assert secret.lower() not in text.lower(), secret
    with db.get_conn() as conn:
        assert verify_chain(conn).ok


def test_password_hash_is_upgraded_at_sign_in_when_parameters_change(
    db: DB, clock: Clock, auth: AuthService
) -> None:
    auth.create_user(ADMIN, "nina", password=PASSWORD)
    stronger = config(password_hash_time_cost=2, password_hash_memory_kib=16)
    upgraded = AuthService(db, stronger, clock=clock)
    upgraded.login("nina", PASSWORD, client_key="c")
    with db.unit_of_work(read_only=True) as uow:
        stored = uow.session.execute(select(User.password_hash)).scalar_one()
    assert stored is not None
    assert stored.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert not upgraded.hasher.check_needs_rehash(stored)
    assert audit_rows(db, "login")[0].diff["rehashed"]["after"] is True
    upgraded.login("nina", PASSWORD, client_key="c")  # no second rehash
    assert "rehashed" not in audit_rows(db, "login")[1].diff


def test_a_corrupt_stored_hash_refuses_the_password_and_says_so_in_the_log(
    auth: AuthService, db: DB
) -> None:
    user = auth.create_user(ADMIN, "olly", password=PASSWORD)
    db.run_tx(lambda uow: setattr(uow.session.get(User, user.id), "password_hash", "$argon2id$bad"))
    with pytest.raises(InvalidCredentialsError):
        auth.login("olly", PASSWORD, client_key="c")
    assert audit_rows(db, "login_failed")[0].diff["reason"]["after"] == "bad_password"


def test_default_hash_parameters_are_above_owasps_minimum() -> None:
    stored = password_hasher(AppConfig()).hash("x")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def hasher_of(auth: AuthService) -> CountingHasher:
    assert isinstance(auth.hasher, CountingHasher)
    return auth.hasher


# -- OIDC -------------------------------------------------------------------------------------

ISSUER = "https://accounts.example.org"


def test_oidc_subject_maps_to_one_user_created_with_the_default_role(
    auth: AuthService, db: DB
) -> None:
    first = auth.login_oidc(
        issuer=ISSUER, subject="abc-123", email="Olga.K@example.org", name="Olga K"
    )
    assert (first.user.username, first.user.role) == ("olga.k", "viewer")
    assert not first.user.has_password
    again = auth.login_oidc(issuer=ISSUER, subject="abc-123", email="olga@new.example.org")
    assert again.user.id == first.user.id
    assert again.user.email == "olga@new.example.org"  # refreshed from the provider
    assert again.token != first.token
    other = auth.login_oidc(issuer=ISSUER, subject="zzz", email="olga.k@elsewhere.example")
    assert other.user.username == "olga.k-2"
    anonymous = auth.login_oidc(issuer=ISSUER, subject="no-claims", email="not an address")
    assert (anonymous.user.username, anonymous.user.email) == ("user", None)
    # An OIDC-only user cannot sign in with a password.
    with pytest.raises(InvalidCredentialsError):
        auth.login("olga.k", "any password", client_key="c")
    assert audit_rows(db, "login_failed")[-1].diff["reason"]["after"] == "no_password"
    created = audit_rows(db, "create")
    assert created[0].diff["email"]["after"] == "[redacted]"
    text = audit_text(db)
    assert "olga.k@" not in text.lower()
    assert "olga@new" not in text
    assert "Olga K" not in text


def test_oidc_maps_to_a_pre_created_user_and_respects_disable(auth: AuthService) -> None:
    auth.create_user(
        ADMIN, "pia", role="editor", oidc_issuer=ISSUER, oidc_subject="pia-sub", display_name="Pia"
    )
    result = auth.login_oidc(issuer=ISSUER, subject="pia-sub", username_hint="ignored")
    assert (result.principal.username, result.principal.role) == ("pia", "editor")
    auth.disable(ADMIN, "pia")
    with pytest.raises(AccountDisabledError):
        auth.login_oidc(issuer=ISSUER, subject="pia-sub")
    with pytest.raises(UserExistsError, match="OIDC identity"):
        auth.create_user(ADMIN, "pia2", oidc_issuer=ISSUER, oidc_subject="pia-sub")


def test_oidc_without_auto_create_refuses_unknown_identities(db: DB, clock: Clock) -> None:
    strict = AuthService(
        db, config(oidc_auto_create=False, oidc_default_role="auditor"), clock=clock
    )
    with pytest.raises(InvalidCredentialsError, match="No account is linked"):
        strict.login_oidc(issuer=ISSUER, subject="stranger", client_key="c")
    assert audit_rows(db, "login_failed")[0].diff["reason"]["after"] == "oidc_unknown"
    with pytest.raises(InvalidAccountDataError):
        strict.login_oidc(issuer="", subject="x")


# -- administration and the authorisation matrix ----------------------------------------------


def test_usernames_are_unique_whatever_their_case(auth: AuthService) -> None:
    auth.create_user(ADMIN, "Quinn", password=PASSWORD)
    with pytest.raises(UserExistsError):
        auth.create_user(ADMIN, "QUINN", password=PASSWORD)
    assert [u.username for u in auth.list_users(ADMIN)] == ["quinn"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"username": "has space"}, "not a valid username"),
        ({"username": "system"}, "reserved"),
        ({"username": "rae", "password": "short"}, "at least 8 characters"),
        ({"username": "rae", "password": "x" * 1025}, "longer than 1024"),
        ({"username": "raymond1", "password": "Raymond1"}, "must not be the username"),
        ({"username": "rae", "role": "owner"}, "no role 'owner'"),
        ({"username": "rae", "email": "not-an-address"}, "not an e-mail"),
        ({"username": "rae", "display_name": "x" * 201}, "longer than 200"),
        ({"username": "rae", "oidc_issuer": ISSUER}, "both the OIDC issuer"),
    ],
)
def test_bad_account_data_is_refused_with_the_reason(
    auth: AuthService, kwargs: dict[str, Any], expected: str
) -> None:
    values = {"password": PASSWORD, **kwargs}
    with pytest.raises(InvalidAccountDataError, match=expected):
        auth.create_user(ADMIN, **values)


def test_the_last_admin_cannot_be_demoted_or_disabled(auth: AuthService) -> None:
    auth.create_user(ADMIN, "sam", password=PASSWORD, role="admin")
    with pytest.raises(LastAdminError, match="last enabled user"):
        auth.set_role(ADMIN, "sam", "editor")
    with pytest.raises(LastAdminError):
        auth.disable(ADMIN, "sam")
    auth.create_user(ADMIN, "tess", password=PASSWORD, role="useradmin")  # custom admin role
    assert auth.set_role(ADMIN, "sam", "editor").role == "editor"
    with pytest.raises(LastAdminError):
        auth.disable(ADMIN, "tess")


def test_admin_changes_are_audited_with_pii_and_hashes_masked(auth: AuthService, db: DB) -> None:
    user = auth.create_user(
        ADMIN, "uma", password=PASSWORD, email="uma@example.org", display_name="Uma Q"
    )
    auth.set_role(ADMIN, "uma", "editor")
    auth.reset_password(ADMIN, user.id, "a brand new passphrase")
    rows = audit_rows(db, "create", "update")
    assert [(r.actor, r.action, r.entity) for r in rows] == [
        ("test", "create", "user"),
        ("test", "update", "user"),
        ("test", "update", "user"),
    ]
    created = rows[0].diff
    assert created["display_name"]["after"] == "[redacted]"
    assert created["password_hash"]["after"] == "[redacted]"
    assert created["oidc_subject"]["after"] is None
    assert rows[1].diff["role"] == {"before": "viewer", "after": "editor"}
    assert rows[2].diff["password_hash"] == {"before": "[redacted]", "after": "[redacted, changed]"}
    text = audit_text(db)
    assert "uma@example.org" not in text
    assert "Uma Q" not in text
    assert "a brand new passphrase" not in text


def test_reset_password_ends_sessions_and_lifts_the_lock(auth: AuthService) -> None:
    auth.create_user(ADMIN, "vic", password=PASSWORD)
    token = auth.login("vic", PASSWORD, client_key="c").token
    for _ in range(3):
        with pytest.raises(InvalidCredentialsError):
            auth.login("vic", "wrong password", client_key="d")
    auth.reset_password(ADMIN, "vic", "another good passphrase")
    with pytest.raises(SessionRevokedError, match="password was reset"):
        auth.resume(token)
    with pytest.raises(InvalidCredentialsError):
        auth.login("vic", PASSWORD, client_key="e")  # the old password is gone
    auth.login("vic", "another good passphrase", client_key="e")


def test_enable_lifts_a_sign_in_lock(auth: AuthService, db: DB) -> None:
    auth.create_user(ADMIN, "wes", password=PASSWORD)
    for _ in range(3):
        with pytest.raises(InvalidCredentialsError):
            auth.login("wes", "wrong password", client_key="x")
    with pytest.raises(LoginThrottledError):
        auth.login("wes", PASSWORD, client_key="y")
    auth.enable(ADMIN, "wes")
    auth.login("wes", PASSWORD, client_key="y")
    assert len(audit_rows(db, "unlock")) == 1


def test_unknown_users_are_named_in_the_error(auth: AuthService) -> None:
    for action in (
        lambda: auth.set_role(ADMIN, "ghost", "viewer"),
        lambda: auth.disable(ADMIN, 999),
        lambda: auth.get_user(ADMIN, "ghost"),
        lambda: auth.revoke_all(ADMIN, "ghost"),
    ):
        with pytest.raises(UserNotFoundError, match="no user"):
            action()


def _admin_actions(auth: AuthService, target: int) -> dict[str, Any]:
    return {
        "create_user": lambda who: auth.create_user(who, "newbie", password=PASSWORD),
        "set_role": lambda who: auth.set_role(who, target, "editor"),
        "disable": lambda who: auth.disable(who, target),
        "enable": lambda who: auth.enable(who, target),
        "reset_password": lambda who: auth.reset_password(who, target, "fresh passphrase"),
        "revoke_all": lambda who: auth.revoke_all(who, target),
        "list_users": lambda who: auth.list_users(who),
        "get_user": lambda who: auth.get_user(who, target),
    }


ROLES = ("viewer", "editor", "admin", "auditor", "useradmin")


@pytest.mark.parametrize("role", ROLES)
def test_matrix_admin_actions_through_the_service(auth: AuthService, db: DB, role: str) -> None:
    actor = auth.create_user(ADMIN, f"actor-{role}", password=PASSWORD, role=role)
    target = auth.create_user(ADMIN, "target", password=PASSWORD)
    who = auth.resume(auth.login(actor.username, PASSWORD, client_key="c").token)
    allowed = role in ("admin", "useradmin")
    for name, act in _admin_actions(auth, target.id).items():
        if allowed:
            act(who)
        else:
            with pytest.raises(PermissionDeniedError, match="manage users") as info:
                act(who)
            assert info.value.permission == "admin", name
    denied = audit_rows(db, "denied")
    assert len(denied) == (0 if allowed else len(_admin_actions(auth, target.id)))
    for row in denied:
        assert (row.actor, row.entity, row.entity_id) == (actor.username, "access", "users.manage")
        assert row.diff["role"]["after"] == role


@pytest.mark.parametrize("role", ROLES)
def test_matrix_app_actions_through_authorize(auth: AuthService, db: DB, role: str) -> None:
    auth.create_user(ADMIN, "someone", password=PASSWORD, role=role)
    who = auth.resume(auth.login("someone", PASSWORD, client_key="c").token)
    refused = 0
    for action in ACTIONS:
        if action.permission in auth.roles.permissions(role):
            auth.authorize(who, action, entity="form", entity_id="brief:1")
        else:
            refused += 1
            with pytest.raises(PermissionDeniedError):
                auth.authorize(who, action, entity="form", entity_id="brief:1")
    rows = audit_rows(db, "denied")
    assert len(rows) == refused
    if rows:
        assert rows[0].diff["entity_id"]["after"] == "brief:1"


def test_a_denial_stands_even_when_its_audit_row_cannot_be_written(
    auth: AuthService, db: DB
) -> None:
    viewer = Roles().principal(user_id=1, username="vera", role="viewer")

    def misuse(uow: object) -> None:
        # authorize() inside a transaction: its audit write cannot nest, the denial holds.
        auth.authorize(viewer, SAVE_FORM)

    with pytest.raises(PermissionDeniedError):
        db.run_tx(misuse)
    assert audit_rows(db, "denied") == []


def test_users_may_see_and_sign_out_themselves_but_not_others(auth: AuthService) -> None:
    auth.create_user(ADMIN, "xena", password=PASSWORD, role="viewer")
    other = auth.create_user(ADMIN, "yuri", password=PASSWORD, role="viewer")
    me = auth.resume(auth.login("xena", PASSWORD, client_key="c").token)
    assert auth.get_user(me, "XENA").username == "xena"
    assert auth.get_user(me, me.user_id or 0).username == "xena"
    with pytest.raises(PermissionDeniedError):
        auth.get_user(me, other.id)
    with pytest.raises(PermissionDeniedError):
        auth.revoke_all(me, "yuri")
    with pytest.raises(PermissionDeniedError, match="sign in"):
        auth.authorize(Principal.anonymous(), SAVE_FORM)


def test_prune_drops_long_ended_sessions_and_quiet_counters(
    auth: AuthService, db: DB, clock: Clock
) -> None:
    auth.create_user(ADMIN, "zoe", password=PASSWORD)
    ended = auth.login("zoe", PASSWORD, client_key="c").token
    auth.logout(ended)
    with pytest.raises(InvalidCredentialsError):
        auth.login("zoe", "wrong password", client_key="c")
    assert auth.prune() == {"sessions": 0, "throttles": 0, "oidc_handoffs": 0}
    clock.advance(8 * 86_400)
    live = auth.login("zoe", PASSWORD, client_key="d").token
    assert auth.prune() == {"sessions": 1, "throttles": 1, "oidc_handoffs": 0}
    assert auth.resume(live).username == "zoe"
