"""Bound the spend_daily view's amounts as every spend report bounds them.

The reports read a row's ``cost_usd`` only when a ledger column could hold it, up to $1e10
(``COST_BOUND`` in ``integrations/sql/_queries.py``): a larger amount, an infinity or a NaN (a
hostile answer's, a hand-made row's) is no price, and the call counts as unpriced. The view
``spend_daily`` (0006, its flags by 0008) summed ``cost_usd`` as it was: one such row turned a
day's ``cost_usd`` into an absurd figure, or a NaN or an infinity on SQLite, where the reports
said the call was unpriced. The view is made again with every ``cost_usd`` it reads bounded as
the reports bound it, so a row over the bound counts in ``unpriced_requests`` and in no amount:

    CASE WHEN ABS(cost_usd) <= 10000000000 THEN cost_usd END

The view is 0008's (a migration is frozen once released: its module, as Alembic loaded it,
gives the text) with each of its four readings of ``cost_usd`` bounded; ``spend_calls`` is
unchanged. The way down puts 0008's view back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from types import ModuleType

from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: A row's cost as the reports read it: NULL (unpriced) past $1e10, as ``COST_BOUND`` says.
_BOUNDED = "CASE WHEN ABS(cost_usd) <= 10000000000 THEN cost_usd END"
#: 0008's readings of ``cost_usd``, and the same readings bounded.
_READINGS = {
    "COALESCE(SUM(cost_usd), 0) AS cost_usd": f"COALESCE(SUM({_BOUNDED}), 0) AS cost_usd",
    "CASE WHEN cost_usd IS NULL THEN 1": f"CASE WHEN ({_BOUNDED}) IS NULL THEN 1",
    "WHEN cost_source = 'estimate' THEN cost_usd END": (
        f"WHEN cost_source = 'estimate' THEN ({_BOUNDED}) END"
    ),
    "WHEN quarantined = 1 THEN cost_usd END": f"WHEN quarantined = 1 THEN ({_BOUNDED}) END",
}


def _daily_view_0008() -> str:
    """``spend_daily`` as 0008 made it, for this database."""
    before: ModuleType = context.script.get_revision("0008").module
    view: str = before._daily_view_0006().replace(before._BEFORE, before._FLAGGED)
    return view


def upgrade() -> None:
    view = _daily_view_0008()
    for reading, bounded in _READINGS.items():
        assert view.count(reading) == 1, "0008's spend_daily is not as this migration knows it"
        view = view.replace(reading, bounded)
    op.execute("DROP VIEW spend_daily")
    op.execute(view)


def downgrade() -> None:
    op.execute("DROP VIEW spend_daily")
    op.execute(_daily_view_0008())
