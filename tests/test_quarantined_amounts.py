"""A quarantined call's cost is read alike by every reader: the ``spend_calls`` view on SQLite
and PostgreSQL (what the reports sum) and the Python reader (what budgets start from).

* A cost kept as text is an amount only when it is written as one, whole (migration 0007):
  SQLite's view cast the start of ``"1e"`` to $1 (``"1.2.3"`` to $1.2, ``"1e5e"`` to $100,000),
  where PostgreSQL and the Python reader had it unpriced; the Python reader took ``"1_000"`` as
  $1,000 and fullwidth digits as digits, where both views had them unpriced.
* A cost no ledger column holds (over $1e10) is unpriced for budgets too, as for the reports:
  budgets counted it, so one such row spent every budget it named at once and for good (the
  counter starts from the ledger again and again), and one past Decimal's range failed the
  budget's reading (a 503 "database unavailable" on every call of the key, for good).
* A start time is a time only when written in ISO 8601 as the ledger writes it (migration 0007):
  PostgreSQL's view read "now" and "infinity" (a report by day failed), SQLite's "now" and
  Julian days, and gave "2026-02-30" back (reading the view failed).
* PostgreSQL's view reads a quarantined line holding an escaped NUL or lone UTF-16 surrogate,
  which ``jsonb`` refuses whole: such a call was missing from PostgreSQL's reports only.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.accounts_support import accounts_config, edit, generate, ledger_env
from tests.ledger_support import ledger_url, make_event  # noqa: F401
from tests.proxy_support import ProxyProcess
from tracking.integrations.sql import (
    create_ledger_engine,
    current_revision,
    downgrade,
    event_to_row,
    quarantined_calls,
    query_spend,
    spend_calls,
    upgrade,
)
from tracking.integrations.sql._codec import encode_row
from tracking.integrations.sql._target import SpendLogsInserter
from tracking.proxy.account_store import AccountStore
from tracking.proxy.keys import hash_key

DAY = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
MODEL = "gpt-image-2"

#: text cost -> what every reader makes of it (None: unpriced)
TEXT_COSTS: dict[str, Decimal | None] = {
    "1e": None,
    "1e+": None,
    "-": None,
    ".": None,
    "1.2.3": None,
    "1e5e": None,
    "--1": None,
    "1_000": None,
    "0x1F": None,
    "\uff11\uff12": None,  # fullwidth 12
    "Infinity": None,
    "1e5": Decimal(100000),
    " 1.5 ": Decimal("1.5"),
    "\t2\n": Decimal(2),
    ".5": Decimal("0.5"),
    "5.": Decimal(5),
    "1.e5": Decimal(100000),
    "+.5e-3": Decimal("0.0005"),
    "1e-99999": Decimal(0),  # past PostgreSQL's numeric: far below the last place
}


def _quarantine(engine: sa.Engine, request_id: str, cost: object, **fields: object) -> None:
    """Keep a call's row in the quarantine with ``cost`` as its line's ``cost_usd`` (as it is:
    text, a number or None)."""
    row = event_to_row(make_event(request_id=request_id, start=DAY, **fields))  # type: ignore[arg-type]
    row["cost_usd"] = cost
    SpendLogsInserter(engine).quarantine([(request_id, encode_row(row), "refused")])


def _read_both_ways(
    engine: sa.Engine, ids: dict[str, str], column: str
) -> list[tuple[str, object, object]]:
    """For each quarantined call ``ids`` names (request id -> the text written), the text, the
    ``spend_calls`` view's ``column`` (the reports') and the Python reader's (the budgets')."""
    with engine.connect() as conn:
        query = sa.select(spend_calls.c.request_id, spend_calls.c[column])
        viewed = {request_id: value for request_id, value in conn.execute(query)}
        read = {c.request_id: getattr(c, column) for c in quarantined_calls(conn)}
    return [(text, viewed[request_id], read[request_id]) for request_id, text in ids.items()]


def _engine(url: str) -> sa.Engine:
    engine = create_ledger_engine(url)
    upgrade(engine)
    return engine


def test_a_quarantined_text_cost_is_an_amount_only_when_written_as_one(ledger_url):  # noqa: F811
    engine = _engine(ledger_url)
    try:
        ids = {f"cost-{i}": text for i, text in enumerate(TEXT_COSTS)}
        for request_id, text in ids.items():
            _quarantine(engine, request_id, text, user="carol")
        for text, viewed, read in _read_both_ways(engine, ids, "cost_usd"):
            view = None if viewed is None else Decimal(str(viewed))
            assert (text, view, read) == (text, TEXT_COSTS[text], TEXT_COSTS[text])
        (carol,) = query_spend(engine, user="carol")
        priced = [c for c in TEXT_COSTS.values() if c is not None]
        assert (carol.requests, carol.quarantined_requests) == (len(ids), len(ids))
        assert carol.unpriced_requests == len(ids) - len(priced)
        assert carol.cost_usd == sum(priced) == carol.quarantined_usd
        store = AccountStore(ledger_url)
        try:  # what the end user's budget starts from: the same
            assert store.spent(end_user="carol", since=None) == sum(priced)
        finally:
            store.close()
    finally:
        engine.dispose()


def test_migration_0007_goes_up_and_down_over_a_quarantine(ledger_url):  # noqa: F811
    engine = create_ledger_engine(ledger_url)
    try:
        upgrade(engine, "0006")
        _quarantine(engine, "half", "1e", user="dora")
        _quarantine(engine, "whole", "0.25", user="dora")

        def dora() -> tuple[int, Decimal, int]:
            (row,) = query_spend(engine, user="dora")
            return row.requests, row.cost_usd, row.unpriced_requests

        sqlite = engine.dialect.name == "sqlite"
        at_0006 = (2, Decimal("1.25"), 0) if sqlite else (2, Decimal("0.25"), 1)
        assert dora() == at_0006
        upgrade(engine, "0007")
        assert current_revision(engine) == "0007"
        assert dora() == (2, Decimal("0.25"), 1)
        downgrade(engine, "0006")
        assert current_revision(engine) == "0006"
        assert dora() == at_0006
        upgrade(engine)
        assert dora() == (2, Decimal("0.25"), 1)
        with engine.connect() as conn:
            daily = conn.execute(sa.text("SELECT requests, unpriced_requests FROM spend_daily"))
            assert [tuple(map(int, r)) for r in daily] == [(2, 1)]
    finally:
        engine.dispose()


def test_a_quarantined_line_holding_a_nul_or_a_lone_surrogate_is_in_the_reports(ledger_url):  # noqa: F811
    engine = _engine(ledger_url)
    try:
        metadata = {"note": "a\x00b", "file": "photo-\udcff.png", "pair": "\U0001f600"}
        _quarantine(engine, "odd-text", "0.25", user="nina", metadata=metadata)
        line = json.dumps({"request_id": "low", "end_user": "nina", "cost_usd": "0.5",
                           "note": "\\\udc00\\\\ud800\x00", "start_time": DAY.isoformat()},
                          separators=(",", ":"))  # fmt: skip
        SpendLogsInserter(engine).quarantine([("low", line, "refused")])
        (nina,) = query_spend(engine, user="nina")
        assert (nina.requests, nina.cost_usd, nina.quarantined_requests) == (
            2,
            Decimal("0.75"),
            2,
        )
        with engine.connect() as conn:  # as budgets read them
            assert len(quarantined_calls(conn, end_user="nina")) == 2
    finally:
        engine.dispose()


def test_budgets_and_reports_count_a_cost_no_ledger_column_holds_alike(ledger_url):  # noqa: F811
    engine = _engine(ledger_url)
    key = hash_key("sk-huge-" + uuid.uuid4().hex)
    try:
        _quarantine(engine, "fine", "0.3", user="olga", api_key_hash=key)
        for i, huge in enumerate(("2E+10", "-2E+10", "1E+999999999")):
            _quarantine(engine, f"huge-{i}", huge, user="olga", api_key_hash=key)
        _quarantine(engine, "edge", "10000000000", user="pia", api_key_hash=key)
        store = AccountStore(ledger_url)
        try:
            assert store.spent(key_hashes=[key], since=None) == Decimal("10000000000.3")
            assert store.spent(end_user="olga", since=None) == Decimal("0.3")
        finally:
            store.close()
        (olga,) = query_spend(engine, user="olga")
        assert (olga.requests, olga.cost_usd, olga.unpriced_requests) == (4, Decimal("0.3"), 3)
    finally:
        engine.dispose()


def test_a_key_with_an_absurd_quarantined_cost_is_not_bricked(
    tmp_path: Path, monkeypatch, fake, client: httpx.Client, postgres_url
):
    """A row whose cost no ledger column holds (hand-edited, damaged: no call of ours costs
    $1e10) no longer spends the key's budget for good, nor fails its every call."""
    monkeypatch.chdir(tmp_path)
    config = accounts_config(tmp_path, fake.url, postgres_url, models=(MODEL,))
    with ProxyProcess(config, env=ledger_env(postgres_url)) as proxy:
        keys = [generate(client, proxy.url, max_budget="0.50")["key"] for _ in range(2)]
        engine = sa.create_engine(postgres_url)
        try:
            for i, (key, cost) in enumerate(zip(keys, ("2E+10", "1E+999999999"), strict=True)):
                _quarantine(engine, f"absurd-{i}", cost, api_key_hash=hash_key(key))
        finally:
            engine.dispose()
        for key in keys:
            answer = edit(client, proxy.url, key, model=MODEL)
            assert answer.status_code == 200, answer.text


def test_a_quarantined_line_written_again_by_another_tool_still_counts_for_budgets(
    ledger_url,  # noqa: F811
):
    """A line an operator corrected by hand (its cost, as docs/ledger.md says) with a tool that
    writes JSON its own way (spaces after the colons, text as UTF-8) is the same call: the
    reports counted it for its key and end user, budgets did not (they looked for the ledger
    encoder's own spelling of the field)."""
    engine = _engine(ledger_url)
    key = hash_key("sk-edited-" + uuid.uuid4().hex)
    try:
        row = json.loads(
            encode_row(event_to_row(make_event(request_id="edited", user="zoë", start=DAY)))
        )
        row.update(api_key_hash=key, cost_usd="0.125")
        line = json.dumps(row, ensure_ascii=False, indent=2)  # as jq or a person writes it
        SpendLogsInserter(engine).quarantine([("edited", line, "refused")])
        (zoe,) = query_spend(engine, user="zoë")
        assert (zoe.requests, zoe.cost_usd) == (1, Decimal("0.125"))
        store = AccountStore(ledger_url)
        try:
            assert store.spent(end_user="zoë", since=None) == Decimal("0.125")
            assert store.spent(key_hashes=[key], since=None) == Decimal("0.125")
        finally:
            store.close()
    finally:
        engine.dispose()


#: text start time -> what every reader makes of it (None: no time: in no time range, no day)
TEXT_TIMES: dict[str, datetime | None] = {
    "now": None,
    "today": None,
    "epoch": None,
    "infinity": None,
    "2460000.5": None,  # a Julian day to SQLite
    "J2460000": None,
    "May 4 2026": None,
    "20260504T120000Z": None,
    "2026-W18-1": None,
    "2026-02-30T00:00:00": None,
    "2026-05-04T24:00:00": None,
    "2026-05-04T12:00:00 PST": None,
    "2026-05-04T12:00:00.1234567": None,
    "2026-05-04": datetime(2026, 5, 4, tzinfo=UTC),
    "2026-05-04T12:00:00": datetime(2026, 5, 4, 12, tzinfo=UTC),
    "2026-05-04 12:00:00.1": datetime(2026, 5, 4, 12, 0, 0, 100000, tzinfo=UTC),
    "2026-05-04T12:00:00.000001Z": datetime(2026, 5, 4, 12, 0, 0, 1, tzinfo=UTC),
    "2026-05-05T01:30:00+03:00": datetime(2026, 5, 4, 22, 30, tzinfo=UTC),
}


def test_a_quarantined_start_time_is_a_time_only_when_written_as_one(ledger_url):  # noqa: F811
    """PostgreSQL's view read "now", "today" and "infinity" (a report by day then failed: a
    date past year 10,000), SQLite's "now" and Julian days: such a call fell on a new day each
    day in the reports, while budgets read no time. The three readers now agree."""
    engine = _engine(ledger_url)
    try:
        ids = {f"time-{i}": text for i, text in enumerate(TEXT_TIMES)}
        for request_id, text in ids.items():
            line = json.dumps({"request_id": request_id, "end_user": "ivy", "cost_usd": "0.1",
                               "start_time": text}, separators=(",", ":"))  # fmt: skip
            SpendLogsInserter(engine).quarantine([(request_id, line, "refused")])
        for text, viewed, read in _read_both_ways(engine, ids, "start_time"):
            assert (text, viewed, read) == (text, TEXT_TIMES[text], TEXT_TIMES[text])
        days = {r.key: r.requests for r in query_spend(engine, by="day")}
        assert days == {None: 13, "2026-05-04": 5}
    finally:
        engine.dispose()
