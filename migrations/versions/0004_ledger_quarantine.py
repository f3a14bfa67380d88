"""Create ledger_quarantine: rows the database refused for good, kept with its error text.

A row PostgreSQL cannot store (a NUL in text, a number out of range, an index entry over the
B-tree size limit) used to block the rows behind it or sit in a process's local outbox; it now
lands here, where ``tracking ledger quarantine list|replay`` finds it. No index covers ``line``,
so nothing about a row can make this table refuse it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_quarantine",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String()),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    # Its rows are billed calls not yet in spend_logs: dropping them would lose that money.
    from tracking.integrations.sql._migrate import refuse_dropping_rows

    refuse_dropping_rows(
        op.get_bind(),
        "ledger_quarantine",
        "not yet in spend_logs; replay them (`tracking ledger quarantine replay`) or copy them "
        "elsewhere before migrating below revision 0004",
    )
    op.drop_table("ledger_quarantine")
