"""events (product tracking) and deployments (deploy markers)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stalwart.models.base import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite, so ids autoincrement on both.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # New tables only: the release before this one never reads them (expand step).
    op.create_table(
        "events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("props", sa.JSON(), nullable=False),
        sa.Column("session", sa.String(64), nullable=True),
        sa.Column("user_pseudonym", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("page", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_ts", "events", ["ts"])
    op.create_index("ix_events_name_ts", "events", ["name", "ts"])
    op.create_table(
        "deployments",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("migration_head", sa.String(32), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index(op.f("ix_deployments_started_at"), "deployments", ["started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_deployments_started_at"), table_name="deployments")
    op.drop_table("deployments")
    op.drop_index("ix_events_name_ts", table_name="events")
    op.drop_index("ix_events_ts", table_name="events")
    op.drop_table("events")
