"""Rows an SQLite ledger kept at shutdown (its file was locked) that the database refuses for good
do not stop the next start from writing the others.

The next ledger for the file writes the kept rows as the outbox shipper ships an outbox: a row
refused for good moves to ``ledger_quarantine`` (or, if the quarantine refuses it too, to the
outbox's ``rejected`` table), counted, and the rows behind it are written; a transient failure
(the file locked again) keeps every row for the start after.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.ledger_support import (
    close_quarantine,
    fresh_sqlite_ledger,
    ids_in,
    leave_outbox,
    leftovers_dir,
    refused_line,
    row_line,
)
from tracking.integrations.sql import SqlLedger
from tracking.integrations.sql._engine import create_ledger_engine
from tracking.integrations.sql._quarantine import list_quarantine


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_sqlite_ledger(tmp_path, monkeypatch)


def _outbox_tables(path: Path) -> tuple[list[str], list[str]]:
    """The lines still waiting in an outbox file, and those in its ``rejected`` table."""
    db = sqlite3.connect(path)
    try:
        waiting = [line for (line,) in db.execute("SELECT line FROM outbox ORDER BY seq")]
        rejected = [line for (line,) in db.execute("SELECT line FROM rejected ORDER BY seq")]
    finally:
        db.close()
    return waiting, rejected


def test_kept_rows_the_database_refuses_are_quarantined_and_the_others_written(url: str) -> None:
    lines = [row_line("good-1"), refused_line(), "{not a ledger row", row_line("good-2")]
    leave_outbox(leftovers_dir(url), lines)

    ledger = SqlLedger(url)
    try:
        assert ids_in(ledger.engine) == {"good-1", "good-2"}
        kept = list_quarantine(ledger.engine)
        assert [r.request_id for r in kept] == ["bad-tokens", "(unreadable)"]
        assert [r.line for r in kept] == lines[1:3] and all(r.error for r in kept)
        assert ledger.quarantined_rows == ledger.ledger_stats().quarantined_rows == 2
        assert ledger.rejected_rows == 0
        # The two rows written late are reported as replayed, as a shipper's backlog is.
        assert ledger.replayed_rows == ledger.ledger_stats().replayed_rows == 2
    finally:
        ledger.shutdown(10)
    assert not list(leftovers_dir(url).iterdir())  # the kept rows' outbox is gone

    again = SqlLedger(url)  # and nothing is written or quarantined twice
    try:
        assert ids_in(again.engine) == {"good-1", "good-2"}
        assert len(list_quarantine(again.engine)) == 2 and again.quarantined_rows == 0
        assert again.replayed_rows == again.ledger_stats().replayed_rows == 0
    finally:
        again.shutdown(10)


def test_a_kept_row_the_quarantine_refuses_too_stays_in_the_outbox_rejected_table(
    url: str,
) -> None:
    close_quarantine(url)
    refused = refused_line()
    path = leave_outbox(leftovers_dir(url), [row_line("good-1"), refused, row_line("good-2")])

    ledger = SqlLedger(url)
    try:
        assert ids_in(ledger.engine) == {"good-1", "good-2"}
        assert ledger.rejected_rows == 1 and ledger.quarantined_rows == 0
    finally:
        ledger.shutdown(10)
    # Kept for inspection, not lost; set aside under a name no start claims again.
    assert not path.exists()
    (kept,) = leftovers_dir(url).glob("rejected-*.db")
    assert _outbox_tables(kept) == ([], [refused])


def test_kept_rows_wait_out_a_transient_failure_and_the_next_start_writes_them(
    url: str, tmp_path: Path
) -> None:
    lines = [row_line("good-1"), refused_line(), row_line("good-2")]
    path = leave_outbox(leftovers_dir(url), lines)

    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the file's write lock
    try:
        engine = create_ledger_engine(url)
        # Give up on the lock after 0.1 s instead of the ledger's 10 s.
        sa.event.listen(
            engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout=100")
        )
        try:
            SqlLedger(engine=engine).shutdown(10)
        finally:
            engine.dispose()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _outbox_tables(path) == (lines, [])  # every row kept, the refused one too

    ledger = SqlLedger(url)
    try:
        assert ids_in(ledger.engine) == {"good-1", "good-2"}
        assert [r.request_id for r in list_quarantine(ledger.engine)] == ["bad-tokens"]
        assert ledger.quarantined_rows == 1
    finally:
        ledger.shutdown(10)
    assert not list(leftovers_dir(url).iterdir())


def test_a_dead_processes_intent_the_quarantine_refuses_too_is_counted_as_rejected(
    url: str,
) -> None:
    """``rejected_rows`` counts every row refused for good, a recovered intent's too."""
    from tracking.integrations.sql._intents import IntentLog

    close_quarantine(url)
    dead = IntentLog(leftovers_dir(url))
    dead.record("bad-tokens", refused_line())
    dead.close()  # an open intent: the log stays, unlocked, as a dead process leaves it

    ledger = SqlLedger(url, mode="durable", intents=True)
    try:
        assert ledger.flush(10)
        deadline = 50
        while ledger.rejected_rows == 0 and deadline:
            ledger.flush(0.1)
            deadline -= 1
        assert ledger.rejected_rows == 1 and ledger.quarantined_rows == 0
        assert "bad-tokens" not in ids_in(ledger.engine)
    finally:
        ledger.shutdown(10)
