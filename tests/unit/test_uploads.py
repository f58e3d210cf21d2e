"""Upload checks without a database: names, types, sizes, content signatures."""

from __future__ import annotations

import io
import zipfile

import pytest

from stalwart.errors import UploadRejectedError
from stalwart.services.input_rules import InputLimits
from stalwart.services.uploads import (
    allowed_types,
    check_upload,
    content_problem,
    extension_of,
    sanitize_filename,
    upload_limit_mb,
)

LIMITS = InputLimits(
    input_max_chars=1000, upload_max_bytes=2048, upload_allowed_types=frozenset({"csv", "png"})
)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("C:\\Windows\\System32\\cmd.exe", "cmd.exe"),
        ("dir/sub/", "file"),
        ("..", "file"),
        ("", "file"),
        ("...", "file"),
        (".env", "env"),
        ("..hidden..txt", "hidden.txt"),
        ("a\x00b.csv", "ab.csv"),
        ("tab\there\nnew.csv", "tabherenew.csv"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("a\u200b\u2066b\u2069.txt", "ab.txt"),
        ("x\ud800y.txt", "x\ufffdy.txt"),
        ("CON.txt", "_CON.txt"),
        ("con", "_con"),
        ("Lpt9.log", "_Lpt9.log"),
        ("COM\u00b9.txt", "_COM\u00b9.txt"),
        ("console.txt", "console.txt"),
        ('what?<is>"this"|*.csv', "what__is__this___.csv"),
        ("name. ", "name"),
        ("  spaced.txt  ", "spaced.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC
        ("\uff0e\uff0e\uff0fetc\uff0fpasswd", "passwd"),  # full-width dots and slash
    ],
)
def test_sanitize_filename(name: str, safe: str) -> None:
    assert sanitize_filename(name) == safe


def test_long_names_are_cut_to_255_bytes_keeping_the_extension() -> None:
    assert sanitize_filename("a" * 300 + ".csv") == "a" * 251 + ".csv"
    multi = sanitize_filename("é" * 200 + ".pdf")  # 2 bytes each: never split in the middle
    assert multi == "é" * 125 + ".pdf"
    assert len(multi.encode()) == 254
    odd = sanitize_filename("n." + "e" * 300)  # an "extension" that long is part of the name
    assert len(odd.encode()) == 255
    assert odd.startswith("n.e")


def test_extension_and_allowed_types() -> None:
    assert extension_of("Photo.JPG") == "jpg"
    assert extension_of("noext") == ""
    assert allowed_types(LIMITS) == ["csv", "png"]
    assert allowed_types(LIMITS, ["PNG", ".txt"]) == ["png"]  # a widget can only narrow
    both = InputLimits(upload_allowed_types=frozenset({"jpg"}))
    assert allowed_types(both, ["jpeg"]) == ["jpeg", "jpg"]  # as st.file_uploader pairs them


def test_upload_limit_mb_rounds_up_and_is_at_least_one() -> None:
    assert upload_limit_mb(1024) == 1
    assert upload_limit_mb(10 * 1024 * 1024) == 10
    assert upload_limit_mb(10 * 1024 * 1024 + 1) == 11


def test_check_upload_returns_the_safe_name_and_the_extensions_type() -> None:
    checked = check_upload("../in/data.csv", b"a,b\n", LIMITS)
    assert (checked.name, checked.extension, checked.mime, checked.size) == (
        "data.csv",
        "csv",
        "text/csv",
        4,
    )


def test_size_is_checked_before_the_type() -> None:
    with pytest.raises(UploadRejectedError) as caught:
        check_upload("x.exe", b"M" * 2049, LIMITS)
    assert caught.value.reason == "too_large"
    assert "2.0 KB" in caught.value.message


def zipped(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("ext", "content", "ok"),
    [
        ("png", b"\x89PNG\r\n\x1a\n....", True),
        ("png", b"GIF89a", False),
        ("gif", b"GIF89a....", True),
        ("webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", True),
        ("pdf", b"\n\n%PDF-1.4", True),  # a header within the first KB is a PDF
        ("pdf", b" " * 1024 + b"%PDF-1.4", False),
        ("xlsx", zipped("[Content_Types].xml", "xl/workbook.xml"), True),
        ("docx", zipped("[Content_Types].xml", "word/document.xml"), True),
        ("docx", zipped("[Content_Types].xml", "xl/workbook.xml"), False),
        ("xlsx", b"PK\x03\x04 truncated", False),
        ("zip", zipped("anything"), True),
        ("json", b'\xef\xbb\xbf{"a": 1}', True),
        ("json", b"[" * 100_000 + b"]" * 100_000, False),  # too deep to parse: refused
        ("json", b'{"a": 1', False),
        ("txt", "naïve ☃ text".encode(), True),
        ("txt", b"MZ is Mozambique", True),  # text that starts like a program is still text
        ("txt", b"caf\xe9", False),
        ("md", b"# title\x00", False),
        ("docm", b"MZ\x90\x00", False),  # an allowed type with no known shape: not a program
        ("docm", b"\x7fELF", False),
        ("docm", b"\xcf\xfa\xed\xfe", False),
        ("docm", b"anything else", True),
    ],
)
def test_content_must_match_the_extension(ext: str, content: bytes, ok: bool) -> None:
    assert (content_problem(ext, content) is None) is ok
