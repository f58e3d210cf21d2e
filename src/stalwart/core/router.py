"""The Router: which page, with which params; mirrored to the URL as ``?page=slug&k=v``.

The URL is the source of truth within a tab: Streamlit 1.67 pushes a browser history entry
when the script changes ``st.query_params`` and reruns the script with the old query string on
back/forward, so refresh, back and forward land where the URL says. The place is also stored
with the session, so opening the app's bare URL in a new tab (or after a server restart)
returns the user to where they were. An unknown page or malformed params show the home page
with a notice, never a stack trace.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

import streamlit as st
from pydantic import BaseModel, ValidationError

from stalwart.core.database import DB
from stalwart.core.logs import get_logger
from stalwart.core.session import UserSession, remember_place

PAGE_PARAM: Final = "page"
_RESTORED_KEY: Final = "_stalwart_router_restored"

log = get_logger(__name__)


@dataclass(frozen=True)
class RouteSpec:
    """A page the router can show, and the model its URL params must fit (if any)."""

    slug: str
    params: type[BaseModel] | None = None


@dataclass(frozen=True)
class Route:
    """Where this run is: the page, its validated params, and a notice for the user if any."""

    page: str
    params: dict[str, str]
    notice: str | None = None
    #: the page the URL asked for but the user may not see (shown: the home page), if any
    denied: str | None = None


class Router:
    """Resolves the URL to a Route each run; ``navigate`` moves to another one."""

    def __init__(
        self,
        db: DB,
        session: UserSession,
        pages: Mapping[str, RouteSpec],
        *,
        default: str = "home",
        allowed: Collection[str] | None = None,
    ) -> None:
        self.db = db
        self.session = session
        self.pages = dict(pages)
        self.default = default
        #: the pages this user may see (None: all); the others are answered like the home page
        self.allowed = frozenset(self.pages if allowed is None else allowed)

    @property
    def current_page(self) -> str:
        """The slug of the page this run shows."""
        return self.resolve().page

    @property
    def params(self) -> dict[str, str]:
        """The validated params of the page this run shows."""
        return self.resolve().params

    def resolve(self) -> Route:
        """Read the URL; fall back to the stored place on a tab's first bare visit."""
        query = st.query_params.to_dict()
        first_visit = not st.session_state.get(_RESTORED_KEY, False)
        st.session_state[_RESTORED_KEY] = True
        if PAGE_PARAM not in query and first_visit and self.session.page in self.allowed:
            query = {PAGE_PARAM: self.session.page, **self.session.params}
            st.query_params.from_dict(query)  # the URL shows where we are
        route = self._validate(query)
        self.session = remember_place(self.db, self.session, route.page, route.params)
        return route

    def navigate(self, to: str, **params: object) -> None:
        """Go to page ``to`` with ``params`` (pushes a browser history entry)."""
        if to not in self.pages:
            raise ValueError(f"unknown page {to!r}")
        if to not in self.allowed:
            raise ValueError(f"page {to!r} is not allowed for this user")
        query = {PAGE_PARAM: to, **{k: str(v) for k, v in params.items()}}
        st.query_params.from_dict(query)
        self.session = remember_place(self.db, self.session, to, _strip(query))

    def _validate(self, query: Mapping[str, str]) -> Route:
        slug = query.get(PAGE_PARAM, self.default)
        spec = self.pages.get(slug)
        if spec is None:
            log.info("unknown page in URL", requested=slug[:100])
            return self._home("There is no such page; here is the home page.")
        if slug not in self.allowed:
            log.info("page not allowed", requested=slug)
            route = self._home("You do not have access to that page; here is the home page.")
            return Route(route.page, route.params, route.notice, denied=slug)
        raw = _strip(query)
        if spec.params is None:
            return Route(slug, {})
        try:
            model = spec.params.model_validate(raw)
        except ValidationError as err:
            log.info("malformed page params", page=slug, errors=err.error_count())
            return self._home(
                "That link had parameters this page cannot use; here is the home page."
            )
        clean = {k: str(v) for k, v in model.model_dump().items() if v is not None}
        return Route(slug, clean)

    def _home(self, notice: str) -> Route:
        st.query_params.from_dict({PAGE_PARAM: self.default})
        return Route(self.default, {}, notice)


def _strip(query: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k != PAGE_PARAM}
