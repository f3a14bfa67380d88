"""Spend reports count the calls whose rows sit in the ledger's quarantine, as budgets do.

A row the database refused for good is kept in ``ledger_quarantine``: the call was billed all the
same, and budgets count it. The reports (``tracking spend``, the proxy's ``/spend/*`` and
``/global/spend*`` routes, the ledger side of ``tracking reconcile``) read ``spend_logs`` only,
so they disagreed with the budgets and with the bill. Now each adds the quarantined calls and
says how many (and how much) came from there; a call counts once, even when its row is both in
``spend_logs`` (a replay stopped before removing it from the quarantine) and in the quarantine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.accounts_support import accounts_config, bearer, edit, generate, ledger_env, spend_rows
from tests.ledger_support import ledger_url, make_event, open_ledger, quarantine_event  # noqa: F401
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.cli import main
from tracking.integrations.sql import query_billed, query_spend
from tracking.proxy import litellm_store
from tracking.proxy.account_store import AccountStore
from tracking.proxy.keys import hash_key

DAY = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
KEY_A, KEY_B, KEY_C = (hash_key(f"sk-report-{n}") for n in "abc")


def _fill(url: str) -> sa.engine.Engine:
    """Two rows in ``spend_logs`` and five quarantined calls (one of them kept twice, as its
    intent and its own row, and one that is in ``spend_logs`` as well)."""
    ledger = open_ledger(url, mode="durable")
    logged = [
        make_event(request_id="in-both", user="alice", cost=Decimal("0.1"), start=DAY,
                   api_key_hash=KEY_A),
        make_event(user="bob", cost=Decimal("0.2"), start=DAY, api_key_hash=KEY_B),
    ]  # fmt: skip
    for event in logged:
        ledger.on_end(event)
    assert ledger.flush(10)
    engine = ledger.engine
    quarantine_event(engine, request_id="in-both", user="alice", cost=Decimal("0.1"), start=DAY,
                     api_key_hash=KEY_A)  # fmt: skip
    quarantine_event(engine, user="alice", cost=Decimal("0.3000000001"), start=DAY,
                     api_key_hash=KEY_A)  # fmt: skip
    for cost, status in (("0.9", "incomplete"), ("0.05", "failure")):  # its intent, its row
        quarantine_event(engine, request_id="twice", user="carol", cost=Decimal(cost),
                         start=NEXT, status=status, api_key_hash=KEY_C,
                         cost_source="estimate")  # fmt: skip
    quarantine_event(engine, user="dave", cost=None, start=NEXT, model="house-model")
    ledger.shutdown(10)
    return sa.create_engine(url) if url.startswith("sqlite") else ledger.engine


def test_spend_queries_and_budgets_count_each_quarantined_call_once(ledger_url):  # noqa: F811
    engine = _fill(ledger_url)
    try:
        (total,) = query_spend(engine)
        assert (total.requests, total.failures, total.unpriced_requests) == (5, 1, 1)
        assert total.cost_usd == Decimal("0.6500000001")  # 0.1 + 0.2 + 0.3000000001 + 0.05
        assert (total.quarantined_requests, total.quarantined_usd) == (3, Decimal("0.3500000001"))

        users = {r.key: r for r in query_spend(engine, by="user")}
        assert users["alice"].cost_usd == Decimal("0.4000000001")
        assert users["alice"].to_dict()["quarantined_requests"] == 1
        assert "quarantined_requests" not in users["bob"].to_dict()  # nothing of it refused
        assert (users["carol"].cost_usd, users["carol"].failures) == (Decimal("0.05"), 1)
        assert users["dave"].unpriced_requests == 1
        assert [r.key for r in query_spend(engine, by="user", limit=2)] == ["alice", "bob"]

        days = query_spend(engine, by="day", limit=1)  # the latest day only
        assert [(r.key, r.requests, r.cost_usd) for r in days] == [
            (NEXT.date().isoformat(), 2, Decimal("0.05"))
        ]
        assert query_spend(engine, since=NEXT)[0].cost_usd == Decimal("0.05")
        assert query_spend(engine, until=NEXT)[0].cost_usd == Decimal("0.6000000001")

        # what the budgets start from is what the reports say, to the 1e-10 USD
        store = AccountStore(ledger_url)
        try:
            assert store.spent(end_user="alice", since=None) == users["alice"].cost_usd
            assert store.spent(key_hashes=[KEY_A], since=None) == Decimal("0.4000000001")
            keys, count = store.key_summary(None)
            assert count == 3 and [k["key_hash"] for k in keys] == [KEY_A, KEY_B, KEY_C]
            assert keys[0]["spend"] == "0.4000000001" and keys[0]["quarantined_requests"] == 1
            assert "quarantined_requests" not in keys[1]
            assert store.key_summary(None, page=3, page_size=1) == ([keys[2]], 3)
            assert store.key_summary([KEY_C])[0][0]["spend"] == "0.0500000000"

            assert litellm_store.total_spend(store, None, None) == (
                "0.6500000001",
                {
                    "unpriced_requests": 1,  # dave's, left out of the amount
                    "estimated_requests": 1,  # carol's failed call
                    "estimated_usd": "0.0500000000",
                    "quarantined_requests": 3,
                    "quarantined_usd": "0.3500000001",
                },
            )
            per_user = litellm_store.spend_by(store, "customer", start=None, end=None, limit=2)
            assert per_user == [
                (
                    "alice",
                    "0.4000000001",
                    2,
                    {"quarantined_requests": 1, "quarantined_usd": "0.3000000001"},
                ),
                ("bob", "0.2000000000", 1, {}),
            ]
            report = litellm_store.spend_report(store, "customer", start=None, end=None)
            assert [d["group_by_day"] for d in report] == ["2026-05-04", "2026-05-05"]
            carol = [c for c in report[1]["customers"] if c["customer"] == "carol"]
            assert carol[0]["total_spend"] == "0.0500000000"
            summary = store.flagged_summary(key_hashes=None, end_user=None, start=DAY,
                                             end=NEXT)  # fmt: skip
            assert summary == {"quarantined_requests": 1, "quarantined_usd": "0.3000000001"}
        finally:
            store.close()

        # the ledger's side of a reconciliation has the calls the provider billed
        until = NEXT + timedelta(days=1)
        billed = query_billed(engine, provider="openai", since=DAY, until=until, by="day")
        assert [(b.key, b.cost_usd, b.quarantined_requests) for b in billed] == [
            ("2026-05-04", Decimal("0.6000000001"), 1),
            ("2026-05-05", Decimal("0.05"), 2),
        ]
        assert billed[1].estimated_usd == Decimal("0.05") and billed[1].unpriced_requests == 1
    finally:
        engine.dispose()


def test_tracking_spend_marks_the_quarantined_calls(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _fill(url).dispose()
    assert main(["spend", "--by", "user", "--format", "json", "--database-url", url]) == 0
    alice = next(r for r in json.loads(capsys.readouterr().out) if r["user"] == "alice")
    assert alice["quarantined_requests"] == 1 and alice["quarantined_usd"] == "0.3000000001"
    assert main(["spend", "--database-url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-4:] == [
        "estimated_requests", "estimated_usd", "quarantined_requests", "quarantined_usd"
    ]  # fmt: skip
    assert lines[2].split() == [
        "total", "5", "1", "4", "0.6500000001", "1", "1", "0.0500000000", "3", "0.3500000001"
    ]  # fmt: skip
    assert "tracking ledger quarantine list" in lines[-1]


def test_proxy_spend_routes_agree_with_the_budgets(fake, tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(tmp_path, fake.url, database)
    with (
        ProxyProcess(config, env=ledger_env(database)) as proxy,
        httpx.Client(timeout=30) as client,
    ):
        key = generate(client, proxy.url, key_alias="reports")
        made = client.post(f"{proxy.url}/customer/new", headers=bearer(MASTER_KEY),
                           json={"user_id": "erin", "max_budget": "100"})  # fmt: skip
        assert made.status_code == 200, made.text
        assert edit(client, proxy.url, key["key"], user="erin").status_code == 200
        logged = Decimal(spend_rows(client, proxy.url, user="erin")["data"][0]["cost_usd"])
        engine = sa.create_engine(database)
        try:
            quarantine_event(engine, user="erin", cost=Decimal("0.25"),
                             start=datetime.now(UTC), api_key_hash=key["key_hash"])  # fmt: skip
        finally:
            engine.dispose()
        master = bearer(MASTER_KEY)

        def get(path: str, **params: str) -> object:
            response = client.get(f"{proxy.url}{path}", headers=master, params=params)
            assert response.status_code == 200, response.text
            return response.json()

        spent = logged + Decimal("0.25")
        info = get("/customer/info", end_user_id="erin")
        assert isinstance(info, dict) and Decimal(info["total_spend"]) == spent  # the budget's
        (mine,) = client.get(f"{proxy.url}/spend/keys", headers=bearer(key["key"])).json()["data"]
        assert Decimal(mine["spend"]) == spent and mine["quarantined_requests"] == 1
        assert mine["requests"] == 2
        page = spend_rows(client, proxy.url, user="erin")
        assert page["total"] == 1 and "quarantined" not in page
        assert (page["quarantined_requests"], page["quarantined_usd"]) == (1, "0.2500000000")
        total = get("/global/spend")
        refused = {"quarantined_requests": 1, "quarantined_usd": "0.2500000000"}
        assert total == {"spend": f"{spent:f}", **refused}
        users = get("/global/spend/end_users")
        assert {"end_user": "erin", "total_spend": f"{spent:f}", "requests": 2,
                **refused} in users  # type: ignore[operator]  # fmt: skip


def test_a_call_in_spend_logs_and_in_the_quarantine_counts_once_toward_budgets(tmp_path):
    """A replay that stopped between inserting a row and removing it from the quarantine left
    the call in both: the budgets counted it twice."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _fill(url).dispose()
    store = AccountStore(url)
    try:
        assert store.spent(key_hashes=[KEY_A], since=None) == Decimal("0.4000000001")
        assert store.spent(end_user="alice", since=DAY) == Decimal("0.4000000001")
    finally:
        store.close()
