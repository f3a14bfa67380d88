"""The ``spend_daily`` view bounds its amounts as every spend report does.

The reports read a row's ``cost_usd`` only up to $1e10 (``COST_BOUND``): past it, the call is
unpriced. ``spend_daily`` summed the amount as it was, so one hostile row made a day's figure
absurd where the reports said the call had no price. Migration 0009 bounds every amount the
view reads. Up and down on a real SQLite file and a real PostgreSQL database, over a row in
``spend_logs`` and rows in the quarantine (which keeps what the database refused, a cost past
its column's range included).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tests.ledger_support import (  # noqa: F401
    ledger_url,
    make_event,
    quarantine_event,
    record_events,
)
from tracking.integrations.sql import (
    create_ledger_engine,
    current_revision,
    downgrade,
    head_revision,
    query_spend,
    upgrade,
)

DAY = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
_FIGURES = (
    "requests",
    "cost_usd",
    "unpriced_requests",
    "estimated_requests",
    "estimated_usd",
    "quarantined_requests",
    "quarantined_usd",
)


def _daily(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Each end user's day as ``spend_daily`` has it, amounts at the ledger's 10 places."""
    query = sa.text(f"SELECT end_user, {', '.join(_FIGURES)} FROM spend_daily")
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    place = Decimal("1e-10")
    return {
        row["end_user"]: {
            name: Decimal(str(value)).quantize(place) if name.endswith("_usd") else int(value)
            for name, value in row.items()
            if name != "end_user"
        }
        for row in rows
    }


def test_spend_daily_leaves_amounts_past_the_reports_bound_out_up_and_down(ledger_url: str):  # noqa: F811
    record_events(ledger_url, make_event(user="ann", cost=Decimal("0.1"), start=DAY))
    engine = create_ledger_engine(ledger_url)
    try:
        # refused by the database (past its column's range): kept, cost and all, in the
        # quarantine, which spend_calls (and so spend_daily) reads
        quarantine_event(engine, user="ann", cost=Decimal("20000000000"), start=DAY,
                         cost_source="estimate")  # fmt: skip
        quarantine_event(engine, user="ann", cost=Decimal("0.25"), start=DAY)
        assert current_revision(engine) == head_revision()
        ann = {
            "requests": 3,
            "cost_usd": Decimal("0.35"),
            "unpriced_requests": 1,
            "estimated_requests": 1,
            "estimated_usd": Decimal(0),
            "quarantined_requests": 2,
            "quarantined_usd": Decimal("0.25"),
        }
        assert _daily(engine) == {"ann": ann}
        (report,) = query_spend(engine, by="user")  # the reports agree
        assert (report.cost_usd, report.unpriced_requests) == (Decimal("0.35"), 1)
        assert (report.estimated_requests, report.quarantined_usd) == (1, Decimal("0.25"))

        downgrade(engine, "0008")  # 0008's view, unbounded, is back
        before = _daily(engine)["ann"]
        assert before["cost_usd"] == Decimal("20000000000.35")
        assert before["unpriced_requests"] == 0
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert _daily(engine) == {"ann": ann}
    finally:
        engine.dispose()
