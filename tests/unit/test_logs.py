"""Logs are JSON lines with ts, level, event, logger and the trace id of the context."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any
from unittest.mock import ANY

import pytest

from stalwart.core.logs import configure_logging, current_trace_id, get_logger, log_error, trace
from stalwart.errors import StalwartError


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_is_json_with_the_required_fields() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    with trace("t-123", page="home"):
        get_logger("stalwart.test").info("hello", answer=42)
        logging.getLogger("thirdparty").warning("from stdlib")
    get_logger("stalwart.test").debug("filtered out")
    lines = _lines(out)
    assert [line["event"] for line in lines] == ["hello", "from stdlib"]
    for line in lines:
        assert {"ts", "level", "event", "logger", "trace_id"} <= line.keys()
        assert line["trace_id"] == "t-123"
        assert line["page"] == "home"
        assert str(line["ts"]).endswith("Z")
    assert lines[0]["answer"] == 42
    assert (lines[1]["logger"], lines[1]["level"]) == ("thirdparty", "warning")


def test_trace_ids_are_fresh_per_block_and_gone_after() -> None:
    with trace() as first:
        assert current_trace_id() == first
    with trace() as second:
        assert second != first
    assert current_trace_id() is None


def test_log_error_records_stack_and_context_and_returns_an_id() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    try:
        raise StalwartError("disk on fire", "call the fire brigade")
    except StalwartError as err:
        with trace("t-err"):
            error_id = log_error(err, {"form": "project"})
    (line,) = _lines(out)
    assert line["error_id"] == error_id
    assert len(error_id) == 12
    assert line["error_type"] == "StalwartError"
    assert "disk on fire" in str(line["error"])
    assert "Traceback" in str(line["stack"])
    assert "test_log_error" in str(line["stack"])
    assert (line["form"], line["trace_id"], line["level"]) == ("project", "t-err", "error")


def test_text_renderer_for_people() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=False, stream=out)
    get_logger("x").info("readable")
    assert "readable" in out.getvalue()
    assert not out.getvalue().lstrip().startswith("{")


# --- PII ---------------------------------------------------------------------------------------

EMAIL = "alice.smith+tag@example.com"
PHONE = "+44 20 7946 0958"
IBAN = "DE89 3704 0044 0532 0130 00"
PII_VALUES = {"email": EMAIL, "phone": PHONE, "iban": IBAN}
SECRET = "hunter2-Sw0rdfish"


def _masked_stream(**options: Any) -> io.StringIO:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out, **options)
    return out


def _assert_clean(text: str, *values: str) -> None:
    for value in values or (EMAIL, PHONE, IBAN, SECRET):
        assert value not in text
        assert value.replace(" ", "") not in text


@pytest.mark.parametrize("kind", sorted(PII_VALUES))
def test_free_text_pii_is_masked_in_message_kwargs_and_nested_values(kind: str) -> None:
    out = _masked_stream()
    value = PII_VALUES[kind]
    get_logger("stalwart.test").info(
        f"sent to {value}",
        note=f"reach me at {value}, thanks",
        nested={"items": [f"({value})", {"deep": (value, 7)}], "count": 3},
    )
    (line,) = _lines(out)
    marker = f"[{kind}]"
    assert line["event"] == f"sent to {marker}"
    assert line["note"] == f"reach me at {marker}, thanks"
    assert line["nested"] == {"items": [f"({marker})", {"deep": [marker, 7]}], "count": 3}
    _assert_clean(out.getvalue(), value)


def test_values_under_secret_and_personal_keys_are_redacted() -> None:
    out = _masked_stream()
    get_logger("stalwart.test").info(
        "request",
        password=SECRET,
        new_passwd=SECRET,
        client_secret=SECRET,
        csrf_token=SECRET,
        Authorization=f"Bearer {SECRET}",
        **{"set-cookie": f"sid={SECRET}", "x-api-key": SECRET},
        contact_email="not even an address",
        phone_number=612345678,
        iban="anything",
        display_name="Alice Smith",  # a column marked PII in the models
        client_key="10.1.2.3",  # likewise
        password_hash="$argon2id$...",  # a column marked SECRET
        form={"password": SECRET, "emails": ["a", "b"], "password_set": True},
        email=None,
        user="mia",
    )
    (line,) = _lines(out)
    for key in ("password", "new_passwd", "client_secret", "csrf_token", "Authorization"):
        assert line[key] == "[redacted]"
    for key in ("set-cookie", "x-api-key", "contact_email", "phone_number", "iban"):
        assert line[key] == "[redacted]"
    for key in ("display_name", "client_key", "password_hash"):
        assert line[key] == "[redacted]"
    # booleans and None say nothing personal and stay, so "was it set?" still shows
    assert line["form"] == {
        "password": "[redacted]",
        "emails": ["[redacted]", "[redacted]"],
        "password_set": True,
    }
    # the user of a line is always a keyed pseudonym, never the name (see LINE_FIELDS)
    assert (line["email"], line["user"][:5]) == (None, "user:")
    assert "mia" not in line["user"]
    _assert_clean(out.getvalue(), SECRET, "Alice Smith", "10.1.2.3", "612345678")


def _raise_with_pii() -> None:
    try:
        raise KeyError(f"no account for {EMAIL}")
    except KeyError as err:
        raise ValueError(f"payment to {IBAN} for {PHONE} failed") from err


def test_exception_tracebacks_are_text_and_masked() -> None:
    out = _masked_stream()
    try:
        _raise_with_pii()
    except ValueError as err:
        get_logger("stalwart.test").exception("payment failed", error=err)
    (line,) = _lines(out)
    exception = str(line["exception"])
    assert "Traceback (most recent call last)" in exception
    assert "_raise_with_pii" in exception
    assert "payment to [iban] for [phone] failed" in exception
    assert "no account for [email]" in exception  # the chained cause, too
    assert line["error"] == "ValueError('payment to [iban] for [phone] failed')"
    _assert_clean(out.getvalue())


def test_foreign_stdlib_records_are_masked() -> None:
    out = _masked_stream()
    stdlib = logging.getLogger("thirdparty.smtp")
    stdlib.warning("bounce from %s (%s)", EMAIL, PHONE)
    try:
        _raise_with_pii()
    except ValueError:
        stdlib.exception("could not charge %s", IBAN)
    first, second = _lines(out)
    assert first["event"] == "bounce from [email] ([phone])"
    assert second["event"] == "could not charge [iban]"
    assert "payment to [iban] for [phone] failed" in str(second["exception"])
    _assert_clean(out.getvalue())


def test_log_error_reports_are_masked_in_context_message_and_stack() -> None:
    out = _masked_stream()
    try:
        _raise_with_pii()
    except ValueError as err:
        error_id = log_error(
            err, {"form": "signup", "values": {"email": EMAIL, "notes": f"call {PHONE}"}}
        )
    (line,) = _lines(out)
    assert line["error_id"] == error_id
    assert line["error"] == "payment to [iban] for [phone] failed"
    assert "Traceback" in str(line["stack"])
    assert "no account for [email]" in str(line["stack"])
    assert line["values"] == {"email": "[redacted]", "notes": "call [phone]"}
    _assert_clean(out.getvalue())


def test_text_renderer_masks_tracebacks_and_shows_no_locals() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=False, stream=out)
    password = SECRET  # a local that a rich traceback would print
    try:
        raise ValueError(f"{EMAIL} typed {len(password)} characters")
    except ValueError:
        get_logger("x").exception("login failed")
    text = out.getvalue()
    assert "[email] typed 17 characters" in text
    assert "Traceback" in text
    _assert_clean(text)


# Strings that look a bit like PII and are not: they must reach the log as they are.
NOT_PII = [
    "0af7651916cd43dd8448eb211c80319c",  # a trace id
    "73fb9474-badb-443c-b3bc-2ebdb829af68",  # a UUID
    "01234567-8901-2345-6789-012345678901",  # a UUID of digits only
    "2026-11-23T01:25:23.085269Z",
    "2026-11-23T01:25:23.085269+05:30",
    "2024-05-01 09:30:00.123456789",
    "12:00:00.123456789",
    "01.05.2024 1234",
    "05-01-2024 10:30",
    "1714550000",  # a Unix time
    "1714550000.123456",
    "1714550000123",
    "v1.22.333",
    "26.1.0",
    "10.20.30.40.50",
    "python 3.11.7",
    "took 1234.567 ms",
    "0.123456789 s",
    "42",
    "123456789",
    "budget 1000000000",
    "+1234567.89",
    "0x7f2c48346500",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "192.168.100.200",
    "127.0.0.1:5432",
    "postgresql+psycopg://postgres@127.0.0.1:5432/stalwart",
    "postgresql://app@db.example.com:5432/stalwart",
    '  File "/srv/app/x.py", line 1234, in handler',
    "@contextmanager",
    "978-3-16-148410-0",
    "1 234 567 890",
    # IBAN-shaped upper-case strings whose checksum or length is wrong
    "DE00370400440532013000",
    "DE89370400440532013001",
    "DE88 3704 1044 1532 1130 10",
    "GB00WEST12345698765432",
    "XY12ABCD1234EFGH5678",
    "ABCDEFGHIJKLMNOPQRST",
]


@pytest.mark.parametrize("text", NOT_PII)
def test_look_alikes_survive(text: str) -> None:
    out = _masked_stream()
    get_logger("stalwart.test").info(text, value=text, items=[text])
    (line,) = _lines(out)
    assert (line["event"], line["value"], line["items"]) == (text, text, [text])


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mailto:bob@example.org", "mailto:[email]"),
        ("/unsubscribe?u=alice%40example.com", "/unsubscribe?u=[email]"),
        ("<Alice.Smith@mail.example.co.uk>", "<[email]>"),
        ("+44 (0)20 7946 0958", "[phone]"),
        ("+33612345678", "[phone]"),
        ("+1 (555) 123-4567", "[phone]"),
        ("020 7946 0958", "[phone]"),
        ("(020) 7946 0958", "[phone]"),
        ("06.12.34.56.78", "[phone]"),
        ("0044 20 7946 0958", "[phone]"),
        ("555-123-4567", "[phone]"),
        ("tel:0612345678", "tel:[phone]"),
        ("call 0612345678 0698765432 now", "call [phone] [phone] now"),
        ("GB82WEST12345698765432", "[iban]"),
        ("FR1420041010050500013M02606", "[iban]"),
        ("NL91 ABNA 0417 1643 00", "[iban]"),
        ("BE68 5390 0754 7034 THEN", "[iban] THEN"),
        ("NO9386011117947", "[iban]"),
        ("IBAN:DE89370400440532013000.", "IBAN:[iban]."),
    ],
)
def test_common_spellings_are_masked(text: str, masked: str) -> None:
    out = _masked_stream()
    get_logger("stalwart.test").info("x", value=text)
    assert _lines(out)[0]["value"] == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("login?token=abc123&next=/home", "login?token=[redacted]&next=/home"),
        (f"{{'password': '{SECRET}', 'user': 'mia'}}", "{'password': '[redacted]', 'user': 'mia'}"),
        ('{"api_key": "k 1", "n": 2}', '{"api_key": "[redacted]", "n": 2}'),
        ('{\\"new_password\\": \\"a b\\"}', '{\\"new_password\\": \\"[redacted]\\"}'),
        ("Authorization: Bearer eyJ0eXAi.eyJzdWIi.sig, retry", "Authorization: [redacted], retry"),
        ("Cookie: stalwart_sid=abcdef; theme=dark", "Cookie: [redacted]; theme=dark"),
        # words about secrets, comparisons and annotations are not values
        ("password reset for mia", "password reset for mia"),
        ("The password is too short: use 12 characters.", None),
        ("    if password == '':", None),
        ("def login(self, name: str, password: str) -> None:", None),
    ],
)
def test_secret_assignments_inside_text_are_redacted(text: str, masked: str | None) -> None:
    out = _masked_stream()
    get_logger("stalwart.test").info(text)
    assert _lines(out)[0]["event"] == (text if masked is None else masked)


def test_hash_mode_gives_stable_keyed_pseudonyms() -> None:
    def logged(key: str) -> list[dict[str, object]]:
        out = _masked_stream(pii_mode="hash", pii_key=key)
        log = get_logger("stalwart.test")
        log.info(f"from {EMAIL}", email=EMAIL.upper(), phone="+442079460958", password=SECRET)
        log.info(f"again {EMAIL}", note=f"iban {IBAN}", iban=IBAN.replace(" ", ""))
        _assert_clean(out.getvalue())
        return _lines(out)

    first, second = logged("key-one-" + "x" * 32)
    event = str(first["event"])
    assert re.fullmatch(r"from email:[0-9a-f]{12}", event)
    pseudonym = event.removeprefix("from ")
    # the same address, however spelled, under a key or in text, gets the same pseudonym
    assert second["event"] == f"again {pseudonym}"
    assert first["email"] == pseudonym
    assert str(first["phone"]).startswith("phone:")
    assert second["note"] == f"iban {second['iban']}"
    assert first["password"] == "[redacted]"  # a secret is never pseudonymised
    # another key, other pseudonyms; the same key again, the same ones
    other, _ = logged("key-two-" + "x" * 32)
    assert other["event"] != first["event"]
    assert other["email"] != first["email"]
    assert logged("key-one-" + "x" * 32)[0] == {**first, "ts": ANY}


def test_hash_mode_needs_a_key_and_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="secret key"):
        configure_logging("INFO", pii_mode="hash")
    with pytest.raises(ValueError, match="unknown PII mode"):
        configure_logging("INFO", pii_mode="clear")  # type: ignore[arg-type]
