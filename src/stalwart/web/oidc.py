"""Streamlit's OIDC (``st.login``) configured from our settings, and its cookies.

Streamlit reads its ``[auth]`` settings from ``st.secrets``. Ours come from the environment
(``STALWART_OIDC_*``), never from a file, so the app hands them to ``st.App(secrets=...)``: the
client secret stays in the process's memory, nothing is written to disk. Streamlit's cookie
secret (it signs the ``_streamlit_user`` identity cookie and the session cookie that carries the
OAuth ``state``) is derived from ``STALWART_SECRET_KEY``, so every app process agrees on it.

Streamlit's ``/auth/login`` (where ``st.login`` sends the browser, with a signed ``provider``
token) has the same path as our sign-in page; our route comes first and hands such requests to
Streamlit's handler (``streamlit_login``). ``/oauth2callback`` is Streamlit's own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from stalwart.core.config import AppConfig

#: Streamlit's identity cookie and the one with the provider's tokens (and their chunks)
STREAMLIT_AUTH_COOKIES: Final = ("_streamlit_user", "_streamlit_user_tokens")
_COOKIE_SECRET_LABEL: Final = b"stalwart/streamlit-cookie-secret/v1"


def cookie_secret(cfg: AppConfig) -> str:
    """Streamlit's cookie secret: a key derived from ``STALWART_SECRET_KEY`` (HMAC-SHA256)."""
    key = cfg.secret_key.get_secret_value().encode()
    return hmac.new(key, _COOKIE_SECRET_LABEL, hashlib.sha256).hexdigest()


def provider_label(cfg: AppConfig) -> str:
    """What the sign-in button calls the provider."""
    return cfg.oidc_provider_label.strip() or cfg.oidc_provider_name.capitalize()


def streamlit_secrets(cfg: AppConfig) -> dict[str, Any] | None:
    """The ``[auth]`` section ``st.login`` needs, from our settings; None without OIDC."""
    if not cfg.oidc_enabled:
        return None
    assert cfg.oidc_client_secret is not None  # the settings check guarantees it
    return {
        "auth": {
            "redirect_uri": cfg.oidc_redirect_uri,
            "cookie_secret": cookie_secret(cfg),
            cfg.oidc_provider_name: {
                "client_id": cfg.oidc_client_id,
                "client_secret": cfg.oidc_client_secret.get_secret_value(),
                "server_metadata_url": cfg.oidc_metadata_url,
            },
        }
    }


def configure_streamlit_auth(cfg: AppConfig) -> dict[str, Any]:
    """``st.App`` options for OIDC (``secrets``), and Streamlit's cookie secret set.

    The cookie secret is set as ``server.cookieSecret`` too: Streamlit's session middleware
    (which keeps the OAuth ``state`` between ``/auth/login`` and ``/oauth2callback``) reads it
    when the app is built, before ``st.App``'s secrets are loaded.
    """
    secrets = streamlit_secrets(cfg)
    if secrets is None:
        return {}
    from streamlit import config

    config.set_option("server.cookieSecret", cookie_secret(cfg), where_defined="stalwart")
    return {"secrets": secrets}


def clear_streamlit_identity(request: Request, response: Response, *, secure: bool) -> None:
    """Delete Streamlit's identity cookies (and their chunks) in ``response``.

    Our login session is the sign-in; Streamlit's cookie only carried the provider's word to
    the script once and must not outlive it (it would otherwise stay for 30 days).
    """
    for name in STREAMLIT_AUTH_COOKIES:
        chunk = f"{name}_"
        names = [name] + [
            n for n in request.cookies if n.startswith(chunk) and n[len(chunk) :].isdigit()
        ]
        for each in names:
            response.delete_cookie(each, path="/", secure=secure, httponly=True, samesite="lax")


_streamlit_login_endpoint: Callable[[Request], Awaitable[Response]] | None = None


async def streamlit_login(request: Request) -> Response:
    """Streamlit's ``GET /auth/login?provider=...`` (the step of ``st.login`` to the provider)."""
    global _streamlit_login_endpoint
    if _streamlit_login_endpoint is None:
        from streamlit import config
        from streamlit.web.server.starlette.starlette_auth_routes import create_auth_routes

        base = config.get_option("server.baseUrlPath") or ""
        for route in create_auth_routes(base):
            if getattr(route, "path", "").endswith("/auth/login"):
                _streamlit_login_endpoint = route.endpoint
        if _streamlit_login_endpoint is None:
            raise RuntimeError("Streamlit has no /auth/login route (its st.login changed)")
    return await _streamlit_login_endpoint(request)


def oidc_app_options() -> dict[str, Any]:
    """``configure_streamlit_auth`` for the settings in the environment (none if they are bad:
    ``init_app()`` reports a bad setting when the app starts)."""
    from stalwart.core.config import load_config
    from stalwart.errors import ConfigError

    try:
        cfg = load_config()
    except ConfigError:
        return {}
    return configure_streamlit_auth(cfg)
