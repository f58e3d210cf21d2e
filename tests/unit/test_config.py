"""Settings come from the environment, have safe defaults, and fail clearly when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from stalwart.core.config import AppConfig, load_config
from stalwart.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STALWART_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_setup() -> None:
    cfg = load_config()
    assert cfg.environment == "development"
    assert cfg.resolved_database_url == "sqlite:///data/stalwart.db"
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8501)


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_PORT", "9000")
    monkeypatch.setenv("STALWART_DATA_DIR", "/srv/stalwart")
    monkeypatch.setenv("STALWART_LOG_LEVEL", "debug")
    monkeypatch.setenv("PORT", "1")  # unprefixed: ignored
    cfg = load_config()
    assert cfg.port == 9000
    assert cfg.data_dir == Path("/srv/stalwart")
    assert cfg.log_level == "DEBUG"
    assert cfg.resolved_database_url == "sqlite:////srv/stalwart/stalwart.db"


def test_postgres_url_uses_psycopg3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_DATABASE_URL", "postgresql://app:s3cret@db:5432/stalwart")
    assert load_config().resolved_database_url == "postgresql+psycopg://app:s3cret@db:5432/stalwart"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STALWART_DATABASE_URL", "not a url", "not a database URL"),
        ("STALWART_DATABASE_URL", "mysql://db/x", "unsupported database 'mysql'"),
        ("STALWART_DATABASE_URL", "postgresql:///nohost", "needs a host"),
        ("STALWART_PORT", "99999", "less than or equal to 65535"),
        ("STALWART_PORT", "eighty", "valid integer"),
        ("STALWART_ENVIRONMENT", "staging", "development"),
        ("STALWART_METRICS_TOKEN", "short", "at least 16 characters"),
        ("STALWART_SESSION_IDLE_TIMEOUT_S", "90000", "longer than the absolute timeout"),
        ("STALWART_SESSION_TOUCH_INTERVAL_S", "1800", "not shorter than the idle timeout"),
        ("STALWART_LOGIN_LOCKOUT_S", "7200", "<= maximum lockout (3600.0 s)"),
        ("STALWART_PASSWORD_HASH_MEMORY_KIB", "16", "less than 8 KiB for each of 4 lanes"),
        ("STALWART_OIDC_DEFAULT_ROLE", "owner", "unknown role 'owner'"),
        ("STALWART_CUSTOM_ROLES", "{", "not JSON"),
    ],
)
def test_invalid_setting_names_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert name in info.value.message
    assert expected in info.value.message
    assert "(use " in info.value.message  # the fix is spelled out
    assert "environment" in info.value.action


def test_production_refuses_the_default_or_a_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="STALWART_SECRET_KEY"):
        load_config()
    monkeypatch.setenv("STALWART_SECRET_KEY", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        load_config()
    monkeypatch.setenv("STALWART_SECRET_KEY", "x" * 40)
    assert load_config().environment == "production"


def test_secrets_never_show_in_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_SECRET_KEY", "very-secret-value-0123456789abcdef")
    cfg = load_config()
    assert "very-secret" not in repr(cfg)
    assert "very-secret" not in str(cfg.model_dump())
    assert cfg.secret_key.get_secret_value().startswith("very-secret")


def test_settings_are_immutable() -> None:
    cfg = AppConfig()
    with pytest.raises(ValueError):
        cfg.port = 1  # type: ignore[misc]


def test_production_refuses_password_hashing_below_owasps_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STALWART_ENVIRONMENT", "production")
    monkeypatch.setenv("STALWART_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("STALWART_PASSWORD_HASH_MEMORY_KIB", "8192")
    with pytest.raises(ConfigError, match="at least 12288 KiB with time cost 3"):
        load_config()
    monkeypatch.setenv("STALWART_PASSWORD_HASH_TIME_COST", "5")
    assert load_config().password_hash_memory_kib == 8192  # 7168 KiB suffice with 5 passes
