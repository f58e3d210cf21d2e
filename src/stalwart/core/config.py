"""Application settings, read from the environment (prefix ``STALWART_``) only.

Safe defaults make ``app run`` work on a laptop with nothing but Python. Secrets are
``SecretStr`` and are never read from a file in the repository.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from stalwart.core.rbac import Roles, parse_custom_roles
from stalwart.errors import ConfigError

ENV_PREFIX = "STALWART_"
DEV_SECRET = "dev-only-insecure-secret"  # noqa: S105 - the documented development default

_FIXES: dict[str, str] = {
    "database_url": (
        "use sqlite:///path/to/file.db or "
        "postgresql://user:password@host:5432/dbname (or unset it for the embedded SQLite)"
    ),
    "environment": "use one of: development, test, production",
    "port": "use a free TCP port between 1 and 65535",
    "log_level": "use one of: DEBUG, INFO, WARNING, ERROR",
    "secret_key": "set STALWART_SECRET_KEY to a random string of at least 32 characters",
    "jobs_engine": "use embedded (in-process workers) or rq (RQ workers on Redis)",
    "redis_url": "use redis://host:6379/0 (or rediss:// for TLS)",
    "jobs_lease_s": "use a lease of at least three heartbeat intervals",
    "cache_backend": "use memory (one app process) or redis (shared by several processes)",
    "metrics_token": "use a random string of at least 16 characters (openssl rand -hex 24)",
    "session_idle_timeout_s": (
        "use seconds of inactivity after which a sign-in ends, at most the absolute timeout"
    ),
    "session_touch_interval_s": "use a touch interval shorter than the idle timeout (e.g. 60)",
    "login_lockout_s": (
        "use STALWART_LOGIN_LOCKOUT_S <= STALWART_LOGIN_LOCKOUT_MAX_S <= "
        "STALWART_LOGIN_FAILURE_WINDOW_S"
    ),
    "password_hash_memory_kib": (
        "use OWASP's minimum or more: 19456 KiB with time cost 2 (or 47104 with 1, 12288 with "
        "3, 9216 with 4, 7168 with 5), and at least 8 KiB per lane of parallelism"
    ),
    "custom_roles": (
        'use a JSON object of role name to permission names, e.g. {"auditor": ["view", '
        '"export"]}; permissions: view, edit_forms, run_jobs, manage_jobs, export, admin'
    ),
    "oidc_default_role": "use a built-in role (viewer, editor, admin) or a custom one",
    "oidc_provider_name": (
        "use a short name of lower-case letters, digits and '-', e.g. keycloak (no '_')"
    ),
    "oidc_client_id": "set the client id the identity provider gave this app",
    "oidc_client_secret": "set the client secret the identity provider gave this app",
    "oidc_metadata_url": (
        "use the provider's discovery URL, https://.../.well-known/openid-configuration"
    ),
    "oidc_redirect_uri": (
        "use this app's public URL ending in /oauth2callback, e.g. "
        "https://app.example.com/oauth2callback (registered at the provider)"
    ),
    "password_login": "use true (passwords and OIDC) or false (OIDC only; needs OIDC set up)",
    "auth_mode": "use local (sign-in with accounts) or off (development and tests only)",
    "auth_off_role": "use a built-in role (viewer, editor, admin) or a custom one",
    "trusted_proxies": "use a comma-separated list of IP addresses or CIDRs, e.g. 10.0.0.5/32",
    "upload_max_bytes": "use a size in bytes between 1024 and 2147483648",
    "upload_allowed_types": "use a comma-separated list of extensions, e.g. csv,json,pdf",
    "input_max_chars": "use a number of characters between 100 and 10000000",
    "pii_log_mode": "use mask (a fixed marker) or hash (a keyed pseudonym)",
    "min_free_bytes": "use a number of bytes, e.g. 268435456 for 256 MiB (0 turns it off)",
    "health_check_timeout_s": "use seconds between 0 and 60, e.g. 2",
    "alert_webhook_url": "use an http(s) URL that accepts a JSON POST (or unset it)",
    "alert_interval_s": "use seconds between 0.05 and 3600, e.g. 30",
    "metrics_sample_interval_s": "use seconds between 0 (off) and 3600, e.g. 60",
    "history_retention_days": "use days between 1 and 3650, e.g. 14",
}
#: OWASP's argon2id minimums: time cost -> memory in KiB (more time allows less memory)
_OWASP_ARGON2: Final = {1: 47104, 2: 19456, 3: 12288, 4: 9216, 5: 7168}
#: an OIDC provider's name in Streamlit's [auth.NAME] (Streamlit refuses "_" in it)
_PROVIDER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class AppConfig(BaseSettings):
    """Every setting of Stalwart; see ``.env.example`` for what each one does."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("data")
    database_url: str = ""
    db_busy_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_connect_timeout_s: int = Field(default=5, ge=1, le=300)
    tx_max_attempts: int = Field(default=5, ge=1, le=50)
    tx_backoff_initial_s: float = Field(default=0.05, ge=0.0, le=10.0)
    tx_backoff_max_s: float = Field(default=2.0, ge=0.0, le=60.0)
    migrate_on_start: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8501, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    # Background jobs (see OPERATIONS.md, "Jobs").
    jobs_engine: Literal["embedded", "rq"] = "embedded"
    #: embedded: worker threads per app process (0: this process runs no jobs)
    jobs_workers: int = Field(default=2, ge=0, le=64)
    jobs_heartbeat_s: float = Field(default=2.0, gt=0.0, le=300.0)
    #: a running job whose heartbeat is older than this is presumed dead and re-queued
    jobs_lease_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    #: how long a cancelled running job may take to stop by itself before it is stopped hard
    jobs_cancel_grace_s: float = Field(default=10.0, ge=0.0, le=3600.0)
    jobs_poll_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)
    jobs_backoff_initial_s: float = Field(default=5.0, ge=0.0, le=3600.0)
    jobs_backoff_max_s: float = Field(default=300.0, ge=0.0, le=86_400.0)
    #: rq: the queue workers listen on, and where Redis is
    jobs_queue: str = Field(default="stalwart", min_length=1, max_length=100)
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    #: Streamlit's full garbage collection after every script run (runner.postScriptGC): off,
    #: Python's own collector frees cycles (cheaply: the start-up heap is frozen)
    gc_after_every_run: bool = False
    #: the bearer token /metrics asks for; unset, /metrics answers clients on this machine only
    metrics_token: SecretStr | None = None
    #: a directory every process of this installation writes its metrics to, so that /metrics
    #: of any of them shows all (prometheus_client's multiprocess mode, which
    #: PROMETHEUS_MULTIPROC_DIR also turns on; a tmpfs, emptied before the processes start);
    #: unset: /metrics shows this process only
    metrics_dir: Path | None = None
    #: run cron-like schedules in this process (one process wins the lock; the rest wait)
    scheduler_enabled: bool = True
    # The cache (see OPERATIONS.md, "Cache").
    #: memory: in this process only (one app process); redis: shared by every app process
    cache_backend: Literal["memory", "redis"] = "memory"
    #: entries this process keeps in memory (memory backend, or redis's local tier)
    cache_max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    #: bytes of JSON (plus a fixed overhead per entry) this process keeps in memory at most
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=64 * 1024**3)
    #: redis: the prefix of every key the cache writes (lets several apps share one Redis)
    cache_redis_prefix: str = Field(default="stalwart:cache:", min_length=1, max_length=100)
    #: redis: also keep read values in this process (checked against Redis on every read)
    cache_redis_local: bool = True
    # Accounts, sign-in and sessions (see SECURITY.md; OPERATIONS.md, "Users").
    #: a login session unused for this long ends (the next interaction asks to sign in again)
    session_idle_timeout_s: float = Field(default=1800.0, gt=0.0, le=30 * 86_400.0)
    #: a login session ends this long after sign-in, however much it is used
    session_absolute_timeout_s: float = Field(default=43_200.0, gt=0.0, le=366 * 86_400.0)
    #: last use is written at most this often per session (so a check is not a write)
    session_touch_interval_s: float = Field(default=60.0, ge=0.0, le=3600.0)
    #: failed sign-ins in a row that lock an account (unknown usernames are counted too)
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    #: failed sign-ins in a row, to any accounts, that lock a client (its address)
    login_client_max_failures: int = Field(default=20, ge=1, le=100_000)
    #: the first lock lasts this long; each failure after a lock doubles it, up to the max
    login_lockout_s: float = Field(default=60.0, gt=0.0, le=86_400.0)
    login_lockout_max_s: float = Field(default=3600.0, gt=0.0, le=30 * 86_400.0)
    #: failures are forgotten after this long without one
    login_failure_window_s: float = Field(default=3600.0, gt=0.0, le=30 * 86_400.0)
    password_min_length: int = Field(default=12, ge=8, le=128)
    #: argon2id parameters (argon2-cffi's RFC 9106 low-memory profile; above OWASP's minimum)
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65_536, ge=8, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=64)
    #: roles beyond viewer/editor/admin, as JSON: {"auditor": ["view", "export"]}
    custom_roles: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    #: OIDC (st.login): the role of a user created at their first sign-in
    oidc_default_role: str = "viewer"
    #: OIDC: create a user at the first sign-in of an unknown identity (else refuse it)
    oidc_auto_create: bool = True
    #: OIDC (st.login) is on when these are set: the provider's name (its button says "Sign
    #: in with" the label, default the name), the client registered there, its discovery URL,
    #: and this app's callback URL (``.../oauth2callback``; ``{port}`` is replaced)
    oidc_provider_name: str = ""
    oidc_provider_label: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = None
    oidc_metadata_url: str = ""
    oidc_redirect_uri: str = ""
    #: false: the sign-in page offers only OIDC (no password form, POST /auth/login refused)
    password_login: bool = True
    #: local: sign in with a username and password (argon2id); off: no sign-in, every visitor
    #: acts with ``auth_off_role`` (development and tests only; refused in production)
    auth_mode: Literal["local", "off"] = "local"
    auth_off_role: str = "admin"
    #: proxies (CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed, e.g. nginx's
    #: address; the client's address then comes from the header (for sign-in throttling)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: the largest file a user may upload (bytes); Streamlit's own limit is set from it
    upload_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=2 * 1024**3)
    #: file extensions an upload may have (lower case, no dot); a widget may allow fewer
    upload_allowed_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["csv", "json", "txt", "pdf", "png", "jpg", "jpeg", "xlsx"]
    )
    #: the most characters one text input may hold; longer input is refused with a message
    input_max_chars: int = Field(default=100_000, ge=100, le=10_000_000)
    #: how PII in logs and error reports is hidden: mask (a fixed marker) or hash (a keyed
    #: pseudonym, so equal values can be matched without being shown)
    pii_log_mode: Literal["mask", "hash"] = "mask"
    # Health and alerts (see OPERATIONS.md, "Health checks" and "Alerts").
    #: below this many bytes free on the data directory's filesystem the app is not ready
    min_free_bytes: int = Field(default=256 * 1024**2, ge=0, le=2**50)
    #: each readiness check answers within this long or counts as failed (a hung dependency)
    health_check_timeout_s: float = Field(default=2.0, gt=0.0, le=60.0)
    #: the embedded alert dispatcher posts firing and resolved alerts here (unset: it is off)
    alert_webhook_url: SecretStr | None = None
    #: how often the embedded alert dispatcher evaluates its conditions
    alert_interval_s: float = Field(default=30.0, ge=0.05, le=3600.0)
    #: how often each app process writes a row of metric aggregates for the System page
    #: (0: never; the page then has no charts over time)
    metrics_sample_interval_s: float = Field(default=60.0, ge=0.0, le=3600.0)
    #: how long metric samples and stored error reports are kept
    history_retention_days: int = Field(default=14, ge=1, le=3650)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        backend = url.get_backend_name()
        if backend not in {"sqlite", "postgresql"}:
            raise ValueError(f"unsupported database {backend!r}")
        if backend == "postgresql" and not url.host and not url.query.get("host"):
            raise ValueError("a PostgreSQL URL needs a host")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("not a Redis URL")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("not an http:// or https:// URL")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("a metrics token needs at least 16 characters")
        return value

    @field_validator("custom_roles", mode="before")
    @classmethod
    def _decode_roles(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
        return value

    @field_validator("custom_roles")
    @classmethod
    def _check_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        parsed = parse_custom_roles(value)
        return {name: sorted(p.value for p in perms) for name, perms in parsed.items()}

    @model_validator(mode="after")
    def _sessions_consistent(self) -> AppConfig:
        if self.session_idle_timeout_s > self.session_absolute_timeout_s:
            raise ValueError(
                f"session_idle_timeout_s: {self.session_idle_timeout_s} s is longer than "
                f"the absolute timeout ({self.session_absolute_timeout_s} s)"
            )
        if self.session_touch_interval_s >= self.session_idle_timeout_s:
            raise ValueError(
                f"session_touch_interval_s: {self.session_touch_interval_s} s is not shorter "
                f"than the idle timeout ({self.session_idle_timeout_s} s)"
            )
        return self

    @model_validator(mode="after")
    def _lockouts_consistent(self) -> AppConfig:
        if not (self.login_lockout_s <= self.login_lockout_max_s <= self.login_failure_window_s):
            raise ValueError(
                f"login_lockout_s: need lockout ({self.login_lockout_s} s) <= maximum lockout "
                f"({self.login_lockout_max_s} s) <= failure window "
                f"({self.login_failure_window_s} s)"
            )
        return self

    @model_validator(mode="after")
    def _hash_parameters(self) -> AppConfig:
        memory, lanes = self.password_hash_memory_kib, self.password_hash_parallelism
        if memory < 8 * lanes:
            raise ValueError(
                f"password_hash_memory_kib: {memory} KiB is less than 8 KiB for each of "
                f"{lanes} lanes"
            )
        if self.environment == "production":
            needed = _OWASP_ARGON2[min(self.password_hash_time_cost, 5)]
            if memory < needed:
                raise ValueError(
                    f"password_hash_memory_kib: production needs at least {needed} KiB with "
                    f"time cost {self.password_hash_time_cost} (OWASP's argon2id minimum)"
                )
        return self

    @field_validator("trusted_proxies", "upload_allowed_types", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        networks = []
        for item in value:
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return networks

    @field_validator("upload_allowed_types")
    @classmethod
    def _check_types(cls, value: list[str]) -> list[str]:
        types = []
        for item in value:
            ext = item.strip().lower().removeprefix(".")
            if not ext.isalnum() or len(ext) > 10:
                raise ValueError(f"{item!r} is not a file extension (letters and digits)")
            types.append(ext)
        return types

    @model_validator(mode="after")
    def _oidc_role_exists(self) -> AppConfig:
        roles = Roles(self.custom_roles)
        if not roles.exists(self.oidc_default_role):
            raise ValueError(
                f"oidc_default_role: unknown role {self.oidc_default_role!r} "
                f"(roles: {', '.join(roles.names)})"
            )
        return self

    @model_validator(mode="after")
    def _oidc_settings(self) -> AppConfig:
        secret = self.oidc_client_secret.get_secret_value() if self.oidc_client_secret else ""
        values = {
            "oidc_provider_name": self.oidc_provider_name,
            "oidc_client_id": self.oidc_client_id,
            "oidc_client_secret": secret,
            "oidc_metadata_url": self.oidc_metadata_url,
            "oidc_redirect_uri": self.oidc_redirect_uri,
        }
        if not any(values.values()):
            if not self.password_login:
                raise ValueError(
                    "password_login: false leaves no way to sign in without OIDC set up"
                )
            return self
        missing = [f"{ENV_PREFIX}{name.upper()}" for name, value in values.items() if not value]
        if missing:
            first = next(name for name, value in values.items() if not value)
            raise ValueError(f"{first}: OIDC sign-in is half set up; missing {', '.join(missing)}")
        if not _PROVIDER_NAME.fullmatch(self.oidc_provider_name):
            raise ValueError(f"oidc_provider_name: {self.oidc_provider_name!r} is not allowed")
        if self.auth_mode != "local":
            raise ValueError("oidc_provider_name: OIDC sign-in needs STALWART_AUTH_MODE=local")
        schemes = ("https://",) if self.environment == "production" else ("https://", "http://")
        for name in ("oidc_metadata_url", "oidc_redirect_uri"):
            url = values[name]
            parts = urlsplit(url)
            if not url.startswith(schemes) or not parts.netloc:
                kind = "an https:// URL" if self.environment == "production" else "an http(s) URL"
                raise ValueError(f"{name}: {url!r} is not {kind}")
        if urlsplit(self.oidc_redirect_uri).path != "/oauth2callback":
            raise ValueError(
                f"oidc_redirect_uri: {self.oidc_redirect_uri!r} must end in /oauth2callback "
                "(the path Streamlit's st.login comes back to)"
            )
        return self

    @property
    def oidc_enabled(self) -> bool:
        """True when sign-in through an OIDC provider (``st.login``) is set up."""
        return bool(self.oidc_provider_name and self.oidc_client_id)

    @model_validator(mode="after")
    def _auth_settings(self) -> AppConfig:
        if self.auth_mode == "off" and self.environment == "production":
            raise ValueError(
                "auth_mode: production needs sign-in (STALWART_AUTH_MODE=local); 'off' lets "
                "anyone who reaches the app act as its administrator"
            )
        roles = Roles(self.custom_roles)
        if not roles.exists(self.auth_off_role):
            raise ValueError(
                f"auth_off_role: unknown role {self.auth_off_role!r} "
                f"(roles: {', '.join(roles.names)})"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> AppConfig:
        if self.jobs_lease_s < 3 * self.jobs_heartbeat_s:
            raise ValueError(
                f"jobs_lease_s: {self.jobs_lease_s} s is less than three heartbeats "
                f"({self.jobs_heartbeat_s} s each); a slow heartbeat would re-run live jobs"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> AppConfig:
        if self.environment == "production":
            secret = self.secret_key.get_secret_value()
            if secret == DEV_SECRET or len(secret) < 32:
                raise ValueError(
                    "secret_key: production needs STALWART_SECRET_KEY set to a random "
                    "string of at least 32 characters"
                )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to use: the configured one, or SQLite in ``data_dir``."""
        if not self.database_url:
            return f"sqlite:///{(self.data_dir / 'stalwart.db').as_posix()}"
        url = make_url(self.database_url)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)


def load_config(**overrides: object) -> AppConfig:
    """Read settings from the environment; fail with a message naming the setting and fix."""
    try:
        return AppConfig(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else _field_from_message(err["msg"])
            env = f"{ENV_PREFIX}{field.upper()}"
            fix = _FIXES.get(field, "see .env.example for the allowed values")
            reason = err["msg"].removeprefix("Value error, ")
            problems.append(f"{env}: {reason} ({fix})")
        raise ConfigError(
            "Invalid settings: " + "; ".join(problems),
            "Fix the setting(s) named above in the environment and start again.",
        ) from None


def _field_from_message(message: str) -> str:
    # Model-level validators put the field name first, as "field: reason".
    head = message.removeprefix("Value error, ").split(":", 1)[0].strip()
    return head if head in AppConfig.model_fields else "settings"
