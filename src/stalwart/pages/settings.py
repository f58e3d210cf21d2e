"""The settings page: the configuration the app runs with, without any secret."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import streamlit as st
from pydantic import SecretStr

from stalwart import __version__
from stalwart.core.config import ENV_PREFIX
from stalwart.pages.base import Page, PageRequest

if TYPE_CHECKING:
    from stalwart.bootstrap import AppContext
    from stalwart.core.config import AppConfig

HIDDEN = "•••••• (hidden)"
# A setting whose name says it is a credential is hidden even if it is a plain string.
_SECRET_NAME_RE = re.compile(r"secret|password|passwd|token|api_?key|private", re.IGNORECASE)


class SettingsPage(Page):
    """A read-only table of every setting and the environment variable that sets it."""

    slug = "settings"
    title = "Settings"
    icon = ":material/settings:"

    def render(self, ctx: AppContext, req: PageRequest) -> None:
        """Draw the settings table."""
        st.title("Settings")
        st.markdown(
            "The configuration this server runs with. Settings come from environment "
            f"variables prefixed `{ENV_PREFIX}`; secrets are never shown."
        )
        st.dataframe(public_settings(ctx.config), hide_index=True)
        st.caption(f"Version {__version__} · database {ctx.db.safe_url}")


def public_settings(config: AppConfig) -> list[dict[str, str]]:
    """Each setting as a row (variable, value) that is safe to show to anyone seeing the page."""
    return [
        {"variable": f"{ENV_PREFIX}{name.upper()}", "value": display_value(name, value)}
        for name, value in config.model_dump().items()
    ]


def display_value(name: str, value: Any) -> str:
    """How a setting is shown: secrets hidden, passwords in URLs masked, the rest as text."""
    if isinstance(value, SecretStr) or _SECRET_NAME_RE.search(name):
        return HIDDEN
    text = str(value)
    return _mask_url_password(text) if "://" in text else text


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))
