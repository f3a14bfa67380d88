"""The ledger's quarantine: rows the database refused for good, listed and replayed.

A row ``spend_logs`` refuses (a NUL in text on PostgreSQL, a number out of its column's range,
an end-user id over the B-tree index's size limit) is moved, with the database's error text,
to ``ledger_quarantine`` by the writer or the outbox's shipper (see
:mod:`tracking.integrations.sql._target`), so it never blocks the rows behind it. From there:

* ``tracking ledger quarantine list`` shows what is kept and why, and (the table) the rows the
  quarantine refused too, kept in the local outboxes' ``rejected`` tables
  (:func:`tracking.integrations.sql._outbox.read_rejected`);
* ``tracking ledger quarantine replay`` inserts the rows again (after the cause was fixed:
  a column widened, an index changed), removing each one that goes in; with ``--repair`` the
  values the database refused are first made storable: NUL and other control characters
  removed, text cut to :data:`REPAIR_TEXT_CHARS` characters, integers outside 32 bits emptied.
  Money, times and ids are never changed, so a repaired row still counts what the call cost;
  its metadata says it was repaired.

A quarantined row's money still counts toward budgets: :func:`budget_spend` (``spend_logs``'
sum and the quarantined calls, each call once), with the calls this host keeps in its local
outboxes, still waiting or refused by the quarantine too
(:func:`~._waiting.budget_spend_with_outboxes`), is what a key's or end user's budget counter
starts from in the proxy, so a caller cannot spend past a budget by making calls whose rows the
database refuses.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import sqlalchemy as sa

from tracking.terminal import shown

from ._codec import decode_row, encode_row, line_request_id
from ._quarantined_calls import (
    LOOKUP_CHUNK,
    QuarantinedCall,
    quarantined_calls,
    quarantined_cost,
)
from ._queries import cost_sum, spend_conditions, summed_cost, unpriced_count
from ._schema import quarantine, spend_logs
from ._target import SpendLogsInserter, error_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "REPAIR_TEXT_CHARS",
    "Counted",
    "CountedWaiting",
    "QuarantinedRow",
    "ReplayResult",
    "budget_spend",
    "list_quarantine",
    "quarantine_list_command",
    "quarantine_replay_command",
    "quarantined_spend",
    "repair_line",
    "replay_quarantine",
]

#: Text kept per value by ``--repair``: 512 characters are at most 2,048 bytes of UTF-8, under
#: PostgreSQL's B-tree entry limit (2,704 bytes) for the indexed columns.
REPAIR_TEXT_CHARS = 512
#: Quarantined rows read at once by ``list`` and ``replay``: a quarantine of millions of rows is
#: never held in memory whole.
QUARANTINE_PAGE = 200
_INT_COLUMNS = frozenset(
    {
        "n",
        "images_returned",
        "input_text_tokens",
        "input_image_tokens",
        "cached_input_tokens",
        "output_tokens",
        "total_tokens",
        "attempts",
        "retries",
        "http_status",
    }
)
#: Columns whose values are kept as they are: money, times, the id.
_UNTOUCHED = frozenset(
    {"request_id", "cost_usd", "cost_per_image_usd", "start_time", "end_time", "latency_ms"}
)
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_NOT_NULL_INTS = {"n": 1, "images_returned": 0, "attempts": 0, "retries": 0}


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """One row kept in ``ledger_quarantine``."""

    id: int
    request_id: str | None
    error: str
    quarantined_at: datetime
    line: str

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON values; a line that is no JSON object of a row (damaged, or edited
        by hand) is ``"row": null`` with the ``"line"`` as it is kept."""
        row = _readable_row(self.line)
        out: dict[str, Any] = {
            "id": self.id,
            "request_id": self.request_id,
            "error": self.error,
            "quarantined_at": self.quarantined_at.isoformat(),
            "row": row,
        }
        if row is None:
            out["line"] = self.line
        return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _readable_row(line: str) -> dict[str, Any] | None:
    """The JSON object of a kept line, or None when it is none (strict JSON: no ``NaN``)."""
    try:
        row = json.loads(line, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    return row if isinstance(row, dict) else None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: ids now in ``spend_logs``, ids refused again (with the error), and
    ids asked for that the quarantine does not hold (a typo, or replayed already)."""

    replayed: tuple[int, ...]
    refused: tuple[tuple[int, str], ...]
    missing: tuple[int, ...] = ()


def list_quarantine(
    engine: Engine,
    *,
    limit: int | None = None,
    ids: Sequence[int] | None = None,
    after: int | None = None,
) -> list[QuarantinedRow]:
    """The quarantined rows, oldest first; with ``ids``, those rows only (read by id,
    ``LOOKUP_CHUNK`` a statement, not picked from the whole quarantine). An id its column
    cannot hold (past 32 bits on PostgreSQL, 64 on SQLite) names no row: it is never sent,
    which the driver refused with a traceback."""
    query = sa.select(quarantine).order_by(quarantine.c.id)
    if after is not None:  # the next page after the row of id ``after``
        query = query.where(quarantine.c.id > after)
    if limit is not None:
        query = query.limit(limit)
    chunks: list[Any] = [None]
    if ids is not None:
        bound = _INT32 if engine.dialect.name == "postgresql" else _INT64
        wanted = sorted(i for i in set(ids) if -bound - 1 <= i <= bound)
        chunks = [wanted[i : i + LOOKUP_CHUNK] for i in range(0, len(wanted), LOOKUP_CHUNK)]
    rows: list[QuarantinedRow] = []
    with engine.connect() as conn:
        for chunk in chunks:
            statement = query if chunk is None else query.where(quarantine.c.id.in_(chunk))
            rows.extend(
                QuarantinedRow(r.id, r.request_id, r.error, r.quarantined_at, r.line)
                for r in conn.execute(statement)
            )
    return rows


def each_quarantined(engine: Engine) -> Iterator[QuarantinedRow]:
    """Every quarantined row, oldest first, read :data:`QUARANTINE_PAGE` rows at a time (by
    id, so rows replayed or added meanwhile never make it read one twice)."""
    page = QUARANTINE_PAGE
    after: int | None = None
    while True:
        rows = list_quarantine(engine, limit=page, after=after)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id


def quarantined_spend(
    conn: Connection,
    *,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
) -> Decimal:
    """The summed ``cost_usd`` of the quarantined calls naming one of ``key_hashes`` and
    ``end_user`` (those given) and starting at ``since`` or later: each call once, none that
    ``spend_logs`` holds too (:func:`~._quarantined_calls.quarantined_calls`). A cost that is
    no amount counts nothing: not a finite number, text not written as one, or over $1e10,
    which no ledger column holds (as the reports read it)."""
    calls = quarantined_calls(conn, key_hashes=key_hashes, end_user=end_user, since=since)
    return quarantined_cost(calls)


def budget_spend(
    conn: Connection,
    *,
    key_hashes: Sequence[str] | None = None,
    end_user: str | None = None,
    since: datetime | None = None,
    waiting: Sequence[QuarantinedCall] = (),
    excluding: Collection[str] = (),
    counted: list[CountedWaiting] | None = None,
) -> Decimal:
    """What one key (the rows naming any of ``key_hashes``) or end user spent from ``since``
    (inclusive) on, as budgets count it: the rows of ``spend_logs``, the quarantined calls and
    the calls ``waiting`` in local outboxes or kept in their ``rejected`` tables (read before
    ``conn``'s snapshot, see :func:`~._waiting.budget_spend_with_outboxes`), each call once,
    but for the calls ``excluding`` names (request ids: calls in flight, whose budget holds
    count them instead, whether their rows are written yet or not). ``counted``, when given,
    is filled with the waiting calls the figure counts beyond the database (for their flags).

    A call may have a row on each side: a process killed between committing the call's row
    and marking its intent done leaves both, and the database may take one and refuse the
    other. The call's own row counts, wherever it is (it carries what the intent's estimate
    does not, such as the upstream's token counts): where ``spend_logs`` holds only its
    intent's ``incomplete`` row and the quarantine its own, the intent's estimate is taken
    out. Until 2026-12-05 both counted, the call twice.
    """
    engine = conn.engine
    conditions = spend_conditions(key_hashes, end_user, since)
    if excluding:
        conditions.append(spend_logs.c.request_id.not_in(list(excluding)))
        waiting = [c for c in waiting if c.request_id not in excluding]
    logged = summed_cost(
        conn.execute(sa.select(cost_sum(engine)).where(*conditions)).scalar(), engine
    )
    calls = quarantined_calls(
        conn, key_hashes=key_hashes, end_user=end_user, since=since, over_intents=True
    )
    calls = [c for c in calls if c.request_id not in excluding]
    replacing = [c.request_id for c in calls if c.replaces_intent and c.request_id]
    estimates = Decimal(0)
    for start in range(0, len(replacing), LOOKUP_CHUNK):
        estimated = sa.select(cost_sum(engine)).where(
            *conditions,
            spend_logs.c.request_id.in_(replacing[start : start + LOOKUP_CHUNK]),
            spend_logs.c.status == "incomplete",
        )
        estimates += summed_cost(conn.execute(estimated).scalar(), engine)
    counted_here = _waiting_beyond(conn, conditions, calls, waiting)
    if counted is not None:
        counted.extend(counted_here)
    added = sum((c.added for c in counted_here), Decimal(0))
    return logged + quarantined_cost(calls) - estimates + added


@dataclass(frozen=True, slots=True)
class Counted:
    """What the database's figures count of a call: its cost (None: no known price), and
    whether it is at an estimate and quarantined (the reports' flags)."""

    cost: Decimal | None
    estimated: bool
    quarantined: bool


@dataclass(frozen=True, slots=True)
class CountedWaiting:
    """A call kept in a local outbox that a budget figure counts beyond the database: ``call``,
    and ``replaced``, what the database counted of it that it replaces (its intent's
    ``incomplete`` estimate), None when the database holds nothing of it."""

    call: QuarantinedCall
    replaced: Counted | None

    @property
    def added(self) -> Decimal:
        """What it adds to the database's figure."""
        cost = self.call.cost_usd or Decimal(0)
        if self.replaced is None:
            return cost
        return cost - (self.replaced.cost or Decimal(0))


def _waiting_beyond(
    conn: Connection,
    conditions: list[sa.ColumnElement[bool]],
    calls: Sequence[QuarantinedCall],
    waiting: Sequence[QuarantinedCall],
) -> list[CountedWaiting]:
    """The calls ``waiting`` in outboxes (or kept in their ``rejected`` tables) that add to what
    the database counted of ``calls``
    (its quarantined ones) and ``spend_logs``' rows under ``conditions``: a call the database
    does not hold counts whole; one it holds counts there, unless the database holds only its
    intent's ``incomplete`` estimate and the outbox its own row, which then replaces it."""
    if not waiting:
        return []
    engine = conn.engine
    ids = [c.request_id for c in waiting if c.request_id is not None]
    # request id -> (its own row?, what the database counts of it)
    logged: dict[str, tuple[bool, Counted]] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        query = (
            sa.select(
                spend_logs.c.request_id,
                spend_logs.c.status,
                cost_sum(engine),
                unpriced_count(spend_logs),
                sa.func.max(sa.case((spend_logs.c.cost_source == "estimate", 1), else_=0)),
            )
            .where(*conditions, spend_logs.c.request_id.in_(ids[start : start + LOOKUP_CHUNK]))
            .group_by(spend_logs.c.request_id, spend_logs.c.status)
        )
        for request_id, status, cost, unpriced, estimated in conn.execute(query):
            amount = None if unpriced else summed_cost(cost, engine)
            logged[str(request_id)] = (
                status != "incomplete",
                Counted(amount, bool(estimated), quarantined=False),
            )
    kept = {c.request_id: c for c in calls if c.request_id is not None}
    counted: list[CountedWaiting] = []
    for call in waiting:
        held = None if call.request_id is None else kept.get(call.request_id)
        row = None if call.request_id is None else logged.get(call.request_id)
        there: tuple[bool, Counted] | None
        if held is not None and (held.replaces_intent or row is None):
            estimated = held.cost_source == "estimate"
            there = (held.status != "incomplete", Counted(held.cost_usd, estimated, True))
        else:
            there = row
        if there is None:
            counted.append(CountedWaiting(call, None))  # only in the outbox (or shipped after
            # its read, and counted here)
        elif not there[0] and call.status != "incomplete":
            counted.append(CountedWaiting(call, there[1]))  # its own row replaces the estimate
    return counted


def _clean_text(value: str) -> str:
    kept = "".join(c for c in value if c >= " " or c in "\t\n")
    return kept[:REPAIR_TEXT_CHARS]


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        return {_clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def repair_line(line: str) -> str:
    """The row made storable (see the module docstring); money, times and ids unchanged."""
    row = decode_row(line)
    for name, value in list(row.items()):
        if name in _UNTOUCHED:
            continue
        if name in _INT_COLUMNS:
            if isinstance(value, int) and not -_INT32 - 1 <= value <= _INT32:
                row[name] = _NOT_NULL_INTS.get(name)
        elif isinstance(value, str):
            row[name] = _clean_text(value)
        elif isinstance(value, dict | list):
            row[name] = _clean_json(value)
    metadata = row.get("metadata")
    row["metadata"] = {
        **(metadata if isinstance(metadata, dict) else {}),
        "tracking_repaired_from_quarantine": True,
    }
    return encode_row(row)


def replay_quarantine(
    engine: Engine, *, ids: Sequence[int] | None = None, repair: bool = False
) -> ReplayResult:
    """Insert quarantined rows into ``spend_logs`` again; each one that goes in leaves.

    A replayed row that is already in ``spend_logs`` is a no-op (the insert is idempotent). A
    row refused again stays, with the new error. A transient failure (the database went away)
    raises, leaving the rest as they were.
    """
    inserter = SpendLogsInserter(engine)
    rows: Iterable[QuarantinedRow] = each_quarantined(engine)
    missing: tuple[int, ...] = ()
    if ids is not None:  # the rows the command line names
        rows = list_quarantine(engine, ids=ids)
        missing = tuple(sorted(set(ids) - {r.id for r in rows}))
    replayed: list[int] = []
    refused: list[tuple[int, str]] = []
    for row in rows:
        line = row.line
        if repair:
            try:
                if _readable_row(line) is None:
                    raise ValueError(line[:40])
                line = repair_line(line)
            except (ValueError, TypeError, ArithmeticError, RecursionError):
                # no row to repair (damaged or edited by hand): it stays as it is, said
                refused.append((row.id, "the kept line is not the JSON of a row to repair"))
                continue
        try:
            inserter.insert_lines([line])
        except Exception as exc:
            if inserter.is_transient(exc):
                raise
            error = error_text(exc)
            refused.append((row.id, error))
            with engine.begin() as conn:
                conn.execute(
                    quarantine.update().where(quarantine.c.id == row.id).values(error=error)
                )
            continue
        with engine.begin() as conn:
            conn.execute(quarantine.delete().where(quarantine.c.id == row.id))
        replayed.append(row.id)
    return ReplayResult(tuple(replayed), tuple(refused), missing)


# -- the commands -------------------------------------------------------------------------------


def _open(url: str | None) -> Engine:
    from ._commands import open_existing_ledger

    return open_existing_ledger(url)


def quarantine_list_command(
    url: str | None,
    *,
    fmt: str,
    out: TextIO,
    outbox_dir: str | os.PathLike[str] | None = None,
    with_local: bool = False,
) -> int:
    """Print the quarantined rows (``table`` or ``json``).

    The table ends with the rows the quarantine refused too, kept in the local outboxes' folder
    for this database: ``outbox_dir`` when the ledger was given one (``SqlLedger(outbox_dir=)``),
    else ``$TRACKING_OUTBOX_DIR`` or the user's state directory, as the ledger chooses it (see
    :func:`tracking.integrations.sql._outbox.read_rejected`). The JSON is the list of the
    quarantine's rows; with ``with_local`` it is an object holding that list
    (``"quarantine"``) and the rows kept locally (``"kept_locally"``: file, seq, error,
    rejected_at, request_id and the row's line as it was kept), so that the plain list's readers
    keep their shape.
    """
    from ._engine import outbox_target
    from ._outbox import default_outbox_dir, read_rejected

    engine = _open(url)
    try:
        folder = Path(outbox_dir) if outbox_dir is not None else None
        local = read_rejected(folder or default_outbox_dir(outbox_target(engine.url)))
        # written as read, a page at a time: never the whole quarantine in memory
        if fmt == "json":
            listed = (r.to_dict() for r in each_quarantined(engine))
            if with_local:
                out.write('{\n  "quarantine": ')
                _write_json_list(listed, out, "  ")
                out.write(',\n  "kept_locally": ')
                locally = ({**k.to_dict(), "request_id": line_request_id(k.line)} for k in local)
                _write_json_list(locally, out, "  ")
                out.write("\n}\n")
            else:
                _write_json_list(listed, out, "")
                out.write("\n")
            return 0
        count = 0
        for row in each_quarantined(engine):
            when = row.quarantined_at.isoformat(timespec="seconds")
            out.write(f"{row.id}  {when}  {_cell(row.request_id)}  {_first_line(row.error)}\n")
            count += 1
    except sa.exc.DatabaseError as exc:
        from ._engine import unreachable

        raise unreachable(engine.url, exc) from None
    finally:
        engine.dispose()
    out.write(f"{count} rows in quarantine\n" if count else "the ledger's quarantine is empty\n")
    for kept in local:
        request_id = _cell(line_request_id(kept.line))
        where = f"{kept.path.name}#{kept.seq}  {_cell(kept.rejected_at)}"
        out.write(f"{where}  {request_id}  {_first_line(kept.reason)}\n")
    if local:
        folder = local[0].path.parent
        out.write(
            f"{len(local)} rows refused by the quarantine too, kept in {folder} (table rejected)\n"
        )
    return 0


def _cell(text: object) -> str:
    """A value as the table shows it: an escape sequence or a line break (in a request id or a
    database's error quoting a value) would forge or hide a row on a terminal."""
    return "None" if text is None else shown(str(text))


def _first_line(error: str | None) -> str:
    return shown(error.splitlines()[0][:160]) if error and error.splitlines() else ""


def _write_json_list(items: Iterable[Any], out: TextIO, pad: str) -> None:
    """``items`` as ``json.dump(list(items), indent=2)`` writes them at ``pad``, one at a time."""
    out.write("[")
    written = False
    for item in items:
        out.write(",\n" if written else "\n")
        out.write(textwrap.indent(json.dumps(item, indent=2), f"{pad}  "))
        written = True
    out.write(f"\n{pad}]" if written else "]")


def quarantine_replay_command(
    url: str | None, *, ids: Sequence[int] | None, repair: bool, out: TextIO
) -> int:
    """Replay quarantined rows; exit status 1 when any was refused again or an id asked for
    is not in the quarantine."""
    engine = _open(url)
    try:
        result = replay_quarantine(engine, ids=ids, repair=repair)
    except sa.exc.OperationalError as exc:
        from ._engine import unreachable

        raise unreachable(engine.url, exc) from None
    finally:
        engine.dispose()
    out.write(f"replayed {len(result.replayed)} rows into spend_logs\n")
    for row_id, error in result.refused:
        out.write(f"row {row_id} refused again: {error.splitlines()[0][:160]}\n")
    if result.refused and not repair:
        out.write("fix the cause, or replay with --repair to store what the database accepts\n")
    for row_id in result.missing:
        out.write(f"no quarantined row has id {row_id} (see tracking ledger quarantine list)\n")
    return 1 if result.refused or result.missing else 0
