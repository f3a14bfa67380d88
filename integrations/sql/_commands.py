"""What ``tracking migrate`` and ``tracking spend`` do, kept here so ``tracking.cli`` stays thin.

Each function takes plain values, writes to the given streams and returns the exit status;
errors are :class:`~tracking.errors.TrackingError` with a message fit for a terminal.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Collection, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO, TypeVar

import sqlalchemy as sa

from tracking.errors import ConfigurationError
from tracking.terminal import shown, spreadsheet_safe

from ._billing import BilledRow, query_billed, query_other_hosts
from ._engine import create_ledger_engine, make_sqlite_folder, redact, resolve_url, unreachable
from ._migrate import _has_spend_logs, check_schema, current_revision
from ._queries import FIGURES, FLAGGED, GroupBy, SpendRow, query_spend

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "migrate_command",
    "open_existing_ledger",
    "read_billed",
    "read_other_hosts",
    "render_spend",
    "spend_command",
]

FORMATS = ("table", "json", "csv")
_T = TypeVar("_T")


def migrate_command(url: str | None, out: TextIO) -> int:
    """Bring the ledger database to the newest schema revision (an SQLite file's missing
    folder created first, as the proxy creates it)."""
    make_sqlite_folder(url, lambda line: out.write(f"{line}\n"))
    engine = create_ledger_engine(url)
    try:
        # Refuses a newer or foreign schema before touching anything, else migrates to the head;
        # ``before`` is read under the migration lock: of processes migrating at once, only the
        # one that did says so
        before = check_schema(engine, auto_migrate=True)
        after = current_revision(engine)
    except sa.exc.DatabaseError as exc:
        raise unreachable(engine.url, exc) from None
    finally:
        engine.dispose()
    where = redact(engine.url)
    if before is None:
        out.write(f"{where}: the ledger is already at revision {after}\n")
    else:
        out.write(f"{where}: migrated the ledger from {before or 'empty'} to revision {after}\n")
    return 0


def spend_command(
    url: str | None,
    *,
    user: str | None,
    since: date | datetime | None,
    until: date | datetime | None,
    by: GroupBy | None,
    fmt: str,
    out: TextIO,
    operation: str | None = None,
    limit: int | None = None,
) -> int:
    """Print spend from the ledger (``operation``: only edits or only generations; ``limit``
    with ``by``: only the ``limit`` dearest groups, or latest days, while the table's total
    still covers them all)."""
    engine = open_existing_ledger(url)

    def spend(group: GroupBy | None, most: int | None) -> list[SpendRow]:
        return query_spend(
            engine, user=user, since=since, until=until, by=group, limit=most, operation=operation
        )

    try:
        rows = spend(by, limit)
        total = spend(None, None)[0] if limit is not None and by is not None else None
    except sa.exc.DatabaseError as exc:
        raise unreachable(engine.url, exc) from None
    finally:
        engine.dispose()
    render_spend(rows, by=by, fmt=fmt, out=out, total=total, limit=limit)
    return 0


def read_billed(
    url: str | None,
    *,
    provider: str,
    since: date | datetime,
    until: date | datetime,
    by: Literal["day", "model"],
    hosts: Collection[str] | None = None,
) -> list[BilledRow]:
    """:func:`query_billed` on a ledger that must already exist (never created); a database
    that cannot be read is a :class:`~tracking.errors.ConfigurationError`."""
    return _reading(
        url,
        lambda engine: query_billed(
            engine, provider=provider, since=since, until=until, by=by, hosts=hosts
        ),
    )


def read_other_hosts(
    url: str | None,
    *,
    provider: str,
    since: date | datetime,
    until: date | datetime,
    hosts: Collection[str],
) -> list[tuple[str, int]]:
    """:func:`query_other_hosts` on a ledger that must already exist, as :func:`read_billed`."""
    return _reading(
        url,
        lambda engine: query_other_hosts(
            engine, provider=provider, since=since, until=until, hosts=hosts
        ),
    )


def _reading(url: str | None, query: Callable[[Engine], _T]) -> _T:
    engine = open_existing_ledger(url)
    try:
        return query(engine)
    except sa.exc.DatabaseError as exc:
        raise unreachable(engine.url, exc) from None
    finally:
        engine.dispose()


def open_existing_ledger(url: str | None) -> Engine:
    """An engine for a ledger that must already exist, its schema checked (never created)."""
    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite":
        path = Path(resolved.database or "")
        if not path.is_file():
            raise ConfigurationError(
                f"no ledger at {path} (set TRACKING_DATABASE_URL or pass --database-url)"
            )
        if _without_spend_logs(path):  # looked at read-only: the file is left as it was
            raise _no_ledger_in(path)
    engine = create_ledger_engine(resolved)
    try:
        if resolved.get_backend_name() == "sqlite" and not _has_spend_logs(engine):
            # Reading never writes a schema into an empty file or another application's database.
            raise _no_ledger_in(Path(resolved.database or ""))
        check_schema(engine)
    except sa.exc.DatabaseError as exc:
        engine.dispose()
        raise unreachable(engine.url, exc) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def _no_ledger_in(path: Path) -> ConfigurationError:
    return ConfigurationError(
        f"no ledger in {path} (it has no spend_logs table; `tracking migrate` creates one)"
    )


def _without_spend_logs(path: Path) -> bool:
    """True when the SQLite file opens read-only and has no ``spend_logs`` table: an empty file
    or another application's database, which the ledger's engine would switch to WAL on
    connecting. Anything else (not a database, a WAL file that cannot be read read-only) is
    left to the engine and its clear errors."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spend_logs'"
            ).fetchone()
    except sqlite3.Error:
        return False
    return found is None


def _record(label: str, row: SpendRow, names: Sequence[str]) -> list[str]:
    return [label, *(str(row.figure(name)) for name in names)]


#: What the table says below itself of each flagged figure it has a column of.
_FLAG_NOTES = {
    "unpriced_requests": "calls with no known price: their cost is not in cost_usd",
    "estimated_requests": (
        "calls billed whose real cost is unknown (an answer lost, usage unreadable), "
        "recorded at an estimate: estimated_usd, part of cost_usd"
    ),
    "quarantined_requests": (
        "calls whose rows the database refused; they were billed all the same: "
        "quarantined_usd, part of cost_usd. `tracking ledger quarantine list` shows them"
    ),
}


def render_spend(
    rows: Sequence[SpendRow],
    *,
    by: GroupBy | None,
    fmt: str,
    out: TextIO,
    total: SpendRow | None = None,
    limit: int | None = None,
) -> None:
    """Write spend rows as a readable table, JSON or CSV, every figure by its one name
    (:data:`~._queries.FIGURES`, :data:`~._queries.FLAGGED`). The table ends with the rows'
    total, or ``total`` when given (the whole window, of which ``rows`` are the first
    ``limit``); JSON and CSV hold the rows alone."""
    key_name = by or "scope"
    if fmt == "json":
        json.dump(
            [
                # not grouped: the one row is the window's total, named so as in the table
                {
                    key_name: r.key if by else "total",
                    **{k: v for k, v in r.to_dict().items() if k != "key"},
                }
                for r in rows
            ],
            out,
            indent=2,
        )
        out.write("\n")
        return
    every = [*rows, *([total] if total else [])]
    names = [
        *FIGURES,
        *(n for pair in FLAGGED if any(getattr(r, pair[0]) for r in every) for n in pair),
    ]
    header = [key_name, *names]
    labels = [shown(r.key) if r.key is not None else ("(none)" if by else "total") for r in rows]
    records = [_record(label, r, names) for label, r in zip(labels, rows, strict=True)]
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for r, record in zip(rows, records, strict=True):
            if by is None:  # not grouped: the window's total, as the table and JSON name it
                writer.writerow(["total", *record[1:]])
            elif r.key is None:  # no key (a call without an end user): an empty, unquoted field
                out.write(",")
                writer.writerow(record[1:])
            elif r.key == "":  # an empty key, told apart from none as a quoted empty string
                out.write('"",')
                writer.writerow(record[1:])
            else:
                writer.writerow([spreadsheet_safe(r.key), *record[1:]])
        return
    with_total = by is not None and (len(rows) > 1 or total is not None)
    if with_total:
        records.append(_record("total", total or SpendRow.total_of(rows), names))
    widths = [max(len(line[i]) for line in [header, *records]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip() + "\n"

    out.write(line(header))
    out.write(line(["-" * w for w in widths]))
    for index, record in enumerate(records):
        if with_total and index == len(records) - 1:
            out.write(line(["-" * w for w in widths]))
        out.write(line(record))
    if limit is not None and by is not None and len(rows) == limit:
        which = "latest" if by == "day" else "dearest"
        out.write(f"(the {which} {limit} only; the total covers every {by})\n")
    if not rows or (by is None and rows[0].requests == 0):
        out.write("(no calls in this range)\n")
    for name, note in _FLAG_NOTES.items():
        if any(getattr(r, name) for r in every):
            out.write(f"({name}: {note})\n")
