"""Exports as files people open in a spreadsheet: pure functions, no database, no Streamlit.

CSV only. openpyxl is not a dependency, so there is no xlsx export (an xlsx written by hand
would be one more parser to get right).

A CSV cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read
as a formula by Excel, LibreOffice and Google Sheets, and a formula can run commands
(``=cmd|' /C calc'!A0``) or send data away (``=HYPERLINK(...)``, ``=WEBSERVICE(...)``). Such
a text cell, and one starting with a full-width equals, plus, minus or at sign (U+FF1D,
U+FF0B, U+FF0D, U+FF20, which some spreadsheets fold to the ASCII sign) or a line feed, is
prefixed with a single quote, as OWASP advises: the spreadsheet shows the text and does not
evaluate it. Numbers (``int``, ``float``, ``Decimal``) are written as numbers, negative ones
included: only text is neutralised, so ``-12.5`` stays a number and the text ``"-2+3"``
does not become 1.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Final

from stalwart.services.input_rules import fix_text

BOM: Final = "\ufeff"
#: the first characters that make a spreadsheet read a cell as a formula
FORMULA_STARTS: Final = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"


def neutralise(text: str) -> str:
    """``text`` made inert in a spreadsheet: a quote before a leading formula character."""
    return "'" + text if text and text[0] in FORMULA_STARTS else text


def cell(value: object) -> str:
    """One value as CSV cell text: numbers as numbers, everything else as inert text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else ""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, ensure_ascii=False, default=str)
    elif isinstance(value, bytes | bytearray):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
    # Lone surrogates cannot be written as UTF-8; NUL confuses many readers.
    return neutralise(fix_text(text)[0])


def to_csv(rows: Iterable[Mapping[str, object]], columns: Sequence[str] | None = None) -> bytes:
    """``rows`` as CSV for Excel: UTF-8 with a BOM, CRLF line ends, RFC 4180 quoting.

    ``columns`` picks and orders the columns (a missing value is an empty cell); without it,
    every key that appears, in order of first appearance. Header and cells are neutralised
    against formula injection (see the module's doc).
    """
    materialised = list(rows)
    if columns is None:
        seen: dict[str, None] = {}
        for row in materialised:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([cell(str(c)) for c in columns])
    for row in materialised:
        writer.writerow([cell(row.get(c)) for c in columns])
    return out.getvalue().encode("utf-8")
