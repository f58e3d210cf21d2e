"""Alembic environment: runs on the connection ``stalwart.core.migrations`` hands over."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import create_engine

from stalwart.core.logs import get_logger
from stalwart.models import Base

config = context.config
log = get_logger("stalwart.migrations")


def _on_version_apply(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    # Recorded so the caller (and the tests) can see exactly which revisions one run applied.
    # For a downgrade too, up_revision_id names the revision this step removes.
    revision = str(step.up_revision_id)
    config.attributes.setdefault("applied", []).append(revision)
    log.info("migration applied", revision=revision, upgrade=step.is_upgrade)


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # SQLite DDL is transactional here: our connections issue BEGIN IMMEDIATE themselves.
        transactional_ddl=True,
        on_version_apply=_on_version_apply,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # plain `alembic` command line, with sqlalchemy.url set in its own config
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
