"""Create the spend_daily view: spend per UTC day, end user and model.

A view, not a table the writer maintains: it is always exactly what spend_logs says (a replayed
row cannot double count it), and it costs the writer nothing. The (start_time) index keeps a
query over a few days cheap. On SQLite ``day`` is ``YYYY-MM-DD`` text; on PostgreSQL a DATE.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-20
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_DAY = {
    "postgresql": "CAST(start_time AT TIME ZONE 'UTC' AS DATE)",
    "sqlite": "date(start_time)",
}


def upgrade() -> None:
    day = _DAY[op.get_bind().dialect.name]
    # The only interpolation is a constant from _DAY: nothing here comes from outside.
    op.execute(
        f"""
        CREATE VIEW spend_daily AS
        SELECT
            {day} AS day,
            end_user,
            model,
            COUNT(*) AS requests,
            SUM(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) AS failures,
            SUM(images_returned) AS images,
            COALESCE(SUM(cost_usd), 0) AS cost_usd,
            SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_requests
        FROM spend_logs
        GROUP BY {day}, end_user, model
        """  # noqa: S608
    )


def downgrade() -> None:
    op.execute("DROP VIEW spend_daily")
