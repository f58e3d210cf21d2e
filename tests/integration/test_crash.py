"""Durability under SIGKILL and across processes: committed means present, half means absent."""

from __future__ import annotations

import random
import subprocess
import time

import pytest
from sqlalchemy import func, select, text

from stalwart.core.audit import verify_chain
from stalwart.core.database import DB
from stalwart.models import AuditEntry, Project
from stalwart.repositories import ProjectRepository
from tests.conftest import PYTHON, child_env

# A child that writes a stream of projects, each with its audit row, and reports every commit
# on stdout only after run_tx returned.
_WRITER = """
import sys
from stalwart.core.database import DB
from stalwart.repositories import ProjectRepository
db = DB(sys.argv[1])
prefix, start = sys.argv[2], int(sys.argv[3])
for i in range(start, start + 100000):
    name = f"{prefix}-{i}"
    def work(uow, name=name):
        repo = ProjectRepository(uow)
        p = repo.create(name=name, description="x" * 2000, budget=i)
        repo.update(p.id, status="active")
        return p.id
    db.run_tx(work, idempotency_key=name)
    print(i, flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_committed_and_leaves_nothing_half(db: DB) -> None:
    url = db.url.render_as_string(hide_password=False)
    rng = random.Random(20261122)
    confirmed: list[int] = []
    start = 0
    for _round in range(6):
        child = subprocess.Popen(
            [PYTHON, "-c", _WRITER, url, "crash", str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_env(STALWART_LOG_LEVEL="ERROR"),
        )
        assert child.stdout is not None
        wanted = rng.randint(3, 25)
        for line in child.stdout:
            if not line.strip().isdigit():
                continue  # a log line, not a confirmation
            confirmed.append(int(line))
            if len(confirmed) - start >= wanted:
                break
        time.sleep(rng.uniform(0, 0.02))  # land the kill at a random point of a transaction
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
        # Resume after the last write we saw confirmed; a write that committed without its
        # confirmation being read yet is replayed under its idempotency key: no duplicate.
        start = confirmed[-1] + 1 if confirmed else 0

    with db.get_conn() as conn:
        if db.dialect == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
        names = set(conn.execute(select(Project.name)).scalars())
        statuses = set(conn.execute(select(Project.status)).scalars())
        audit_counts = dict(
            conn.execute(
                select(AuditEntry.entity_id, func.count()).group_by(AuditEntry.entity_id)
            ).all()
        )
        project_ids = {str(i) for i in conn.execute(select(Project.id)).scalars()}
        report = verify_chain(conn)

    assert {f"crash-{i}" for i in confirmed} <= names, "a confirmed commit is missing"
    assert statuses == {"active"}, "a half-done unit of work (create without its update)"
    assert set(audit_counts) == project_ids, "audit rows and projects do not match"
    assert set(audit_counts.values()) == {2}, "each project has exactly its create+update audit"
    assert report.ok, report


_COUNTER = """
import sys
from stalwart.core.database import DB
from stalwart.repositories import ProjectRepository
db = DB(sys.argv[1])
for _ in range(int(sys.argv[2])):
    def bump(uow):
        repo = ProjectRepository(uow)
        p = repo.read(1, for_update=True)
        repo.update(1, budget=p.budget + 1)
    db.run_tx(bump)
"""


def test_two_processes_writing_the_same_row_lose_no_update(db: DB) -> None:
    db.run_tx(lambda uow: ProjectRepository(uow).create(name="shared", budget=0.0))
    url = db.url.render_as_string(hide_password=False)
    per_process = 40
    children = [
        subprocess.Popen(
            [PYTHON, "-c", _COUNTER, url, str(per_process)],
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(STALWART_LOG_LEVEL="ERROR"),
        )
        for _ in range(2)
    ]
    for child in children:
        _out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
    with db.get_conn() as conn:
        budget, version = conn.execute(select(Project.budget, Project.version)).one()
        assert verify_chain(conn).ok
    assert budget == 2 * per_process
    assert version == 1 + 2 * per_process
