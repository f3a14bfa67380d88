"""Add proxy_keys.updated_at: when a key's record last changed.

A key's budget counter in Redis is started again from the ledger when it was seeded before this
time, as an end user's is before their record's ``updated_at``: a budget changed on an instance
that dies before reaching Redis holds on every instance all the same (until 2026-12-07 the
counter seeded before the change was trusted until it had been idle for an hour). The keys that
exist when this runs get null, an unknown time: their counters are trusted as before until the
key is next changed (``/key/update``, ``/key/regenerate``), which sets it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("proxy_keys", sa.Column("updated_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # Only a time the counters compare with: dropped, they are trusted as before 0011.
    with op.batch_alter_table("proxy_keys") as batch:
        batch.drop_column("updated_at")
