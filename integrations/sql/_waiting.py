"""The calls this host keeps in its local outboxes, and what budgets start from with them.

While a PostgreSQL ledger cannot take rows (unreachable, out of disk, read-only after a failover,
its schema not checked yet) calls go on and their rows wait in the local outboxes
(:mod:`._outbox`), acknowledged there; they ship once the database takes them. A budget counter
that starts from the ledger meanwhile (a restart, another worker, Redis away or idle, a budget
changed) read only the database and missed them, so a key or end user could spend past its
budget by what waited, until it shipped (until 2026-12-06). :func:`budget_spend_with_outboxes`
adds them: what budgets start from is the database's figure
(:func:`~._quarantine.budget_spend`) and every call waiting in an outbox of the target's folder
on this host (each process's own, those of dead processes waiting to be claimed, the rows kept at
shutdown and the intents recovered from dead processes), each call once.

Each call once, whenever a row ships: the outboxes are read first, then the database in one
snapshot (``REPEATABLE READ`` on PostgreSQL, a read transaction on SQLite). A row leaves an outbox
only after the database committed it, so a row shipped between the two reads is in both (and
counted once, by request id) and none is in neither. A call with a row on both sides counts by
its own row, wherever it is (an intent's ``incomplete`` estimate only where the call has no own
row), as :func:`~._quarantine.budget_spend` does for the quarantine.

The calls kept for good count too (:func:`local_calls`): a row the database refuses for good
and its quarantine too is moved to its outbox's ``rejected`` table, and an outbox left with only
such rows is set aside as ``rejected-<pid>[-n].db`` (:mod:`._outbox`). The call was billed all
the same, yet no budget counted it (until 2026-12-06): a key or end user whose rows kept being
refused (a value the database cannot store) spent past its budget without limit once its
counter started again from the ledger. Both tables of an outbox are read in one statement (one
snapshot: a row moved from one to the other meanwhile is read once), and the files set aside
are listed after the outboxes were read (an outbox set aside meanwhile, linked under its new
name before its old one goes, is read under one name or both: a row is named by its line too,
so it counts once). Such a row never ships by itself: put into the database by hand, its call
counts there, once.

Other hosts' outboxes are on their disks: a budget read here cannot see them (their waiting
rows count once shipped; their rejected ones only there). The reading is done when a budget
counter starts from the ledger (first use, an hour unused, Redis lost it, a budget changed), not
at every reservation; the ``rejected`` tables are expected to be small (rows refused twice).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._engine import outbox_target
from ._outbox import default_outbox_dir, set_aside_files
from ._quarantine import Counted, CountedWaiting, budget_spend
from ._quarantined_calls import QuarantinedCall, choose_calls, field_text
from ._queries import FLAGGED, flagged_figures, flagged_measures, money_text, spend_conditions
from ._schema import spend_calls

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "budget_spend_with_outboxes",
    "local_calls",
    "outbox_folder",
    "spend_and_flags_with_outboxes",
    "waiting_calls",
]

log = logging.getLogger("tracking.ledger")


def outbox_folder(engine: Engine) -> Path:
    """The folder of the target's local outboxes, as a ledger without ``outbox_dir`` names it."""
    return default_outbox_dir(outbox_target(engine.url))


def waiting_calls(
    directory: Path,
    *,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
) -> list[QuarantinedCall]:
    """The calls waiting in the outboxes of ``directory`` that name one of ``key_hashes`` and
    ``end_user`` (those given) and started at ``since`` or later, one per request id (its own
    row where its intent's is there too). Read only: nothing is locked or changed. An outbox
    that cannot be read is logged and skipped (its rows cannot ship either)."""
    return _local_calls(
        directory, rejected=False, key_hashes=key_hashes, end_user=end_user, since=since
    )


def local_calls(
    directory: Path,
    *,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
) -> list[QuarantinedCall]:
    """:func:`waiting_calls` and the calls kept in the ``rejected`` tables of ``directory``'s
    outboxes and of the files set aside there (``rejected-<pid>[-n].db``): every call this host
    keeps out of the database, each once (module docstring)."""
    return _local_calls(
        directory, rejected=True, key_hashes=key_hashes, end_user=end_user, since=since
    )


def _local_calls(
    directory: Path,
    *,
    rejected: bool,
    key_hashes: Sequence[str] | None,
    end_user: str | None,
    since: datetime | None,
) -> list[QuarantinedCall]:
    if key_hashes is not None and not key_hashes:
        return []
    narrowing: list[str] = []
    params: list[str] = []
    if key_hashes is not None:
        narrowing.append("(" + " OR ".join(["instr(line, ?) > 0"] * len(key_hashes)) + ")")
        params.extend(field_text("api_key_hash", h) for h in key_hashes)
    if end_user is not None:
        narrowing.append("instr(line, ?) > 0")
        params.append(field_text("end_user", end_user))
    where = f" WHERE {' AND '.join(narrowing)}" if narrowing else ""
    tables = ("outbox", "rejected") if rejected else ("outbox",)
    # One statement, one snapshot of the file: a row moved to ``rejected`` meanwhile (one
    # transaction) is read once, on one side or the other.
    query = " UNION ALL ".join(
        f"SELECT '{table}', seq, line FROM {table}{where}"  # noqa: S608 (markers only)
        for table in tables
    )
    try:
        outboxes = sorted(directory.glob("outbox-*.db"))
    except OSError:
        outboxes = []
    lines = _lines_in(outboxes, query, params * len(tables))
    if rejected:
        # Listed after the outboxes were read: an outbox set aside meanwhile (a hard link made,
        # then its old name removed) is read under one name or both, never neither.
        lines += _lines_in(set_aside_files(directory), query, params * len(tables))
    rows: dict[object, object] = {}
    chosen = choose_calls(
        lines, key_hashes=key_hashes, end_user=end_user, since=since, chosen_rows=rows
    )
    return [
        replace(call, refused_locally=True) if _in_rejected(rows[key]) else call
        for key, call in chosen.items()
    ]


def _in_rejected(row_id: object) -> bool:
    """Whether a row id of :func:`_lines_in`'s, ``(table, seq, line)``, is a ``rejected`` row."""
    return isinstance(row_id, tuple) and row_id[0] == "rejected"


def _lines_in(paths: Sequence[Path], query: str, params: Sequence[str]) -> list[tuple[object, str]]:
    """``((table, seq, line), line)`` for the rows ``query`` finds in each file of ``paths``;
    a file that cannot be read is logged and skipped. A row is named by its line too: one
    without a request id, read from a file under both its names, is one call."""
    lines: list[tuple[object, str]] = []
    for path in paths:
        try:
            # absolute: SqlLedger(outbox_dir=) may be given a relative folder
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
            try:
                found = db.execute(query, params).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            if path.exists():  # else removed by its owner (nothing waited in it) while we looked
                log.warning("ledger outbox %s cannot be read for budgets (%s)", path, exc)
            continue
        lines.extend(((table, seq, line), line) for table, seq, line in found)
    return lines


def _begin_snapshot(conn: Connection) -> None:
    """Make every statement of ``conn``'s transaction read one snapshot of the database."""
    if conn.engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN")  # WAL: the snapshot is taken by the first read
    else:
        conn.execution_options(isolation_level="REPEATABLE READ")


def budget_spend_with_outboxes(
    engine: Engine,
    *,
    folder: Path | None = None,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
    excluding: Collection[str] = (),
) -> Decimal:
    """What budgets start from: :func:`~._quarantine.budget_spend` and the calls kept in the
    local outboxes of ``folder`` (None: the target's folder), waiting to ship or refused for good
    (:func:`local_calls`), each call once (module docstring), but for the calls ``excluding``
    names (request ids of calls in flight, which the budget counts by their holds).
    """
    read = _with_outboxes(engine, folder, key_hashes=key_hashes, end_user=end_user, since=since)
    with read as (conn, local):
        return budget_spend(
            conn,
            key_hashes=key_hashes,
            end_user=end_user,
            since=since,
            waiting=local,
            excluding=excluding,
        )


@contextlib.contextmanager
def _with_outboxes(
    engine: Engine,
    folder: Path | None,
    *,
    key_hashes: Sequence[str] | None,
    end_user: str | None,
    since: datetime | None,
) -> Iterator[tuple[Connection, list[QuarantinedCall]]]:
    """The calls kept in the local outboxes of ``folder`` (None: the target's folder) matching
    the filters (:func:`local_calls`), and a connection reading one snapshot of the database,
    taken after them (module docstring)."""
    local = local_calls(
        folder if folder is not None else outbox_folder(engine),
        key_hashes=key_hashes,
        end_user=end_user,
        since=since,
    )  # first: a row shipped after this read is in the database's snapshot below
    with engine.connect() as conn:
        _begin_snapshot(conn)
        yield conn, local


def spend_and_flags_with_outboxes(
    engine: Engine,
    *,
    folder: Path | None = None,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
) -> tuple[Decimal, dict[str, Any]]:
    """:func:`budget_spend_with_outboxes`'s figure and its flags, from the same rows: the pairs
    of :func:`~._queries.flagged_figures` (with ``unpriced``, as text) over the database's
    ``spend_calls`` in the same snapshot, with those of the calls kept in the local outboxes
    that the figure counts (an outbox's row replacing its intent's estimate in the database
    takes that estimate's flags out; a row kept in a ``rejected`` table is quarantined: the
    database and its quarantine refused it). Until 2026-12-07 ``/customer/info``'s figures
    counted those calls and its flags did not."""
    counted: list[CountedWaiting] = []
    measures = flagged_measures(engine, spend_calls, unpriced=True)
    flags = sa.select(*measures).where(
        *spend_conditions(key_hashes, end_user, since, source=spend_calls)
    )
    read = _with_outboxes(engine, folder, key_hashes=key_hashes, end_user=end_user, since=since)
    with read as (conn, local):
        spent = budget_spend(
            conn,
            key_hashes=key_hashes,
            end_user=end_user,
            since=since,
            waiting=local,
            counted=counted,
        )
        figures = flagged_figures(conn.execute(flags).one(), engine, every=True, unpriced=True)
    for waiting in counted:
        if waiting.replaced is not None:
            _add_flags(figures, waiting.replaced, -1)
        call = waiting.call
        _add_flags(
            figures,
            Counted(call.cost_usd, call.cost_source == "estimate", call.refused_locally),
            1,
        )
    shown: dict[str, Any] = {}
    if figures["unpriced_requests"]:
        shown["unpriced_requests"] = figures["unpriced_requests"]
    for count, usd in FLAGGED:
        if figures[count]:
            shown[count] = figures[count]
            shown[usd] = money_text(figures[usd])
    return spent, shown


def _add_flags(figures: dict[str, Any], counted: Counted, sign: int) -> None:
    """Add (``sign`` 1) or take out (-1) one call's part of :func:`flagged_figures`' pairs."""
    amount = (counted.cost or Decimal(0)) * sign
    if counted.cost is None:
        figures["unpriced_requests"] += sign
    marks = (counted.estimated, counted.quarantined)  # FLAGGED's order
    for flagged, (count, usd) in zip(marks, FLAGGED, strict=True):
        if flagged:
            figures[count] += sign
            figures[usd] += amount
