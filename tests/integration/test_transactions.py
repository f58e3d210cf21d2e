"""The write path on real SQLite and PostgreSQL: commit, rollback, retry, idempotency, audit."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import func, select, text

from stalwart.core.audit import verify_chain
from stalwart.core.database import DB, RetryNotice, UnitOfWork
from stalwart.core.migrations import migrate
from stalwart.errors import (
    ConflictError,
    DatabaseUnavailableError,
    IntegrityViolationError,
    NotFoundError,
    RetriesExhaustedError,
)
from stalwart.models import AuditEntry, Project
from stalwart.repositories import ProjectRepository
from tests.conftest import FAST_RETRY


def count(db: DB, model: type) -> int:
    with db.get_conn() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def create_project(name: str, **values: object):  # type: ignore[no-untyped-def]
    def work(uow: UnitOfWork) -> int:
        return ProjectRepository(uow).create(name=name, **values).id

    return work


def test_commit_is_visible_to_a_new_connection_with_its_audit_row(db: DB) -> None:
    pid = db.run_tx(create_project("Apollo", budget=1200.5, status="active"), user="ada")
    with db.get_conn() as conn:
        row = conn.execute(select(Project.name, Project.budget, Project.version)).one()
        audit = conn.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.entity_id)
        ).one()
    assert tuple(row) == ("Apollo", 1200.5, 1)
    assert tuple(audit) == ("ada", "create", str(pid))


def test_exception_after_the_data_write_leaves_neither_row_nor_audit(db: DB) -> None:
    def work(uow: UnitOfWork) -> None:
        ProjectRepository(uow).create(name="Doomed")
        uow.session.flush()  # the row is written inside the transaction...
        raise ValueError("boom")  # ...and then the work fails

    with pytest.raises(ValueError, match="boom"):
        db.run_tx(work)
    assert count(db, Project) == 0
    assert count(db, AuditEntry) == 0


def test_unit_of_work_rolls_back_unless_committed(db: DB) -> None:
    with db.unit_of_work() as uow:
        ProjectRepository(uow).create(name="Uncommitted")
    assert count(db, Project) == 0
    with db.unit_of_work() as uow:
        ProjectRepository(uow).create(name="Committed")
        uow.commit()
        assert uow.committed
    assert count(db, Project) == 1


def test_explicit_rollback_discards_pending_audit(db: DB) -> None:
    with db.unit_of_work() as uow:
        ProjectRepository(uow).create(name="First")
        uow.rollback()
        ProjectRepository(uow).create(name="Second")
        uow.commit()
    with db.get_conn() as conn:
        names = conn.execute(select(Project.name)).scalars().all()
        audits = conn.execute(select(AuditEntry.diff)).scalars().all()
    assert names == ["Second"]
    assert [a["name"]["after"] for a in audits] == ["Second"]


def test_after_commit_runs_only_after_commit(db: DB) -> None:
    seen: list[str] = []

    def fails(uow: UnitOfWork) -> None:
        uow.after_commit(lambda: seen.append("fails"))
        raise RuntimeError("no commit")

    with pytest.raises(RuntimeError):
        db.run_tx(fails)

    def works(uow: UnitOfWork) -> None:
        uow.after_commit(lambda: seen.append("works"))
        uow.after_commit(lambda: 1 / 0)  # a failing callback does not undo the commit
        ProjectRepository(uow).create(name="x")

    db.run_tx(works)
    assert seen == ["works"]
    assert count(db, Project) == 1


def test_update_delete_list_and_versions(db: DB) -> None:
    pid = db.run_tx(create_project("Orion", budget=10.0))

    def edit(uow: UnitOfWork) -> int:
        repo = ProjectRepository(uow)
        project = repo.update(pid, expected_version=1, budget=20.0, description="bigger")
        repo.update(pid, budget=20.0)  # no change: no new version, no audit row
        return project.version

    assert db.run_tx(edit) == 2
    with pytest.raises(ConflictError, match="version 1"):
        db.run_tx(lambda uow: ProjectRepository(uow).update(pid, expected_version=1, budget=1.0))
    with pytest.raises(ValueError, match="no field"):
        db.run_tx(lambda uow: ProjectRepository(uow).update(pid, colour="red"))
    with pytest.raises(ValueError, match="managed"):
        db.run_tx(lambda uow: ProjectRepository(uow).update(pid, version=9))

    db.run_tx(create_project("Vega"))
    with db.unit_of_work() as uow:
        repo = ProjectRepository(uow)
        assert [p.name for p in repo.list(order_by="-name")] == ["Vega", "Orion"]
        assert [p.name for p in repo.list(status="planned", limit=1)] == ["Orion"]
        assert repo.find_by_name("Vega") is not None
        assert repo.get(999) is None

    db.run_tx(lambda uow: ProjectRepository(uow).delete(pid, expected_version=2))
    with pytest.raises(NotFoundError):
        db.run_tx(lambda uow: ProjectRepository(uow).read(pid))
    with db.get_conn() as conn:
        actions = conn.execute(select(AuditEntry.action).order_by(AuditEntry.id)).scalars().all()
        diffs = conn.execute(select(AuditEntry.diff).order_by(AuditEntry.id)).scalars().all()
        assert verify_chain(conn).ok
    assert actions == ["create", "update", "create", "delete"]
    assert diffs[1] == {
        "budget": {"before": 10.0, "after": 20.0},
        "description": {"before": "", "after": "bigger"},
        "updated_at": diffs[1]["updated_at"],
        "version": {"before": 1, "after": 2},
    }
    assert diffs[3]["name"] == {"before": "Orion", "after": None}


def test_integrity_violation_is_a_typed_error_and_changes_nothing(db: DB) -> None:
    db.run_tx(create_project("Unique"))
    with pytest.raises(IntegrityViolationError, match="rule of the data") as info:
        db.run_tx(create_project("Unique"))
    assert "save again" in info.value.action
    with pytest.raises(IntegrityViolationError):
        db.run_tx(create_project("Negative", budget=-1))
    assert count(db, Project) == 1
    assert count(db, AuditEntry) == 1


def test_idempotent_replay_returns_the_first_result_and_writes_once(db: DB) -> None:
    calls: list[int] = []

    def work(uow: UnitOfWork) -> dict[str, object]:
        calls.append(1)
        project = ProjectRepository(uow).create(name=f"Idem-{len(calls)}")
        return {"id": project.id, "name": project.name}

    first = db.run_tx(work, idempotency_key="form:42:save:abc")
    second = db.run_tx(work, idempotency_key="form:42:save:abc")
    assert first == second == {"id": first["id"], "name": "Idem-1"}
    assert len(calls) == 1
    assert count(db, Project) == 1
    assert count(db, AuditEntry) == 1
    third = db.run_tx(work, idempotency_key="form:42:save:def")
    assert third["name"] == "Idem-2"


def test_idempotency_key_is_not_stored_when_the_work_fails(db: DB) -> None:
    def fails(uow: UnitOfWork) -> None:
        ProjectRepository(uow).create(name="Half")
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        db.run_tx(fails, idempotency_key="k")
    assert db.run_tx(create_project("Whole"), idempotency_key="k") == 1 or count(db, Project) == 1
    assert count(db, Project) == 1


def test_concurrent_replays_of_one_key_write_once(db: DB) -> None:
    results: list[object] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        results.append(db.run_tx(create_project("Once"), idempotency_key="same-key"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert len(set(results)) == 1
    assert count(db, Project) == 1


def test_concurrent_writer_threads_lose_no_update(db: DB) -> None:
    pid = db.run_tx(create_project("Counter", budget=0.0))
    threads, per_thread = 4, 15
    errors: list[BaseException] = []

    def bump(uow: UnitOfWork) -> None:
        repo = ProjectRepository(uow)
        project = repo.read(pid, for_update=True)
        repo.update(pid, budget=project.budget + 1)

    def worker() -> None:
        try:
            for _ in range(per_thread):
                db.run_tx(bump)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    with db.get_conn() as conn:
        budget, version = conn.execute(select(Project.budget, Project.version)).one()
        assert verify_chain(conn).ok
    assert budget == threads * per_thread
    assert version == 1 + threads * per_thread
    assert count(db, AuditEntry) == 1 + threads * per_thread


# --- transient failures, injected for real -------------------------------------------------


def _inject(db: DB, uow: UnitOfWork) -> None:
    """Make the current attempt fail the way a real transient failure does."""
    if db.dialect == "postgresql":
        # A real serialization failure, raised by the server with SQLSTATE 40001.
        uow.session.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END $$")
        )
    else:
        raise AssertionError("SQLite failures are injected by holding the write lock")


def test_retry_on_injected_transient_failure(db: DB) -> None:
    notices: list[RetryNotice] = []
    attempts: list[int] = []
    if db.dialect == "sqlite":
        # Another connection holds SQLite's write lock for a while: the first attempts hit
        # SQLITE_BUSY (busy timeout 200 ms), a later one gets through.
        assert db.sqlite_path is not None
        blocker = sqlite3.connect(db.sqlite_path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        timer = threading.Timer(0.3, blocker.rollback)
        timer.start()

        def work(uow: UnitOfWork) -> int:
            attempts.append(1)
            return ProjectRepository(uow).create(name="Retried").id

        try:
            pid = db.run_tx(work, on_retry=notices.append)
        finally:
            timer.join()
            blocker.close()
    else:

        def work(uow: UnitOfWork) -> int:
            attempts.append(1)
            if len(attempts) == 1:
                _inject(db, uow)
            return ProjectRepository(uow).create(name="Retried").id

        pid = db.run_tx(work, on_retry=notices.append)
    assert pid == 1
    assert notices, "the caller was told about the retry"
    assert notices[0].attempt == 1
    assert notices[0].max_attempts == db.retry.max_attempts
    assert notices[0].error.kind in {"busy", "serialization"}
    assert count(db, Project) == 1
    assert count(db, AuditEntry) == 1


@pytest.mark.postgres
def test_dropped_connection_is_retried(pg_url: str) -> None:
    db = DB(pg_url, retry=FAST_RETRY)
    migrate(db)
    attempts: list[int] = []

    def work(uow: UnitOfWork) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            # The server ends this very connection, as a restart or network cut would.
            uow.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return ProjectRepository(uow).create(name="Reconnected").id

    assert db.run_tx(work) == 1
    assert len(attempts) == 2
    assert count(db, Project) == 1
    db.dispose()


def test_give_up_after_the_bound_with_a_user_facing_error(db: DB) -> None:
    notices: list[RetryNotice] = []
    attempts: list[int] = []
    blocker = None
    if db.dialect == "sqlite":
        assert db.sqlite_path is not None
        blocker = sqlite3.connect(db.sqlite_path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")

    def work(uow: UnitOfWork) -> None:
        attempts.append(1)
        if db.dialect == "postgresql":
            _inject(db, uow)
        ProjectRepository(uow).create(name="Never")

    try:
        with pytest.raises(RetriesExhaustedError) as info:
            db.run_tx(work, on_retry=notices.append)
    finally:
        if blocker is not None:
            blocker.close()
    assert len(notices) == db.retry.max_attempts - 1
    assert "nothing was changed" in info.value.message
    assert "input is kept" in info.value.action
    if db.dialect == "postgresql":
        assert len(attempts) == db.retry.max_attempts
    assert count(db, Project) == 0


def test_unreachable_postgres_gives_up_with_a_clear_error() -> None:
    db = DB("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_timeout_s=1)
    db.retry = type(db.retry)(max_attempts=2, initial_s=0.01, max_s=0.01)
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1") as info:
        db.run_tx(create_project("x"))
    assert "database server is running" in info.value.action
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
        db.check()
    db.dispose()


def test_nested_run_tx_fails_fast_instead_of_deadlocking(db: DB) -> None:
    def outer(uow: UnitOfWork) -> None:
        ProjectRepository(uow).create(name="outer")
        db.run_tx(create_project("inner"))

    with pytest.raises(RuntimeError, match="pass the outer `uow` down"):
        db.run_tx(outer)
    assert count(db, Project) == 0
    assert db.run_tx(create_project("after")) == 1 or count(db, Project) == 1
