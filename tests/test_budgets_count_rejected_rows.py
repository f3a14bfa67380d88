"""Budgets count the calls whose rows the database and its quarantine both refused.

A row the database refuses for good goes to ``ledger_quarantine``; should the quarantine refuse
it too, it is kept in its outbox's ``rejected`` table, and an outbox left with only such rows is
set aside as ``rejected-<pid>.db``. Those calls were billed all the same, yet what budgets
start from counted ``spend_logs``, the quarantine and the rows still waiting to ship, never
these: a key or end user whose rows kept being refused spent past its budget without limit,
once its counter started again from the ledger. They count now, each call once.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.accounts_support import accounts_config, edit, generate, ledger_env
from tests.ledger_support import (  # noqa: F401
    close_quarantine,
    intent_line_of,
    leave_outbox,
    ledger_url,
    make_event,
    open_ledger,
    outbox_with_rejected_rows,
    postgres_refusal,
    refused_rows,
    row_line,
    run_sql,
)
from tests.proxy_support import ProxyProcess
from tracking.integrations.sql import _outbox as outbox_module
from tracking.integrations.sql import (
    budget_spend,
    budget_spend_with_outboxes,
    create_ledger_engine,
    local_calls,
    outbox_folder,
    waiting_calls,
)
from tracking.integrations.sql._intents import priced
from tracking.integrations.sql._target import SpendLogsInserter
from tracking.proxy.account_store import AccountStore
from tracking.proxy.keys import hash_key

MODEL = "gpt-image-2"
#: ``spend_logs`` refusing every row for good, as a value out of range is (SQLSTATE 22003).
_REFUSING_SPEND_LOGS = postgres_refusal("spend_logs", "22003", "value out of range")


def test_a_call_refused_by_the_database_and_its_quarantine_counts_toward_budgets(
    ledger_url: str,  # noqa: F811
) -> None:
    """The row ends in the outbox's ``rejected`` table (then in a file set aside): the budget
    counts its cost while the ledger runs and after it closed; the database alone does not."""
    open_ledger(ledger_url).shutdown(10)  # the schema
    close_quarantine(ledger_url)
    engine = create_ledger_engine(ledger_url)
    try:
        _spend_past_the_database_and_its_quarantine(ledger_url, engine)
    finally:
        engine.dispose()


def _spend_past_the_database_and_its_quarantine(url: str, engine: sa.Engine) -> None:
    ((name, fields),) = refused_rows(engine.dialect.name)[:1]
    ledger = open_ledger(url, mode="durable")
    try:
        refused = make_event(
            request_id=f"bad-{name}",
            user="rita",
            api_key_hash="kh-r",
            cost=Decimal("0.25"),
            **fields,  # type: ignore[arg-type]
        )
        ledger.on_end(refused)
        ledger.on_end(make_event(user="rita", api_key_hash="kh-r", cost=Decimal("0.0100000001")))
        assert ledger.flush(10)
        assert ledger.rejected_rows == 1 and ledger.quarantined_rows == 0
        with engine.connect() as conn:  # the database alone: the refused call is not there
            assert budget_spend(conn, end_user="rita") == Decimal("0.0100000001")
        assert waiting_calls(outbox_folder(engine), end_user="rita") == []
        assert budget_spend_with_outboxes(engine, end_user="rita") == Decimal("0.2600000001")
    finally:
        ledger.shutdown(10)
    folder = outbox_folder(engine)
    assert [p.name.startswith("rejected-") for p in folder.glob("*.db")] == [True]
    for filters in ({"end_user": "rita"}, {"key_hashes": ["kh-r"]}, {}):
        assert budget_spend_with_outboxes(engine, **filters) == Decimal("0.2600000001")
    assert budget_spend_with_outboxes(engine, key_hashes=["kh-other"]) == 0
    later = refused.start_time.replace(year=refused.start_time.year + 1)
    assert budget_spend_with_outboxes(engine, end_user="rita", since=later) == 0
    store = AccountStore(url)
    try:
        assert store.spent(key_hashes=["kh-r"], since=None) == Decimal("0.2600000001")
    finally:
        store.close()


def test_a_rejected_call_counts_once_beside_its_other_rows(ledger_url: str) -> None:  # noqa: F811
    """A call kept in ``rejected`` may have a row elsewhere too: in ``spend_logs`` (counted
    there), only its intent's estimate there (its own rejected row replaces it), waiting in an
    outbox, in two files, or one file read under both its names while it is set aside."""
    open_ledger(ledger_url).shutdown(10)
    engine = create_ledger_engine(ledger_url)
    folder = outbox_folder(engine)
    try:
        user = "sam"
        in_logs = row_line("in-logs", user=user, cost=Decimal("0.5"))
        intent = priced(intent_line_of("own-rejected", user=user))
        own = row_line("own-rejected", user=user, cost=Decimal("0.03"))
        waits = row_line("waits-and-rejected", user=user, cost=Decimal("0.007"))
        nameless = json.loads(row_line("nameless", user=user, cost=Decimal("0.0000000001")))
        del nameless["request_id"]  # a row without a request id: told apart by its line
        alone = json.dumps(nameless, separators=(",", ":"))
        SpendLogsInserter(engine).insert_lines([in_logs, intent])
        with engine.connect() as conn:
            in_database = budget_spend(conn, end_user=user)
        assert in_database > Decimal("0.5")  # the intent's estimate

        outbox = leave_outbox(folder, [waits])  # waiting, with a rejected copy of the row
        db = sqlite3.connect(outbox)
        with db:
            db.executemany(
                "INSERT INTO rejected (line, reason) VALUES (?, 'refused')", [(waits,), (in_logs,)]
            )
        db.close()
        outbox_with_rejected_rows(folder, [own, alone], "rejected-1.db")
        outbox_with_rejected_rows(folder, [own, in_logs], "rejected-2.db")
        (folder / "rejected-3.db").hardlink_to(folder / "rejected-1.db")  # both names at once

        ids = sorted(c.request_id or "" for c in local_calls(folder, end_user=user))
        assert ids == ["", "in-logs", "own-rejected", "waits-and-rejected"]
        assert [c.request_id for c in waiting_calls(folder, end_user=user)] == [
            "waits-and-rejected"
        ]
        expected = Decimal("0.5") + Decimal("0.03") + Decimal("0.007") + Decimal("0.0000000001")
        assert budget_spend_with_outboxes(engine, end_user=user) == expected
        assert budget_spend_with_outboxes(engine, end_user="nobody") == 0
    finally:
        engine.dispose()


def test_a_key_whose_rows_are_refused_everywhere_is_held_to_its_budget_after_a_restart(
    tmp_path: Path, monkeypatch, fake, client: httpx.Client, postgres_url: str
) -> None:
    """Every row the database takes no row and its quarantine neither: a key spends its
    budget on one proxy; the next proxy's counter starts from the ledger, which must count the
    calls kept in the first one's ``rejected`` table (set aside at its shutdown), or the key
    spends its budget again, and again at every restart."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    config = accounts_config(tmp_path, fake.url, postgres_url, models=(MODEL,))
    user = "ursula-" + uuid.uuid4().hex[:8]
    with ProxyProcess(config, env=ledger_env(postgres_url)) as first:
        key = generate(client, first.url, max_budget="0.05")["key"]
        run_sql(postgres_url, *_REFUSING_SPEND_LOGS)
        close_quarantine(postgres_url)
        answered = 0
        for _ in range(20):
            answer = edit(client, first.url, key, model=MODEL, user=user)
            if answer.status_code != 200:
                assert answer.status_code == 429, answer.text
                break
            answered += 1
        assert 0 < answered < 20
    store = AccountStore(postgres_url)
    try:
        folder = outbox_folder(store.engine)
        kept = outbox_module.read_rejected(folder)
        assert len(kept) == answered
        assert all(p.name.startswith("rejected-") for p in folder.glob("*.db"))
        with ProxyProcess(config, env=ledger_env(postgres_url)) as second:
            before = fake.hits
            again = edit(client, second.url, key, model=MODEL, user=user)
            assert again.status_code == 429, again.text
            assert again.json()["error"]["code"] == "budget_exceeded"
            assert fake.hits == before
        spent = store.spent(key_hashes=[hash_key(key)], since=None)
        assert Decimal(0) < spent <= Decimal("0.05")
        assert store.spent(end_user=user, since=None) == spent
    finally:
        store.close()
