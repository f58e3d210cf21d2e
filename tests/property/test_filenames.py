"""Properties of the upload file-name sanitiser, over arbitrary text."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stalwart.services.uploads import MAX_NAME_BYTES, sanitize_filename

# Arbitrary text, weighted towards what attacks names are made of.
NASTY = st.sampled_from(
    ["/", "\\", "..", ".", " ", "\x00", "\u202e", "\u200b", "\ud800", "CON", "\uff0f", "é", "😀"]
)
NAMES = st.lists(st.one_of(st.text(max_size=40), NASTY), max_size=30).map("".join) | st.text(
    min_size=200, max_size=400
)


@settings(max_examples=500, deadline=None)
@given(NAMES)
@example("../" * 100 + "a" * 300 + ".csv")
@example("é" * 300)
@example("CON")
@example("\u202e" * 3)
def test_a_sanitised_name_is_a_safe_base_name(name: str) -> None:
    safe = sanitize_filename(name)
    assert safe  # never empty
    assert "/" not in safe
    assert "\\" not in safe
    assert not safe.startswith(".")
    assert not safe.endswith((".", " "))
    assert ".." not in safe
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    assert all(unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in safe)
    assert unicodedata.is_normalized("NFC", safe)
    assert safe.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}
    assert sanitize_filename(safe) == safe  # idempotent


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=50))
def test_an_ordinary_name_is_kept(stem: str) -> None:
    name = unicodedata.normalize("NFC", stem) + ".csv"
    if name.split(".")[0].upper() in {"CON", "PRN", "AUX", "NUL"}:
        return
    safe = sanitize_filename(name)
    if len(name.encode()) <= MAX_NAME_BYTES and not name.upper().startswith(("COM", "LPT")):
        assert safe == name
