"""Create proxy_end_user_deletions: when ``/customer/delete`` last deleted each end user.

LiteLLM records an end user in its customer table at their first call, so its ``/customer/info``
and ``/customer/list`` know every end user who called; here an end user who only called is known
from the ledger's rows, read when asked (no call writes anything for it). Those rows stay when the
end user is deleted, so the deletion is remembered: an end user without a ``proxy_end_users`` row
is known again only by a call started at or after their deletion, and counts only such calls, as
LiteLLM's row made again by the next call starts from that call's spend. One row per end user
deleted, written by ``/customer/delete`` alone.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_end_user_deletions",
        sa.Column("end_user_id", sa.String(), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    # Dropped, every end user deleted after calling would be known again (listed, their old
    # calls counted) once upgraded back.
    from tracking.integrations.sql._migrate import refuse_dropping_rows

    refuse_dropping_rows(
        op.get_bind(),
        "proxy_end_user_deletions",
        "delete them first if the deleted end users are to be known again from their calls",
        rows_are="end users deleted by /customer/delete",
    )
    op.drop_table("proxy_end_user_deletions")
