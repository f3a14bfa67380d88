"""Flag the spend_daily view's estimates and quarantined calls as every spend report does.

``spend_daily`` (made over ``spend_calls`` by 0006, again by 0007) said how many calls of a day,
end user and model came from the quarantine (``quarantined_requests``), not what they cost, and
nothing of the calls recorded at an estimate (``cost_source`` ``estimate``: billed, their real
cost unknown), which ``tracking spend`` and the proxy's routes flag as ``estimated_requests`` /
``estimated_usd`` and ``quarantined_requests`` / ``quarantined_usd``. The view is made again
with those pairs, named as the reports name them, after ``unpriced_requests``:

    estimated_requests, estimated_usd, quarantined_requests, quarantined_usd

Each amount is summed as the view's ``cost_usd`` is (part of it): ``NUMERIC`` on PostgreSQL; a
REAL sum on SQLite, which has no decimal type. The view is 0006's (a migration is frozen once
released: its module, as Alembic loaded it, gives the text) with ``quarantined_requests``
replaced by the four; ``spend_calls`` is unchanged. The way down puts 0006's view back (0007
made it again unchanged).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from types import ModuleType

from alembic import context, op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: What 0006's view says of the flagged calls, and what it says now, as the reports name them.
_BEFORE = "SUM(quarantined) AS quarantined_requests"
_FLAGGED = """SUM(CASE WHEN cost_source = 'estimate' THEN 1 ELSE 0 END) AS estimated_requests,
            COALESCE(SUM(CASE WHEN cost_source = 'estimate' THEN cost_usd END), 0)
                AS estimated_usd,
            SUM(quarantined) AS quarantined_requests,
            COALESCE(SUM(CASE WHEN quarantined = 1 THEN cost_usd END), 0) AS quarantined_usd"""


def _daily_view_0006() -> str:
    """``spend_daily`` as 0006 (and 0007) made it, for this database."""
    before: ModuleType = context.script.get_revision("0006").module
    view: str = before._daily_view("spend_calls", op.get_bind().dialect.name, quarantined=True)
    assert view.count(_BEFORE) == 1, "0006's spend_daily is not as this migration knows it"
    return view


def upgrade() -> None:
    view = _daily_view_0006().replace(_BEFORE, _FLAGGED)
    op.execute("DROP VIEW spend_daily")
    op.execute(view)


def downgrade() -> None:
    op.execute("DROP VIEW spend_daily")
    op.execute(_daily_view_0006())
