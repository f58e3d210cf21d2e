"""The audit log is append-only and its hash chain exposes any edit, removal or insertion."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from stalwart.core.audit import GENESIS_HASH, entry_hash, verify_chain
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import trace
from stalwart.models import AuditEntry
from stalwart.repositories import ProjectRepository


def _write_history(db: DB) -> list[int]:
    for i in range(5):
        db.run_tx(lambda uow, i=i: ProjectRepository(uow).create(name=f"P{i}", budget=i))
    db.run_tx(lambda uow: ProjectRepository(uow).update(1, budget=99.0))
    with db.get_conn() as conn:
        return list(conn.execute(select(AuditEntry.id).order_by(AuditEntry.id)).scalars())


def _tamper(db: DB, sql: str) -> None:
    """Change the log the way someone with direct database access could: triggers off."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update"))
            conn.execute(text(sql))
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            conn.execute(text(sql))


def test_chain_links_every_row_to_the_one_before(db: DB) -> None:
    ids = _write_history(db)
    with db.get_conn() as conn:
        report = verify_chain(conn, batch=2)  # several batches
        rows = conn.execute(select(AuditEntry.prev_hash, AuditEntry.hash).order_by(AuditEntry.id))
        links = list(rows)
    assert report.ok
    assert report.checked == len(ids) == 6
    assert links[0].prev_hash == GENESIS_HASH
    assert all(links[i].prev_hash == links[i - 1].hash for i in range(1, len(links)))


def test_audit_rows_carry_user_trace_and_utc_time(db: DB) -> None:
    with trace("trace-abc"):
        db.run_tx(lambda uow: ProjectRepository(uow).create(name="T"), user="grace")
    with db.unit_of_work() as uow:
        row = uow.session.execute(select(AuditEntry)).scalar_one()
        assert (row.actor, row.trace_id, row.entity) == ("grace", "trace-abc", "project")
        offset = row.ts.utcoffset()
        assert offset is not None
        assert offset.total_seconds() == 0
        assert entry_hash(row) == row.hash


@pytest.mark.parametrize("sql", ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"])
def test_database_refuses_to_update_or_delete_audit_rows(db: DB, sql: str) -> None:
    _write_history(db)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text(sql))
    with db.get_conn() as conn:
        assert verify_chain(conn).ok


def test_verify_names_the_edited_row(db: DB) -> None:
    ids = _write_history(db)
    _tamper(db, f"UPDATE audit_log SET actor = 'mallory' WHERE id = {ids[2]}")
    with db.get_conn() as conn:
        report = verify_chain(conn)
    assert not report.ok
    assert report.first_broken_id == ids[2]
    assert report.checked == 2
    assert "edited" in (report.reason or "")


def test_verify_names_the_row_after_a_removed_one(db: DB) -> None:
    ids = _write_history(db)
    _tamper(db, f"DELETE FROM audit_log WHERE id = {ids[3]}")
    with db.get_conn() as conn:
        report = verify_chain(conn)
    assert report.first_broken_id == ids[4]
    assert "removed" in (report.reason or "")


def test_a_rewritten_hash_still_breaks_the_next_link(db: DB) -> None:
    ids = _write_history(db)
    with db.unit_of_work() as uow:
        row = uow.session.get(AuditEntry, ids[1])
        assert row is not None
        row.actor = "mallory"
        forged = entry_hash(row)  # the forger recomputes this row's hash...
        uow.session.expunge(row)
    _tamper(db, f"UPDATE audit_log SET actor = 'mallory', hash = '{forged}' WHERE id = {ids[1]}")
    with db.get_conn() as conn:
        report = verify_chain(conn)
    assert report.first_broken_id == ids[2]  # ...but the next row still points at the old one


def test_nothing_to_audit_writes_nothing(db: DB) -> None:
    def noop(uow: UnitOfWork) -> None:
        uow.audit.write_pending()

    db.run_tx(noop)
    with db.get_conn() as conn:
        assert verify_chain(conn).checked == 0
