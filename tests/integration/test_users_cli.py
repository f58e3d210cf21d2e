"""``app users`` as an operator runs it: real processes, real databases, passwords on stdin."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from stalwart.core.config import AppConfig
from stalwart.core.database import DB
from stalwart.errors import InvalidCredentialsError, SessionRevokedError
from stalwart.models import AuditEntry
from stalwart.services.auth_service import AuthService
from tests.conftest import PYTHON, child_env

FAST_HASH = {
    "STALWART_PASSWORD_HASH_TIME_COST": "1",
    "STALWART_PASSWORD_HASH_MEMORY_KIB": "8",
    "STALWART_PASSWORD_HASH_PARALLELISM": "1",
}
PASSWORD = "operator chosen passphrase"


def users(
    db_url: str, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stalwart.cli.main", "users", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=child_env(STALWART_DATABASE_URL=db_url, **FAST_HASH, **env),
        timeout=120,
    )


def service(db_url: str) -> tuple[AuthService, DB]:
    cfg = AppConfig(
        database_url=db_url,
        password_hash_time_cost=1,
        password_hash_memory_kib=8,
        password_hash_parallelism=1,
    )
    db = DB.from_config(cfg)
    return AuthService(db, cfg), db


def test_help_lists_every_users_command() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "stalwart.cli.main", "users", "--help"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert out.returncode == 0
    for command in (
        "create",
        "set-role",
        "disable",
        "enable",
        "reset-password",
        "list",
        "revoke-sessions",
        "roles",
    ):
        assert re.search(rf"│ {command}\s+\S", out.stdout), f"users {command}: no help"


def test_users_lifecycle_end_to_end(db_url: str) -> None:
    created = users(
        db_url, "create", "Alice", "--role", "admin", "--password-stdin", stdin=PASSWORD
    )
    assert created.returncode == 0, created.stderr
    assert "created alice (id 1, role admin)" in created.stdout
    again = users(db_url, "create", "ALICE", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert users(db_url, "create", "bob", "--no-password").returncode == 0

    auth, db = service(db_url)
    try:
        token = auth.login("alice", PASSWORD, client_key="127.0.0.1").token  # the CLI's password
        listing = users(db_url, "list")
        assert listing.returncode == 0
        assert re.search(r"alice\s+admin\s+enabled\s+password\s+\d{4}-", listing.stdout)
        assert re.search(r"bob\s+viewer\s+enabled\s+none\s+never", listing.stdout)

        assert "bob: role editor" in users(db_url, "set-role", "bob", "editor").stdout
        demote = users(db_url, "set-role", "alice", "viewer")
        assert demote.returncode == 1
        assert "last enabled user" in demote.stderr

        revoked = users(db_url, "revoke-sessions", "alice")
        assert "1 session(s) ended" in revoked.stdout
        with pytest.raises(SessionRevokedError):
            auth.resume(token)

        reset = users(
            db_url, "reset-password", "alice", "--password-stdin", stdin="new passphrase!\n"
        )
        assert reset.returncode == 0, reset.stderr
        with pytest.raises(InvalidCredentialsError):
            auth.login("alice", PASSWORD, client_key="127.0.0.1")
        auth.login("alice", "new passphrase!", client_key="127.0.0.1")

        assert "bob: disabled" in users(db_url, "disable", "bob").stdout
        assert re.search(r"bob\s+editor\s+disabled", users(db_url, "list").stdout)
        assert "bob: enabled" in users(db_url, "enable", "bob").stdout

        with db.unit_of_work(read_only=True) as uow:
            rows = uow.session.execute(select(AuditEntry).where(AuditEntry.entity == "user"))
            audited = [(r.actor, r.action) for r in rows.scalars()]
        assert ("cli", "create") in audited
        assert ("cli", "revoke_sessions") in audited
        assert ("alice", "login") in audited
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (("set-role", "ghost", "viewer"), None, 2, "There is no user 'ghost'"),
        (("create", "carl", "--role", "owner", "--no-password"), None, 2, "no role 'owner'"),
        (("create", "carl", "--password-stdin"), "short\n", 2, "at least 12 characters"),
        (("create", "carl", "--password-stdin"), "", 2, "No password on standard input"),
        (("create", "carl"), "typed-into-a-pipe\n", 2, "--password-stdin"),
        (("reset-password", "ghost", "--password-stdin"), "long enough pass\n", 2, "no user"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], stdin: str | None, code: int, message: str
) -> None:
    url = f"sqlite:///{tmp_path}/users.db"
    out = users(url, *args, stdin=stdin)
    assert out.returncode == code
    assert message in out.stderr
    assert "what to do:" in out.stderr
    assert "Traceback" not in out.stderr


def test_roles_lists_custom_roles_and_bad_ones_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/users.db"
    out = users(url, "roles", STALWART_CUSTOM_ROLES='{"auditor": ["view", "export"]}')
    assert out.returncode == 0
    assert re.search(r"^editor\s+edit_forms, export, run_jobs, view$", out.stdout, re.M)
    assert re.search(r"^auditor\s+export, view$", out.stdout, re.M)
    assert "no users" in users(url, "list").stdout
    bad = users(url, "roles", STALWART_CUSTOM_ROLES='{"auditor": ["fly"]}')
    assert bad.returncode == 2
    assert "STALWART_CUSTOM_ROLES" in bad.stderr
