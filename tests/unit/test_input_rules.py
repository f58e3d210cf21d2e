"""Typed values made storable, and user text made inert in Markdown."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from stalwart.core.config import AppConfig
from stalwart.errors import InputRejectedError
from stalwart.services.input_rules import InputLimits, clean_input, fix_text
from stalwart.widgets.safe_text import md_escape


def test_fix_text() -> None:
    assert fix_text("plain") == ("plain", 0, 0)
    assert fix_text("a\x00b\x00") == ("ab", 2, 0)
    assert fix_text("x\ud800y\udc00") == ("x\ufffdy\ufffd", 0, 2)
    assert fix_text("\ud83d\ude00") == ("\U0001f600", 0, 0)  # a pair is one character
    assert fix_text("\ufffd\ud800") == ("\ufffd\ufffd", 0, 1)


def test_clean_input_walks_lists_and_rows_and_says_what_it_changed() -> None:
    clean = clean_input(
        "milestones",
        [{"milestone": "a\x00", "cost": 1.5, "due": None}, {"milestone": "\udfff"}],
        max_chars=10,
    )
    assert clean.value == [{"milestone": "a", "cost": 1.5, "due": None}, {"milestone": "\ufffd"}]
    assert clean.notes == (
        "milestones: 1 NUL character was removed (they cannot be stored).",
        "milestones: 1 broken character was replaced by \ufffd (invalid Unicode).",
    )
    assert clean_input("n", "ok <b>", max_chars=10).notes == ()


def test_clean_input_refuses_what_it_cannot_keep_whole() -> None:
    with pytest.raises(InputRejectedError, match=r"name is 11 characters long; at most 10"):
        clean_input("name", "x" * 11, max_chars=10)
    with pytest.raises(InputRejectedError, match="not a finite number"):
        clean_input("budget", float("inf"), max_chars=10)
    with pytest.raises(InputRejectedError):
        clean_input("rows", [{"a": "y" * 11}], max_chars=10)


def test_limits_default_to_the_configs_defaults() -> None:
    defaults = AppConfig.model_construct()
    limits = InputLimits()
    assert limits.input_max_chars == defaults.input_max_chars
    assert limits.upload_max_bytes == defaults.upload_max_bytes
    assert limits.upload_allowed_types == frozenset(defaults.upload_allowed_types)


MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[pay here](https://evil.example)",
    "![](https://tracker.example/p.png)",
    "https://evil.example/auto",
    "**bold** _it_ `code` ~~del~~",
    "# heading",
    "- item",
    "1. item",
    "> quote",
    "| a | b |\n|---|---|",
    "line\n\n    code block",
    "$x^2$",
    ":red[coloured] :material/home:",
    "back\\slash\\",
    "&amp; &lt;",
    "    indented",
    "\tx",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_renders_as_the_text_itself(text: str) -> None:
    html = MARKDOWN.render(md_escape(text))
    assert html.startswith("<p>")
    assert html.count("<") == 2
    inner = html.removeprefix("<p>").removesuffix("</p>\n")
    expected = re.sub(r"\n+", " ", text).replace("&", "&amp;").replace("<", "&lt;")
    assert inner == expected.replace(">", "&gt;").replace('"', "&quot;")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=60))
def test_md_escape_never_makes_markup(text: str) -> None:
    html = MARKDOWN.render(md_escape(text))
    assert html.count("<") <= 2
