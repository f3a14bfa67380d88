"""Spend reports count a quarantined call by its own row, once, as budgets do.

A process killed between committing a call's row and marking its intent done leaves the intent's
``incomplete`` row (an estimate) in ``spend_logs``; when the database then refused the call's own
row, that row sits in ``ledger_quarantine``. Budgets counted the call by its own row; the reports
(``query_spend``, ``query_billed``, the proxy's ``/global/spend*`` readings and the
``spend_daily`` view) counted the intent's estimate and left the billed row out.

The reports now read the ``spend_calls`` view (each call once, wherever its row is), so they
also hold no quarantined row in memory: a large quarantine is summed by the database.
"""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from tests.ledger_support import ledger_url, make_event, open_ledger, quarantine_event  # noqa: F401
from tracking.integrations.sql import (
    event_to_row,
    quarantined_calls,
    quarantined_cost,
    query_billed,
    query_spend,
)
from tracking.integrations.sql._codec import encode_row
from tracking.proxy import litellm_store
from tracking.proxy.account_store import AccountStore

DAY = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
KEY_A, KEY_B = "a" * 64, "b" * 64


def _intent_here_row_there(url: str) -> sa.engine.Engine:
    """``spend_logs``: one ordinary call (bob, $0.2) and the intent of a call (alice) whose own
    row ($0.05, the provider's figure) is quarantined."""
    ledger = open_ledger(url, mode="durable")
    ledger.on_end(make_event(user="bob", cost=Decimal("0.2"), start=DAY, api_key_hash=KEY_B))
    ledger.on_end(
        make_event(request_id="cut", user="alice", cost=Decimal("0.9"), start=DAY,
                   status="incomplete", cost_source="estimate", api_key_hash=KEY_A)
    )  # fmt: skip
    assert ledger.flush(10)
    quarantine_event(ledger.engine, request_id="cut", user="alice", cost=Decimal("0.05"),
                     start=DAY, cost_source="provider", images=3, api_key_hash=KEY_A)  # fmt: skip
    ledger.shutdown(10)
    return sa.create_engine(url) if url.startswith("sqlite") else ledger.engine


def test_reports_count_the_calls_own_row_not_its_intents_estimate(ledger_url):  # noqa: F811
    engine = _intent_here_row_there(ledger_url)
    try:
        (total,) = query_spend(engine)
        assert (total.requests, total.images, total.cost_usd) == (2, 4, Decimal("0.25"))
        assert (total.quarantined_requests, total.quarantined_usd) == (1, Decimal("0.05"))
        users = {r.key: r for r in query_spend(engine, by="user")}
        assert users["alice"].cost_usd == Decimal("0.05") and users["alice"].requests == 1
        assert [r.key for r in query_spend(engine, by="user", limit=1)] == ["bob"]

        billed = query_billed(engine, provider="openai", since=DAY, until=NEXT, by="day")
        assert [
            (b.requests, b.cost_usd, b.estimated_usd, b.quarantined_requests) for b in billed
        ] == [(2, Decimal("0.25"), Decimal(0), 1)]

        with engine.connect() as conn:
            daily = conn.execute(
                sa.text("SELECT end_user, requests, images, cost_usd FROM spend_daily")
            ).all()
        assert sorted((u, int(r), int(i), Decimal(str(c))) for u, r, i, c in daily) == [
            ("alice", 1, 3, Decimal("0.05")),
            ("bob", 1, 1, Decimal("0.2")),
        ]

        store = AccountStore(ledger_url)
        try:
            assert store.spent(end_user="alice", since=None) == Decimal("0.05")  # the budget's
            assert litellm_store.total_spend(store, None, None) == (
                "0.2500000000",
                {"quarantined_requests": 1, "quarantined_usd": "0.0500000000"},
            )
            per_user = litellm_store.spend_by(store, "customer", start=None, end=None, limit=5)
            assert per_user == [
                ("bob", "0.2000000000", 1, {}),
                (
                    "alice",
                    "0.0500000000",
                    1,
                    {"quarantined_requests": 1, "quarantined_usd": "0.0500000000"},
                ),
            ]
            (day,) = litellm_store.spend_report(store, "customer", start=None, end=None)
            alice = next(c for c in day["customers"] if c["customer"] == "alice")
            assert alice["total_spend"] == "0.0500000000"
            keys, count = store.key_summary(None)  # /spend/keys
            assert count == 2 and [(k["key_hash"], k["spend"]) for k in keys] == [
                (KEY_B, "0.2000000000"),
                (KEY_A, "0.0500000000"),
            ]
            assert keys[1]["requests"] == 1 and keys[1]["quarantined_requests"] == 1
            assert store.key_summary(None, page=2, page_size=1) == ([keys[1]], 2)
            summary = store.flagged_summary(key_hashes=[KEY_A], end_user=None, start=DAY,
                                             end=NEXT)  # fmt: skip  # /spend/logs
            assert summary == {"quarantined_requests": 1, "quarantined_usd": "0.0500000000"}
        finally:
            store.close()
    finally:
        engine.dispose()


def test_odd_quarantined_lines_count_as_the_python_reader_counts_them(ledger_url):  # noqa: F811
    """A line that is no JSON object is no call; a cost that is no amount is unpriced; a count
    of the wrong type counts 0; a time with another offset falls on its UTC day."""
    engine = _intent_here_row_there(ledger_url)

    def line(**row: object) -> str:  # compact, as the ledger's encoder writes it
        return json.dumps(row, separators=(",", ":"))

    try:
        odd = [
            "not json at all",
            "[1, 2]",
            line(request_id="nan", cost_usd="NaN", start_time=DAY.isoformat(), end_user="carol",
                 images_returned="7"),
            line(request_id="text", cost_usd="ten", end_user="carol",
                 start_time="2026-05-05T01:30:00.000001+03:00"),
            line(request_id="num", cost_usd=0.5, end_user="carol",
                 start_time="2026-05-04T12:00:00", images_returned=2),
            line(request_id="timeless", cost_usd="0.001", end_user="dan", start_time="soon"),
        ]  # fmt: skip
        with engine.begin() as conn:
            for text in odd:
                conn.execute(
                    sa.text(
                        "INSERT INTO ledger_quarantine (request_id, line, error, quarantined_at)"
                        " VALUES (:r, :l, 'refused', :t)"
                    ),
                    {"r": None, "l": text, "t": DAY},
                )
        carol = next(r for r in query_spend(engine, by="user") if r.key == "carol")
        assert (carol.requests, carol.images, carol.unpriced_requests) == (3, 2, 2)
        assert carol.cost_usd == Decimal("0.5") == carol.quarantined_usd
        days = {r.key: r.requests for r in query_spend(engine, by="day", user="carol")}
        assert days == {"2026-05-04": 3}  # 01:30 at +03:00 is 22:30 UTC the day before
        dan = query_spend(engine, by="day", user="dan")
        assert [(r.key, r.cost_usd) for r in dan] == [(None, Decimal("0.001"))]
        days = query_spend(engine, by="day")  # the unknown day first, on both dialects
        assert [r.key for r in days] == [None, "2026-05-04"]
        assert [r.key for r in query_spend(engine, by="day", limit=1)] == ["2026-05-04"]
        assert query_spend(engine, by="user")[-1].key == "dan"  # dearest first
        assert query_spend(engine, since=DAY)[0].requests == 5  # an unknown time is in no range
        later = DAY + timedelta(hours=1)
        assert query_spend(engine, user="carol", since=later)[0].requests == 1  # 22:30 UTC
        assert query_spend(engine, user="carol", until=later)[0].requests == 2
        with engine.connect() as conn:  # the reader budgets use reads them alike
            calls = quarantined_calls(conn, end_user="carol")
        assert (len(calls), quarantined_cost(calls)) == (3, carol.cost_usd)
        assert sum(c.cost_usd is None for c in calls) == 2
    finally:
        engine.dispose()


def test_a_large_quarantine_is_summed_without_being_held_in_memory(tmp_path):
    """25,000 rows of about 800 bytes: holding a tenth of them breaks the 2 MiB bound (the
    reports' own peak is about 0.5 MiB, whatever the count); 100,000 rows against 8 MiB checked
    the same share and spent 15 s in SQLite."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_ledger(url).shutdown(10)
    template = event_to_row(make_event(cost=Decimal("0.0001"), start=DAY, user="many"))
    count = 25_000
    engine = sa.create_engine(url)
    try:
        lines = []
        for n in range(count):
            template["request_id"] = f"refused-{n:06d}"
            template["model"] = f"model-{n % 3}"
            lines.append((template["request_id"], encode_row(template), "refused", DAY))
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO ledger_quarantine (request_id, line, error, quarantined_at)"
                " VALUES (?, ?, ?, ?)",
                [(r, line, e, t.isoformat(" ")[:-6]) for r, line, e, t in lines],
            )
        del lines
        tracemalloc.start()
        try:
            (total,) = query_spend(engine)
            by_model = query_spend(engine, by="model", limit=2)
            billed = query_billed(engine, provider="openai", since=DAY, until=NEXT, by="model")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (total.requests, total.cost_usd, total.quarantined_requests) == (
            count,
            count * Decimal("0.0001"),
            count,
        )
        assert len(by_model) == 2 and billed[0].quarantined_requests == count
        assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MiB held"
    finally:
        engine.dispose()


def test_a_quarantined_cost_beyond_the_ledgers_range_is_unpriced_never_a_traceback(
    ledger_url,  # noqa: F811
    capsys,
):
    """A cost the ledger's column cannot hold (1e10 USD or more) is refused for good and kept in
    the quarantine; the reports read it: the exact sum's Decimal overflowed its context (a
    ``decimal.InvalidOperation`` traceback from ``tracking spend`` on both dialects), and two of
    them overflowed SQLite's integer sum (reported as an unreachable database). It is no amount
    the reports can sum: an unpriced call, alike on both dialects, beside the exact sum of the
    rest."""
    from tracking.cli import main

    ledger = open_ledger(ledger_url, mode="durable")
    try:
        ledger.on_end(make_event(user="bob", cost=Decimal("0.2"), start=DAY))
        assert ledger.flush(10)
        for cost in ("1e30", "-1e30", "1E+999996", "12345678901.5"):
            quarantine_event(ledger.engine, user="mallory", cost=Decimal(cost), start=DAY)
        quarantine_event(ledger.engine, user="mallory", cost=Decimal("0.05"), start=DAY)
        rows = {r.key: r for r in query_spend(ledger.engine, by="user")}
        assert (rows["mallory"].cost_usd, rows["mallory"].unpriced_requests) == (Decimal("0.05"), 4)
        assert rows["mallory"].requests == 5 and rows["bob"].cost_usd == Decimal("0.2")
        (day,) = query_billed(ledger.engine, provider="openai", since=DAY, until=NEXT, by="day")
        assert (day.cost_usd, day.unpriced_requests) == (Decimal("0.25"), 4)
    finally:
        ledger.shutdown(10)
    for by in ("user", "day", "model"):
        code = main(["spend", "--by", by, "--format", "json", "--database-url", ledger_url])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert sum(Decimal(r["cost_usd"]) for r in json.loads(out.out)) == Decimal("0.25")
