"""No personal data in clear in logs, error reports or audit rows, through the real write paths.

A form holding an e-mail address, a phone number, an IBAN and a password is typed and saved,
a write fails with those values in its message, its context and its database error, and a
user is created and signs in with them. Everything the process logged is captured, and the
audit table is read back: none of the values may appear in clear.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from stalwart.core.audit import verify_chain
from stalwart.core.config import AppConfig
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import configure_logging, log_error
from stalwart.core.rbac import Principal, Roles
from stalwart.errors import IntegrityViolationError, InvalidCredentialsError, StalwartError
from stalwart.models import AuditEntry, SessionRecord
from stalwart.services.auth_service import AuthService
from stalwart.services.form_service import FormService

EMAIL = "alice.smith@example.com"
PHONE = "+44 20 7946 0958"
IBAN = "DE89 3704 0044 0532 0130 00"
PASSWORD = "correct horse battery staple"
NOTES = f"Call {PHONE} or write to {EMAIL}; pay to {IBAN}."
VALUES = {"email": EMAIL, "phone": PHONE, "iban": IBAN, "password": PASSWORD, "notes": NOTES}
DEFAULTS = dict.fromkeys(VALUES, "")
FORM = "signup:1"
SID = "browser-1"
ADMIN = Principal.system("test")


def clear_forms() -> list[str]:
    """Every spelling of the values that would count as showing them."""
    forms = [EMAIL, PHONE, IBAN, PASSWORD, "alice.smith@", "7946 0958", "0532 0130"]
    return forms + [v.replace(" ", "") for v in (PHONE, IBAN)]


def leaks(text: str) -> list[str]:
    return [form for form in clear_forms() if form in text]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged (DEBUG and up, ours and the libraries') while the test runs."""
    out = io.StringIO()
    configure_logging("DEBUG", json=True, stream=out)
    yield out
    configure_logging("INFO", json=True)


def cheap_config() -> AppConfig:
    return AppConfig(
        password_hash_time_cost=1,
        password_hash_memory_kib=8,
        password_hash_parallelism=1,
        environment="test",
    )


def fill_and_save_the_form(db: DB) -> None:
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id=SID, page="signup", params={})))
    forms = FormService(db)
    for field, value in VALUES.items():
        forms.persist_input(SID, FORM, DEFAULTS, field, value, typed=True, tab="t1")
    mia = Roles().principal(user_id=1, username="mia", role="editor")
    outcome = forms.save(SID, FORM, DEFAULTS, actor=mia, idempotency_key="save-1")
    assert outcome.version == 1
    # The form's values are user data, kept on purpose: the draft and version hold them.
    assert forms.load(SID, FORM, DEFAULTS).state.data == VALUES


def fail_a_write_and_report_it(db: DB) -> tuple[str, StalwartError]:
    """A duplicate insert whose parameters hold the values, reported through ``log_error``."""

    def insert(uow: UnitOfWork) -> None:
        uow.session.add(SessionRecord(id=SID, page="signup", params=dict(VALUES)))

    with pytest.raises(IntegrityViolationError) as failed:
        db.run_tx(insert)
    try:
        raise StalwartError(
            f"The sign-up of {EMAIL} (phone {PHONE}, IBAN {IBAN}, password={PASSWORD!r}) "
            "could not be stored."
        ) from failed.value
    except StalwartError as err:
        context: dict[str, Any] = {"form": FORM, "values": dict(VALUES), "typed": NOTES}
        return log_error(err, context), err


def create_a_user_and_sign_in(db: DB) -> None:
    auth = AuthService(db, cheap_config())
    info = auth.create_user(
        ADMIN, "carol", password=PASSWORD, email=EMAIL, display_name="Carol", role="editor"
    )
    assert info.email == EMAIL
    assert auth.login("carol", PASSWORD, client_key="10.0.0.7").user.id == info.id
    # The classic slip: the password typed into the username field.
    with pytest.raises(InvalidCredentialsError):
        auth.login(PASSWORD, "carol", client_key="10.0.0.7")


def test_no_pii_in_logs_error_reports_or_audit(db: DB, captured: io.StringIO) -> None:
    fill_and_save_the_form(db)
    error_id, err = fail_a_write_and_report_it(db)
    create_a_user_and_sign_in(db)

    # The values really were in what was logged: the exception, its cause, the context.
    assert EMAIL in str(err)
    assert PASSWORD in str(err)
    cause = err.__cause__.__cause__ if err.__cause__ is not None else None
    assert cause is not None
    assert EMAIL in str(cause)  # SQLAlchemy shows the parameters (on SQLite, in full)

    log_text = captured.getvalue()
    lines = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    assert {"user created", "sign-in", "sign-in failed"} <= {line["event"] for line in lines}
    assert leaks(log_text) == []

    (report,) = [line for line in lines if line.get("error_id") == error_id]
    assert str(report["error"]).startswith(
        "The sign-up of [email] (phone [phone], IBAN [iban], password='[redacted]') "
        "could not be stored."
    )
    assert report["values"] == {
        "email": "[redacted]",
        "phone": "[redacted]",
        "iban": "[redacted]",
        "password": "[redacted]",
        "notes": "Call [phone] or write to [email]; pay to [iban].",
    }
    stack = str(report["stack"])
    assert "Traceback" in stack
    assert "IntegrityError" in stack  # the whole chain is there
    assert leaks(stack) == []

    with db.unit_of_work(read_only=True) as uow:
        rows = uow.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
        audit = [
            (row.action, row.entity, row.entity_id, row.actor, row.diff, row.trace_id)
            for row in rows
        ]
    assert leaks(json.dumps(audit, default=str)) == []

    def diffs(action: str, entity: str) -> list[dict[str, Any]]:
        return [row[4] for row in audit if row[:2] == (action, entity)]

    saves = diffs("save", "form")
    # The audit still says what changed in the save, without showing it.
    assert saves == [
        {
            "_version": {"before": 0, "after": 1},
            "email": {"before": None, "after": "[redacted]"},
            "iban": {"before": None, "after": "[redacted]"},
            "notes": {"before": None, "after": "Call [phone] or write to [email]; pay to [iban]."},
            "password": {"before": None, "after": "[redacted]"},
            "phone": {"before": None, "after": "[redacted]"},
        }
    ]
    created = diffs("create", "user")
    assert created[0]["email"]["after"] == "[redacted]"
    assert created[0]["password_hash"]["after"] == "[redacted]"
    with db.get_conn() as conn:
        assert verify_chain(conn).ok  # the chain covers the masked diffs
