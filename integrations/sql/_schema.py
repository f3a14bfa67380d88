"""The ledger's tables as SQLAlchemy Core objects, and how an event becomes a row.

``spend_logs`` is a public contract (documented in docs/ledger.md): one row per call, keyed by our
``request_id``. Money is ``NUMERIC(20, 10)``: exact on PostgreSQL; SQLite has no decimal type and
keeps it as a REAL of at most 15 significant digits, which round-trips to the same ``Decimal``
(the query API sums it exactly, see :mod:`tracking.integrations.sql._queries`). Timestamps are UTC:
on PostgreSQL ``timestamptz``, on SQLite naive UTC text, which sorts and compares correctly.

The columns of ``spend_logs`` are defined once, in :mod:`tracking.integrations.sql._columns`;
the table and :func:`event_values` are made from that definition.

The schema only changes through Alembic (``migrations/``); a test proves these objects and the
migrations agree. The ``spend_daily`` rollup and ``spend_calls`` (every call once, the
quarantined ones read from their JSON) are views created by the migrations, so they are not in
:data:`metadata`; :data:`spend_calls` names the view's columns for the reports to select from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._columns import COLUMNS, MONEY_SCALE, UTCDateTime, compile_reader

if TYPE_CHECKING:
    from tracking.events import ImageEditEvent

__all__ = [
    "CALL_COUNT_COLUMNS",
    "CALL_TEXT_COLUMNS",
    "COLUMN_NAMES",
    "MONEY_SCALE",
    "OUR_TABLES",
    "VERSION_TABLE",
    "event_to_row",
    "event_values",
    "include_object",
    "metadata",
    "plain_json",
    "quarantine",
    "spend_calls",
    "spend_logs",
]

#: Alembic's version table for the ledger, apart from any version table the host app has.
VERSION_TABLE = "tracking_alembic_version"


metadata = sa.MetaData()

spend_logs = sa.Table(
    "spend_logs",
    metadata,
    *(column.column() for column in COLUMNS),  # the one ordered definition of the row
    sa.Index("ix_spend_logs_end_user_start_time", "end_user", "start_time"),
    sa.Index("ix_spend_logs_model_start_time", "model", "start_time"),
    sa.Index("ix_spend_logs_api_key_hash_start_time", "api_key_hash", "start_time"),
    sa.Index("ix_spend_logs_start_time", "start_time"),
)

#: Rows the target refused for good (a value it cannot store): kept with the database's error
#: text, never lost and never in the way of the rows behind them. ``line`` is the row as the
#: outbox encodes it (JSON text; ``tracking ledger quarantine replay`` inserts it again).
quarantine = sa.Table(
    "ledger_quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String()),
    sa.Column("line", sa.Text(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("quarantined_at", UTCDateTime(), nullable=False),
)

#: The text and count columns of a call that :data:`spend_calls` holds and the quarantine's
#: reader (:mod:`._quarantined_calls`) reads from a quarantined row's JSON.
CALL_TEXT_COLUMNS = (
    "request_id",
    "status",
    "call_type",
    "cost_source",
    "model",
    "served_model",
    "provider",
    "end_user",
    "api_key_hash",
    "key_alias",
    "team",
)
CALL_COUNT_COLUMNS = ("images_returned", "output_tokens", "total_tokens")
#: The ``spend_calls`` view (migration 0006): one row per call, the rows of ``spend_logs`` and the
#: calls whose rows sit in ``ledger_quarantine`` (``quarantined`` 1), each call once, by its own
#: row rather than its intent's estimate. What every spend report sums.
spend_calls = sa.table(
    "spend_calls",
    sa.column("start_time", UTCDateTime()),
    *(sa.column(name, sa.String()) for name in CALL_TEXT_COLUMNS),
    *(sa.column(name, sa.BigInteger()) for name in CALL_COUNT_COLUMNS),
    sa.column("cost_usd", sa.Numeric(20, MONEY_SCALE, asdecimal=True)),
    sa.column("quarantined", sa.Integer()),
)

#: The columns of ``spend_logs`` in table order: the order of :func:`event_values`.
COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in COLUMNS)
#: Tables (and views) the ledger's migrations create (the proxy's keys and end users too);
#: everything else in the database belongs to the host.
OUR_TABLES = frozenset(
    {
        "spend_logs",
        "spend_daily",
        "spend_calls",
        "ledger_quarantine",
        "proxy_keys",
        "proxy_end_users",
        "proxy_end_user_deletions",
        VERSION_TABLE,
    }
)
#: The tables autogenerate compares: the modelled ones (Alembic minds its own version table).
_MODELLED = frozenset(metadata.tables)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: consider only the ledger's own tables, never the host application's."""
    if type_ == "table":
        return name in _MODELLED
    table = getattr(obj, "table", None)
    if table is not None:
        return str(table.name) in _MODELLED
    return True


#: Values that are JSON as they are (exact types). Not ``float``: NaN and the infinities are not
#: JSON (PostgreSQL's jsonb and the outbox's encoder refuse them, and a refused row was dropped).
_SCALARS = frozenset({str, int, bool, type(None)})
#: The mappings a call's metadata is (frozen: ``MappingProxyType``), tested by their exact type
#: before ``Mapping``'s ABC test, which costs several thousand instructions a time.
_PLAIN_MAPPINGS = frozenset({MappingProxyType, dict})


def plain_json(value: Any) -> Any:
    """JSON-safe copy of caller metadata (Decimals, datetimes, non-finite floats such as NaN
    and other objects as text: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``)."""
    if type(value) in _SCALARS:  # the common case first: exact types, no isinstance chain
        return value
    if type(value) in _PLAIN_MAPPINGS:  # a call's metadata
        return _plain_mapping(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(float(value))
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Mapping):
        return _plain_mapping(value)
    if type(value) is list and all(type(v) in _SCALARS for v in value):
        return list(value)  # a flat list (tags), copied without a call per item
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _plain_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        k if type(k) is str else str(k): v if type(v) in _SCALARS else plain_json(v)
        for k, v in value.items()
    }


#: The ``spend_logs`` row for one event as values in column order (the writer's fast form).
event_values = compile_reader("event_values", {}, {"plain_json": plain_json})


def event_to_row(event: ImageEditEvent) -> dict[str, Any]:
    """The ``spend_logs`` row for one event."""
    return dict(zip(COLUMN_NAMES, event_values(event), strict=True))
