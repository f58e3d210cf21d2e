"""What a typed value may be before it is stored: pure rules, no database, no Streamlit.

A draft is stored as JSON on SQLite or PostgreSQL, shown back in Streamlit (protobuf, UTF-8)
and hashed into the audit chain (UTF-8). So a value must be text that encodes as UTF-8 and
numbers that JSON can carry:

- a lone UTF-16 surrogate (``"\\ud800"``, which a browser can send) cannot be encoded: it
  becomes U+FFFD (a pair of surrogates becomes the character it encodes);
- NUL (``"\\x00"``) cannot be stored in a PostgreSQL ``text``/``jsonb`` value: it is removed;
- a string longer than ``input_max_chars`` is refused, never cut: the draft keeps the previous
  value and the message names the field and the limit;
- NaN and infinities are refused: JSON has no spelling for them (PostgreSQL refuses the row).

Everything else is stored verbatim: HTML, script, Markdown and SQL metacharacters are data.
They are harmless where they are kept (queries are parametrised) and must be shown as text
wherever they are shown (see ``stalwart.widgets.safe_text``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from stalwart.core.config import AppConfig
from stalwart.errors import InputRejectedError

REPLACEMENT: Final = "\ufffd"


def _config_default(name: str) -> Any:
    """The default of an ``AppConfig`` setting (without reading the environment)."""
    return AppConfig.model_fields[name].get_default(call_default_factory=True)


@dataclass(frozen=True)
class InputLimits:
    """The limits on what users type and upload (``AppConfig``'s, or its defaults)."""

    input_max_chars: int = field(default_factory=lambda: int(_config_default("input_max_chars")))
    upload_max_bytes: int = field(default_factory=lambda: int(_config_default("upload_max_bytes")))
    upload_allowed_types: frozenset[str] = field(
        default_factory=lambda: frozenset(_config_default("upload_allowed_types"))
    )

    @classmethod
    def from_config(cls, config: AppConfig) -> InputLimits:
        """The limits a running app was configured with."""
        return cls(
            input_max_chars=config.input_max_chars,
            upload_max_bytes=config.upload_max_bytes,
            upload_allowed_types=frozenset(config.upload_allowed_types),
        )


@dataclass(frozen=True)
class CleanValue:
    """A value made storable, and what was changed to make it so (for the user)."""

    value: Any
    #: sentences for the user, e.g. "2 NUL characters were removed."; empty if unchanged
    notes: tuple[str, ...] = ()


def fix_text(text: str) -> tuple[str, int, int]:
    """``text`` without NULs and with lone surrogates replaced; and how many of each."""
    nuls = text.count("\x00")
    if nuls:
        text = text.replace("\x00", "")
    surrogates = 0
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        # Through UTF-16: a high+low pair becomes the character it encodes, a lone half U+FFFD.
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        surrogates = fixed.count(REPLACEMENT) - text.count(REPLACEMENT)
        text = fixed
    return text, nuls, surrogates


def clean_input(field_label: str, value: Any, *, max_chars: int) -> CleanValue:
    """``value`` (a field's new value: text, number, list, table rows...) made storable.

    Raises ``InputRejectedError`` for what cannot be stored without losing the user's input
    (too long, not a finite number); fixes silently-unstorable characters and says so.
    """
    counts = {"nul": 0, "surrogate": 0}

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            if len(item) > max_chars:
                raise InputRejectedError(
                    f"{field_label} is {len(item):,} characters long; at most {max_chars:,} "
                    "can be kept, so this change was not stored.",
                    f"Shorten it to {max_chars:,} characters or fewer; the draft keeps its "
                    "previous value and your text is still in the field.",
                    field=field_label,
                    reason="too_long",
                )
            fixed, nuls, surrogates = fix_text(item)
            counts["nul"] += nuls
            counts["surrogate"] += surrogates
            return fixed
        if isinstance(item, float) and not math.isfinite(item):
            raise InputRejectedError(
                f"{field_label} is not a finite number ({item}); it was not stored.",
                "Enter an ordinary number; the draft keeps its previous value.",
                field=field_label,
                reason="not_finite",
            )
        if isinstance(item, Mapping):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, Sequence) and not isinstance(item, bytes | bytearray):
            return [walk(v) for v in item]
        return item

    cleaned = walk(value)
    notes = []
    if counts["nul"]:
        notes.append(
            f"{field_label}: {_count(counts['nul'], 'NUL character')} removed "
            "(they cannot be stored)."
        )
    if counts["surrogate"]:
        notes.append(
            f"{field_label}: {_count(counts['surrogate'], 'broken character')} replaced by "
            f"{REPLACEMENT} (invalid Unicode)."
        )
    return CleanValue(cleaned, tuple(notes))


def _count(n: int, noun: str) -> str:
    return f"1 {noun} was" if n == 1 else f"{n} {noun}s were"
