"""Add proxy_keys.prior_key_hashes: the hashes a key had before it was regenerated.

``POST /key/regenerate`` gives a key a new secret, and so a new hash, while its alias, limits and
budget stay. The ledger's rows keep the hash the call was made with, so the key's spend (its
budget, ``/key/info``, its own ``/spend/keys``) is summed over this list and its current hash;
before, a regenerated key started again from $0 and could spend its budget twice.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column("proxy_keys", sa.Column("prior_key_hashes", json))


def downgrade() -> None:
    # A regenerated key's earlier hashes are what its spend is summed over: dropped, its spend
    # (and its budget) would start again from $0.
    import json as json_text

    from tracking.integrations.sql._migrate import SchemaVersionError, refuse_offline

    refuse_offline("no regenerated key has earlier hashes its spend is summed over")
    held = 0
    for (value,) in op.get_bind().execute(sa.text("SELECT prior_key_hashes FROM proxy_keys")):
        if isinstance(value, str):
            value = json_text.loads(value)
        held += bool(value)
    if held:
        raise SchemaVersionError(
            f"proxy_keys: {held} regenerated key(s) have earlier hashes their spend is summed "
            "over; dropped, their spend and budgets would start again from $0 (delete those "
            "keys first if they are to go)"
        )
    with op.batch_alter_table("proxy_keys") as batch:
        batch.drop_column("prior_key_hashes")
