"""The ledger's tables as SQLAlchemy Core objects, and how an event becomes a row.

``spend_logs`` is a public contract (documented in docs/ledger.md): one row per call, keyed by our
``request_id``. Money is ``NUMERIC(20, 10)``: exact on PostgreSQL; SQLite has no decimal type and
keeps it as a REAL of at most 15 significant digits, which round-trips to the same ``Decimal``
(the query API sums it exactly, see :mod:`tracking.integrations.sql._queries`). Timestamps are UTC:
on PostgreSQL ``timestamptz``, on SQLite naive UTC text, which sorts and compares correctly.

The schema only changes through Alembic (``migrations/``); a test proves these objects and the
migrations agree. The ``spend_daily`` rollup is a view created by the migrations, so it does not
appear here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

if TYPE_CHECKING:
    from tracking.events import ImageEditEvent

__all__ = [
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
    "spend_logs",
]

#: Alembic's version table for the ledger, apart from any version table the host app has.
VERSION_TABLE = "tracking_alembic_version"
#: Digits after the point kept for money.
MONEY_SCALE = 10


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


metadata = sa.MetaData()

spend_logs = sa.Table(
    "spend_logs",
    metadata,
    sa.Column("request_id", sa.String(), primary_key=True),
    sa.Column("call_type", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("upstream_request_id", sa.String()),
    # who
    sa.Column("end_user", sa.String()),
    sa.Column("api_key_hash", sa.String()),
    sa.Column("key_alias", sa.String()),
    sa.Column("team", sa.String()),
    sa.Column("tags", _json()),
    sa.Column("metadata", _json()),
    # what
    sa.Column("model", sa.String(), nullable=False),
    sa.Column("model_group", sa.String()),
    sa.Column("served_model", sa.String()),
    sa.Column("provider", sa.String()),
    sa.Column("deployment_id", sa.String()),
    sa.Column("api_base", sa.String()),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("images_returned", sa.Integer, nullable=False),
    sa.Column("size", sa.String()),
    sa.Column("quality", sa.String()),
    # tokens
    sa.Column("input_text_tokens", sa.Integer),
    sa.Column("input_image_tokens", sa.Integer),
    sa.Column("cached_input_tokens", sa.Integer),
    sa.Column("output_tokens", sa.Integer),
    sa.Column("total_tokens", sa.Integer),
    # money
    sa.Column("cost_usd", _money()),
    sa.Column("cost_per_image_usd", _money()),
    sa.Column("cost_source", sa.String(), nullable=False),
    sa.Column("price_ref", sa.String()),
    # time
    sa.Column("start_time", UTCDateTime(), nullable=False),
    sa.Column("end_time", UTCDateTime(), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    # path and failure
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("fallback_from", _json()),
    sa.Column("error_type", sa.String()),
    sa.Column("http_status", sa.Integer),
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

#: The columns of ``spend_logs`` in table order: the order of :func:`event_values`.
COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in spend_logs.columns)
#: Tables (and views) the ledger owns; everything else in the database belongs to the host.
OUR_TABLES = frozenset({"spend_logs", "spend_daily", "ledger_quarantine", VERSION_TABLE})
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


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain_json(value: Any) -> Any:
    """JSON-safe copy of caller metadata (Decimals, datetimes and other objects as text)."""
    if type(value) in _SCALARS:  # the common case first: exact types, no isinstance chain
        return value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {
            k if type(k) is str else str(k): v if type(v) in _SCALARS else plain_json(v)
            for k, v in value.items()
        }
    if type(value) is list and all(type(v) in _SCALARS for v in value):
        return list(value)  # a flat list (tags), copied without a call per item
    if isinstance(value, list | tuple | set | frozenset):
        return [plain_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def event_values(event: ImageEditEvent) -> tuple[Any, ...]:
    """The ``spend_logs`` row for one event as values in column order (the writer's fast form)."""
    usage = event.usage
    return (  # the order of the columns in the table above
        event.request_id,
        event.call_type,
        event.status,
        event.upstream_request_id,
        event.end_user,
        event.api_key_hash,
        event.key_alias,
        event.team,
        list(event.tags),
        plain_json(event.metadata),
        event.model,
        event.model_group,
        event.resolved_model,  # served_model
        event.provider,
        event.deployment_id,
        event.api_base,
        event.n,
        event.images_returned,
        event.size,
        event.quality,
        usage.input_text_tokens if usage else None,
        usage.input_image_tokens if usage else None,
        usage.cached_input_tokens if usage else None,
        usage.output_tokens if usage else None,
        usage.total_tokens if usage else None,
        event.cost_usd,
        event.cost_per_image_usd,
        event.cost_source,
        event.price_ref,
        event.start_time,
        event.end_time,
        float(event.latency_ms),
        event.attempts,
        event.retries,
        list(event.fallback_from),
        event.error_type,
        event.http_status,
    )


def event_to_row(event: ImageEditEvent) -> dict[str, Any]:
    """The ``spend_logs`` row for one event."""
    return dict(zip(COLUMN_NAMES, event_values(event), strict=True))
