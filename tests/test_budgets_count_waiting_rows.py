"""Budgets count the calls whose rows still wait in this host's local outboxes.

While the PostgreSQL ledger cannot take rows (unreachable, out of disk, read-only), calls go on
and their rows wait in the local outboxes. A budget counter that started from the ledger then (a
restart, another worker, Redis away) read only the database: a key could pass its budget by the
rows still waiting, until they shipped. What budgets start from now adds them, each call once,
whether a row ships between the reads or not.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.accounts_support import accounts_config, edit, generate, ledger_env, wait_for
from tests.ledger_support import (  # noqa: F401
    ids_in,
    intent_line_of,
    leave_outbox,
    ledger_url,
    make_event,
    open_ledger,
    postgres_refusal,
    row_line,
    run_sql,
)
from tests.proxy_support import ProxyProcess
from tests.relay import TcpRelay
from tracking.integrations.sql import (
    budget_spend,
    budget_spend_with_outboxes,
    create_ledger_engine,
    outbox_folder,
    waiting_calls,
)
from tracking.integrations.sql._intents import priced
from tracking.proxy.account_store import AccountStore
from tracking.proxy.keys import hash_key

MODEL = "gpt-image-2"
#: A full disk as PostgreSQL reports it (SQLSTATE 53100): reads go on, every insert fails, and
#: the ledger keeps the rows in its outbox (a transient failure) until the database takes them.
_NO_ROOM = postgres_refusal("spend_logs", "53100", "could not extend file: No space left on device")


def test_a_restarted_proxy_counts_the_rows_waiting_for_a_full_database(
    tmp_path: Path, monkeypatch, fake, client: httpx.Client, postgres_url
):
    """The database stops taking rows (out of disk; reads still work): a key spends its budget
    on one proxy, which dies; the next proxy's counter starts from the ledger, which must count
    the rows waiting in the outbox the dead one left, or the key spends its budget again."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    config = accounts_config(tmp_path, fake.url, postgres_url, models=(MODEL,))
    first = ProxyProcess(config, env=ledger_env(postgres_url)).start()
    try:
        key = generate(client, first.url, max_budget="0.05")["key"]
        run_sql(postgres_url, *_NO_ROOM)
        answered: list[str] = []
        for _ in range(20):
            answer = edit(client, first.url, key, model=MODEL)
            if answer.status_code != 200:
                assert answer.status_code == 429, answer.text
                break
            answered.append(answer.headers["x-tracking-request-id"])
        assert answered and len(answered) < 20
    finally:
        first.process.kill()  # type: ignore[union-attr]  # dies as a crash would
        first.process.wait(10)  # type: ignore[union-attr]
    store = AccountStore(postgres_url)
    try:
        with ProxyProcess(config, env=ledger_env(postgres_url)) as second:
            before = fake.hits
            again = edit(client, second.url, key, model=MODEL)
            assert again.status_code == 429, again.text
            assert again.json()["error"]["code"] == "budget_exceeded"
            assert fake.hits == before
            spent = store.spent(key_hashes=[hash_key(key)], since=None)
            assert Decimal(0) < spent <= Decimal("0.05")
            # room again: the rows ship
            run_sql(postgres_url, "DROP TRIGGER refuse_spend_logs ON spend_logs")
            engine = sa.create_engine(postgres_url)
            try:
                wait_for(lambda: set(answered) <= ids_in(engine))
            finally:
                engine.dispose()
            assert store.spent(key_hashes=[hash_key(key)], since=None) == spent  # once
            assert edit(client, second.url, key, model=MODEL).status_code == 429
    finally:
        store.close()


def test_rows_left_while_the_database_was_unreachable_count_before_they_ship(
    postgres_url, tmp_path, monkeypatch
):
    """A process stops during an outage; the database is back before the next one ships what
    it left: the budget read in between counts those rows, and after they ship, counts them
    once."""
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    open_ledger(postgres_url).shutdown(10)  # the schema
    relay = TcpRelay(postgres_url)
    try:
        ledger = open_ledger(relay.url, mode="durable")
        relay.cut()
        events = [
            make_event(user="wendy", api_key_hash="kh-w", cost=Decimal("0.0110000001")),
            make_event(user="wendy", api_key_hash="kh-w", cost=Decimal("0.0200000000")),
            make_event(user="xavier", api_key_hash="kh-x", cost=Decimal("0.5")),
        ]
        for event in events:
            ledger.on_end(event)  # acknowledged in the outbox
        ledger.shutdown(1)
        assert ledger.outbox_rows() == 3
        relay.restore()
        store = AccountStore(relay.url)
        try:
            assert store.spent(key_hashes=["kh-w"], since=None) == Decimal("0.0310000001")
            assert store.spent(end_user="xavier", since=None) == Decimal("0.5")
            later = events[0].start_time.replace(year=events[0].start_time.year + 1)
            assert store.spent(end_user="wendy", since=later) == 0
            reader = open_ledger(relay.url)
            try:
                assert reader.flush(30)
            finally:
                reader.shutdown(10)
            assert not list(outbox_folder(store.engine).glob("outbox-*.db"))
            assert store.spent(key_hashes=["kh-w"], since=None) == Decimal("0.0310000001")
            assert store.spent(key_hashes=["kh-w", "kh-x"], since=None) == Decimal("0.5310000001")
        finally:
            store.close()
    finally:
        relay.close()


def test_a_row_that_ships_between_the_two_reads_counts_once(ledger_url):  # noqa: F811
    """The outboxes are read first, the database after: a row shipped in between is on both
    sides and counts once; so does a call whose own row waits while the database holds its
    recovered intent's estimate (the own row replaces it)."""
    engine = create_ledger_engine(ledger_url)
    ledger = open_ledger(ledger_url)
    ledger.shutdown(10)
    folder = outbox_folder(engine)
    try:
        shipped = row_line("ships-between", user="yann", cost=Decimal("0.25"))
        intent = priced(intent_line_of("own-waits", user="yann"))
        own = row_line("own-waits", user="yann", cost=Decimal("0.0300000000"))
        leave_outbox(folder, [shipped, own])
        waiting = waiting_calls(folder, end_user="yann")
        assert sorted(c.request_id or "" for c in waiting) == ["own-waits", "ships-between"]
        from tracking.integrations.sql._target import SpendLogsInserter

        SpendLogsInserter(engine).insert_lines([shipped, intent])  # shipped meanwhile
        with engine.connect() as conn:
            assert budget_spend(conn, end_user="yann", waiting=waiting) == Decimal("0.28")
            assert budget_spend(conn, end_user="yann") > Decimal("0.25")  # the estimate
        assert budget_spend_with_outboxes(engine, end_user="yann") == Decimal("0.28")
    finally:
        engine.dispose()


@pytest.mark.parametrize("status", ["incomplete", "success"])
def test_a_waiting_intent_does_not_count_beside_the_calls_own_row(ledger_url, status):  # noqa: F811
    """A dead process's recovered intent waits in an outbox; the database holds the call's own
    row (counted there) or the same intent (counted once)."""
    engine = create_ledger_engine(ledger_url)
    open_ledger(ledger_url).shutdown(10)
    folder = outbox_folder(engine)
    try:
        request_id = f"intent-{uuid.uuid4().hex[:8]}"
        intent = priced(intent_line_of(request_id, user="zelda"))
        leave_outbox(folder, [intent])
        from tracking.integrations.sql._target import SpendLogsInserter

        in_database = (
            intent
            if status == "incomplete"
            else row_line(request_id, user="zelda", cost=Decimal("0.01"))
        )
        SpendLogsInserter(engine).insert_lines([in_database])
        alone = budget_spend_with_outboxes(engine, end_user="zelda")
        with engine.connect() as conn:
            assert alone == budget_spend(conn, end_user="zelda")
        if status == "success":
            assert alone == Decimal("0.01")
    finally:
        engine.dispose()


def test_the_flags_of_a_figure_come_from_the_rows_it_counts(ledger_url):  # noqa: F811
    """``/customer/info``'s figures count the calls waiting in this host's outboxes; its flags
    (``AccountStore.spent_and_flagged``) came from the database alone: a waiting call at an
    estimate or of no known price was in the figure and in no flag, and a call whose own row
    waits while the database holds its intent's estimate was flagged as that estimate. Both
    come from the same rows now."""
    engine = create_ledger_engine(ledger_url)
    open_ledger(ledger_url).shutdown(10)
    folder = outbox_folder(engine)
    try:
        from tracking.integrations.sql._target import SpendLogsInserter

        intent = priced(intent_line_of("vera-own", user="vera"))
        SpendLogsInserter(engine).insert_lines(
            [intent, row_line("vera-db", user="vera", cost=Decimal("0.05"), cost_source="estimate")]
        )
        leave_outbox(
            folder,
            [
                row_line("vera-own", user="vera", cost=Decimal("0.03")),  # replaces the intent
                row_line("vera-est", user="vera", cost=Decimal("0.07"), cost_source="estimate"),
                row_line("vera-unpriced", user="vera", cost=None),
            ],
        )
        store = AccountStore(ledger_url)
        try:
            total, flags = store.spent_and_flagged(end_user="vera", since=None)
            assert total == store.spent(end_user="vera", since=None) == Decimal("0.15")
            assert flags == {
                "unpriced_requests": 1,
                "estimated_requests": 2,
                "estimated_usd": "0.1200000000",
            }
            later = datetime.now(UTC) + timedelta(days=1)
            assert store.spent_and_flagged(end_user="vera", since=later) == (Decimal(0), {})
        finally:
            store.close()
    finally:
        engine.dispose()
