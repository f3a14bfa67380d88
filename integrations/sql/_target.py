"""Idempotent batch inserts into the target's ``spend_logs``, through the raw driver.

:class:`SpendLogsInserter` writes a batch in one transaction with
``ON CONFLICT (request_id)`` keeping the row already there (a replayed row is a no-op, never a
double count) unless it is an ``incomplete`` one, which the call's own row replaces
(:data:`~tracking.integrations.sql._codec.ON_CONFLICT`). It
takes rows (dicts) or outbox lines (JSON text) and encodes them for the dialect with
:mod:`~tracking.integrations.sql._codec`, bypassing SQLAlchemy's per-row parameter processing;
connections still come from the engine's pool, with its settings (SQLite pragmas, pre-ping).
An SQLite batch that fits one statement (:data:`ONE_STATEMENT_ROWS`) runs outside a transaction,
which SQLite commits (fsync included) in the statement's own step: the writer hands the GIL back
once per batch instead of three times (``BEGIN``, the statement, ``COMMIT``), which counts while
a proxy's event loop wants it (2026-12-07; a larger batch keeps ``BEGIN`` ... ``COMMIT``).

:meth:`SpendLogsInserter.is_transient` sorts failures: a connection lost, a server gone, a
timeout, a serialization failure or a deadlock is worth retrying with the rows kept; a row the
database refuses (a value it cannot parse or store, a constraint, an encoding, a number out of
range, PostgreSQL's index row size limit) will be refused every time and must be set aside.
:meth:`SpendLogsInserter.quarantine` sets it aside in the target's ``ledger_quarantine`` table,
with the database's error text, where ``tracking ledger quarantine list|replay`` finds it.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._codec import (
    POSTGRES_INSERT,
    SQLITE_INSERT,
    decode_row,
    encode_row,
    line_of_sqlite_params,
    line_request_id,
    postgres_batch,
    sqlite_insert_rows,
    sqlite_params,
)
from ._gate import SchemaGate, SchemaUnchecked
from ._hooks import call_count_hooks
from ._outbox import after_refusal, lock_refused

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["SpendLogsInserter", "announce_quarantined", "error_text"]

log = logging.getLogger("tracking.ledger")

#: SQLSTATE classes (PostgreSQL, Appendix A) of errors a row brings on itself: retrying it can
#: only fail the same way. 21 cardinality violation, 22 data exception (a value out of range, an
#: encoding, a NUL in text), 23 integrity constraint, 54 program limit exceeded (an index entry
#: over the B-tree limit). Every other class (08 connection, 40 serialization or deadlock, 53
#: resources, 57 operator intervention and timeouts, 42 a missing table...) keeps the rows.
_PERMANENT_CLASSES = frozenset({"21", "22", "23", "54"})
#: How much of a database's error message is kept with a quarantined row.
_ERROR_TEXT_CHARS = 2000
_QUARANTINE_INSERT = (
    "INSERT INTO ledger_quarantine (request_id, line, error, quarantined_at) VALUES "
)
#: The quarantine's write lock, held from the check to the commit (see ``quarantine``). On
#: PostgreSQL a mode that conflicts with itself and with writes, not with reads.
_POSTGRES_LOCK = "LOCK TABLE ledger_quarantine IN SHARE ROW EXCLUSIVE MODE"
_SQLITE_LOCK = "BEGIN IMMEDIATE"


def _call_key(request_id: str | None, line: str) -> tuple[str, ...]:
    """What makes a quarantined row the same call's as another: its request id and whether it
    is the call's intent (``incomplete``) or its own row; a row without a request id, its line.
    """
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        row = None
    found = row.get("request_id") if isinstance(row, dict) else None
    if not isinstance(found, str) or found != request_id:
        return ("line", line)
    return (found, "incomplete" if row.get("status") == "incomplete" else "own")


def error_text(exc: BaseException) -> str:
    """The database's own message for a failure (the driver's, not SQLAlchemy's wrapper)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().replace("\x00", "") or type(orig).__name__
    state = getattr(orig, "sqlstate", None)
    prefix = f"{type(orig).__name__}" + (f" [{state}]" if state else "")
    return f"{prefix}: {text}"[:_ERROR_TEXT_CHARS]


def announce_quarantined(
    request_id: str, error: str, hooks: Sequence[Callable[[int], None]]
) -> None:
    """Log a row just quarantined and run the quarantine hooks (the metric) for it."""
    log.error("ledger row %s refused (%s); kept in ledger_quarantine", request_id, error)
    call_count_hooks(hooks, 1, "quarantine")


class SpendLogsInserter:
    """Writes batches of rows into ``spend_logs``; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        callers_run_on: bool = False,
        schema_gate: SchemaGate | None = None,
        busy_slices: bool = False,
    ) -> None:
        self.engine = engine
        #: An SQLite engine whose connections wait for a lock held elsewhere a slice at a time
        #: (``busy_timeout`` of ``_outbox.BUSY_SLICE`` ms): a write is tried again slice after
        #: slice, as long as SQLite's own wait was, and gives up at the end of its slice once
        #: :meth:`stop_waiting` was called (an SQLite ledger's writer at shutdown).
        self._busy_slices = busy_slices
        self._giving_up = False
        #: The schema check still to pass before anything is written (a ledger opened while
        #: its database was unreachable, see :mod:`~tracking.integrations.sql._gate`).
        self.schema_gate = schema_gate
        self.dialect = engine.dialect.name
        #: The callers keep running while rows are written (``background`` mode): SQLite batches
        #: of any size go in statements of ``ONE_STATEMENT_ROWS`` rows (see ``_insert_sqlite``).
        self.callers_run_on = callers_run_on
        dbapi = engine.dialect.dbapi
        self._database_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError,)
        self._refused: tuple[type[BaseException], ...] = ()
        if dbapi is not None:
            self._database_errors += (dbapi.Error,)
            self._refused = (dbapi.IntegrityError, dbapi.DataError)

    def is_transient(self, exc: BaseException) -> bool:
        """True for failures worth retrying, False for a row the database refuses.

        PostgreSQL says which with the error's SQLSTATE class (see ``_PERMANENT_CLASSES``):
        psycopg files an index entry over the size limit under OperationalError, the same as a
        lost connection, so the class, not the exception type, decides. Without a SQLSTATE
        (SQLite, or an error raised before the server answered), integrity and data errors
        condemn a row; any other database error (connection lost, lock held, even a missing
        table) keeps the rows and is retried, because setting billing data aside is worse than
        waiting for someone to fix the database.
        """
        if isinstance(exc, SchemaUnchecked):
            return True  # the rows wait until the database is there with the ledger's schema
        if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
            exc = exc.orig
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and len(state) == 5:
            return state[:2] not in _PERMANENT_CLASSES
        if isinstance(exc, self._refused):
            return False
        return isinstance(exc, self._database_errors)

    def quarantine(self, entries: Sequence[tuple[str, str, str]]) -> None:
        """Keep ``(request_id, line, error)`` rows the target refused, in one transaction.

        The line is kept as text (a JSON string escapes a NUL, so PostgreSQL takes it) and no
        index covers it, so whatever made ``spend_logs`` refuse the row cannot refuse this.

        Once per call: a row is not kept when the quarantine holds the same call's row already
        (the same request id, and both the call's own row or both its intent's ``incomplete``
        one; a row without a request id: the same line). An outbox shipped again after its
        process died, or stopped at shutdown's deadline, before the row left it, quarantines
        it again; until 2026-12-05 that kept it twice, and budgets counted it twice. The check
        and the insert hold the quarantine's write lock (PostgreSQL: a table lock that readers
        pass; SQLite: ``BEGIN IMMEDIATE``), so two processes quarantining the same row at
        once keep it once: until 2026-12-06 both could check, find nothing, and insert. A lock
        rather than a unique index: the quarantine must take any row ``spend_logs`` refused
        (a request id over the B-tree's size limit included), and it may hold a call's intent
        beside its own row; quarantining is rare, so the lock costs nothing.
        """
        now = datetime.now(UTC)
        sqlite = self.dialect == "sqlite"
        marker = "?" if sqlite else "%s"
        stamp: Any = now.isoformat(" ", "microseconds")[:-6] if sqlite else now
        ids = sorted({request_id for request_id, _, _ in entries})
        kept = (
            "SELECT request_id, line FROM ledger_quarantine "  # noqa: S608 (markers only)
            f"WHERE request_id IN ({', '.join([marker] * len(ids))})"
        )

        def keep(cursor: Any) -> None:
            # Taken before the check: another writer's check and insert wait for this one's.
            cursor.execute(_SQLITE_LOCK if sqlite else _POSTGRES_LOCK)
            cursor.execute(kept, ids)
            seen = {_call_key(request_id, line) for request_id, line in cursor.fetchall()}
            fresh = []
            for request_id, line, error in entries:
                key = _call_key(request_id, line)
                if key not in seen:
                    seen.add(key)
                    fresh.append((request_id, line, error))
            if fresh:
                one = f"({marker}, {marker}, {marker}, {marker})"
                statement = _QUARANTINE_INSERT + ", ".join([one] * len(fresh))
                cursor.execute(statement, [v for entry in fresh for v in (*entry, stamp)])

        self._run(keep)

    def prepare(self, row: Mapping[str, Any]) -> Any:
        """The row as this dialect's writer item: SQLite parameters, else an outbox line."""
        return sqlite_params(row) if self.dialect == "sqlite" else encode_row(row)

    def insert_prepared(self, items: Sequence[Any]) -> None:
        """Insert items made by :meth:`prepare`, in one transaction."""
        if self.dialect == "sqlite":
            self._run(
                lambda cursor: _insert_sqlite(cursor, items, self.callers_run_on),
                one_statement=len(items) <= ONE_STATEMENT_ROWS,
            )
        else:
            self.insert_lines(items)

    def request_id(self, item: Any) -> str:
        """The request id of an item made by :meth:`prepare` (for messages)."""
        if isinstance(item, tuple):
            return str(item[0])  # request_id is the first column
        return line_request_id(item)

    def quarantine_item(self, item: Any, error: str) -> None:
        """:meth:`quarantine` for one item made by :meth:`prepare`."""
        line = line_of_sqlite_params(item) if isinstance(item, tuple) else item
        self.quarantine([(self.request_id(item), line, error)])

    def insert_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert row dicts in one transaction; duplicates of existing rows are ignored."""
        if self.dialect == "sqlite":
            params = [sqlite_params(row) for row in rows]
            self._run(lambda cursor: _insert_sqlite(cursor, params, self.callers_run_on))
        else:
            self.insert_lines([encode_row(row) for row in rows])

    def insert_lines(self, lines: Sequence[str]) -> None:
        """Insert rows encoded as outbox lines, in one transaction."""
        if self.dialect == "sqlite":
            self.insert_rows([decode_row(line) for line in lines])
        else:
            batch = postgres_batch(lines)
            self._run(lambda cursor: cursor.execute(POSTGRES_INSERT, (batch,)))

    def stop_waiting(self) -> None:
        """Closing: a write waiting for a lock another connection holds gives up at the end of
        its slice, and so does every later one (only with ``busy_slices``)."""
        self._giving_up = True

    def _is_giving_up(self) -> bool:
        return self._giving_up

    def _run(self, work: Callable[[Any], object], *, one_statement: bool = False) -> None:
        if self.schema_gate is not None:
            self.schema_gate.ensure()  # SchemaUnchecked (transient) until it passes
        try:  # the hot path: the write alone, unless another connection holds the lock
            self._run_once(work, one_statement)
        except sqlite3.OperationalError as exc:
            if not self._busy_slices:
                raise
            after_refusal(exc, lambda: self._run_once(work, one_statement), self._is_giving_up)

    def _run_once(self, work: Callable[[Any], object], one_statement: bool = False) -> None:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                if one_statement:
                    _autocommitted(connection.driver_connection, work, cursor)
                else:
                    work(cursor)
            finally:
                cursor.close()
            connection.commit()
        except BaseException as exc:
            if (
                self._busy_slices
                and isinstance(exc, sqlite3.OperationalError)
                and lock_refused(exc)
            ):
                connection.rollback()  # a lock held elsewhere: the connection is fine
            elif self.is_transient(exc):
                # The connection may be dead (server gone, relay cut): never hand it out again.
                connection.invalidate()
            else:
                connection.rollback()
            raise
        finally:
            connection.close()


#: Batches up to this many rows go in one statement. ``executemany`` hands the GIL back and
#: takes it again for every row, which costs whenever other threads want the GIL meanwhile: a
#: proxy's event loop serving other requests while its group commit (a few dozen rows) is
#: written, or callers going on in ``background`` mode. One statement for those rows cut the
#: proxy's CPU per request by about 3% (benchmarks/proxy), and statements of this many rows cut
#: a background ledger's cost per async call from about 60 to 15 µs. Bigger durable batches,
#: whose callers wait (nothing else wants the GIL), measured faster with ``executemany``.
ONE_STATEMENT_ROWS = 48


def _autocommitted(driver: Any, work: Callable[[Any], object], cursor: Any) -> None:
    """Run ``work``, one SQLite statement, as its own transaction: SQLite commits it (with the
    WAL's fsync) in the statement's own step, so the writer hands the GIL back once per batch
    instead of three times (``BEGIN``, the statement, ``COMMIT``)."""
    previous = driver.isolation_level
    driver.isolation_level = None
    try:
        work(cursor)
    finally:
        driver.isolation_level = previous


#: A UTF-16 surrogate in a Python string: always a lone one (a pair is one character there).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v for v in row)


def _insert_sqlite(
    cursor: Any, params: Sequence[tuple[Any, ...]], callers_run_on: bool = False
) -> None:
    """Insert SQLite parameters. A lone UTF-16 surrogate, which has no UTF-8 and which SQLite
    cannot be given (a team in metadata decoded with ``surrogateescape``), is written as U+FFFD,
    as on PostgreSQL: it sent the billed call's row to the quarantine (until 2026-12-05)."""
    try:
        _insert_sqlite_params(cursor, params, callers_run_on)
    except UnicodeEncodeError:  # rare: checked only when SQLite could not take the text
        _insert_sqlite_params(cursor, [_without_surrogates(row) for row in params], callers_run_on)


def _insert_sqlite_params(
    cursor: Any, params: Sequence[tuple[Any, ...]], callers_run_on: bool = False
) -> None:
    if callers_run_on and len(params) > ONE_STATEMENT_ROWS:
        for start in range(0, len(params), ONE_STATEMENT_ROWS):
            _insert_sqlite_params(cursor, params[start : start + ONE_STATEMENT_ROWS])
    elif 1 < len(params) <= ONE_STATEMENT_ROWS:
        cursor.execute(sqlite_insert_rows(len(params)), [v for row in params for v in row])
    else:
        cursor.executemany(SQLITE_INSERT, params)
