"""jobs.dispatched_at: when the sweeper last looked after a waiting job's dispatch

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stalwart.models.base import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column the release before this one never reads (expand step): migrate
    # first, then roll the new release out.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dispatched_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dispatched_at")
