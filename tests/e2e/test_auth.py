"""Sign-in, sign-out, cookies and page access on a real server (``STALWART_AUTH_MODE=local``).

Driven over HTTP (the sign-in form) and Streamlit's websocket (the pages, with the cookies a
browser would send), so that every page can be tried with every role quickly. The browser tests
of the same flows are in ``test_auth_browser.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from stalwart.core.config import AppConfig
from stalwart.core.database import DB
from stalwart.core.rbac import Principal
from stalwart.models import AuditEntry
from stalwart.pages import PAGES
from stalwart.services.auth_service import AuthService, new_token
from tests.conftest import free_port
from tests.e2e.conftest import SECRET, LiveApp, app_run, rerun_over_websocket, server_env

PASSWORD = "correct horse battery"
CUSTOM_ROLES = {"auditor": ["view", "export"]}
FAST_HASH = {
    "STALWART_PASSWORD_HASH_MEMORY_KIB": "8192",
    "STALWART_PASSWORD_HASH_PARALLELISM": "1",
    "STALWART_PASSWORD_HASH_TIME_COST": "1",
}
#: role -> the pages it may open, written out by hand
PAGES_BY_ROLE = {
    "viewer": {"home", "form-demo", "job-demo", "jobs", "import-export", "settings"},
    "editor": {"home", "form-demo", "job-demo", "jobs", "import-export", "settings"},
    "admin": {
        "home",
        "form-demo",
        "job-demo",
        "jobs",
        "import-export",
        "settings",
        "users",
        "analytics",
        "system",
    },
    "auditor": {"home", "form-demo", "job-demo", "jobs", "import-export", "settings"},
}


def start_auth_server(tmp_path_factory: pytest.TempPathFactory, **env: str) -> LiveApp:
    """A server with sign-in on (SQLite); 127.0.0.1 is its trusted proxy."""
    workdir = tmp_path_factory.mktemp("auth-server")
    port = free_port()
    settings = {
        "STALWART_AUTH_MODE": "local",
        "STALWART_TRUSTED_PROXIES": "127.0.0.1/32",
        "STALWART_CUSTOM_ROLES": json.dumps(CUSTOM_ROLES),
        "STALWART_LOGIN_MAX_FAILURES": "3",
        **FAST_HASH,
        **env,
    }
    app = LiveApp(
        app_run(port),
        port,
        workdir,
        server_env(workdir / "data", **settings),
        db_url=f"sqlite:///{workdir}/data/stalwart.db",
    )
    return app.start()


def accounts_for(server: LiveApp) -> AuthService:
    """The server's accounts, managed in this process over the same database."""
    assert server.db_url is not None
    config = AppConfig(
        database_url=server.db_url,
        secret_key=SECRET,  # type: ignore[arg-type]
        custom_roles=CUSTOM_ROLES,  # type: ignore[arg-type]
        password_hash_memory_kib=8192,
        password_hash_parallelism=1,
        password_hash_time_cost=1,
    )
    return AuthService(DB.from_config(config), config)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """One sign-in server for this module."""
    app = start_auth_server(tmp_path_factory)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def accounts(server: LiveApp) -> Iterator[AuthService]:
    """The module server's accounts."""
    service = accounts_for(server)
    yield service
    service.db.dispose()


def user(accounts: AuthService, name: str, role: str) -> str:
    """Create ``name`` with ``role`` once; its username."""
    system = Principal.system("test")
    if not any(u.username == name for u in accounts.list_users(system)):
        accounts.create_user(system, name, password=PASSWORD, role=role)
    return name


def sign_in(server: LiveApp, name: str, password: str = PASSWORD, **headers: str) -> httpx.Response:
    """POST the sign-in form as a browser on the app's page would."""
    return httpx.post(
        f"{server.url}/auth/login",
        data={"username": name, "password": password, "next": "/?page=form-demo"},
        headers={"Origin": server.url, **headers},
    )


def cookie_of(response: httpx.Response, name: str) -> dict[str, Any]:
    """The Set-Cookie of ``name``: its value and attributes (lower-case keys)."""
    for header in response.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            flags = {k: morsel[k] for k in morsel if morsel[k]}
            # SimpleCookie drops flags without values from the dict view: read them directly.
            lower = header.lower()
            flags["httponly"] = "httponly" in lower
            flags["secure"] = "; secure" in lower
            return {"value": morsel.value, **flags}
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


def headings(msgs: list[ForwardMsg]) -> list[str]:
    """The titles and subheaders a script run drew."""
    return [
        m.delta.new_element.heading.body
        for m in msgs
        if m.WhichOneof("type") == "delta"
        and m.delta.WhichOneof("type") == "new_element"
        and m.delta.new_element.WhichOneof("type") == "heading"
    ]


def shown_page(msgs: list[ForwardMsg]) -> str | None:
    """The page a run drew: the shell's main container is keyed ``page-<slug>``."""
    for m in msgs:
        if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "add_block":
            block_id = m.delta.add_block.id
            if "page-" in block_id:
                return block_id.rsplit("page-", 1)[1]
    return None


def texts(msgs: list[ForwardMsg]) -> str:
    """Every alert and markdown text of a run, for looking up messages."""
    out = []
    for m in msgs:
        if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element":
            element = m.delta.new_element
            kind = element.WhichOneof("type")
            if kind == "alert":
                out.append(element.alert.body)
            elif kind == "markdown":
                out.append(element.markdown.body)
            elif kind == "toast":
                out.append(element.toast.body)
    return "\n".join(out)


def session_cookies(response: httpx.Response) -> dict[str, str]:
    """The cookies a browser keeps after ``response``."""
    return dict(response.cookies.items())


# --- the first administrator -----------------------------------------------------------------


def test_the_first_administrator_is_set_up_from_this_machine_only_and_only_once(
    server: LiveApp, accounts: AuthService
) -> None:
    assert not accounts.has_users()
    page = httpx.get(f"{server.url}/auth/login")
    assert 'action="/auth/setup"' in page.text
    # Forwarded by a proxy (the client is elsewhere): no set-up form, and a POST is refused.
    remote = {"X-Forwarded-For": "203.0.113.9"}
    assert 'action="/auth/setup"' not in httpx.get(f"{server.url}/auth/login", headers=remote).text
    form = {"username": "root-admin", "password": PASSWORD, "password2": PASSWORD, "next": "/"}
    refused = httpx.post(
        f"{server.url}/auth/setup", data=form, headers={"Origin": server.url, **remote}
    )
    assert refused.status_code == 403
    assert not accounts.has_users()

    made = httpx.post(f"{server.url}/auth/setup", data=form, headers={"Origin": server.url})
    assert made.status_code == 303
    assert made.headers["location"] == "/"
    assert cookie_of(made, "stalwart_login")["httponly"]
    admin = accounts.get_user(Principal.system("test"), "root-admin")
    assert admin.role == "admin"

    again = httpx.post(
        f"{server.url}/auth/setup",
        data={**form, "username": "second-admin"},
        headers={"Origin": server.url},
    )
    assert again.status_code == 303
    assert again.headers["location"].startswith("/auth/login")
    assert [u.username for u in accounts.list_users(Principal.system("t"))] == ["root-admin"]


# --- sign-in, cookies, throttling -------------------------------------------------------------


def test_sign_in_sets_an_httponly_samesite_cookie_and_returns_to_the_page(
    server: LiveApp, accounts: AuthService
) -> None:
    name = user(accounts, "erin", "editor")
    response = sign_in(server, name)
    assert response.status_code == 303
    assert response.headers["location"] == "/?page=form-demo"
    login = cookie_of(response, "stalwart_login")
    assert login["httponly"]
    assert login["samesite"].lower() == "lax"
    assert login["path"] == "/"
    assert not login["secure"]  # plain HTTP: a Secure cookie would never come back
    assert int(login["max-age"]) <= 12 * 3600
    assert httpx.get(f"{server.url}/auth/login").headers["cache-control"] == "no-store"

    run = rerun_over_websocket(server.port, "page=form-demo", cookies=session_cookies(response))
    assert "Project brief" in " ".join(headings(run)) or "Form" in " ".join(headings(run))


def test_behind_a_tls_proxy_the_cookie_is_secure(server: LiveApp, accounts: AuthService) -> None:
    name = user(accounts, "tess", "viewer")
    response = sign_in(server, name, **{"X-Forwarded-Proto": "https"})
    assert cookie_of(response, "stalwart_login")["secure"]


def test_a_wrong_password_is_refused_and_repeated_failures_lock_the_account(
    server: LiveApp, accounts: AuthService
) -> None:
    name = user(accounts, "wanda", "viewer")
    for _ in range(3):
        wrong = sign_in(server, name, "not the password at all")
        assert wrong.status_code == 401
        assert "stalwart_login" not in wrong.headers.get("set-cookie", "")
        assert "Username" in wrong.text
        assert 'value="wanda"' in wrong.text
    locked = sign_in(server, name)  # the right password, during the lock: refused unchecked
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "stalwart_login" not in locked.headers.get("set-cookie", "")
    with accounts.db.unit_of_work(read_only=True) as uow:
        failures = uow.session.execute(
            select(AuditEntry.diff).where(
                AuditEntry.action.in_(["login_failed", "login_locked"]),
                AuditEntry.entity_id == str(accounts.get_user(Principal.system("t"), name).id),
            )
        ).all()
    assert len(failures) == 4  # every attempt, the refused one too
    assert PASSWORD not in json.dumps([row.diff for row in failures])


def test_a_planted_token_never_becomes_a_session_and_each_sign_in_gets_a_new_one(
    server: LiveApp, accounts: AuthService
) -> None:
    name = user(accounts, "fiona", "editor")
    planted = new_token()  # an attacker sets this cookie in the victim's browser
    first = sign_in(server, name, Cookie=f"stalwart_login={planted}")
    issued = cookie_of(first, "stalwart_login")["value"]
    assert issued != planted
    assert "Sign in" in headings(
        rerun_over_websocket(server.port, "page=home", cookies={"stalwart_login": planted})
    )
    # Signing in again in the same browser replaces (revokes) the earlier session.
    second = sign_in(server, name, Cookie=f"stalwart_login={issued}")
    assert cookie_of(second, "stalwart_login")["value"] not in (issued, planted)
    stale = rerun_over_websocket(server.port, "page=home", cookies={"stalwart_login": issued})
    assert "Sign in" in headings(stale)


@pytest.mark.parametrize(
    "origin", ["https://evil.example", None], ids=["other-site", "no-origin-or-referer"]
)
def test_a_sign_in_posted_from_another_site_is_refused(
    server: LiveApp, accounts: AuthService, origin: str | None
) -> None:
    name = user(accounts, "olga", "viewer")
    headers = {"Origin": origin} if origin else {}
    response = httpx.post(
        f"{server.url}/auth/login",
        data={"username": name, "password": PASSWORD, "next": "/"},
        headers=headers,
    )
    assert response.status_code == 403
    assert "stalwart_login" not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"]
)
def test_after_sign_in_the_redirect_never_leaves_the_app(
    server: LiveApp, accounts: AuthService, target: str
) -> None:
    name = user(accounts, "nora", "viewer")
    response = httpx.post(
        f"{server.url}/auth/login",
        data={"username": name, "password": PASSWORD, "next": target},
        headers={"Origin": server.url},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_sign_out_ends_the_session_on_the_server(server: LiveApp, accounts: AuthService) -> None:
    name = user(accounts, "sam", "editor")
    cookies = session_cookies(sign_in(server, name))
    assert "Sign in" not in headings(rerun_over_websocket(server.port, "", cookies=cookies))
    out = httpx.post(f"{server.url}/auth/logout", cookies=cookies, headers={"Origin": server.url})
    assert out.status_code == 303
    assert "reason=signed_out" in out.headers["location"]
    cleared = cookie_of(out, "stalwart_login")
    assert cleared["value"] == ""
    assert int(cleared["max-age"]) == 0
    # The old token, replayed by someone who kept it, is refused: the server ended it.
    assert "Sign in" in headings(rerun_over_websocket(server.port, "", cookies=cookies))


def test_a_disabled_user_is_refused_at_the_next_run(server: LiveApp, accounts: AuthService) -> None:
    name = user(accounts, "dora", "editor")
    cookies = session_cookies(sign_in(server, name))
    assert "Sign in" not in headings(rerun_over_websocket(server.port, "", cookies=cookies))
    accounts.disable(Principal.system("test"), name)
    try:
        run = rerun_over_websocket(server.port, "page=form-demo", cookies=cookies)
        assert "Sign in" in headings(run)
        assert "disabled" in texts(run)
    finally:
        accounts.enable(Principal.system("test"), name)


# --- pages by URL, every role ------------------------------------------------------------------


@pytest.mark.parametrize("role", list(PAGES_BY_ROLE))
def test_every_page_by_url_with_every_role(
    server: LiveApp, accounts: AuthService, role: str
) -> None:
    name = user(accounts, f"{role}-1", role)
    cookies = session_cookies(sign_in(server, name))
    reachable = set()
    for slug in PAGES:
        run = rerun_over_websocket(server.port, f"page={slug}", cookies=cookies)
        if shown_page(run) == slug:
            reachable.add(slug)
        else:
            assert shown_page(run) == "home"
            assert "do not have access" in texts(run)
    assert reachable == PAGES_BY_ROLE[role]
    with accounts.db.unit_of_work(read_only=True) as uow:
        denied = uow.session.execute(
            select(AuditEntry.entity_id).where(
                AuditEntry.action == "denied", AuditEntry.actor == name
            )
        ).all()
    assert {row.entity_id for row in denied} == (
        {"page.admin"} if "users" not in PAGES_BY_ROLE[role] else set()
    )


def nav_links(msgs: list[ForwardMsg]) -> list[str]:
    """The pages the sidebar's navigation component was given links to."""
    for m in msgs:
        if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element":
            element = m.delta.new_element
            if element.WhichOneof("type") == "bidi_component" and (
                element.bidi_component.component_name.endswith("nav")
            ):
                return [link["id"] for link in json.loads(element.bidi_component.json)["links"]]
    raise AssertionError("no navigation drawn")


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_the_system_page_is_in_the_navigation_of_admins_only(
    server: LiveApp, accounts: AuthService, role: str
) -> None:
    name = user(accounts, f"{role}-nav", role)
    cookies = session_cookies(sign_in(server, name))
    run = rerun_over_websocket(server.port, "page=system", cookies=cookies)
    links = nav_links(run)
    assert "home" in links
    if role == "admin":
        assert "system" in links
        assert shown_page(run) == "system"
    else:
        assert "system" not in links
        assert shown_page(run) == "home"
        assert "do not have access" in texts(run)


def _button_id(msgs: list[ForwardMsg], label: str) -> str:
    for m in msgs:
        if m.WhichOneof("type") == "delta" and m.delta.WhichOneof("type") == "new_element":
            element = m.delta.new_element
            if element.WhichOneof("type") == "button" and element.button.label == label:
                return str(element.button.id)
    raise AssertionError(f"no {label!r} button drawn")


def _press(label: str, found: dict[str, str]) -> Any:
    def press(first_run: list[ForwardMsg]) -> BackMsg:
        found["id"] = _button_id(first_run, label)
        back = BackMsg()
        back.rerun_script.query_string = "page=form-demo"
        state = back.rerun_script.widget_states.widgets.add()
        state.id = found["id"]
        state.trigger_value = True
        return back

    return press


def _denials(accounts: AuthService, name: str) -> list[str]:
    with accounts.db.unit_of_work(read_only=True) as uow:
        rows = uow.session.execute(
            select(AuditEntry.entity_id).where(
                AuditEntry.action == "denied", AuditEntry.actor == name
            )
        ).all()
    return [row.entity_id for row in rows]


def test_a_viewer_forging_a_press_of_the_disabled_apply_button_changes_nothing(
    server: LiveApp, accounts: AuthService
) -> None:
    name = user(accounts, "victor", "viewer")
    cookies = session_cookies(sign_in(server, name))
    found: dict[str, str] = {}
    run = rerun_over_websocket(
        server.port, "page=form-demo", cookies=cookies, then=_press("Apply", found)
    )
    assert found["id"]  # the button was drawn (disabled) and its press was forged
    # Streamlit discards a disabled widget's forged value: no callback, nothing applied.
    assert "Applied." not in texts(run)


def test_a_user_demoted_while_the_page_is_open_is_refused_by_the_service(
    server: LiveApp, accounts: AuthService
) -> None:
    name = user(accounts, "edgar", "editor")
    cookies = session_cookies(sign_in(server, name))
    found: dict[str, str] = {}
    demote = _press("Apply", found)

    def demoted_then_press(first_run: list[ForwardMsg]) -> BackMsg:
        # Drawn for an editor (the button is live); an admin demotes them; then the click.
        accounts.set_role(Principal.system("test"), name, "viewer")
        return demote(first_run)

    try:
        run = rerun_over_websocket(
            server.port, "page=form-demo", cookies=cookies, then=demoted_then_press
        )
    finally:
        accounts.set_role(Principal.system("test"), name, "editor")
    assert "Not applied" in texts(run)
    assert "may not apply a form" in texts(run)
    assert "Applied." not in texts(run)
    assert "form.apply" in _denials(accounts, name)


def _count(db: DB, column: Any) -> int:
    from sqlalchemy import func

    with db.unit_of_work(read_only=True) as uow:
        return int(uow.session.execute(select(func.count(column))).scalar_one())


def test_the_sign_in_page_says_why_without_echoing_the_request(server: LiveApp) -> None:
    idle = httpx.get(f"{server.url}/auth/login", params={"reason": "idle"})
    assert "without activity" in idle.text
    forged = httpx.get(f"{server.url}/auth/login", params={"reason": "<script>alert(1)</script>"})
    assert "<script>alert(1)" not in forged.text
    tricky = httpx.get(f"{server.url}/auth/login", params={"next": '/"><script>x</script>'})
    assert "<script>x" not in tricky.text


def test_tables_offer_no_download_of_their_own(server: LiveApp) -> None:
    """Exports go through the checked, formula-safe download; Streamlit's table one is off."""
    msgs = rerun_over_websocket(server.port, "")
    first = next(m for m in msgs if m.WhichOneof("type") == "new_session")
    assert first.new_session.config.disable_data_export
