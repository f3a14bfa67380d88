"""An SQLite ledger's batch that fits one statement is committed by that statement alone.

SQLite commits a statement run outside a transaction (with the WAL's fsync, ``synchronous=FULL``)
in the statement's own step, so the writer needs no ``BEGIN`` and ``COMMIT`` around it: two
fewer hand-offs of the GIL per group commit while the proxy's event loop wants it (2026-12-07).
A batch larger than one statement keeps its explicit transaction (one commit, one fsync), and
the pooled connection goes back in its own transaction mode.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.ledger_support import make_event, open_ledger
from tracking.integrations.sql import event_to_row
from tracking.integrations.sql._codec import sqlite_params
from tracking.integrations.sql._engine import create_ledger_engine
from tracking.integrations.sql._target import ONE_STATEMENT_ROWS, SpendLogsInserter


def _traced_engine(tmp_path: Path) -> tuple[sa.Engine, list[str], Path]:
    """A migrated ledger file and an engine whose connections report every statement run."""
    path = tmp_path / "ledger.db"
    open_ledger(f"sqlite:///{path}").shutdown(10)  # migrated, then closed
    engine = create_ledger_engine(f"sqlite:///{path}")
    seen: list[str] = []

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(lambda sql: seen.append(sql.split()[0].upper()))

    sa.event.listen(engine, "connect", trace)
    return engine, seen, path


def _stored(path: Path) -> int:
    """Rows another connection reads: what was committed."""
    with sqlite3.connect(path) as other:
        return int(other.execute("SELECT count(*) FROM spend_logs").fetchone()[0])


def _params(count: int) -> list[tuple[Any, ...]]:
    return [sqlite_params(event_to_row(make_event())) for _ in range(count)]


def test_a_batch_that_fits_one_statement_is_committed_by_it_alone(tmp_path: Path) -> None:
    engine, seen, path = _traced_engine(tmp_path)
    try:
        inserter = SpendLogsInserter(engine)
        seen.clear()
        inserter.insert_prepared(_params(3))
        assert seen == ["INSERT"]  # no BEGIN, no COMMIT: one transaction all the same
        assert _stored(path) == 3  # committed when the call returns
        seen.clear()
        inserter.insert_prepared(_params(1))  # a single row: one statement too
        assert seen == ["INSERT"]
        assert _stored(path) == 4
        connection = engine.raw_connection()
        try:  # the pool's connection is back in its default mode (implicit transactions)
            assert connection.driver_connection.isolation_level == ""  # type: ignore[union-attr]
        finally:
            connection.close()
    finally:
        engine.dispose()


def test_a_batch_larger_than_one_statement_is_still_one_transaction(tmp_path: Path) -> None:
    engine, seen, path = _traced_engine(tmp_path)
    try:
        seen.clear()
        SpendLogsInserter(engine).insert_prepared(_params(ONE_STATEMENT_ROWS + 1))
        assert seen[0] == "BEGIN" and seen[-1] == "COMMIT"  # one commit, one fsync
        assert seen.count("COMMIT") == 1
        assert _stored(path) == ONE_STATEMENT_ROWS + 1
    finally:
        engine.dispose()


def test_a_refused_row_leaves_nothing_of_its_one_statement_batch(tmp_path: Path) -> None:
    """Atomic without ``BEGIN``: a row the database refuses takes its batch's statement back
    whole, so the writer can set that row aside and write the others one by one."""
    engine, _, path = _traced_engine(tmp_path)
    try:
        rows = _params(3)
        refused = (None, *rows[1][1:])  # request_id is the first column: NOT NULL
        try:
            SpendLogsInserter(engine).insert_prepared([rows[0], refused, rows[2]])
        except sqlite3.IntegrityError:
            pass
        else:
            raise AssertionError("the row without a request id was taken")
        assert _stored(path) == 0
    finally:
        engine.dispose()
