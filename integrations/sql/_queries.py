"""The spend query API: totals by end user, model, UTC day or operation over a time range.

The operation (``image_edit`` or ``image_generation``) is read from the row's ``call_type``
(``aimage_generation`` is a generation made by an async caller), so edits and generations can be
split (``by="operation"``) or one of them kept (``operation=...``).

Every report reads the ``spend_calls`` view (migration 0006): the rows of ``spend_logs`` and the
calls whose rows the database refused (kept in ``ledger_quarantine``, billed all the same), each
call once and by its own row rather than its intent's estimate, the rule budgets follow
(:func:`~._quarantined_calls.quarantined_calls` with ``over_intents``). The database sums them,
so a large quarantine is never held in memory; its ``quarantined`` column says which calls came
from the quarantine.

Sums are exact on both dialects. PostgreSQL sums ``NUMERIC`` exactly; SQLite has no decimal type,
so there each cost (stored as a REAL of at most 15 significant digits) is scaled to an integer
count of 1e-10 USD, summed as a 64-bit integer (exact up to about $900 million) and turned back
into a ``Decimal`` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from tracking.errors import ValidationError

from ._schema import MONEY_SCALE, spend_calls, spend_logs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "FIGURES",
    "FLAGGED",
    "GroupBy",
    "SpendRow",
    "cost_order",
    "cost_sum",
    "flagged_figures",
    "flagged_measures",
    "money_text",
    "query_spend",
    "summed_cost",
    "to_utc_bound",
    "unpriced_count",
    "utc_day",
]

GroupBy = Literal["model", "day", "user", "operation"]
GROUPINGS: tuple[str, ...] = ("model", "day", "user", "operation")
#: The operations a row can be of (its ``call_type`` without the async ``a`` prefix).
OPERATIONS: tuple[str, ...] = ("image_edit", "image_generation")
_GENERATION_CALL_TYPES = ("image_generation", "aimage_generation")


#: The figures of every spend row, each by the one name it has in every report: the JSON key,
#: the CSV and table column, the :class:`SpendRow` field.
FIGURES: tuple[str, ...] = ("requests", "failures", "images", "cost_usd", "unpriced_requests")
#: The flagged figures, each a count of calls and what they cost (part of ``cost_usd``): a JSON
#: row has a pair when it holds such calls, a CSV or table has its columns when a row does.
FLAGGED: tuple[tuple[str, str], ...] = (
    ("estimated_requests", "estimated_usd"),
    ("quarantined_requests", "quarantined_usd"),
)


def money_text(value: Decimal) -> str:
    """An amount as every spend report writes it: the exact decimal, never a float or exponent."""
    return f"{value:f}"


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Spend of one group (a model, a UTC day, an end user, an operation), or the total when
    ungrouped."""

    key: str | None  #: the model, ``YYYY-MM-DD`` day, end user or operation; None for the total
    requests: int
    failures: int
    images: int
    cost_usd: Decimal
    unpriced_requests: int  #: calls with no known price (their cost is not in ``cost_usd``)
    #: calls among ``requests`` whose rows are in the ledger's quarantine (the database refused
    #: them; they were billed all the same), and what they cost (part of ``cost_usd``)
    quarantined_requests: int = 0
    quarantined_usd: Decimal = Decimal(0)
    #: calls among ``requests`` recorded at an estimate (billed, their real cost unknown:
    #: ``cost_source`` ``estimate``), and what they were estimated at (part of ``cost_usd``)
    estimated_requests: int = 0
    estimated_usd: Decimal = Decimal(0)

    def figure(self, name: str) -> int | str:
        """One figure (a name of :data:`FIGURES` or :data:`FLAGGED`) as a JSON value: a count,
        or an amount as its exact decimal text."""
        value = getattr(self, name)
        return money_text(value) if isinstance(value, Decimal) else int(value)

    def flagged(self) -> list[str]:
        """The names of the flagged figures this row has calls of."""
        return [name for pair in FLAGGED if getattr(self, pair[0]) for name in pair]

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON values; a flagged pair (estimates, the quarantine's figures) only
        when the row holds such calls."""
        names = [*FIGURES, *self.flagged()]
        return {"key": self.key, **{name: self.figure(name) for name in names}}

    @classmethod
    def total_of(cls, rows: Sequence[SpendRow]) -> SpendRow:
        """The rows' figures summed (exactly: amounts are Decimals), as a row without a key."""
        sums: dict[str, Any] = {}
        for field in fields(cls):
            if field.name != "key":
                zero = Decimal(0) if field.name.endswith("_usd") else 0
                sums[field.name] = sum((getattr(r, field.name) for r in rows), zero)
        return cls(key=None, **sums)


def to_utc_bound(value: date | datetime, name: str) -> datetime:
    """A date (its UTC midnight) or an aware datetime, as an aware UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{name} must be timezone-aware (or a date)", param=name)
        return value.astimezone(UTC)
    return datetime.combine(value, time(0), tzinfo=UTC)


def spend_conditions(
    key_hashes: Sequence[str] | None,
    end_user: str | None,
    since: datetime | None,
    *,
    source: Any = spend_logs,
) -> list[sa.ColumnElement[bool]]:
    """The rows of ``source`` (``spend_logs`` or ``spend_calls``) of a key (naming any of
    ``key_hashes``) and of an end user (those given) from ``since`` (inclusive) on, as
    ``WHERE`` conditions."""
    conditions: list[sa.ColumnElement[bool]] = []
    if key_hashes is not None:
        conditions.append(source.c.api_key_hash.in_(list(key_hashes)))
    if end_user is not None:
        conditions.append(source.c.end_user == end_user)
    if since is not None:
        conditions.append(source.c.start_time >= since)
    return conditions


#: Costs are below 10**10 USD in magnitude: what ``spend_logs``' ``NUMERIC(20, 10)`` holds (on
#: SQLite, whose REAL may round the largest up to 10**10 itself). A larger one (a quarantined
#: row's: the database refused it for that) is no amount to sum: Decimal's context and SQLite's
#: 64-bit sums overflowed on it (a traceback), so it is unpriced, in the reports and in what
#: budgets start from alike (:func:`~._quarantined_calls.quarantined_calls`).
COST_BOUND = 10 ** (20 - MONEY_SCALE)


def _cost(source: Any) -> sa.ColumnElement[Any]:
    """``source``'s ``cost_usd``, NULL (unpriced) when no ledger column could hold it."""
    cost = source.c.cost_usd
    return sa.case((sa.func.abs(cost) <= sa.literal_column(str(COST_BOUND)), cost), else_=None)


def cost_sum(
    engine: Engine, where: sa.ColumnElement[bool] | None = None, source: Any = spend_logs
) -> sa.ColumnElement[Any]:
    """The exact sum of ``cost_usd`` of ``source`` (``spend_logs`` or ``spend_calls``; of the
    rows ``where`` holds for, when given); read it with :func:`summed_cost`. Ordering by it
    takes :func:`cost_order`.

    SQLite stores the column as REAL: the sum is two integer sums, whole dollars (``CAST``
    truncates toward zero) and the rest in units of the ledger's scale (1e-10), as text
    ``"whole:rest"``. One scaled sum passed 2**63 at $922M and the CAST saturated silently.
    """
    cost: sa.ColumnElement[Any] = _cost(source)
    if where is not None:
        cost = sa.case((where, cost), else_=None)
    if engine.dialect.name == "sqlite":
        whole, rest = _sqlite_parts(cost)
        return sa.type_coerce(whole.op("||")(":").op("||")(rest), sa.String)
    return sa.func.coalesce(sa.func.sum(cost), 0)


def _sqlite_parts(cost: sa.ColumnElement[Any]) -> tuple[sa.ColumnElement[Any], ...]:
    """SQLite: the integer sums of whole dollars and of the rest in units of 1e-10."""
    whole = sa.cast(cost, sa.Integer)
    rest = sa.cast(
        sa.func.round((cost - whole) * sa.literal_column(f"1e{MONEY_SCALE}")), sa.Integer
    )
    return sa.func.coalesce(sa.func.sum(whole), 0), sa.func.coalesce(sa.func.sum(rest), 0)


def unpriced_count(source: Any = spend_logs) -> sa.ColumnElement[Any]:
    """How many rows have no cost at all (a model no price entry covers), or none a ledger
    column could hold (see :data:`COST_BOUND`)."""
    return sa.func.coalesce(sa.func.sum(sa.case((_cost(source).is_(None), 1), else_=0)), 0)


def _flag_marks(source: Any) -> dict[str, sa.ColumnElement[bool]]:
    """What marks the calls of each :data:`FLAGGED` pair, by the pair's count's name."""
    return {
        "estimated_requests": source.c.cost_source == "estimate",
        "quarantined_requests": source.c.quarantined == 1,
    }


def flagged_measures(
    engine: Engine, source: Any = spend_calls, *, unpriced: bool = False
) -> list[sa.ColumnElement[Any]]:
    """Per :data:`FLAGGED` pair, how many calls of ``source`` (``spend_calls``) have the flag and
    what they cost (exactly, :func:`cost_sum`), labelled by the pair's names; with ``unpriced``,
    before them how many have no known price (:func:`unpriced_count`, ``unpriced_requests``).
    Read a row of them with :func:`flagged_figures` (given the same ``unpriced``)."""
    measures: list[sa.ColumnElement[Any]] = []
    if unpriced:
        measures.append(unpriced_count(source).label("unpriced_requests"))
    marks = _flag_marks(source)
    for count, usd in FLAGGED:
        mark = marks[count]
        measures.append(sa.func.coalesce(sa.func.sum(sa.case((mark, 1), else_=0)), 0).label(count))
        measures.append(cost_sum(engine, mark, source).label(usd))
    return measures


def flagged_figures(
    record: Any, engine: Engine, *, text: bool = False, every: bool = False, unpriced: bool = False
) -> dict[str, Any]:
    """The flagged pairs of a row holding :func:`flagged_measures`, each pair only when the row
    has such calls (``every``: all of them): a count, and an amount at the ledger's scale (a
    Decimal, or with ``text`` its exact decimal text, as JSON reports write it); with
    ``unpriced``, before them ``unpriced_requests`` (likewise only when there are some)."""
    figures: dict[str, Any] = {}
    if unpriced and (record._mapping["unpriced_requests"] or every):
        figures["unpriced_requests"] = int(record._mapping["unpriced_requests"])
    for count, usd in FLAGGED:
        calls = int(record._mapping[count])
        if calls or every:
            amount = summed_cost(record._mapping[usd], engine)
            figures[count] = calls
            figures[usd] = money_text(amount) if text else amount
    return figures


def cost_order(engine: Engine, source: Any = spend_logs) -> tuple[sa.UnaryExpression[Any], ...]:
    """``ORDER BY`` clauses putting groups dearest first, exactly: on SQLite the exact sum of
    :func:`cost_sum` as whole units of 1e-10 split floor-wise in two integers (dollars, then the
    rest from 0 to 1e10 - 1), which order exactly at any size without overflowing; the REAL
    ``total()`` misordered groups closer than its precision ($1e-7 at $1e9)."""
    if engine.dialect.name != "sqlite":
        return (sa.func.coalesce(sa.func.sum(_cost(source)), 0).desc(),)
    whole, rest = _sqlite_parts(_cost(source))
    unit: sa.ColumnElement[Any] = sa.literal_column(f"{10**MONEY_SCALE}")
    remainder = ((rest % unit) + unit) % unit  # 0 <= remainder < 1e10, whatever rest's sign
    return ((whole + (rest - remainder) / unit).desc(), remainder.desc())


def utc_day(engine: Engine, source: Any = spend_logs) -> sa.ColumnElement[Any]:
    """The UTC day a row of ``source`` (``spend_logs`` or ``spend_calls``) started on."""
    if engine.dialect.name == "sqlite":
        return sa.func.date(source.c.start_time)
    return sa.cast(sa.func.timezone("UTC", source.c.start_time), sa.Date)


def _operation(source: Any = spend_logs) -> sa.ColumnElement[Any]:
    return sa.case(
        (source.c.call_type.in_(_GENERATION_CALL_TYPES), "image_generation"),
        else_="image_edit",
    )


_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)


def summed_cost(value: Any, engine: Engine) -> Decimal:
    """What :func:`cost_sum` gave, as a Decimal at the ledger's scale, the same on both
    dialects."""
    if engine.dialect.name == "sqlite":
        whole, rest = str(value).split(":")
        return (Decimal(int(whole)) + Decimal(int(rest)).scaleb(-MONEY_SCALE)).quantize(_QUANTUM)
    return Decimal(value).quantize(_QUANTUM)


def query_spend(
    engine: Engine,
    *,
    user: str | None = None,
    since: date | datetime | None = None,
    until: date | datetime | None = None,
    by: GroupBy | None = None,
    limit: int | None = None,
    operation: str | None = None,
) -> list[SpendRow]:
    """Spend from ``since`` (inclusive) to ``until`` (exclusive), optionally for one end user
    and one operation (``image_edit`` or ``image_generation``).

    ``by`` groups by ``"model"``, ``"user"``, ``"operation"`` (most expensive first) or
    ``"day"`` (oldest first); without it the result is one total row. Dates are UTC midnights.
    ``limit`` keeps the first ``limit`` groups, except by day: the latest ``limit`` days, still
    oldest first. The database alone, amounts and flags alike (``spend_calls``: ``spend_logs``
    and the quarantine): rows still in a local outbox count once shipped. Alike on both
    dialects, a group without a key (calls with no end user) comes after the others as dear,
    and calls of no known day (a quarantined row whose time cannot be read: in no time range)
    before the first day.
    """
    if by is not None and by not in GROUPINGS:
        raise ValidationError(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}", param="by")
    if operation is not None and operation not in OPERATIONS:
        raise ValidationError(
            f"operation must be one of {', '.join(OPERATIONS)}, not {operation!r}",
            param="operation",
        )
    calls = spend_calls
    cost = cost_sum(engine, source=calls).label("cost")
    measures: list[sa.ColumnElement[Any]] = [
        sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(sa.case((calls.c.status == "failure", 1), else_=0)), 0).label(
            "failures"
        ),
        sa.func.coalesce(sa.func.sum(calls.c.images_returned), 0).label("images"),
        cost,
        unpriced_count(calls).label("unpriced"),
        *flagged_measures(engine, calls),
    ]
    key: sa.ColumnElement[Any] | None = None
    if by == "model":
        key = calls.c.model
    elif by == "user":
        key = calls.c.end_user
    elif by == "day":
        key = utc_day(engine, calls)
    elif by == "operation":
        key = _operation(calls)
    columns: Sequence[sa.ColumnElement[Any]] = (
        [key.label("key"), *measures] if key is not None else measures
    )
    statement = sa.select(*columns).select_from(calls)
    if user is not None:
        statement = statement.where(calls.c.end_user == user)
    if operation is not None:
        statement = statement.where(_operation(calls) == operation)
    if since is not None:
        statement = statement.where(calls.c.start_time >= to_utc_bound(since, "since"))
    if until is not None:
        statement = statement.where(calls.c.start_time < to_utc_bound(until, "until"))
    latest_days = by == "day" and limit is not None  # ordered newest first, listed oldest first
    if key is not None:
        statement = statement.group_by(key)
        # NULL placed alike on both dialects (SQLite sorts it first, PostgreSQL last): a day
        # unknown (a quarantined row's unreadable time) first, a group without a key last
        if by == "day":
            order: tuple[Any, ...] = (
                key.desc().nulls_last() if latest_days else key.asc().nulls_first(),
            )
        else:
            order = (*cost_order(engine, calls), key.asc().nulls_last())
        statement = statement.order_by(*order)
        if limit is not None:
            statement = statement.limit(limit)
    with engine.connect() as conn:
        result = list(conn.execute(statement).all())
    if latest_days:
        result.reverse()  # the latest days, listed oldest first as without a limit
    rows = []
    for record in result:
        raw_key = record.key if key is not None else None
        rows.append(
            SpendRow(
                key=raw_key.isoformat() if isinstance(raw_key, date) else raw_key,
                requests=int(record.requests),
                failures=int(record.failures),
                images=int(record.images),
                cost_usd=summed_cost(record.cost, engine),
                unpriced_requests=int(record.unpriced),
                **flagged_figures(record, engine, every=True),
            )
        )
    return rows
