"""The ``spend_daily`` view flags its estimates and quarantined calls as every spend report does.

It said how many of a day's calls came from the quarantine (``quarantined_requests``), not what
they cost, and nothing of the calls recorded at an estimate: migration 0008 adds
``estimated_requests`` / ``estimated_usd`` and ``quarantined_usd``, amounts summed as its
``cost_usd`` is (``NUMERIC`` on PostgreSQL). Up and down on a real SQLite file and a real
PostgreSQL database, over rows in ``spend_logs`` and in the quarantine.

Its amounts are bounded as the reports bound them: past $1e10 (``COST_BOUND``) a row's cost is
no price, and the call is unpriced. The view summed the amount as it was, so one hostile row
made a day's figure absurd where the reports said the call had no price: migration 0009 bounds
every amount the view reads.
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
#: The view's columns before 0008 (0006's, kept by 0007).
BEFORE = [
    "day",
    "end_user",
    "model",
    "requests",
    "failures",
    "images",
    "cost_usd",
    "unpriced_requests",
    "quarantined_requests",
]
FLAGS = ["estimated_requests", "estimated_usd", "quarantined_requests", "quarantined_usd"]


def _columns(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [column["name"] for column in sa.inspect(conn).get_columns("spend_daily")]


def _flags(engine: sa.Engine, *, unpriced: bool = False) -> dict[str, dict[str, Any]]:
    """Each end user's day as ``spend_daily`` has it: its flagged figures (``unpriced``: and
    ``unpriced_requests``), amounts at the ledger's 10 places."""
    figures = ", ".join(["requests", "cost_usd", *(["unpriced_requests"] if unpriced else [])])
    query = sa.text(f"SELECT end_user, {figures}, {', '.join(FLAGS)} FROM spend_daily")
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


def test_spend_daily_has_the_flagged_pairs_up_and_down(ledger_url: str):  # noqa: F811
    record_events(
        ledger_url,
        make_event(user="ann", cost=Decimal("0.1"), start=DAY),
        make_event(user="ann", cost=Decimal("0.02"), start=DAY, status="failure",
                   cost_source="estimate"),
        make_event(user="bob", cost=Decimal("0.5"), start=DAY),
    )  # fmt: skip
    engine = create_ledger_engine(ledger_url)
    try:
        quarantine_event(engine, user="ann", cost=Decimal("0.25"), start=DAY,
                         cost_source="estimate")  # fmt: skip
        quarantine_event(engine, user="ann", cost=Decimal("0.5"), start=DAY)
        assert current_revision(engine) == head_revision()
        assert _columns(engine) == [*BEFORE[:-1], *FLAGS]
        money = {"estimated_usd": Decimal("0.27"), "quarantined_usd": Decimal("0.75")}
        ann = {"requests": 4, "cost_usd": Decimal("0.87"), "estimated_requests": 2,
               "quarantined_requests": 2, **money}  # fmt: skip
        bob = {"requests": 1, "cost_usd": Decimal("0.5"), "estimated_requests": 0,
               "quarantined_requests": 0, "estimated_usd": 0, "quarantined_usd": 0}  # fmt: skip
        assert _flags(engine) == {"ann": ann, "bob": bob}
        reports = {r.key: r for r in query_spend(engine, by="user")}  # the reports agree
        assert all(getattr(reports["ann"], name) == ann[name] for name in FLAGS)
        if engine.dialect.name == "postgresql":  # exact sums: NUMERIC, as cost_usd
            with engine.connect() as conn:
                types = dict(
                    conn.execute(
                        sa.text(
                            "SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_name = 'spend_daily'"
                        )
                    ).all()
                )
            assert {name: types[name] for name in ("cost_usd", *money)} == dict.fromkeys(
                ("cost_usd", *money), "numeric"
            )

        downgrade(engine, "0007")
        assert _columns(engine) == BEFORE
        with engine.connect() as conn:
            daily = conn.execute(sa.text("SELECT end_user, quarantined_requests FROM spend_daily"))
            assert sorted(tuple(row) for row in daily) == [("ann", 2), ("bob", 0)]
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert _flags(engine) == {"ann": ann, "bob": bob}
    finally:
        engine.dispose()


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
        ann = {"requests": 3, "cost_usd": Decimal("0.35"), "unpriced_requests": 1,
               "estimated_requests": 1, "estimated_usd": Decimal(0),
               "quarantined_requests": 2, "quarantined_usd": Decimal("0.25")}  # fmt: skip
        assert _flags(engine, unpriced=True) == {"ann": ann}
        (report,) = query_spend(engine, by="user")  # the reports agree
        assert (report.cost_usd, report.unpriced_requests) == (Decimal("0.35"), 1)
        assert (report.estimated_requests, report.quarantined_usd) == (1, Decimal("0.25"))

        downgrade(engine, "0008")  # 0008's view, unbounded, is back
        before = _flags(engine, unpriced=True)["ann"]
        assert (before["cost_usd"], before["unpriced_requests"]) == (
            Decimal("20000000000.35"),
            0,
        )
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert _flags(engine, unpriced=True) == {"ann": ann}
    finally:
        engine.dispose()
