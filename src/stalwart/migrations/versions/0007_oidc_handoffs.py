"""oidc_handoffs: one-time codes that hand an OIDC sign-in to the login cookie

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stalwart.models.base import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: the release before this one never reads it (expand step).
    op.create_table(
        "oidc_handoffs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("identity", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("next_path", sa.String(2000), nullable=False),
        sa.Column("issuer", sa.String(255), nullable=True),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_handoffs")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_oidc_handoffs_code_hash")),
    )
    op.create_index(op.f("ix_oidc_handoffs_identity"), "oidc_handoffs", ["identity"])


def downgrade() -> None:
    op.drop_index(op.f("ix_oidc_handoffs_identity"), table_name="oidc_handoffs")
    op.drop_table("oidc_handoffs")
