"""The columns of ``spend_logs``, defined once, in order: everything else is derived from them.

Each :class:`LedgerColumn` names the column, its SQL type, whether it may be NULL, its *kind*
(how it travels: ``money`` as a decimal, ``time`` as a UTC timestamp, ``json`` nested, ``plain``
as it is) and the expression that reads its value from an event. From :data:`COLUMNS` come:

* the SQLAlchemy table (:data:`tracking.integrations.sql._schema.spend_logs`), column by column;
* :func:`event_values`, the row as values in column order (the outbox's and PostgreSQL's form);
* :func:`event_sqlite_params`, the same row as the parameters SQLAlchemy would bind for SQLite
  (the SQLite ledger's hot path);
* the outbox codec's typed columns (:mod:`tracking.integrations.sql._codec`).

The two readers run for every call, so they are compiled once from the column expressions into
plain functions (as :func:`collections.namedtuple` compiles its class) rather than looping over
the columns at every call. The expressions are this module's constants, never data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

if TYPE_CHECKING:
    from tracking.events import ImageEditEvent

__all__ = [
    "COLUMNS",
    "MONEY_SCALE",
    "ColumnKind",
    "LedgerColumn",
    "UTCDateTime",
    "columns_of_kind",
    "compile_reader",
]

#: Digits after the point kept for money.
MONEY_SCALE = 10

ColumnKind = Literal["plain", "money", "time", "json"]


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (naive values are refused)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("ledger timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite's DATETIME drops the offset: store the UTC wall time so text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _money() -> sa.Numeric[Any]:
    return sa.Numeric(20, MONEY_SCALE)


_TYPES: dict[ColumnKind, Callable[[], sa.types.TypeEngine[Any]]] = {
    "money": _money,
    "time": UTCDateTime,
    "json": _json,
}


@dataclass(frozen=True, slots=True)
class LedgerColumn:
    """One column of ``spend_logs``: its SQL side and how an event fills it.

    ``read`` is a Python expression over ``event`` (the :class:`~tracking.events.ImageEditEvent`)
    and ``usage`` (its token usage, or None). ``sql_type`` defaults to the kind's type.
    """

    name: str
    read: str
    kind: ColumnKind = "plain"
    sql_type: Callable[[], sa.types.TypeEngine[Any]] | None = None
    nullable: bool = True
    primary_key: bool = False

    def column(self) -> sa.Column[Any]:
        """The SQLAlchemy column (a new object: a column belongs to one table)."""
        make = self.sql_type or _TYPES[self.kind]
        if self.primary_key:
            return sa.Column(self.name, make(), primary_key=True)
        return sa.Column(self.name, make(), nullable=self.nullable)


def _text(name: str, read: str | None = None, *, nullable: bool = True) -> LedgerColumn:
    return LedgerColumn(name, read or f"event.{name}", sql_type=sa.String, nullable=nullable)


def _integer(name: str, read: str | None = None, *, nullable: bool = True) -> LedgerColumn:
    return LedgerColumn(name, read or f"event.{name}", sql_type=sa.Integer, nullable=nullable)


def _tokens(name: str, usage_field: str) -> LedgerColumn:
    return _integer(name, f"usage.{usage_field} if usage else None")


#: ``spend_logs`` in column order: the table, the rows and the outbox lines all follow it.
COLUMNS: tuple[LedgerColumn, ...] = (
    LedgerColumn("request_id", "event.request_id", sql_type=sa.String, primary_key=True),
    _text("call_type", nullable=False),
    _text("status", nullable=False),
    _text("upstream_request_id"),
    # who
    _text("end_user"),
    _text("api_key_hash"),
    _text("key_alias"),
    _text("team"),
    LedgerColumn("tags", "list(event.tags)", "json"),
    LedgerColumn("metadata", "plain_json(event.metadata)", "json"),
    # what
    _text("model", nullable=False),
    _text("model_group"),
    _text("served_model", "event.resolved_model"),
    _text("provider"),
    _text("deployment_id"),
    _text("api_base"),
    _integer("n", nullable=False),
    _integer("images_returned", nullable=False),
    _text("size"),
    _text("quality"),
    # tokens
    _tokens("input_text_tokens", "input_text_tokens"),
    _tokens("input_image_tokens", "input_image_tokens"),
    _tokens("cached_input_tokens", "cached_input_tokens"),
    _tokens("output_tokens", "output_tokens"),
    _tokens("total_tokens", "total_tokens"),
    # money
    LedgerColumn("cost_usd", "event.cost_usd", "money"),
    LedgerColumn("cost_per_image_usd", "event.cost_per_image_usd", "money"),
    _text("cost_source", nullable=False),
    _text("price_ref"),
    # time
    LedgerColumn("start_time", "event.start_time", "time", nullable=False),
    LedgerColumn("end_time", "event.end_time", "time", nullable=False),
    LedgerColumn("latency_ms", "float(event.latency_ms)", sql_type=sa.Float, nullable=False),
    # path and failure
    _integer("attempts", nullable=False),
    _integer("retries", nullable=False),
    LedgerColumn("fallback_from", "list(event.fallback_from)", "json"),
    _text("error_type"),
    _integer("http_status"),
)


def columns_of_kind(*kinds: ColumnKind) -> tuple[str, ...]:
    """The names of the columns of these kinds, in column order."""
    return tuple(c.name for c in COLUMNS if c.kind in kinds)


def compile_reader(
    name: str,
    wrappers: dict[ColumnKind, str],
    namespace: dict[str, Any],
) -> Callable[[ImageEditEvent], tuple[Any, ...]]:
    """A function of an event giving one value per column of :data:`COLUMNS`, in order.

    ``wrappers`` maps a kind to the name of a function in ``namespace`` its values pass
    through (the kinds not named are taken as they are read).
    """
    values = []
    for column in COLUMNS:
        wrapper = wrappers.get(column.kind)
        values.append(f"{wrapper}({column.read})" if wrapper else column.read)
    source = (
        f"def {name}(event):\n    usage = event.usage\n    return (\n        "
        + ",\n        ".join(values)
        + ",\n    )\n"
    )
    scope = dict(namespace)
    # Our own column expressions above, never data: compiled once at import.
    exec(compile(source, f"<spend_logs {name}>", "exec"), scope)  # noqa: S102
    return cast("Callable[[ImageEditEvent], tuple[Any, ...]]", scope[name])
