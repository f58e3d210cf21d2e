"""The ``app`` command as an operator runs it: a real process, real databases."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from stalwart.core.database import DB
from stalwart.core.migrations import revision_chain
from tests.conftest import PYTHON, child_env


def app(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stalwart.cli.main", *args],
        capture_output=True,
        text=True,
        env=child_env(**env),
        timeout=120,
    )


def test_help_lists_every_command_with_help_text() -> None:
    top = app("--help")
    assert top.returncode == 0
    for command in ("run", "db", "audit", "config"):
        assert re.search(rf"│ {command}\s+\S", top.stdout), f"{command} has no help text"
    groups = {
        "db": ("migrate", "downgrade", "current", "seed"),
        "audit": ("verify",),
        "config": ("show",),
    }
    for group, commands in groups.items():
        out = app(group, "--help")
        assert out.returncode == 0
        for command in commands:
            assert re.search(rf"│ {command}\s+\S", out.stdout), f"{group} {command}: no help"
    run_help = app("run", "--help").stdout
    assert "--port" in run_help
    assert "--host" in run_help
    assert app("--version").stdout.startswith("stalwart ")


def test_db_commands_on_each_database(db_url: str) -> None:
    env = {"STALWART_DATABASE_URL": db_url}
    assert "current: empty" in app("db", "current", **env).stdout
    migrated = app("db", "migrate", **env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied: {', '.join(revision_chain())}" in migrated.stdout
    assert "already at head" in app("db", "migrate", **env).stdout
    assert "up to date" in app("db", "current", **env).stdout
    assert "seeded 4 demo project(s)" in app("db", "seed", **env).stdout
    assert "seeded 0 demo project(s)" in app("db", "seed", **env).stdout
    assert "ok: 4 audit row(s)" in app("audit", "verify", **env).stdout
    down = app("db", "downgrade", "base", **env)
    assert down.returncode == 0
    assert f"reverted: {', '.join(reversed(revision_chain()))}" in down.stdout
    assert "current: empty" in app("db", "current", **env).stdout


def test_audit_verify_exits_1_and_names_the_broken_row(tmp_path: Path) -> None:
    env = {"STALWART_DATA_DIR": str(tmp_path)}
    assert app("db", "seed", **env).returncode == 0
    db = DB(f"sqlite:///{tmp_path / 'stalwart.db'}")
    with db.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = 3"))
    db.dispose()
    out = app("audit", "verify", **env)
    assert out.returncode == 1
    assert "audit row 3 breaks the chain" in out.stderr
    assert "2 row(s) before it are intact" in out.stderr
    assert "restore from a verified backup" in out.stderr


def test_config_show_hides_secrets() -> None:
    out = app("config", "show", STALWART_SECRET_KEY="hunter2-hunter2-hunter2-hunter2-xx")
    assert out.returncode == 0
    assert "STALWART_SECRET_KEY=**********" in out.stdout
    assert "hunter2" not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"STALWART_DATABASE_URL": "not a url"}, "STALWART_DATABASE_URL: not a database URL"),
        ({"STALWART_PORT": "0"}, "STALWART_PORT"),
    ],
)
def test_bad_settings_exit_2_with_the_setting_named(env: dict[str, str], expected: str) -> None:
    for args in (("db", "current"), ("config", "show")):
        out = app(*args, **env)
        assert out.returncode == 2
        assert expected in out.stderr
        assert "Traceback" not in out.stderr


def test_unreachable_database_exits_with_the_cause() -> None:
    out = app(
        "db",
        "migrate",
        STALWART_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
        STALWART_DB_CONNECT_TIMEOUT_S="1",
    )
    assert out.returncode != 0
    assert "127.0.0.1:1" in out.stderr
    assert "database server is running" in out.stderr
    assert "Traceback" not in out.stderr
