"""The plain SQL examples of docs/ledger.md, run as written on both dialects.

Each ```sql block starts with ``-- <title> (<dialect>)``, the dialect being PostgreSQL, SQLite
or both; the blocks are read from docs/ledger.md so the documentation cannot drift from what works.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.ledger_support import make_event, open_ledger

LEDGER_PAGE = Path(__file__).resolve().parent.parent / "docs" / "ledger.md"
_BLOCK = re.compile(
    r"```sql\n-- (?P<title>.+?) \((?P<dialect>PostgreSQL|SQLite|both)\)\n(?P<sql>.*?)```", re.S
)


def _examples(dialect: str) -> dict[str, str]:
    found = {}
    for match in _BLOCK.finditer(LEDGER_PAGE.read_text()):
        wanted = {"PostgreSQL": "postgresql", "SQLite": "sqlite", "both": dialect}[match["dialect"]]
        if wanted == dialect:
            found[match["title"]] = match["sql"].strip().rstrip(";")
    return found


def _exact(value: Any) -> Decimal:
    # SQLite sums REALs: at these magnitudes the float is within 1e-12 of the exact figure.
    return (
        Decimal(f"{value:.10f}")
        if isinstance(value, float)
        else Decimal(value).quantize(Decimal("1e-10"))
    )


@pytest.fixture
def filled(ledger_url):
    """A ledger with calls this month, 40 days ago and in earlier months, and its expectations."""
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    events = []
    for i in range(60):
        when = now - timedelta(days=(i % 4) * 20, seconds=i)
        events.append(
            make_event(
                user=f"user-{i % 12}" if i % 13 else None,
                model=("gpt-image-1", "gpt-image-1-mini")[i % 2],
                cost=Decimal(i * 7919 + 1).scaleb(-10) + Decimal("0.011"),
                start=when,
            )
        )
    ledger = open_ledger(ledger_url)
    for event in events:
        ledger.on_end(event)
    assert ledger.flush(10)
    yield ledger, events, now, month_start
    ledger.shutdown(10)


def _query(ledger, sql: str) -> list[sa.Row]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(sa.text(sql)))


def test_the_readme_has_every_example_for_both_dialects():
    for dialect in ("postgresql", "sqlite"):
        titles = set(_examples(dialect))
        assert {
            "spend by end user this month",
            "top 10 end users by spend",
            "spend by model per day, last 30 days",
        } <= titles


def test_spend_by_end_user_this_month(filled):
    ledger, events, _, month_start = filled
    sql = _examples(ledger.engine.dialect.name)["spend by end user this month"]
    expected: dict[str | None, Decimal] = defaultdict(Decimal)
    for e in events:
        if e.start_time >= month_start:
            expected[e.end_user] += e.cost_usd
    rows = _query(ledger, sql)
    assert {r.end_user: _exact(r.cost_usd) for r in rows} == expected
    assert [_exact(r.cost_usd) for r in rows] == sorted(expected.values(), reverse=True)


def test_top_users(filled):
    ledger, events, *_ = filled
    sql = _examples(ledger.engine.dialect.name)["top 10 end users by spend"]
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for e in events:
        if e.end_user is not None:
            totals[e.end_user] += e.cost_usd
    top = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:10]
    assert [(r.end_user, _exact(r.cost_usd)) for r in _query(ledger, sql)] == top


def test_spend_by_model_per_day(filled):
    ledger, events, now, _ = filled
    sql = _examples(ledger.engine.dialect.name)["spend by model per day, last 30 days"]
    first_day = (now - timedelta(days=30)).date()
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for e in events:
        if e.start_time.date() >= first_day:
            expected[(e.start_time.date().isoformat(), e.model)] += e.cost_usd
    rows = _query(ledger, sql)
    got = {(str(r.day), r.model): _exact(r.cost_usd) for r in rows}
    assert got == expected
    assert [(str(r.day), r.model) for r in rows] == sorted(expected)


def test_exact_sqlite_total(tmp_path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'exact.db'}")
    try:
        costs = [Decimal("0.1234567891"), Decimal("99999.9999999999"), Decimal("0.0000000001")]
        for cost in costs:
            ledger.on_end(make_event(cost=cost))
        assert ledger.flush(10)
        (row,) = _query(ledger, _examples("sqlite")["exact total spend, in units of 1e-10 USD"])
        assert Decimal(row.cost_e10).scaleb(-10) == sum(costs)
    finally:
        ledger.shutdown(10)
