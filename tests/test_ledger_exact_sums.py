"""Spend sums are exact on both dialects, whatever their size: the ledger's ``spend()``, the CLI,
the proxy's budget figure (``AccountStore.spent``), ``/spend/keys`` and LiteLLM's global spend.

SQLite stores costs as REAL: a sum scaled to integers passed 2**63 at $922M (one row of
$1,000,000,000.5 read as 922337203.68, two of $5,000,000,000 as "integer overflow"), and the
proxy's own sums added floats.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import sqlalchemy as sa

from tests.ledger_support import make_event, open_ledger
from tracking.integrations.sql import spend_logs
from tracking.proxy.account_store import AccountStore
from tracking.proxy.litellm_store import spend_by, total_spend

SMALL = Decimal("0.0085890000")
ODD = Decimal("12.3456789012")


def _record(url: str, costs: list[Decimal], key_hash: str = "hash-a") -> None:
    ledger = open_ledger(url)
    try:
        for cost in costs:
            ledger.on_end(make_event(cost=cost, api_key_hash=key_hash))
        assert ledger.flush(30)
    finally:
        ledger.shutdown(10)


def _spent(url: str) -> Decimal:
    ledger = open_ledger(url)
    try:
        (total,) = ledger.spend()
        return total.cost_usd
    finally:
        ledger.shutdown(10)


def test_a_billion_dollar_row_sums_to_the_cent_and_past(ledger_url):
    _record(ledger_url, [Decimal("1000000000.5")])
    assert _spent(ledger_url) == Decimal("1000000000.5")


def test_sums_past_two_to_the_63_units_do_not_overflow(ledger_url):
    _record(ledger_url, [Decimal("5000000000"), Decimal("5000000000")])
    assert _spent(ledger_url) == Decimal("10000000000")


def test_many_small_and_odd_costs_sum_exactly(ledger_url):
    costs = [SMALL] * 3000 + [ODD] * 7 + [Decimal("0.0000000001")]
    _record(ledger_url, costs)
    assert _spent(ledger_url) == sum(costs, Decimal(0))


def test_the_proxys_sums_are_the_ledgers_exact_ones(ledger_url):
    _record(ledger_url, [Decimal("1000000000.5"), SMALL], key_hash="hash-a")
    _record(ledger_url, [ODD] * 3, key_hash="hash-b")
    store = AccountStore(ledger_url)
    try:
        assert store.spent(key_hashes=["hash-a"], since=None) == Decimal("1000000000.5085890000")
        assert store.spent(key_hashes=["hash-b"], since=None) == ODD * 3
        summary, _ = store.key_summary(None)
        assert [(row["key_hash"], row["spend"]) for row in summary] == [
            ("hash-a", "1000000000.5085890000"),  # dearest first
            ("hash-b", f"{ODD * 3:f}"),
        ]
        assert total_spend(store, None, None) == ("1000000037.5456257036", {})
        assert spend_by(store, "api_key", start=None, end=None, limit=10) == [
            ("hash-a", "1000000000.5085890000", 2, {}),  # as /spend/keys writes it
            ("hash-b", "37.0370367036", 3, {}),
        ]
    finally:
        store.engine.dispose()


def test_a_cost_no_numeric_20_10_holds_is_quarantined_on_sqlite_as_on_postgres(ledger_url):
    ledger = open_ledger(ledger_url)
    try:
        ledger.on_end(make_event(request_id="too-dear", cost=Decimal("20000000000")))
        ledger.on_end(make_event(request_id="fine", cost=SMALL))
        assert ledger.flush(30)
        assert ledger.quarantined_rows == 1
    finally:
        ledger.shutdown(10)
    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            ids = conn.execute(sa.select(spend_logs.c.request_id)).scalars().all()
            held = conn.execute(sa.text("SELECT request_id FROM ledger_quarantine")).all()
    finally:
        engine.dispose()
    assert ids == ["fine"] and [row[0] for row in held] == ["too-dear"]


def test_the_sqlite_file_keeps_costs_as_written(tmp_path):
    """A guard on the premise: SQLite's REAL keeps each cost's own digits (the text of the
    float is the Decimal written), so summing them exactly is possible."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _record(url, [ODD, SMALL])
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        stored = sorted(Decimal(str(v)) for (v,) in conn.execute("SELECT cost_usd FROM spend_logs"))
    assert stored == [SMALL, ODD]


def test_a_cost_below_the_ledgers_quantum_is_stored_as_the_quantum_never_as_zero(ledger_url):
    # NUMERIC(20, 10) rounded $0.00000000003 to 0 on PostgreSQL: a billed call as a free one.
    _record(ledger_url, [Decimal("0.00000000003"), Decimal("0.00000000003")])
    ledger = open_ledger(ledger_url)
    try:
        (total,) = ledger.spend()
        assert total.cost_usd == Decimal("0.0000000002")
        with ledger.engine.connect() as connection:
            costs = connection.execute(sa.select(spend_logs.c.cost_usd)).scalars().all()
        assert [Decimal(str(c)) for c in costs] == [Decimal("1E-10")] * 2
    finally:
        ledger.shutdown(10)


def test_a_cost_past_the_ledgers_scale_is_rounded_as_postgresql_rounds_it(ledger_url):
    # NUMERIC(20, 10) rounds half away from zero: $0.00000012915 is $0.0000001292. SQLite
    # stored the float of the unrounded cost, whose exact sum rounded it down, to ...1291.
    _record(ledger_url, [Decimal("0.00000012915"), Decimal("0.00000019995")])
    assert _spent(ledger_url) == Decimal("0.0000003292")


def test_groups_closer_than_a_float_can_tell_are_ordered_exactly(ledger_url):
    # Both about $1e9; "b" has $0.0000000001 more. A REAL total() sees them equal, and the
    # tie-break (the key) put "a" first.
    ledger = open_ledger(ledger_url)
    try:
        for user, costs in (("a", [Decimal(10**8)] * 10), ("b", [Decimal(10**8)] * 10)):
            for cost in costs:
                ledger.on_end(make_event(user=user, cost=cost))
        ledger.on_end(make_event(user="b", cost=Decimal("0.0000000001")))
        assert ledger.flush(30)
        rows = ledger.spend(by="user")
        assert [(r.key, r.cost_usd) for r in rows] == [
            ("b", Decimal("1000000000.0000000001")),
            ("a", Decimal("1000000000.0000000000")),
        ]
        assert [r.key for r in ledger.spend(by="user", limit=1)] == ["b"]
    finally:
        ledger.shutdown(10)
