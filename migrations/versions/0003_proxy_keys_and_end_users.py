"""Create the proxy's tables: proxy_keys (hashed virtual keys) and proxy_end_users (budgets).

Only the proxy's own tables; spend_logs is untouched. Keys are stored as SHA-256 digests, never
as text a caller could use.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "proxy_keys",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("key_alias", sa.String()),
        sa.Column("team", sa.String()),
        sa.Column("models", _json()),
        sa.Column("max_budget_usd", sa.Numeric(20, 10)),
        sa.Column("rpm_limit", sa.Integer()),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "proxy_end_users",
        sa.Column("end_user_id", sa.String(), primary_key=True),
        sa.Column("budget_usd", sa.Numeric(20, 10)),
        sa.Column("budget_period", sa.String(16)),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    # Keys and end users' budgets and blocks: dropped, every key stops working and every budget
    # and block is gone without a word.
    from tracking.integrations.sql._migrate import refuse_dropping_rows

    for table, rows_are in (
        ("proxy_end_users", "end users' budgets and blocks"),
        ("proxy_keys", "the proxy's virtual keys and their budgets"),
    ):
        refuse_dropping_rows(
            op.get_bind(),
            table,
            "delete them first (the proxy's /key/delete, /customer/delete) if they are to go",
            rows_are=rows_are,
        )
    op.drop_table("proxy_end_users")
    op.drop_table("proxy_keys")
