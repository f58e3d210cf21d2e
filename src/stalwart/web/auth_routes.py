"""Sign-in and sign-out over plain HTTP: the login cookie is set here, not by the script.

A Streamlit script cannot set an HttpOnly cookie, and the login token must never be readable by
JavaScript. So signing in is a small HTML form served by the ``st.App`` itself:

- ``GET /auth/login?next=/?page=form&reason=idle`` shows the form (or, while no account exists
  and the request comes from this machine, a form that creates the first administrator);
- ``POST /auth/login`` checks the password (``AuthService.login``: throttled, audited), sets
  ``stalwart_login`` (HttpOnly, SameSite=Lax, Secure under TLS) and redirects to ``next``;
- ``POST /auth/logout`` ends the login session on the server and clears the cookie;
- with OIDC set up (``STALWART_OIDC_*``), the page also offers "Sign in with <provider>": the
  tab goes to ``/?page=oidc-login`` where the shell calls ``st.login``; when the provider has
  vouched for the user, the shell issues a one-time code and sends the tab to
  ``GET /auth/oidc/complete?code=...``, which takes the code back (once, from the same browser
  identity only: ``services.oidc_handoff``), signs the user in (``AuthService.login_oidc``) and
  sets ``stalwart_login`` as a password sign-in does.

The browser identity cookie (``stalwart_sid``, which keys drafts and the router's place) is
kept across sign-in and sign-out, so neither loses input. It is replaced when a *different*
user signs in on the same browser, so one person's drafts never show up under another's name.

Every POST must come from a page of this app (``Origin``, else ``Referer``, names this host);
with SameSite=Lax cookies that closes cross-site request forgery, including login CSRF.
"""

from __future__ import annotations

import asyncio
import html
from typing import Final
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from stalwart.bootstrap import AppContext, current_app
from stalwart.core.database import UnitOfWork
from stalwart.core.logs import get_logger, log_error
from stalwart.core.rbac import Principal
from stalwart.core.session import COOKIE_NAME, LOGIN_COOKIE, new_token, session_id_for, valid_token
from stalwart.errors import (
    AccountDisabledError,
    AccountError,
    AuthError,
    LoginThrottledError,
    StalwartError,
)
from stalwart.models import SessionRecord
from stalwart.services import oidc_handoff as handoff
from stalwart.services.auth_service import LoginResult
from stalwart.web.oidc import clear_streamlit_identity, provider_label, streamlit_login
from stalwart.web.proxies import (
    IPNetwork,
    client_address,
    is_loopback,
    is_tls,
    parse_networks,
    peer_address,
)

LOGIN_PATH: Final = "/auth/login"
LOGOUT_PATH: Final = "/auth/logout"
OIDC_COMPLETE_PATH: Final = "/auth/oidc/complete"
#: the shell's step that calls ``st.login`` (``/?page=oidc-login&next=...``)
OIDC_LOGIN_PAGE: Final = "oidc-login"
SETUP_PATH: Final = "/auth/setup"
#: the longest form body accepted (a username and a password are far smaller)
MAX_FORM_BYTES: Final = 16 * 1024
_MAX_NEXT: Final = 2000
#: why the sign-in page is shown, as ``?reason=``: fixed texts, never the request's own words
REASONS: Final = {
    "required": "Sign in to continue.",
    "idle": "You were signed out after a while without activity. Sign in again: your page and "
    "your unsaved input are kept.",
    "expired": "Your sign-in expired. Sign in again: your page and your unsaved input are kept.",
    "revoked": "Your sign-in was ended on the server. Sign in again to continue.",
    "disabled": "Your account is disabled. Ask an administrator to enable it.",
    "signed_out": "You signed out.",
    "switch": "This browser's pages belong to another sign-in. Sign in again to continue.",
    "oidc_unknown": "No account is linked to that sign-in. Ask an administrator to create "
    "your account, then sign in again.",
    "oidc_failed": "The sign-in with the identity provider could not be completed (it took "
    "too long, or the link was used already or in another browser). Sign in again.",
}

_log = get_logger(__name__)

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Stalwart</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f6f7f9;color:#1f2328;margin:0}}
main{{max-width:24rem;margin:12vh auto;background:#fff;padding:2rem;border-radius:.75rem;
box-shadow:0 1px 4px rgba(0,0,0,.12)}}
h1{{font-size:1.4rem;margin:0 0 1rem}}
label{{display:block;margin:.8rem 0 .25rem;font-weight:600}}
input{{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #bbb;border-radius:.4rem;
font-size:1rem}}
button,a.button{{margin-top:1.2rem;width:100%;padding:.6rem;border:0;border-radius:.4rem;
background:#ff4b4b;color:#fff;font-size:1rem;font-weight:600;cursor:pointer}}
a.button{{display:block;box-sizing:border-box;text-align:center;text-decoration:none;
background:#1f2328}}
p.note{{background:#eef4ff;padding:.6rem .8rem;border-radius:.4rem}}
p.error{{background:#ffecec;color:#8a1f1f;padding:.6rem .8rem;border-radius:.4rem}}
code{{background:#f0f0f0;padding:.1rem .3rem;border-radius:.25rem}}
</style></head>
<body><main>
<h1>{title}</h1>
{body}
</main></body></html>
"""


def _page(
    title: str, body: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    content = _PAGE.format(title=html.escape(title), body=body)
    response = HTMLResponse(content, status_code=status, headers=headers)
    # A page with a password field is never kept by a cache or shown from history.
    response.headers["Cache-Control"] = "no-store"
    return response


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a path of this app, never another site (open redirect)."""
    target = (raw or "").strip()
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or len(target) > _MAX_NEXT
        or any(ord(c) < 32 for c in target)
        or target.startswith("/auth/")
    ):
        return "/"
    return target


def login_url(next_path: str = "/", reason: str = "required") -> str:
    """The sign-in page's URL that comes back to ``next_path``."""
    return f"{LOGIN_PATH}?{urlencode({'next': safe_next(next_path), 'reason': reason})}"


def _notice(reason: str | None) -> str:
    text = REASONS.get(reason or "")
    return f'<p class="note" role="status">{html.escape(text)}</p>' if text else ""


def _error(text: str) -> str:
    return f'<p class="error" role="alert">{html.escape(text)}</p>'


def _login_form(next_path: str, *, username: str = "", message: str = "") -> str:
    return (
        f"{message}"
        f'<form method="post" action="{LOGIN_PATH}">'
        f'<input type="hidden" name="next" value="{html.escape(next_path)}">'
        '<label for="username">Username</label>'
        f'<input id="username" name="username" autocomplete="username" required maxlength="100" '
        f'value="{html.escape(username)}" autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="current-password" '
        'required maxlength="1024">'
        '<button type="submit">Sign in</button></form>'
    )


def oidc_start_url(next_path: str) -> str:
    """Where "Sign in with <provider>" leads: the shell's step that calls ``st.login``."""
    return "/?" + urlencode({"page": OIDC_LOGIN_PAGE, "next": safe_next(next_path)})


def _oidc_button(ctx: AppContext, next_path: str) -> str:
    if not ctx.config.oidc_enabled:
        return ""
    label = f"Sign in with {provider_label(ctx.config)}"
    href = html.escape(oidc_start_url(next_path))
    return f'<a class="button" id="oidc-sign-in" href="{href}">{html.escape(label)}</a>'


def _sign_in_body(ctx: AppContext, next_path: str, *, username: str = "", message: str = "") -> str:
    """The sign-in page's content: the password form and/or the provider's button."""
    button = _oidc_button(ctx, next_path)
    if not ctx.config.password_login:
        return f"{message}{button}"
    form = _login_form(next_path, username=username, message=message)
    return f"{form}{button}"


def _setup_form(next_path: str, *, username: str = "", message: str = "") -> str:
    return (
        '<p class="note">No account exists yet. Create the first administrator; more users '
        "can be added later on the Users page or with <code>app users create</code>.</p>"
        f"{message}"
        f'<form method="post" action="{SETUP_PATH}">'
        f'<input type="hidden" name="next" value="{html.escape(next_path)}">'
        '<label for="username">Username</label>'
        f'<input id="username" name="username" autocomplete="username" required maxlength="100" '
        f'value="{html.escape(username)}" autofocus>'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" autocomplete="new-password" '
        'required maxlength="1024">'
        '<label for="password2">Password again</label>'
        '<input id="password2" name="password2" type="password" autocomplete="new-password" '
        'required maxlength="1024">'
        '<button type="submit">Create the administrator and sign in</button></form>'
    )


def _no_accounts() -> str:
    return (
        '<p class="note">No account exists yet. An operator creates the first administrator '
        "on the server with:</p><p><code>app users create NAME --role admin</code></p>"
    )


def _trusted(ctx: AppContext) -> tuple[IPNetwork, ...]:
    """The proxies whose forwarded headers are believed (``STALWART_TRUSTED_PROXIES``)."""
    return parse_networks(ctx.config.trusted_proxies)


def _local_request(request: Request) -> bool:
    """True for a request whose TCP peer is this machine and that no proxy forwarded."""
    return is_loopback(peer_address(request.scope)) and "x-forwarded-for" not in request.headers


def _same_origin(request: Request) -> bool:
    """True if the browser says the request comes from a page of this host."""
    host = request.headers.get("host", "")
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value and value != "null":
            return urlsplit(value).netloc == host
    return False


async def _form(request: Request) -> dict[str, str] | None:
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return None
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _disabled() -> Response:
    return _page("Sign-in is off", "<p>This app runs without sign-in.</p>", status=404)


async def login_page(request: Request) -> Response:
    """The sign-in form (or the first administrator's set-up form)."""
    ctx = current_app()
    if ctx.config.auth_mode != "local":
        return RedirectResponse("/", status_code=303)
    if ctx.config.oidc_enabled and "provider" in request.query_params:
        # st.login sends the tab to Streamlit's /auth/login, which this route shadows.
        return await streamlit_login(request)
    next_path = safe_next(request.query_params.get("next"))
    notice = _notice(request.query_params.get("reason"))
    reason = request.query_params.get("reason")
    # "switch": the session is valid but not this identity's user; going back would loop.
    if reason != "switch" and await asyncio.to_thread(
        _signed_in_already, ctx, request.cookies.get(LOGIN_COOKIE)
    ):
        # Signed in meanwhile (another tab, say): the page this tab was on loads again.
        return RedirectResponse(next_path, status_code=303)
    if ctx.config.password_login and not await asyncio.to_thread(ctx.auth.has_users):
        body = _setup_form(next_path) if _local_request(request) else _no_accounts()
        return _page("Set up Stalwart", notice + body + _oidc_button(ctx, next_path))
    return _page("Sign in", _sign_in_body(ctx, next_path, message=notice))


def _signed_in_already(ctx: AppContext, token: str | None) -> bool:
    if not token:
        return False
    try:
        ctx.auth.resume(token)
    except StalwartError:
        return False
    return True


async def login_submit(request: Request) -> Response:
    """Check the password; on success set the login cookie and go to ``next``."""
    ctx = current_app()
    if ctx.config.auth_mode != "local":
        return _disabled()
    if not _same_origin(request):
        return _page("Sign in", _error("This form must be sent from this app's page."), status=403)
    if not ctx.config.password_login:
        body = _sign_in_body(ctx, "/", message=_error("Sign-in with a password is turned off."))
        return _page("Sign in", body, status=403)
    form = await _form(request)
    if form is None:
        return _page("Sign in", _error("That request was too large."), status=413)
    next_path = safe_next(form.get("next"))
    username = form.get("username", "")[:100]
    client = client_address(request.scope, _trusted(ctx))
    try:
        result = await asyncio.to_thread(
            ctx.auth.login,
            username,
            form.get("password", ""),
            client_key=client,
            previous_token=request.cookies.get(LOGIN_COOKIE),
        )
    except LoginThrottledError as err:
        retry = str(max(1, int(err.retry_after_s)))
        body = _login_form(next_path, username=username, message=_error(err.message))
        return _page("Sign in", body, status=429, headers={"Retry-After": retry})
    except AccountDisabledError:
        body = _login_form(next_path, username=username, message=_error(REASONS["disabled"]))
        return _page("Sign in", body, status=403)
    except AuthError as err:
        body = _login_form(next_path, username=username, message=_error(err.message))
        return _page("Sign in", body, status=401)
    except StalwartError as err:
        error_id = log_error(err, {"where": "sign-in"})
        text = f"Sign-in is not possible right now: {err.message} (error id {error_id})"
        body = _login_form(next_path, username=username, message=_error(text))
        return _page("Sign in", body, status=503)
    return await _signed_in(ctx, request, result, next_path)


async def setup_submit(request: Request) -> Response:
    """Create the first administrator (only while no account exists, only from this machine)."""
    ctx = current_app()
    if ctx.config.auth_mode != "local":
        return _disabled()
    if not _same_origin(request) or not _local_request(request):
        return _page("Set up Stalwart", _no_accounts(), status=403)
    form = await _form(request)
    if form is None:
        return _page("Set up Stalwart", _error("That request was too large."), status=413)
    next_path = safe_next(form.get("next"))
    username = form.get("username", "")[:100]
    password = form.get("password", "")
    if password != form.get("password2", ""):
        body = _setup_form(next_path, username=username, message=_error("The passwords differ."))
        return _page("Set up Stalwart", body, status=400)

    def create() -> LoginResult | None:
        if ctx.auth.has_users():
            return None
        ctx.auth.create_user(Principal.system("setup"), username, password=password, role="admin")
        client = client_address(request.scope, _trusted(ctx))
        return ctx.auth.login(username, password, client_key=client)

    try:
        result = await asyncio.to_thread(create)
    except AccountError as err:
        body = _setup_form(next_path, username=username, message=_error(err.message))
        return _page("Set up Stalwart", body, status=400)
    if result is None:  # someone else set it up meanwhile: sign in as usual
        return RedirectResponse(login_url(next_path), status_code=303)
    return await _signed_in(ctx, request, result, next_path)


async def logout(request: Request) -> Response:
    """End this browser's login session on the server and clear its cookie."""
    ctx = current_app()
    if not _same_origin(request):
        return _page("Sign out", _error("Sign out from this app's page."), status=403)
    token = request.cookies.get(LOGIN_COOKIE)
    try:
        await asyncio.to_thread(ctx.auth.logout, token)
    except StalwartError as err:
        # The cookie is cleared anyway; the session ends at its timeout at the latest.
        log_error(err, {"where": "sign-out"})
    response = RedirectResponse(login_url("/", "signed_out"), status_code=303)
    secure = is_tls(request.scope, _trusted(ctx))
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    # Streamlit's identity cookie (st.login) goes too, should one be left.
    clear_streamlit_identity(request, response, secure=secure)
    return response


async def oidc_complete(request: Request) -> Response:
    """Exchange the one-time code of an OIDC sign-in for the login cookie, then go to ``next``.

    The code was issued by the shell once the provider vouched for the user (``st.user``); it
    is valid once, for a minute, and only for the browser identity it was issued to. Whatever
    happens, Streamlit's identity cookie is cleared: our login session is the sign-in.
    """
    ctx = current_app()
    secure = is_tls(request.scope, _trusted(ctx))

    def refuse(reason: str, next_path: str = "/") -> Response:
        response = RedirectResponse(login_url(next_path, reason), status_code=303)
        response.headers["Cache-Control"] = "no-store"
        clear_streamlit_identity(request, response, secure=secure)
        return response

    if ctx.config.auth_mode != "local" or not ctx.config.oidc_enabled:
        return _disabled()
    identity_token = request.cookies.get(COOKIE_NAME) or ""
    identity = session_id_for(identity_token) if valid_token(identity_token) else None
    code = request.query_params.get("code", "")
    try:
        vouched = await asyncio.to_thread(handoff.consume, ctx.db, code, identity)
    except StalwartError as err:
        log_error(err, {"where": "oidc sign-in"})
        return refuse("oidc_failed")
    if vouched is None:
        _log.info("oidc code refused", known_identity=identity is not None)
        return refuse("oidc_failed")
    next_path = safe_next(vouched.next_path)
    client = client_address(request.scope, _trusted(ctx))
    try:
        result = await asyncio.to_thread(
            lambda: ctx.auth.login_oidc(
                issuer=vouched.issuer,
                subject=vouched.subject,
                email=vouched.email,
                name=vouched.name,
                client_key=client,
                previous_token=request.cookies.get(LOGIN_COOKIE),
            )
        )
    except AccountDisabledError:
        return refuse("disabled", next_path)
    except AuthError:
        return refuse("oidc_unknown", next_path)
    except StalwartError as err:
        log_error(err, {"where": "oidc sign-in"})
        return refuse("oidc_failed", next_path)
    response = await _signed_in(ctx, request, result, next_path)
    response.headers["Cache-Control"] = "no-store"
    clear_streamlit_identity(request, response, secure=secure)
    return response


async def _signed_in(
    ctx: AppContext, request: Request, result: LoginResult, next_path: str
) -> Response:
    identity = request.cookies.get(COOKIE_NAME)
    fresh = await asyncio.to_thread(_bind_identity, ctx, identity, result.user.id)
    response = RedirectResponse(next_path, status_code=303)
    secure = is_tls(request.scope, _trusted(ctx))
    response.set_cookie(
        LOGIN_COOKIE,
        result.token,
        max_age=int(ctx.config.session_absolute_timeout_s),
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )
    if fresh is not None:
        response.set_cookie(
            COOKIE_NAME,
            fresh,
            max_age=400 * 24 * 3600,
            path="/",
            secure=secure,
            httponly=True,
            samesite="lax",
        )
    _log.info("signed in over http", user_id=result.user.id, new_identity=fresh is not None)
    return response


def _bind_identity(ctx: AppContext, token: str | None, user_id: int) -> str | None:
    """Tie the browser identity to the user who signed in; a new identity if another user's.

    Returns the new identity token to set, or None to keep the browser's own.
    """
    owner = str(user_id)

    def work(uow: UnitOfWork) -> str | None:
        if valid_token(token):
            assert token is not None
            record = uow.session.get(SessionRecord, session_id_for(token))
            if record is None:
                uow.session.add(SessionRecord(id=session_id_for(token), user_id=owner, params={}))
                return None
            if record.user_id in (None, owner):
                record.user_id = owner
                return None
        fresh = new_token()
        uow.session.add(SessionRecord(id=session_id_for(fresh), user_id=owner, params={}))
        return fresh

    return ctx.db.run_tx(work)


def auth_routes() -> list[BaseRoute]:
    """The sign-in routes to add to the ``st.App``."""
    return [
        Route(LOGIN_PATH, login_page, methods=["GET", "HEAD"]),
        Route(LOGIN_PATH, login_submit, methods=["POST"]),
        Route(SETUP_PATH, setup_submit, methods=["POST"]),
        Route(LOGOUT_PATH, logout, methods=["POST"]),
        Route(OIDC_COMPLETE_PATH, oidc_complete, methods=["GET"]),
    ]
