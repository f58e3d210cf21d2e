"""Migrations: up from empty, down to base, up again; models match; concurrent starts are safe."""

from __future__ import annotations

import json
import subprocess
import time

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from stalwart.core.database import DB
from stalwart.core.migrations import (
    current_revision,
    downgrade,
    head_revision,
    migrate,
    revision_chain,
)
from stalwart.models import Base
from tests.conftest import PYTHON, child_env

TABLES = {
    "audit_log",
    "idempotency_keys",
    "projects",
    "alembic_version",
    "user_sessions",
    "form_drafts",
    "form_versions",
    "stored_files",
    "jobs",
    "users",
    "login_sessions",
    "login_throttle",
    "events",
    "deployments",
    "metric_samples",
    "error_reports",
    "oidc_handoffs",
}


def _tables(db: DB) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def test_upgrade_downgrade_upgrade(raw_db: DB) -> None:
    chain = revision_chain()
    assert chain[-1] == head_revision()
    assert current_revision(raw_db) is None
    assert migrate(raw_db) == chain
    assert current_revision(raw_db) == head_revision()
    assert _tables(raw_db) >= TABLES
    assert migrate(raw_db) == []  # already at head: nothing to do

    assert downgrade(raw_db, "base") == list(reversed(chain))
    assert current_revision(raw_db) is None
    assert _tables(raw_db) - {"alembic_version"} == set()

    assert migrate(raw_db, chain[0]) == chain[:1]  # one step at a time works too
    assert migrate(raw_db) == chain[1:]
    assert _tables(raw_db) >= TABLES


def test_models_and_migrations_agree(db: DB) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


_MIGRATE_CHILD = """
import json, sys, time
from stalwart.core.database import DB
from stalwart.core.migrations import migrate
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # both children start migrating together
print(json.dumps(migrate(DB(sys.argv[1]))), flush=True)
"""


def test_two_processes_starting_together_apply_each_migration_once(raw_db: DB) -> None:
    url = raw_db.url.render_as_string(hide_password=False)
    start = str(time.time() + 1.5)
    children = [
        subprocess.Popen(
            [PYTHON, "-c", _MIGRATE_CHILD, url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(STALWART_LOG_JSON="true"),
        )
        for _ in range(2)
    ]
    applied: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        applied += json.loads(out.strip().splitlines()[-1])
    assert applied == revision_chain()  # one process applied each, the other found head
    assert current_revision(raw_db) == head_revision()
