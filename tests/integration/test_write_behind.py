"""``DB.write_behind``: writes nobody waits for, run on a background thread, newest per key."""

from __future__ import annotations

import io
import json
import threading

from sqlalchemy import select

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import configure_logging
from stalwart.models import Project
from stalwart.repositories import ProjectRepository


def name_of(db: DB, project_id: int) -> str:
    with db.get_conn() as conn:
        return str(conn.execute(select(Project.name).filter_by(id=project_id)).scalar_one())


def rename(project_id: int, name: str, ran: list[str]):  # type: ignore[no-untyped-def]
    def write(uow: UnitOfWork) -> None:
        ran.append(name)
        ProjectRepository(uow).update(project_id, name=name)

    return write


def test_the_write_lands_after_the_call_returns(db: DB) -> None:
    pid = db.run_tx(lambda uow: ProjectRepository(uow).create(name="v0").id)
    ran: list[str] = []
    db.write_behind(f"p{pid}", rename(pid, "v1", ran))
    assert db.flush_behind()
    assert name_of(db, pid) == "v1"
    assert ran == ["v1"]


def test_only_the_newest_waiting_write_of_a_key_runs(db: DB) -> None:
    first = db.run_tx(lambda uow: ProjectRepository(uow).create(name="a0").id)
    other = db.run_tx(lambda uow: ProjectRepository(uow).create(name="b0").id)
    ran: list[str] = []
    # Hold the background thread in a first write so the next ones wait behind it.
    started, release = threading.Event(), threading.Event()

    def blocking(uow: UnitOfWork) -> None:
        started.set()
        assert release.wait(30)

    db.write_behind("blocker", blocking)
    assert started.wait(30)
    for n in range(1, 6):
        db.write_behind(f"p{first}", rename(first, f"a{n}", ran))
    db.write_behind(f"p{other}", rename(other, "b1", ran))
    release.set()
    assert db.flush_behind()

    assert ran == ["a5", "b1"]  # a1..a4 were replaced while waiting; other keys are kept
    assert (name_of(db, first), name_of(db, other)) == ("a5", "b1")


def test_a_failing_write_is_logged_and_the_next_one_still_runs(db: DB) -> None:
    pid = db.run_tx(lambda uow: ProjectRepository(uow).create(name="kept").id)
    ran: list[str] = []

    def broken(uow: UnitOfWork) -> None:
        raise ValueError("not this one")

    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    try:
        db.write_behind("broken", broken)
        db.write_behind(f"p{pid}", rename(pid, "after", ran))
        assert db.flush_behind()
    finally:
        configure_logging("INFO", json=True)
    assert name_of(db, pid) == "after"
    failures = [
        record
        for record in map(json.loads, out.getvalue().splitlines())
        if record["event"] == "write-behind failed"
    ]
    assert [(r["key"], r["error"]) for r in failures] == [("broken", "ValueError: not this one")]


def test_dispose_finishes_what_is_pending(db: DB) -> None:
    pid = db.run_tx(lambda uow: ProjectRepository(uow).create(name="v0").id)
    db.write_behind(f"p{pid}", rename(pid, "before dispose", []))
    db.dispose()
    assert name_of(db, pid) == "before dispose"
    assert db.flush_behind()  # nothing left, nothing running: returns at once
