"""The proxy's own tables: virtual keys (``proxy_keys``), end-user budgets (``proxy_end_users``)
and the end users ``/customer/delete`` deleted (``proxy_end_user_deletions``).

They live in the ledger's database and are created by the ledger's Alembic chain (revisions
0003, 0005, 0010 and 0011), so one ``tracking migrate`` prepares everything a proxy needs; a test
proves these objects and the migrations agree. A key is stored only as the SHA-256 hex digest of
its text: the key itself is shown once, by ``POST /key/generate``, and never kept. Money is
``NUMERIC(20, 10)`` as in ``spend_logs``; timestamps are UTC.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tracking.integrations.sql import UTCDateTime

__all__ = [
    "ACCOUNT_TABLES",
    "account_metadata",
    "end_user_deletions",
    "end_users",
    "include_account_object",
    "keys",
]


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


account_metadata = sa.MetaData()

keys = sa.Table(
    "proxy_keys",
    account_metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("key_alias", sa.String()),
    sa.Column("team", sa.String()),
    #: Model names the key may call; null means every model.
    sa.Column("models", _json()),
    sa.Column("max_budget_usd", sa.Numeric(20, 10)),
    sa.Column("rpm_limit", sa.Integer),
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    #: The hashes the key had before ``/key/regenerate`` (oldest first): its spend is summed
    #: over these and ``key_hash``; null when it was never regenerated (revision 0005).
    sa.Column("prior_key_hashes", _json()),
    #: When the key's record last changed (generated, updated, regenerated; revision 0011): its
    #: budget counter in Redis seeded before it starts again from the ledger. Null for the keys
    #: older than revision 0011 until they next change: their counters are trusted until idle.
    sa.Column("updated_at", UTCDateTime()),
)

end_users = sa.Table(
    "proxy_end_users",
    account_metadata,
    sa.Column("end_user_id", sa.String(), primary_key=True),
    sa.Column("budget_usd", sa.Numeric(20, 10)),
    #: daily, monthly or total; null when there is no budget.
    sa.Column("budget_period", sa.String(16)),
    sa.Column("blocked", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

#: When each end user was last deleted (``/customer/delete``; revision 0010): an end user known
#: from their calls alone (no ``proxy_end_users`` row) is known again only by a call started at
#: or after it, and every end user, given a record again or not, counts only those calls, in
#: their spend and their budget (:mod:`.known_end_users`). Written by ``/customer/delete`` alone,
#: never by a call; kept when the end user is made again.
end_user_deletions = sa.Table(
    "proxy_end_user_deletions",
    account_metadata,
    sa.Column("end_user_id", sa.String(), primary_key=True),
    sa.Column("deleted_at", UTCDateTime(), nullable=False),
)

ACCOUNT_TABLES = frozenset(account_metadata.tables)


def include_account_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter for comparing these tables alone with a migrated database."""
    if type_ == "table":
        return name in ACCOUNT_TABLES
    table = getattr(obj, "table", None)
    if table is not None:
        return str(table.name) in ACCOUNT_TABLES
    return True
