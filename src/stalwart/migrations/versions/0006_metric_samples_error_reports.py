"""metric_samples (System page history) and error_reports (stored log_error reports)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stalwart.models.base import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite, so ids autoincrement on both.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # New tables only: the release before this one never reads them (expand step).
    op.create_table(
        "metric_samples",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("instance", sa.String(255), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("interactions", sa.Integer(), nullable=False),
        sa.Column("interaction_p95_s", sa.Float(), nullable=True),
        sa.Column("page_switches", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("transactions", sa.Integer(), nullable=False),
        sa.Column("db_retries", sa.Integer(), nullable=False),
        sa.Column("db_failures", sa.Integer(), nullable=False),
        sa.Column("jobs_run", sa.Integer(), nullable=False),
        sa.Column("jobs_failed", sa.Integer(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_samples")),
    )
    op.create_index("ix_metric_samples_ts", "metric_samples", ["ts"])
    op.create_table(
        "error_reports",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("error_id", sa.String(32), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("stack", sa.Text(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("instance", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_reports")),
    )
    op.create_index("ix_error_reports_ts", "error_reports", ["ts"])
    op.create_index(op.f("ix_error_reports_error_id"), "error_reports", ["error_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_error_reports_error_id"), table_name="error_reports")
    op.drop_index("ix_error_reports_ts", table_name="error_reports")
    op.drop_table("error_reports")
    op.drop_index("ix_metric_samples_ts", table_name="metric_samples")
    op.drop_table("metric_samples")
