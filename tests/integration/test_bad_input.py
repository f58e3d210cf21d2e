"""Bad input on real databases (SQLite and PostgreSQL): every hostile value is refused with a
message or stored safely, the draft keeps what it had, and the service keeps working after."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text

from stalwart.core.audit import verify_chain
from stalwart.core.database import DB
from stalwart.core.form_state import JournalEntry
from stalwart.core.rbac import Principal
from stalwart.errors import InputRejectedError, NotFoundError, UploadRejectedError
from stalwart.models import FormDraft, FormVersion, SessionRecord, StoredFile
from stalwart.services.form_service import FormService
from stalwart.services.input_rules import InputLimits

DEFAULTS: dict[str, Any] = {"name": "", "summary": "", "budget": 0, "rows": []}
FORM = "brief:bad-input"
SID = "mallory"
LIMITS = InputLimits(
    input_max_chars=100_000,
    upload_max_bytes=64 * 1024,
    upload_allowed_types=frozenset({"csv", "json", "txt", "pdf", "png", "jpg", "jpeg", "xlsx"}),
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 100
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 100
HOSTILE_TEXT = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(document.cookie)">',
    "[click me](javascript:alert(1)) ![](https://tracker.example/p.png) **bold** :red[x]",
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE form_drafts;--",
    '" OR 1=1 -- \\ %s %(name)s ? :name $1',
    '=HYPERLINK("http://evil","x")',
]


@pytest.fixture
def forms(db: DB) -> FormService:
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id=SID, page="home", params={})))
    return FormService(db).with_limits(LIMITS)


def data(forms: FormService) -> dict[str, Any]:
    return dict(forms.load(SID, FORM, DEFAULTS).state.data)


def save(forms: FormService, key: str) -> int:
    return forms.save(
        SID, FORM, DEFAULTS, actor=Principal.system("tester"), idempotency_key=key
    ).version


def count(db: DB, model: type) -> int:
    with db.get_conn() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def still_works(forms: FormService, db: DB, key: str) -> None:
    """After a refusal: an ordinary change and a save go through, and the audit chain holds."""
    forms.persist_input(SID, FORM, DEFAULTS, "budget", 42)
    assert data(forms)["budget"] == 42
    version = save(forms, key)
    with db.get_conn() as conn:
        saved = conn.execute(
            select(FormVersion.data).where(
                FormVersion.form_id == FORM, FormVersion.version == version
            )
        ).scalar_one()
        assert verify_chain(conn).ok
    assert saved["budget"] == 42


# --- text ----------------------------------------------------------------------------------


def test_text_over_the_limit_is_refused_naming_field_and_limit(forms: FormService, db: DB) -> None:
    forms.persist_input(SID, FORM, DEFAULTS, "summary", "the previous text")
    with pytest.raises(InputRejectedError) as caught:
        forms.persist_input(SID, FORM, DEFAULTS, "summary", "x" * 100_001, typed=True)
    err = caught.value
    assert (err.field, err.reason) == ("summary", "too_long")
    assert "summary" in err.message
    assert "100,001" in err.message
    assert "100,000" in err.message
    assert "previous value" in err.action
    assert data(forms)["summary"] == "the previous text"  # kept, not cut
    forms.persist_input(SID, FORM, DEFAULTS, "summary", "y" * 100_000)  # the limit itself is fine
    assert len(data(forms)["summary"]) == 100_000
    still_works(forms, db, "after-long")


def test_a_long_cell_in_a_table_is_refused_too(forms: FormService, db: DB) -> None:
    with pytest.raises(InputRejectedError, match="rows"):
        forms.persist_input(SID, FORM, DEFAULTS, "rows", [{"milestone": "z" * 100_001}])
    assert data(forms)["rows"] == []
    still_works(forms, db, "after-long-cell")


def test_nul_is_removed_and_the_rest_stored(forms: FormService, db: DB) -> None:
    forms.persist_input(SID, FORM, DEFAULTS, "name", "a\x00b\x00c")
    forms.persist_input(SID, FORM, DEFAULTS, "rows", [{"milestone": "x\x00y", "cost": 1}])
    assert data(forms)["name"] == "abc"
    assert data(forms)["rows"] == [{"milestone": "xy", "cost": 1}]
    save(forms, "nul")
    with db.get_conn() as conn:
        raw = conn.execute(
            text("SELECT CAST(data AS TEXT) FROM form_versions WHERE form_id = :f"), {"f": FORM}
        ).scalar_one()
    assert "\\u0000" not in raw
    assert "\x00" not in raw
    still_works(forms, db, "after-nul")


def test_lone_surrogates_become_replacement_characters(forms: FormService, db: DB) -> None:
    # Before: stored, then the save failed with UnicodeEncodeError (the audit hash) and the
    # value could not be sent back to the browser.
    forms.persist_input(SID, FORM, DEFAULTS, "name", "x\ud800y\udfffz")
    forms.persist_input(SID, FORM, DEFAULTS, "summary", "pair \ud83d\ude00 joined")
    assert data(forms)["name"] == "x\ufffdy\ufffdz"
    assert data(forms)["summary"] == "pair \U0001f600 joined"
    save(forms, "surrogate")
    still_works(forms, db, "after-surrogate")


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(forms: FormService, db: DB, number: float) -> None:
    # Before: PostgreSQL refused the JSON and the form stayed "retrying" forever.
    forms.persist_input(SID, FORM, DEFAULTS, "budget", 7)
    with pytest.raises(InputRejectedError, match="not a finite number") as caught:
        forms.persist_input(SID, FORM, DEFAULTS, "budget", number)
    assert caught.value.reason == "not_finite"
    assert data(forms)["budget"] == 7
    still_works(forms, db, f"after-{number}")


@pytest.mark.parametrize("value", HOSTILE_TEXT)
def test_html_markdown_and_sql_are_stored_verbatim(forms: FormService, db: DB, value: str) -> None:
    tables_before = sorted(inspect(db.engine).get_table_names())
    forms.persist_input(SID, FORM, DEFAULTS, "name", value, typed=True)
    forms.persist_input(SID, FORM, DEFAULTS, "rows", [{"milestone": value}])
    version = save(forms, f"verbatim-{HOSTILE_TEXT.index(value)}")
    view = forms.load(SID, FORM, DEFAULTS)
    assert view.state.data["name"] == value
    assert view.head_data is not None
    assert view.head_data["name"] == value
    assert view.head_data["rows"] == [{"milestone": value}]
    # Parametrised queries: nothing was executed, every table is still there and readable.
    assert sorted(inspect(db.engine).get_table_names()) == tables_before
    assert {"users", "form_drafts", "form_versions"} <= set(tables_before)
    with db.get_conn() as conn:
        assert conn.execute(select(func.count()).select_from(FormDraft)).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM users")).scalar_one() == 0
        saved = conn.execute(
            select(FormVersion.data).where(FormVersion.version == version)
        ).scalar_one()
    assert saved["name"] == value
    still_works(forms, db, f"after-verbatim-{HOSTILE_TEXT.index(value)}")


def test_journal_replay_keeps_what_fits_and_leaves_out_what_does_not(
    forms: FormService, db: DB
) -> None:
    forms.persist_input(SID, FORM, DEFAULTS, "summary", "kept")
    view, taken = forms.replay_journal(
        SID,
        FORM,
        DEFAULTS,
        {
            "name": JournalEntry("Ap\x00ollo \ud800", base=0),
            "summary": JournalEntry("s" * 100_001, base=0),
        },
    )
    assert taken == ["name"]
    assert view.state.data["name"] == "Apollo \ufffd"
    assert view.state.data["summary"] == "kept"
    still_works(forms, db, "after-replay")


# --- uploads --------------------------------------------------------------------------------


def stored_names(db: DB) -> list[str]:
    with db.get_conn() as conn:
        return list(conn.execute(select(StoredFile.name).order_by(StoredFile.name)).scalars())


def upload_still_works(forms: FormService, db: DB) -> None:
    meta = forms.store_file("notes.txt", "text/plain", b"ordinary notes")
    assert forms.read_file(meta["file_id"]) == b"ordinary notes"
    forms.persist_input(SID, FORM, DEFAULTS, "attachment", meta)
    assert data(forms)["attachment"]["name"] == "notes.txt"


def test_an_oversized_upload_is_refused_and_nothing_is_stored(forms: FormService, db: DB) -> None:
    forms.persist_input(SID, FORM, DEFAULTS, "name", "Apollo")
    with pytest.raises(UploadRejectedError, match=r"at most 64\.0 KB") as caught:
        forms.store_file("big.csv", "text/csv", b"a,b\n" * (16 * 1024) + b"x")
    assert caught.value.reason == "too_large"
    assert count(db, StoredFile) == 0
    assert data(forms)["name"] == "Apollo"
    exact = forms.store_file("exact.csv", "text/csv", b"a,b\n" * (16 * 1024))
    assert exact["size"] == 64 * 1024
    upload_still_works(forms, db)


@pytest.mark.parametrize(
    ("name", "content", "types", "reason", "says"),
    [
        ("tool.exe", EXE, None, "type_not_allowed", "type .exe"),
        ("script.sh", b"#!/bin/sh\nrm -rf /\n", None, "type_not_allowed", "type .sh"),
        ("README", b"hello", None, "type_not_allowed", "no extension"),
        ("data.csv", b"a,b\n1,2\n", ["png"], "type_not_allowed", "allowed here: .png"),
        ("photo.png", EXE, None, "content_mismatch", "Windows program"),
        ("report.pdf", ELF, None, "content_mismatch", "Linux program"),
        ("photo.jpg", PNG, None, "content_mismatch", "no JPEG signature"),
        ("table.csv", EXE, None, "content_mismatch", "Windows program"),
        ("notes.txt", b"text\x00with a NUL", None, "content_mismatch", "NUL byte"),
        ("sheet.xlsx", EXE, None, "content_mismatch", "Windows program"),
        ("data.json", b"{not json", None, "content_mismatch", "not JSON"),
        ("empty.txt", b"", None, "empty", "empty"),
    ],
)
def test_wrong_types_and_renamed_programs_are_refused(
    forms: FormService,
    db: DB,
    name: str,
    content: bytes,
    types: list[str] | None,
    reason: str,
    says: str,
) -> None:
    with pytest.raises(UploadRejectedError) as caught:
        forms.store_file(name, "image/png", content, types=types)
    assert caught.value.reason == reason
    assert says in caught.value.message
    assert caught.value.action.endswith(".")
    assert count(db, StoredFile) == 0
    upload_still_works(forms, db)


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"name,city\nJos\xe9,Z\xfcrich\n", "byte 0xe9 at position 13"),  # Latin-1, not UTF-8
        (b"a,b\n\xff\xfe,\x80\n", "byte 0xff at position 4"),
        (b"a,\xed\xa0\x80\n", "byte 0xed at position 2"),  # an encoded surrogate (CESU-8)
    ],
)
def test_a_csv_that_is_not_utf8_is_refused_with_where_and_how_to_fix(
    forms: FormService, db: DB, content: bytes, where: str
) -> None:
    with pytest.raises(UploadRejectedError) as caught:
        forms.store_file("export.csv", "text/csv", content)
    assert caught.value.reason == "not_utf8"
    assert where in caught.value.message
    assert "UTF-8" in caught.value.action
    assert count(db, StoredFile) == 0
    upload_still_works(forms, db)


def office_file(part: str = "xl/workbook.xml") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(part, "<workbook/>")
    return buffer.getvalue()


def test_genuine_files_of_each_checked_type_are_accepted(forms: FormService, db: DB) -> None:
    files = {
        "pic.png": (PNG, "image/png"),
        "pic.jpeg": (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "image/jpeg"),
        "doc.pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        "sheet.xlsx": (
            office_file(),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        "data.json": (json.dumps({"a": [1, 2]}).encode(), "application/json"),
        "bom.csv": ("\ufeffname\nZürich\n".encode(), "text/csv"),
    }
    for name, (content, mime) in files.items():
        # The browser's claimed type is not trusted: the stored one follows the extension.
        assert forms.store_file(name, "text/html", content)["mime"] == mime
    with db.get_conn() as conn:
        stored = dict(conn.execute(select(StoredFile.name, StoredFile.mime)).all())
    assert stored["doc.pdf"] == "application/pdf"
    with pytest.raises(UploadRejectedError, match=r"without the parts of a \.xlsx"):
        forms.store_file("fake.xlsx", "", office_file("word/document.xml"))


@pytest.mark.parametrize(
    ("name", "stored_as"),
    [
        ("../../etc/passwd", None),  # no extension left: refused
        ("..\\..\\boot.ini", None),  # .ini is not allowed
        ("evil\u202egnp.exe", None),  # shows as "evilexe.png"; is an .exe
        ("/var/www/../../shell.php.png", None),  # a .png without a PNG inside
        ("CON.txt", "_CON.txt"),
        ("a\x00b.csv", "ab.csv"),  # before: PostgreSQL refused the NUL (a database error)
        ("C:\\Users\\me\\..\\report.csv", "report.csv"),
        ("..\u2215..\u2215notes.txt", "notes.txt"),  # a look-alike slash
        (".hidden.txt", "hidden.txt"),
        ("a" * 300 + ".csv", "a" * 251 + ".csv"),
    ],
)
def test_malicious_file_names_are_refused_or_made_safe(
    forms: FormService, db: DB, name: str, stored_as: str | None
) -> None:
    content = PNG if name.endswith(".png") and stored_as else b"x,y\n1,2\n"
    if stored_as is None:
        with pytest.raises(UploadRejectedError) as caught:
            forms.store_file(name, "text/plain", content)
        shown = caught.value.message.split("“", 1)[1].split("”", 1)[0]  # the name it says
        assert not set(shown) & {"/", "\\", "\u202e", "\x00"}
        assert not shown.startswith(".")
        assert stored_names(db) == []
    else:
        meta = forms.store_file(name, "text/plain", content)
        assert meta["name"] == stored_as
        assert stored_names(db) == [stored_as]
        assert len(stored_as.encode()) <= 255
    upload_still_works(forms, db)


def test_a_file_is_read_back_by_its_content_hash_only(forms: FormService) -> None:
    meta = forms.store_file("x.txt", "text/plain", b"abc")
    assert forms.read_file(meta["file_id"]) == b"abc"
    for bad in ("../../etc/passwd", "x.txt", meta["file_id"].upper(), "' OR 1=1 --"):
        with pytest.raises(NotFoundError):
            forms.read_file(bad)


@pytest.fixture
def default_forms(db: DB) -> FormService:
    db.run_tx(lambda uow: uow.session.add(SessionRecord(id=SID, page="home", params={})))
    return FormService(db)


def test_without_configured_limits_the_service_uses_the_config_defaults(
    default_forms: FormService,
) -> None:
    limits = default_forms.limits
    assert (limits.input_max_chars, limits.upload_max_bytes) == (100_000, 10 * 1024 * 1024)
    with pytest.raises(UploadRejectedError):
        default_forms.store_file("tool.exe", "", EXE)
    with pytest.raises(InputRejectedError):
        default_forms.persist_input(SID, FORM, DEFAULTS, "name", "n" * 100_001)
