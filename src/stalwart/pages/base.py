"""The ``Page`` base class: what every page of the app declares and does."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import streamlit as st
from pydantic import BaseModel

from stalwart.core.rbac import VIEW_PAGE, Action, Principal

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext
    from stalwart.core.router import Router
    from stalwart.core.session import UserSession


@dataclass(frozen=True)
class PageRequest:
    """What a page is rendered for: the browser's session, the URL params, the router."""

    session: UserSession
    params: dict[str, str]
    router: Router
    #: who is using the page (checked by the services again for every action)
    principal: Principal


class Page(ABC):
    """One page: a URL slug, a title and icon for navigation, and a ``render`` method.

    Pages stay thin: they lay out widgets and call services; state, persistence and routing
    live in the layers below so they can be tested without a browser.
    """

    slug: ClassVar[str]
    title: ClassVar[str]
    # An emoji or a Material Symbol such as ":material/home:", as Streamlit's ``icon=`` takes.
    icon: ClassVar[str]
    #: the URL params this page takes (validated by the router), if any
    params_model: ClassVar[type[BaseModel] | None] = None
    #: what seeing the page needs; a user without it finds it neither in navigation nor by URL
    action: ClassVar[Action] = VIEW_PAGE

    @abstractmethod
    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """Draw the page into the main area for the current rerun."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.slug!r}>"


class ComingSoonPage(Page):
    """A page whose feature is not built yet: it says what it will do and offers no controls."""

    summary: ClassVar[str]
    features: ClassVar[tuple[str, ...]]

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """Draw the summary and the list of planned features."""
        st.title(self.title)
        st.info("Coming in a later release.", icon=":material/schedule:")
        st.markdown(f"{self.summary} This page will offer:")
        st.markdown("\n".join(f"- {feature}" for feature in self.features))
