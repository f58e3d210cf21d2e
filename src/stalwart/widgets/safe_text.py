"""Showing user text in elements that render Markdown (captions, toasts, ``st.error``...).

Streamlit never renders raw HTML in Markdown (``unsafe_allow_html`` is never used here), but
Markdown itself is live: a file named ``[Pay here](https://evil.example).pdf`` would show a
link, ``![](https://tracker.example/p.png)`` would fetch an image, ``:red[...]`` would colour
text. Wherever user text goes into such an element it goes through ``md_escape``; where no
formatting is needed, ``st.text``, ``st.code`` and ``st.dataframe`` show text as it is.
"""

from __future__ import annotations

import re
from typing import Final

# Every ASCII punctuation character may be backslash-escaped in CommonMark (and GFM and
# Streamlit's directives, math and autolinks are built on the same escapes).
_PUNCTUATION: Final = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")


def md_escape(text: object) -> str:
    """``text`` as Markdown that renders as exactly that text (on one line).

    Every ASCII punctuation character is escaped, so no emphasis, link, image, HTML, code,
    heading, list, table, math or Streamlit directive can start; line breaks become spaces,
    so a value cannot start a block of its own. (Streamlit still turns emoji shortcodes such
    as ``:smile:`` into emoji, which is harmless.)
    """
    value = "" if text is None else str(text)
    value = _PUNCTUATION.sub(r"\\\1", re.sub(r"[\r\n\u2028\u2029]+", " ", value))
    # Leading spaces or a tab would make an indented code block: the first one as an entity.
    if value[:1] in (" ", "\t"):
        value = f"&#{ord(value[0])};{value[1:]}"
    return value
