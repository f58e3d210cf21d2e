"""The OIDC hand-over (``services.oidc_handoff``) on each database, the ``[auth]`` settings
Streamlit gets, and the OIDC settings' checks as ``app run`` reports them."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from stalwart.core.config import AppConfig, load_config
from stalwart.core.database import DB
from stalwart.errors import ConfigError
from stalwart.models.base import utcnow
from stalwart.models.user import OidcHandoff
from stalwart.services import oidc_handoff as handoff
from stalwart.services.auth_service import AuthService
from stalwart.web.oidc import cookie_secret, provider_label, streamlit_secrets
from tests.conftest import PYTHON, child_env, free_port

ME = "a" * 64  # browser identities as stored: SHA-256 hex of the identity cookie
OTHER = "b" * 64
VOUCHED = {"issuer": "https://idp.example", "subject": "sub-1", "email": None, "name": "N"}
OIDC = {
    "oidc_provider_name": "keycloak",
    "oidc_client_id": "stalwart",
    "oidc_client_secret": "s3cret-client-value",
    "oidc_metadata_url": "https://idp.example/.well-known/openid-configuration",
    "oidc_redirect_uri": "https://app.example/oauth2callback",
}


def rows(db: DB) -> int:
    with db.unit_of_work(read_only=True) as uow:
        return int(uow.session.scalar(select(func.count()).select_from(OidcHandoff)) or 0)


def test_a_code_is_issued_for_a_pending_sign_in_and_taken_back_once(db: DB) -> None:
    assert handoff.issue(db, ME, **VOUCHED) is None  # nothing under way: no code
    handoff.begin(db, ME, "/?page=jobs")
    assert handoff.pending(db, ME)
    issued = handoff.issue(db, ME, **VOUCHED)
    assert issued is not None
    code, next_path = issued
    assert next_path == "/?page=jobs"
    assert not handoff.pending(db, ME)
    assert handoff.issue(db, ME, **VOUCHED) is None  # one code per sign-in
    with db.unit_of_work(read_only=True) as uow:
        stored = uow.session.scalars(select(OidcHandoff.code_hash)).one()
    assert stored == handoff.code_hash(code)
    assert code not in stored
    vouched = handoff.consume(db, code, ME)
    assert vouched == handoff.OidcIdentity("https://idp.example", "sub-1", None, "N", next_path)
    assert handoff.consume(db, code, ME) is None  # once
    assert rows(db) == 0


def test_a_code_from_another_browser_is_refused_and_burnt(db: DB) -> None:
    handoff.begin(db, ME, "/")
    issued = handoff.issue(db, ME, **VOUCHED)
    assert issued is not None
    assert handoff.consume(db, issued[0], OTHER) is None
    assert handoff.consume(db, issued[0], None) is None
    assert handoff.consume(db, issued[0], ME) is None  # burnt by the first attempt
    assert handoff.consume(db, "", ME) is None
    assert handoff.consume(db, "x" * 500, ME) is None


def test_codes_and_pending_sign_ins_expire(db: DB) -> None:
    start = utcnow()
    handoff.begin(db, ME, "/", now=start)
    late = start + timedelta(seconds=handoff.PENDING_TTL_S + 1)
    assert not handoff.pending(db, ME, now=late)
    assert handoff.issue(db, ME, **VOUCHED, now=late) is None
    issued = handoff.issue(db, ME, **VOUCHED, now=start)
    assert issued is not None
    expired = start + timedelta(seconds=handoff.CODE_TTL_S + 1)
    assert handoff.consume(db, issued[0], ME, now=expired) is None


def test_a_new_start_replaces_the_earlier_one_and_prune_drops_the_abandoned(db: DB) -> None:
    handoff.begin(db, ME, "/?page=one")
    handoff.begin(db, ME, "/?page=two")
    handoff.begin(db, OTHER, "/")
    assert rows(db) == 2
    issued = handoff.issue(db, ME, **VOUCHED)
    assert issued is not None
    assert issued[1] == "/?page=two"
    auth = AuthService(db, AppConfig())
    later = utcnow() + timedelta(seconds=handoff.PENDING_TTL_S + 1)
    auth.clock = lambda: later
    assert auth.prune()["oidc_handoffs"] == 2


def test_streamlit_gets_the_auth_section_from_our_settings() -> None:
    cfg = load_config(**OIDC, secret_key="k" * 40)
    assert cfg.oidc_enabled
    secrets = streamlit_secrets(cfg)
    assert secrets == {
        "auth": {
            "redirect_uri": "https://app.example/oauth2callback",
            "cookie_secret": cookie_secret(cfg),
            "keycloak": {
                "client_id": "stalwart",
                "client_secret": "s3cret-client-value",
                "server_metadata_url": "https://idp.example/.well-known/openid-configuration",
            },
        }
    }
    # Derived from the secret key: the same in every process, different for another key,
    # and not the key itself.
    assert cookie_secret(cfg) == cookie_secret(load_config(**OIDC, secret_key="k" * 40))
    assert cookie_secret(cfg) != cookie_secret(load_config(**OIDC, secret_key="j" * 40))
    assert "k" * 40 not in cookie_secret(cfg)
    assert len(cookie_secret(cfg)) == 64
    assert provider_label(cfg) == "Keycloak"
    assert provider_label(load_config(**OIDC, oidc_provider_label="Acme SSO")) == "Acme SSO"
    assert streamlit_secrets(AppConfig()) is None
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"oidc_client_id": ""}, "STALWART_OIDC_CLIENT_ID: oidc_client_id: OIDC sign-in is half"),
        ({"oidc_client_secret": ""}, "STALWART_OIDC_CLIENT_SECRET"),
        ({"oidc_metadata_url": ""}, "STALWART_OIDC_METADATA_URL"),
        ({"oidc_provider_name": "my_idp"}, "STALWART_OIDC_PROVIDER_NAME"),
        ({"oidc_redirect_uri": "https://app.example/callback"}, "must end in /oauth2callback"),
        ({"oidc_metadata_url": "idp.example"}, "STALWART_OIDC_METADATA_URL"),
        ({"auth_mode": "off"}, "needs STALWART_AUTH_MODE=local"),
        (
            {"environment": "production", "oidc_metadata_url": "http://idp.example/x"},
            "is not an https:// URL",
        ),
    ],
)
def test_bad_oidc_settings_are_named(change: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(**{**OIDC, **change})
    assert expected in caught.value.message


def test_password_login_off_needs_oidc() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(password_login=False)
    assert "STALWART_PASSWORD_LOGIN" in caught.value.message
    assert not load_config(**OIDC, password_login=False).password_login


def app_run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "stalwart.cli.main", "run", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=child_env(**env),
        timeout=120,
    )


@pytest.mark.parametrize(
    ("missing", "setting"),
    [
        ("STALWART_OIDC_CLIENT_ID", "STALWART_OIDC_CLIENT_ID"),
        ("STALWART_OIDC_CLIENT_SECRET", "STALWART_OIDC_CLIENT_SECRET"),
        ("STALWART_OIDC_REDIRECT_URI", "STALWART_OIDC_REDIRECT_URI"),
    ],
)
def test_app_run_exits_2_naming_a_missing_oidc_setting(missing: str, setting: str) -> None:
    env = {f"STALWART_{k.upper()}": v for k, v in OIDC.items()}
    del env[missing]
    out = app_run(**env)
    assert out.returncode == 2, out.stderr
    assert setting in out.stderr
    assert "s3cret-client-value" not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
