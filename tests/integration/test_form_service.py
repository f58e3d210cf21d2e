"""The form write path on real databases: drafts, saves, conflicts, files."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from stalwart.core.audit import verify_chain
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.form_state import JournalEntry
from stalwart.errors import StalwartError
from stalwart.models import AuditEntry, FormDraft, FormVersion, SessionRecord, StoredFile
from stalwart.services.form_service import FormService
from tests.conftest import editor

DEFAULTS = {"name": "", "notes": "", "budget": 0}
FORM = "brief:1"


def make_session(db: DB, sid: str) -> str:
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id=sid, page="home", params={})))
    return sid


@pytest.fixture
def forms(db: DB) -> FormService:
    for sid in ("alice", "bob"):
        make_session(db, sid)
    return FormService(db)


def rows(db: DB, model: type) -> int:
    with db.get_conn() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_load_creates_nothing_and_shows_defaults(forms: FormService, db: DB) -> None:
    view = forms.load("alice", FORM, DEFAULTS)
    assert view.state.data == DEFAULTS
    assert (view.head_version, view.conflict, view.state.dirty) == (0, False, False)
    assert rows(db, FormDraft) == 0


def test_typed_input_persists_and_is_one_undo_step(forms: FormService, db: DB) -> None:
    for text in ("H", "He", "Hello"):
        forms.persist_input("alice", FORM, DEFAULTS, "notes", text, typed=True, tab="t1")
    forms.persist_input("alice", FORM, DEFAULTS, "budget", 10, tab="t1")
    view = forms.load("alice", FORM, DEFAULTS)
    assert view.state.data == {"name": "", "notes": "Hello", "budget": 10}
    assert view.state.dirty_fields == ["budget", "notes"]
    assert view.last_writer == "t1"
    view, changed = forms.apply("alice", FORM, DEFAULTS, lambda s: s.undo())
    assert changed == ["budget"]
    view, changed = forms.apply("alice", FORM, DEFAULTS, lambda s: s.undo())
    assert changed == ["notes"]
    assert view.state.data["notes"] == ""
    view, _ = forms.apply("alice", FORM, DEFAULTS, lambda s: s.redo())
    assert forms.load("alice", FORM, DEFAULTS).state.data["notes"] == "Hello"
    assert rows(db, FormDraft) == 1
    assert rows(db, AuditEntry) == 0  # drafts are working state; saves are audited


def test_save_numbers_versions_audits_and_replays_idempotently(forms: FormService, db: DB) -> None:
    forms.persist_input("alice", FORM, DEFAULTS, "name", "Apollo")
    first = forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="save-1")
    again = forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="save-1")
    assert first == again
    assert (first.version, first.overwrote) == (1, None)
    view = forms.load("alice", FORM, DEFAULTS)
    assert (view.state.base_version, view.state.dirty, view.conflict) == (1, False, False)
    forms.persist_input("alice", FORM, DEFAULTS, "budget", 5)
    assert (
        forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="save-2").version
        == 2
    )
    assert rows(db, FormVersion) == 2
    with db.get_conn() as conn:
        diffs = conn.execute(select(AuditEntry.diff).order_by(AuditEntry.id)).scalars().all()
        assert verify_chain(conn).ok
    assert diffs[0]["name"] == {"before": None, "after": "Apollo"}
    assert diffs[1] == {
        "_version": {"before": 1, "after": 2},
        "budget": {"before": 0, "after": 5},
    }


def test_a_new_identity_starts_from_the_saved_version(forms: FormService) -> None:
    forms.persist_input("alice", FORM, DEFAULTS, "name", "Saved name")
    forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="k")
    view = forms.load("bob", FORM, DEFAULTS)
    assert view.state.data["name"] == "Saved name"
    assert view.state.base_version == 1
    assert not view.conflict


def test_last_write_wins_and_the_other_side_sees_the_conflict(forms: FormService) -> None:
    forms.persist_input("alice", FORM, DEFAULTS, "name", "base")
    forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="a0")
    forms.load("bob", FORM, DEFAULTS)  # bob opens version 1
    forms.persist_input("bob", FORM, DEFAULTS, "notes", "bob's notes")

    forms.persist_input("alice", FORM, DEFAULTS, "name", "alice's name")
    assert (
        forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="a1").version
        == 2
    )

    bob_before = forms.load("bob", FORM, DEFAULTS)
    assert bob_before.conflict
    assert bob_before.head_version == 2
    outcome = forms.save("bob", FORM, DEFAULTS, actor=editor("bob"), idempotency_key="b1")
    assert (outcome.version, outcome.overwrote) == (3, 2)  # bob's save wins, and says so

    alice = forms.load("alice", FORM, DEFAULTS)
    assert alice.conflict, "alice's version 2 was replaced: she must be told"
    assert alice.head_data == {"name": "base", "notes": "bob's notes", "budget": 0}
    assert alice.head_saved_by == "bob"
    assert alice.state.data["name"] == "alice's name"  # nothing of hers is overwritten

    # Alice takes theirs: her draft becomes version 3, and undo brings hers back.
    taken = forms.take_theirs("alice", FORM, DEFAULTS)
    assert not taken.conflict
    assert taken.state.data["notes"] == "bob's notes"
    undone, _ = forms.apply("alice", FORM, DEFAULTS, lambda s: s.undo())
    assert undone.state.data["name"] == "alice's name"
    # ...and keeps hers after all: saved as version 4, which replaced nothing unseen.
    kept = forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="a2")
    assert (kept.version, kept.overwrote) == (4, None)
    assert forms.load("bob", FORM, DEFAULTS).conflict


def test_concurrent_saves_of_one_form_get_distinct_versions(forms: FormService, db: DB) -> None:
    sessions = [make_session(db, f"s{i}") for i in range(4)]
    for sid in sessions:
        forms.persist_input(sid, FORM, DEFAULTS, "name", sid)
    versions: list[int] = []
    barrier = threading.Barrier(len(sessions))

    def save(sid: str) -> None:
        barrier.wait()
        versions.append(
            forms.save(sid, FORM, DEFAULTS, actor=editor(sid), idempotency_key=sid).version
        )

    threads = [threading.Thread(target=save, args=(sid,)) for sid in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == [1, 2, 3, 4]


def test_journal_replay_takes_newer_browser_values(forms: FormService) -> None:
    forms.persist_input("alice", FORM, DEFAULTS, "notes", "hel", typed=True)
    seen = forms.load("alice", FORM, DEFAULTS).state.revision - 1  # typed before that reached us
    view, taken = forms.replay_journal(
        "alice", FORM, DEFAULTS, {"notes": JournalEntry("hello", base=seen)}
    )
    assert taken == ["notes"]
    assert view.state.data["notes"] == "hello"
    _, again = forms.replay_journal(
        "alice", FORM, DEFAULTS, {"notes": JournalEntry("hello", base=seen)}
    )
    assert again == []


def test_files_are_stored_once_and_bounded(forms: FormService, db: DB) -> None:
    meta = forms.store_file("../../etc/passwd.txt", "text/plain", b"hello")
    assert meta["name"] == "passwd.txt"
    assert meta["size"] == 5
    assert forms.store_file("copy.txt", "text/plain", b"hello")["file_id"] == meta["file_id"]
    assert rows(db, StoredFile) == 1
    assert forms.read_file(meta["file_id"]) == b"hello"
    with pytest.raises(StalwartError, match=r"at most 10\.0 MB"):
        forms.store_file("big.txt", "application/octet-stream", b"x" * (10 * 1024 * 1024 + 1))


def test_lock_is_a_no_op_outside_postgres_and_serialises_inside(db: DB) -> None:
    def work(uow: UnitOfWork) -> str:
        uow.lock("anything")
        return db.dialect

    assert db.run_tx(work) == db.dialect


def test_open_pins_the_draft_to_the_version_shown(forms: FormService) -> None:
    forms.persist_input("alice", FORM, DEFAULTS, "name", "v1 name")
    forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="p1")
    shown = forms.open("bob", FORM, DEFAULTS, tab="bob-tab")  # bob sees version 1
    assert shown.state.base_version == 1
    assert shown.last_writer == "bob-tab"
    forms.persist_input("alice", FORM, DEFAULTS, "name", "v2 name")
    forms.save("alice", FORM, DEFAULTS, actor=editor("alice"), idempotency_key="p2")
    view = forms.persist_input("bob", FORM, DEFAULTS, "notes", "bob's")
    assert view.state.data["name"] == "v1 name"  # not silently the version he never saw
    assert view.conflict
    assert forms.open("bob", FORM, DEFAULTS).state.data["notes"] == "bob's"
