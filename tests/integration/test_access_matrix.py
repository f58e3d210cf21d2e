"""The authorisation matrix through the service layer: every action against every role.

Each row is the expected outcome written out by hand (not derived from the role table the code
uses), on real databases. A refused action changes nothing and leaves a ``denied`` audit row;
an allowed one does what it says. "Crafted" calls (a viewer calling Save directly, as a forged
websocket message would) are exactly these calls: the service is the check, not the button.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from stalwart.core.access import AccessControl
from stalwart.core.config import AppConfig
from stalwart.core.database import DB
from stalwart.core.jobs import Job, JobQueue
from stalwart.core.rbac import Principal, Roles
from stalwart.errors import PermissionDeniedError
from stalwart.models import AuditEntry, FormVersion, JobRecord, SessionRecord, User
from stalwart.services.auth_service import AuthService
from stalwart.services.export_service import ExportService
from stalwart.services.form_service import FormService
from stalwart.services.job_service import JobService
from tests.job_functions import add

CUSTOM = {"auditor": ["view", "export"], "jobmanager": ["view", "run_jobs", "manage_jobs"]}
ROLES = Roles(CUSTOM)
FORM = "matrix:1"
DEFAULTS = {"name": "", "budget": 0}

#: role -> the actions it may do (by hand, from the documented role table in SECURITY.md)
EXPECTED: dict[str, set[str]] = {
    "viewer": set(),
    "editor": {"save", "apply", "enqueue", "cancel_own", "export"},
    "admin": {
        "save",
        "apply",
        "enqueue",
        "cancel_own",
        "cancel_others",
        "all_jobs",
        "users",
        "export",
    },
    "auditor": {"export"},
    "jobmanager": {"enqueue", "cancel_own", "cancel_others", "all_jobs"},
    "anonymous": set(),
}


def principal(role: str, user_id: int = 10) -> Principal:
    if role == "anonymous":
        return Principal.anonymous()
    return ROLES.principal(user_id=user_id, username=f"{role}-user", role=role)


def settings(db_url: str) -> AppConfig:
    return AppConfig(
        database_url=db_url,
        secret_key="matrix-secret-0123456789012345678901234",  # type: ignore[arg-type]
        custom_roles=CUSTOM,  # type: ignore[arg-type]
        password_hash_memory_kib=8192,
        password_hash_parallelism=1,
        password_hash_time_cost=1,
    )


def make_session(db: DB, sid: str) -> None:
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id=sid, page="home", params={})))


def _count(db: DB, column: Any, *where: Any) -> int:
    with db.unit_of_work(read_only=True) as uow:
        return int(uow.session.execute(select(func.count(column)).where(*where)).scalar_one())


@pytest.mark.parametrize("role", list(EXPECTED))
def test_every_action_against_every_role(db: DB, db_url: str, role: str) -> None:
    access = AccessControl(db, ROLES)
    forms = FormService(db, access=access)
    jobs = JobService(JobQueue(db), access)
    auth = AuthService(db, settings(db_url))
    exports = ExportService(access)
    actor = principal(role)
    # Someone else's job, and one of the actor's own (made by the queue, as the CLI would).
    others = JobQueue(db).enqueue(Job.of(add, {"a": 1, "b": 2}, owner="someone-else"))
    own = JobQueue(db).enqueue(Job.of(add, {"a": 2, "b": 3}, owner=actor.username))
    make_session(db, "sid-" + role)
    forms.persist_input("sid-" + role, FORM, DEFAULTS, "name", "typed by " + role)

    actions: dict[str, Callable[[], object]] = {
        "save": lambda: forms.save(
            "sid-" + role, FORM, DEFAULTS, actor=actor, idempotency_key="k-" + role
        ),
        "apply": lambda: forms.apply_form("sid-" + role, FORM, DEFAULTS, actor=actor),
        "enqueue": lambda: jobs.enqueue(actor, Job.of(add, {"a": 3, "b": 4})),
        "cancel_own": lambda: jobs.cancel(actor, own),
        "cancel_others": lambda: jobs.cancel(actor, others),
        "all_jobs": lambda: jobs.list_jobs(actor, everyone=True),
        "users": lambda: auth.create_user(actor, f"made-by-{role}", password="a long password 1"),
        "export": lambda: exports.csv(actor, [{"a": "=1+1"}], what="matrix"),
    }
    outcomes: dict[str, bool] = {}
    for name, act in actions.items():
        denied_before = _count(db, AuditEntry.id, AuditEntry.action == "denied")
        try:
            act()
        except PermissionDeniedError as err:
            outcomes[name] = False
            refused_for = err.permission
            # A refusal says which permission was missing, and is audited.
            assert refused_for
            assert _count(db, AuditEntry.id, AuditEntry.action == "denied") == denied_before + 1
        else:
            outcomes[name] = True
    assert {name for name, ok in outcomes.items() if ok} == EXPECTED[role]

    # What was refused left nothing behind; what was allowed happened.
    saved = _count(db, FormVersion.id, FormVersion.form_id == FORM)
    assert saved == (1 if "save" in EXPECTED[role] else 0)
    started = _count(db, JobRecord.id, JobRecord.owner == actor.username)
    assert started == (2 if "enqueue" in EXPECTED[role] else 1)
    made = _count(db, User.id, User.username == f"made-by-{role}")
    assert made == (1 if "users" in EXPECTED[role] else 0)
    with db.unit_of_work(read_only=True) as uow:
        other_status = uow.session.get(JobRecord, others).status  # type: ignore[union-attr]
    assert (other_status == "cancelled") == ("cancel_others" in EXPECTED[role])


def test_a_denial_is_audited_with_who_what_and_which_record(db: DB) -> None:
    forms = FormService(db, access=AccessControl(db, ROLES))
    make_session(db, "sid")
    forms.persist_input("sid", FORM, DEFAULTS, "name", "x")
    with pytest.raises(PermissionDeniedError) as caught:
        forms.save("sid", FORM, DEFAULTS, actor=principal("viewer"), idempotency_key="k")
    assert "editor" in caught.value.message
    assert "admin" in caught.value.message
    with db.unit_of_work(read_only=True) as uow:
        row = uow.session.execute(
            select(
                AuditEntry.actor, AuditEntry.entity, AuditEntry.entity_id, AuditEntry.diff
            ).where(AuditEntry.action == "denied")
        ).one()
    assert row.actor == "viewer-user"
    assert row.entity == "access"
    assert row.entity_id == "form.save"
    recorded = json.dumps(row.diff)
    assert FORM in recorded
    assert '"viewer"' in recorded
