"""The ``Page`` base class: what every page of the app declares and does."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import streamlit as st

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext


class Page(ABC):
    """One page: a URL slug, a title and icon for navigation, and a ``render`` method.

    Pages stay thin: they lay out widgets and call services; state, persistence and routing
    live in the layers below so they can be tested without a browser.
    """

    slug: ClassVar[str]
    title: ClassVar[str]
    # An emoji or a Material Symbol such as ":material/home:", as Streamlit's ``icon=`` takes.
    icon: ClassVar[str]

    @abstractmethod
    def render(self, ctx: AppContext) -> None:
        """Draw the page into the main area for the current rerun."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.slug!r}>"


class ComingSoonPage(Page):
    """A page whose feature is not built yet: it says what it will do and offers no controls."""

    summary: ClassVar[str]
    features: ClassVar[tuple[str, ...]]

    def render(self, ctx: AppContext) -> None:
        """Draw the summary and the list of planned features."""
        st.title(self.title)
        st.info("Coming in a later release.", icon=":material/schedule:")
        st.markdown(f"{self.summary} This page will offer:")
        st.markdown("\n".join(f"- {feature}" for feature in self.features))
