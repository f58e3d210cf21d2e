"""Declarative base and the columns most tables share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, MetaData, TypeDecorator, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

# Named constraints so that Alembic migrations (and SQLite batch mode) can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: ``info`` of a column holding personal data (a name, an e-mail address, an IP address):
#: audit diffs show only whether it changed, and log maskers can find it here
PII: dict[str, Any] = {"pii": True}
#: ``info`` of a column holding a secret (a password hash): never shown, in audit or logs
SECRET: dict[str, Any] = {"secret": True}


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC and timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC timestamp is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite keeps no zone: what we stored was UTC.
        stamp: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp


class Base(DeclarativeBase):
    """Base of every table."""

    metadata = MetaData(naming_convention=NAMING)


class TimestampedMixin:
    """``created_at``/``updated_at`` in UTC."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class VersionedMixin:
    """An integer version, bumped on every update, for optimistic concurrency.

    SQLAlchemy puts the version in each UPDATE's WHERE clause (``version_id_col``), so a
    write based on a stale row fails instead of silently overwriting a newer one.
    """

    version: Mapped[int] = mapped_column(Integer, nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


def sensitive_fields(model: type[Base]) -> frozenset[str]:
    """Attribute names of ``model``'s columns marked ``PII`` or ``SECRET``."""
    return frozenset(
        attr.key
        for attr in inspect(model).column_attrs
        if any(col.info.get("pii") or col.info.get("secret") for col in attr.columns)
    )


def marked_fields() -> tuple[frozenset[str], frozenset[str]]:
    """Attribute names of the columns marked ``PII``, and of those marked ``SECRET``, over
    every table mapped so far (import ``stalwart.models`` first to have them all)."""
    pii: set[str] = set()
    secret: set[str] = set()
    for mapper in Base.registry.mappers:
        for attr in mapper.column_attrs:
            infos = [col.info for col in attr.columns]
            if any(info.get("secret") for info in infos):
                secret.add(attr.key)
            elif any(info.get("pii") for info in infos):
                pii.add(attr.key)
    return frozenset(pii), frozenset(secret)
