"""Two processes quarantining the same row at once keep it once.

Each quarantine write checks what the quarantine holds and inserts what is not there. Two
writers at once (two processes shipping copies of one row: an outbox shipped again after its
process died, a row kept twice at shutdown) could both check, find nothing and insert: the
budgets and reports counted the call once, but ``tracking ledger quarantine list`` showed it
twice. The check and the insert now hold the quarantine's write lock.
"""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from tests.accounts_support import wait_for
from tests.ledger_support import intent_line_of, ledger_url, open_ledger, row_line  # noqa: F401
from tracking.integrations.sql import create_ledger_engine
from tracking.integrations.sql._intents import priced
from tracking.integrations.sql._quarantine import list_quarantine
from tracking.integrations.sql._target import SpendLogsInserter


def _blocking_statements(engine: sa.Engine) -> set[int]:
    """The threads whose SQLite connection of ``engine`` began a statement that waits for the
    file's write lock (an insert, or ``BEGIN IMMEDIATE``)."""
    waiting: set[int] = set()

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "BEGIN IMMEDIATE")):
            waiting.add(threading.get_ident())

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(trace)

    return waiting


def test_two_writers_quarantining_one_row_at_once_keep_it_once(ledger_url):  # noqa: F811
    open_ledger(ledger_url).shutdown(10)  # the schema
    engine = create_ledger_engine(ledger_url)
    sqlite = engine.dialect.name == "sqlite"
    traced = _blocking_statements(engine) if sqlite else set()
    line = row_line("twice-at-once", user="quinn", cost=Decimal("0.07"))
    errors: list[BaseException] = []

    def quarantine() -> None:
        try:
            SpendLogsInserter(engine).quarantine([("twice-at-once", line, "refused")])
        except BaseException as exc:
            errors.append(exc)

    holder: Any
    if sqlite:  # another process holds the file's write lock while both check
        holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:  # another session holds a lock on the quarantine that writes wait for
        holder = sa.create_engine(ledger_url).connect()
        holder.execute(sa.text("LOCK TABLE ledger_quarantine IN EXCLUSIVE MODE"))
    writers = [threading.Thread(target=quarantine) for _ in range(2)]
    try:
        for writer in writers:
            writer.start()
        if sqlite:
            wait_for(lambda: len(traced) == 2)
        else:
            blocked = sa.text(
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND relation = 'ledger_quarantine'::regclass"
            )
            with engine.connect() as conn:
                wait_for(lambda: conn.execute(blocked).scalar_one() == 2)
    finally:
        if sqlite:
            holder.execute("ROLLBACK")
            holder.close()
        else:
            holder.rollback()
            holder.close()
            holder.engine.dispose()
        for writer in writers:
            writer.join(30)
    try:
        assert not errors
        kept = [row for row in list_quarantine(engine) if row.request_id == "twice-at-once"]
        assert len(kept) == 1
    finally:
        engine.dispose()


def test_a_calls_own_row_and_its_intent_are_each_kept_once(ledger_url):  # noqa: F811
    """Once per call: the own row, encoded another way (the SQLite writer's text of its row
    beside an outbox's line), is not kept again; the call's intent is kept beside it."""
    open_ledger(ledger_url).shutdown(10)
    engine = create_ledger_engine(ledger_url)
    try:
        inserter = SpendLogsInserter(engine)
        line = row_line("one-call", user="rita", cost=Decimal("0.07"))
        other = line.replace('"end_user":"rita"', '"end_user": "rita"')
        assert other != line
        intent = priced(intent_line_of("one-call", user="rita"))
        inserter.quarantine([("one-call", line, "refused")])
        inserter.quarantine([("one-call", other, "refused"), ("one-call", intent, "refused")])
        inserter.quarantine([("one-call", intent, "refused")])
        kept = sorted('"incomplete"' in row.line for row in list_quarantine(engine))
        assert kept == [False, True]
    finally:
        engine.dispose()
