"""What an uploaded file may be: pure checks, no database, no Streamlit.

``st.file_uploader`` checks size and extension in the browser, which anyone can skip; these
checks run on the server, before anything is stored:

- the size is at most ``upload_max_bytes`` (and the file is not empty);
- the extension is one of ``upload_allowed_types`` (and of the widget's own ``types=``);
- the content is what the extension says, for the types with a known shape: PNG, JPEG, GIF
  and PDF signatures, an Office Open XML zip for xlsx/docx/pptx, JSON that parses, and
  UTF-8 text without NUL for csv/txt/tsv/md; any other allowed type must at least not be a
  program (Windows, Linux or macOS executable). A renamed ``.exe`` is refused;
- the name is reduced to a safe base name (``sanitize_filename``). It is a label shown to
  people, never a path: files are stored in the database under the SHA-256 of their content.

The MIME type stored is the one the extension implies, not the one the browser claimed.
"""

from __future__ import annotations

import io
import json
import math
import re
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from stalwart.errors import UploadRejectedError
from stalwart.services.input_rules import InputLimits, fix_text

MAX_NAME_BYTES: Final = 255
FALLBACK_NAME: Final = "file"
NUL: Final = b"\x00"
#: an extension longer than this is treated as part of the name when a name is shortened
_MAX_EXT_BYTES: Final = 32
#: "/" and "\" and the characters that look like them (NFKC turns some into real ones)
_SEPARATORS: Final = "/\\\u2044\u2215\u29f8\u29f9\uff0f\uff3c"
#: characters Windows does not allow in a name
_WINDOWS_FORBIDDEN: Final = frozenset('<>:"|?*')
#: control, format (bidi overrides, zero-width), surrogate and line/paragraph separators
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)
#: extensions that name the same type (as ``st.file_uploader`` pairs them)
_ALIASES: Final = (
    frozenset({"jpg", "jpeg"}),
    frozenset({"tif", "tiff"}),
    frozenset({"htm", "html"}),
    frozenset({"mpg", "mpeg"}),
)
MIME_TYPES: Final = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "txt": "text/plain",
    "md": "text/markdown",
    "json": "application/json",
    "pdf": "application/pdf",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "zip": "application/zip",
}
_TEXT_TYPES: Final = frozenset({"csv", "tsv", "txt", "md"})
_OFFICE_PARTS: Final = {"xlsx": "xl/", "docx": "word/", "pptx": "ppt/"}
_EXECUTABLES: Final = (
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
    (b"\xcf\xfa\xed\xfe", "a macOS program"),
    (b"\xce\xfa\xed\xfe", "a macOS program"),
    (b"\xfe\xed\xfa\xcf", "a macOS program"),
    (b"\xfe\xed\xfa\xce", "a macOS program"),
    (b"\xca\xfe\xba\xbe", "a macOS or Java program"),
)


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed every check: its safe name, type and size."""

    name: str
    extension: str
    mime: str
    size: int


def sanitize_filename(name: str) -> str:
    """A safe display name for an uploaded file, never a path.

    The base name only (after ``/``, ``\\`` or a look-alike), NFC-normalised, without control
    and format characters (NUL, bidi overrides, zero-width), lone surrogates or Windows'
    forbidden characters (replaced by ``_``), with runs of dots collapsed, without leading or
    trailing dots and spaces, a Windows device name (``CON``, ``COM1``...) prefixed with
    ``_``, and at most 255 bytes of UTF-8 with the extension kept. Never empty.
    """
    text = name
    # Twice at most: cutting a name to length can leave a trailing dot or space to strip.
    for _ in range(3):
        cleaned = _sanitize_once(text)
        if cleaned == text:
            break
        text = cleaned
    return text or FALLBACK_NAME


def _sanitize_once(name: str) -> str:
    text = unicodedata.normalize("NFC", fix_text(name)[0])
    for sep in _SEPARATORS:
        text = text.replace(sep, "/")
    text = text.rsplit("/", 1)[-1]
    text = "".join(
        "_" if ch in _WINDOWS_FORBIDDEN else ch
        for ch in text
        if unicodedata.category(ch) not in _DROPPED_CATEGORIES
    )
    text = re.sub(r"\.{2,}", ".", text).strip(" .")
    if text.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        text = "_" + text
    return unicodedata.normalize("NFC", _shorten(text))


def _shorten(text: str) -> str:
    if len(text.encode("utf-8")) <= MAX_NAME_BYTES:
        return text
    stem, dot, ext = text.rpartition(".")
    suffix = f".{ext}" if dot and stem else ""
    if len(suffix.encode("utf-8")) > _MAX_EXT_BYTES:
        stem, suffix = text, ""
    elif not suffix:
        stem = text
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(" .")
    return (cut or FALLBACK_NAME) + suffix


def extension_of(name: str) -> str:
    """The lower-case extension of a (sanitised) name, without the dot; "" if none."""
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def allowed_types(limits: InputLimits, widget_types: Iterable[str] | None = None) -> list[str]:
    """The extensions an upload may have: the configured ones, narrowed to a widget's own."""
    allowed = _with_aliases(limits.upload_allowed_types)
    if widget_types is not None:
        allowed &= _with_aliases(t.strip().lower().removeprefix(".") for t in widget_types)
    return sorted(allowed)


def _with_aliases(types: Iterable[str]) -> set[str]:
    result = set(types)
    for group in _ALIASES:
        if result & group:
            result |= group
    return result


def upload_limit_mb(max_bytes: int) -> int:
    """Streamlit's ``server.maxUploadSize`` (whole megabytes) for ``upload_max_bytes``.

    Rounded up: Streamlit's limit only stops what is far too large early, in the browser and
    at the upload endpoint; the exact limit is checked by ``check_upload``.
    """
    return max(1, math.ceil(max_bytes / (1024 * 1024)))


def check_upload(
    name: str,
    content: bytes,
    limits: InputLimits,
    *,
    widget_types: Iterable[str] | None = None,
) -> CheckedUpload:
    """Check an upload against ``limits``; raises ``UploadRejectedError`` saying why not."""
    safe = sanitize_filename(name)
    size = len(content)
    if size > limits.upload_max_bytes:
        raise UploadRejectedError(
            f"“{safe}” is {_size(size)}; files may be at most {_size(limits.upload_max_bytes)}.",
            "Upload a smaller file (or split it); the form's other fields are kept.",
            field=safe,
            reason="too_large",
        )
    if size == 0:
        raise UploadRejectedError(
            f"“{safe}” is empty.",
            "Choose the file again (it may not have been saved); the other fields are kept.",
            field=safe,
            reason="empty",
        )
    allowed = allowed_types(limits, widget_types)
    ext = extension_of(safe)
    if ext not in allowed:
        kind = f"type .{ext}" if ext else "no extension"
        raise UploadRejectedError(
            f"“{safe}” has {kind}; allowed here: {', '.join('.' + t for t in allowed)}.",
            "Upload a file of one of those types; the form's other fields are kept.",
            field=safe,
            reason="type_not_allowed",
        )
    problem = content_problem(ext, content)
    if problem is not None:
        reason, what = problem
        action = (
            "Save the file as UTF-8 (in Excel: “CSV UTF-8”) and upload it again."
            if reason == "not_utf8"
            else f"Upload a real .{ext} file; the form's other fields are kept."
        )
        raise UploadRejectedError(
            f"“{safe}” is not a valid .{ext} file: {what}.", action, field=safe, reason=reason
        )
    return CheckedUpload(safe, ext, MIME_TYPES.get(ext, "application/octet-stream"), size)


def content_problem(ext: str, content: bytes) -> tuple[str, str] | None:
    """Why ``content`` is not a ``.ext`` file, as (reason code, description); None if it is."""
    head = content[:16]
    if ext == "png":
        return _unless(head.startswith(b"\x89PNG\r\n\x1a\n"), content, "no PNG signature")
    if ext in ("jpg", "jpeg"):
        return _unless(head.startswith(b"\xff\xd8\xff"), content, "no JPEG signature")
    if ext == "gif":
        return _unless(head[:6] in (b"GIF87a", b"GIF89a"), content, "no GIF signature")
    if ext == "webp":
        return _unless(head[:4] == b"RIFF" and head[8:12] == b"WEBP", content, "no WebP header")
    if ext == "pdf":
        return _unless(b"%PDF-" in content[:1024], content, "no PDF header")
    if ext in _OFFICE_PARTS or ext == "zip":
        return _zip_problem(ext, content)
    if ext == "json":
        return _json_problem(content)
    if ext in _TEXT_TYPES:
        problem = _text_problem(content)
        program = _program(content) if problem is not None else None
        return ("content_mismatch", f"it is {program}") if program else problem
    program = _program(content)
    return None if program is None else ("content_mismatch", f"it is {program}")


def _unless(ok: bool, content: bytes, what: str) -> tuple[str, str] | None:
    if ok:
        return None
    program = _program(content)
    return ("content_mismatch", f"it is {program}" if program else what)


def _program(content: bytes) -> str | None:
    for magic, what in _EXECUTABLES:
        if content.startswith(magic):
            return what
    return None


def _zip_problem(ext: str, content: bytes) -> tuple[str, str] | None:
    if not content.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _unless(False, content, "not a zip archive")
    try:
        # Only the central directory is read: nothing is decompressed.
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return ("content_mismatch", f"a damaged zip archive ({exc})")
    part = _OFFICE_PARTS.get(ext)
    if part is not None and not (
        "[Content_Types].xml" in names and any(n.startswith(part) for n in names)
    ):
        return ("content_mismatch", f"a zip archive without the parts of a .{ext} document")
    return None


def _json_problem(content: bytes) -> tuple[str, str] | None:
    problem = _text_problem(content)
    if problem is not None:
        return problem
    try:
        json.loads(content.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        return ("content_mismatch", f"not JSON ({exc.msg} at line {exc.lineno})")
    except (ValueError, RecursionError):
        return ("content_mismatch", "JSON nested too deeply or with a number too long")
    return None


def _text_problem(content: bytes) -> tuple[str, str] | None:
    try:
        content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return (
            "not_utf8",
            f"it is not UTF-8 text (byte 0x{content[exc.start]:02x} at position {exc.start} "
            "cannot be read)",
        )
    nul = content.find(NUL)
    if nul >= 0:
        return ("content_mismatch", f"it contains a NUL byte (at position {nul}), as programs do")
    return None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024**2:.1f} MB"
