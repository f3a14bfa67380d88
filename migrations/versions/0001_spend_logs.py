"""Create spend_logs: one row per image-edit call, keyed by request_id, with its indexes.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "spend_logs",
        sa.Column("request_id", sa.String(), primary_key=True),
        sa.Column("call_type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("upstream_request_id", sa.String()),
        sa.Column("end_user", sa.String()),
        sa.Column("api_key_hash", sa.String()),
        sa.Column("key_alias", sa.String()),
        sa.Column("team", sa.String()),
        sa.Column("tags", _json()),
        sa.Column("metadata", _json()),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("model_group", sa.String()),
        sa.Column("served_model", sa.String()),
        sa.Column("provider", sa.String()),
        sa.Column("deployment_id", sa.String()),
        sa.Column("api_base", sa.String()),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("images_returned", sa.Integer(), nullable=False),
        sa.Column("size", sa.String()),
        sa.Column("quality", sa.String()),
        sa.Column("input_text_tokens", sa.Integer()),
        sa.Column("input_image_tokens", sa.Integer()),
        sa.Column("cached_input_tokens", sa.Integer()),
        sa.Column("output_tokens", sa.Integer()),
        sa.Column("total_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Numeric(20, 10)),
        sa.Column("cost_per_image_usd", sa.Numeric(20, 10)),
        sa.Column("cost_source", sa.String(), nullable=False),
        sa.Column("price_ref", sa.String()),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("fallback_from", _json()),
        sa.Column("error_type", sa.String()),
        sa.Column("http_status", sa.Integer()),
    )
    op.create_index("ix_spend_logs_end_user_start_time", "spend_logs", ["end_user", "start_time"])
    op.create_index("ix_spend_logs_model_start_time", "spend_logs", ["model", "start_time"])
    op.create_index(
        "ix_spend_logs_api_key_hash_start_time", "spend_logs", ["api_key_hash", "start_time"]
    )
    op.create_index("ix_spend_logs_start_time", "spend_logs", ["start_time"])


def downgrade() -> None:
    # Its rows are the ledger: removing the ledger's tables must not lose what was billed.
    from tracking.integrations.sql._migrate import refuse_dropping_rows

    refuse_dropping_rows(
        op.get_bind(),
        "spend_logs",
        "copy them elsewhere (or drop the table yourself) before removing the ledger's tables",
    )
    op.drop_index("ix_spend_logs_start_time", table_name="spend_logs")
    op.drop_index("ix_spend_logs_api_key_hash_start_time", table_name="spend_logs")
    op.drop_index("ix_spend_logs_model_start_time", table_name="spend_logs")
    op.drop_index("ix_spend_logs_end_user_start_time", table_name="spend_logs")
    op.drop_table("spend_logs")
