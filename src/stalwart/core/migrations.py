"""Schema migrations (Alembic), applied under a lock so that concurrent starts do not race.

PostgreSQL takes a session advisory lock; SQLite takes a file lock beside the database file.
The first process to get the lock migrates; the others wait, then find the schema at head.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock, Timeout
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from stalwart.core.database import DB
from stalwart.core.logs import get_logger
from stalwart.errors import MigrationError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"
_PG_MIGRATION_LOCK: Final = 0x5354_4C57_4D49_4752  # "STLWMIGR"
LOCK_TIMEOUT_S: Final = 300.0

log = get_logger(__name__)


def _alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def revision_chain() -> list[str]:
    """Every revision the code knows, oldest first."""
    script = ScriptDirectory.from_config(_alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def current_revision(db: DB) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with db.get_conn() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(db: DB, revision: str = "head") -> list[str]:
    """Upgrade the schema to ``revision``; returns the revisions this call applied."""
    return _run(db, "upgrade", revision)


def downgrade(db: DB, revision: str) -> list[str]:
    """Downgrade the schema to ``revision`` (``base`` for an empty database)."""
    return _run(db, "downgrade", revision)


def _run(db: DB, direction: str, revision: str) -> list[str]:
    applied: list[str] = []
    try:
        with _migration_lock(db) as conn:
            cfg = _alembic_config(conn)
            cfg.attributes["applied"] = applied
            if direction == "upgrade":
                command.upgrade(cfg, revision)
            else:
                command.downgrade(cfg, revision)
            conn.commit()
    except DBAPIError as exc:
        raise db.translate_final(exc) from exc
    except Timeout as exc:
        raise MigrationError(
            f"Another process held the migration lock for more than {LOCK_TIMEOUT_S:.0f} s."
        ) from exc
    except Exception as exc:
        if isinstance(exc, MigrationError) or type(exc).__module__.startswith("stalwart"):
            raise
        raise MigrationError(f"Migration to {revision} failed: {exc}") from exc
    if applied:
        log.info("migrations applied", direction=direction, revisions=applied)
    return applied


def _pg_wait_for_lock(conn: Connection) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    query = text("SELECT pg_try_advisory_lock(:k)")
    while not conn.execute(query, {"k": _PG_MIGRATION_LOCK}).scalar_one():
        if time.monotonic() > deadline:
            raise Timeout(f"postgresql advisory lock {_PG_MIGRATION_LOCK}")
        time.sleep(0.05)


@contextmanager
def _migration_lock(db: DB) -> Iterator[Connection]:
    if db.dialect == "postgresql":
        with db.engine.connect() as conn:
            _pg_wait_for_lock(conn)
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
        return
    lock_path = f"{db.sqlite_path}.migrate.lock" if db.sqlite_path else None
    lock: Any = FileLock(lock_path, timeout=LOCK_TIMEOUT_S) if lock_path else None
    if lock is not None:
        lock.acquire()
    try:
        with db.engine.connect() as conn:
            yield conn
    finally:
        if lock is not None:
            lock.release()
