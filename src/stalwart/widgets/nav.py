"""Navigation links: ``nav_links`` draws ``<a href="?page=…">`` links that switch pages in place.

A link changes the URL (a browser history entry, so back and forward work) and Streamlit reruns
with it; the Router reads the page and its params from the URL as it does on every run. The
links are real links: they open in a new tab with a middle-click, and they are reachable with
the keyboard. See ``nav.js`` for why a click does not go through a button.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlencode

import streamlit as st

from stalwart.core.router import PAGE_PARAM

_NAV: Final = st.components.v2.component(
    "stalwart.nav",
    js=Path(__file__).with_name("nav.js").read_text(encoding="utf-8"),
    isolate_styles=False,
)

#: Styles of the links (the app's theme colours where Streamlit provides them).
NAV_CSS: Final = (
    ".stalwart-nav{display:flex;gap:.25rem}"
    ".stalwart-nav-column{flex-direction:column}"
    ".stalwart-nav-row{flex-direction:row;flex-wrap:wrap}"
    ".stalwart-nav a{display:block;padding:.35rem .75rem;border-radius:.5rem;"
    "color:inherit;text-decoration:none;line-height:1.6}"
    ".stalwart-nav-row a{border:1px solid rgba(128,128,128,.35);min-width:6rem;"
    "text-align:center}"
    ".stalwart-nav a:hover{background:rgba(128,128,128,.15)}"
    ".stalwart-nav a:focus-visible{outline:2px solid currentColor;outline-offset:1px}"
    ".stalwart-nav a[aria-current=page]{font-weight:600;background:rgba(128,128,128,.22)}"
)


@dataclass(frozen=True)
class Link:
    """One link: its text, the page it goes to and the params it takes there."""

    label: str
    page: str
    params: Mapping[str, object] = field(default_factory=dict)
    #: a URL outside the page router (e.g. ``/auth/login``): followed as a normal link
    url: str | None = None
    #: with ``url``: "post" sends a POST to it (a form the browser submits), as sign-out needs
    method: Literal["get", "post"] = "get"

    @property
    def href(self) -> str:
        """The link's URL: ``url``, or ``?page=<slug>&<params>`` relative to the app."""
        if self.url is not None:
            return self.url
        query = {PAGE_PARAM: self.page, **{k: str(v) for k, v in self.params.items()}}
        return "?" + urlencode(query)


def nav_links(
    key: str,
    links: Sequence[Link],
    *,
    current: Link | None = None,
    label: str = "Pages",
    layout: Literal["column", "row"] = "column",
) -> None:
    """Draw ``links``; ``current`` is marked as the page shown (``aria-current="page"``).

    Each link's ``data-target`` is ``<page>`` or ``<page>-<value>`` for a link with one param,
    which is what tests and benchmarks click.
    """
    _NAV(
        key=key,
        data={
            "label": label,
            "layout": layout,
            "links": [
                {
                    "href": link.href,
                    "label": link.label,
                    "id": "-".join([link.page, *(str(v) for v in link.params.values())]),
                    "current": link == current,
                    "external": link.url is not None,
                    "method": link.method,
                }
                for link in links
            ],
        },
    )
