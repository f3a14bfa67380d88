"""The ledger's side of a reconciliation: what it recorded of one provider's calls, grouped by
UTC day or by the model the provider served, with exact sums (see :mod:`._queries`); the calls
in the ledger's quarantine (rows the database refused, billed all the same) included, each call
once by its own row (the ``spend_calls`` view)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from ._queries import cost_sum, summed_cost, to_utc_bound, unpriced_count, utc_day
from ._schema import spend_calls

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["BilledRow", "query_billed"]


#: A failed call recorded with an estimate: maybe billed, so not a price the provider confirmed.
_ESTIMATED_FAILURE = sa.and_(
    spend_calls.c.status != "success", spend_calls.c.cost_source == "estimate"
)
#: A successful call whose cost holds an estimate (an earlier attempt's answer was lost, or the
#: answer's usage could not be read): its row cannot be split into price and estimate.
_ESTIMATED_SUCCESS = sa.and_(
    spend_calls.c.status == "success", spend_calls.c.cost_source == "estimate"
)


@dataclass(frozen=True, slots=True)
class BilledRow:
    key: str  #: the UTC day (``YYYY-MM-DD``) or the model the provider served
    requests: int  #: calls that reached the provider and succeeded
    images: int
    output_tokens: int
    cost_usd: Decimal  #: every row's cost, estimates of billed failures included
    #: the part of ``cost_usd`` that is failed calls' estimates (billed maybe, or not yet)
    estimated_usd: Decimal = Decimal(0)
    #: calls with no cost at all (a model no price entry covers): ``cost_usd`` leaves them out
    unpriced_requests: int = 0
    #: successful calls whose cost holds an estimate: no price can be read from ``cost_usd``
    estimated_successes: int = 0
    #: calls counted here whose rows are in the ledger's quarantine (refused by the database)
    quarantined_requests: int = 0


def query_billed(
    engine: Engine,
    *,
    provider: str,
    since: date | datetime,
    until: date | datetime,
    by: Literal["day", "model"],
) -> list[BilledRow]:
    """The ledger's calls to ``provider`` from ``since`` (inclusive) to ``until`` (exclusive)."""
    calls = spend_calls
    key: sa.ColumnElement[Any] = (
        utc_day(engine, calls) if by == "day" else sa.func.coalesce(calls.c.served_model, "")
    )
    statement = (
        sa.select(
            key.label("key"),
            sa.func.coalesce(
                sa.func.sum(sa.case((calls.c.status == "success", 1), else_=0)), 0
            ).label("requests"),
            sa.func.coalesce(sa.func.sum(calls.c.images_returned), 0).label("images"),
            sa.func.coalesce(sa.func.sum(calls.c.output_tokens), 0).label("output_tokens"),
            cost_sum(engine, source=calls).label("cost"),
            cost_sum(engine, _ESTIMATED_FAILURE, calls).label("estimated"),
            unpriced_count(calls).label("unpriced"),
            sa.func.coalesce(sa.func.sum(sa.case((_ESTIMATED_SUCCESS, 1), else_=0)), 0).label(
                "estimated_successes"
            ),
            sa.func.coalesce(sa.func.sum(calls.c.quarantined), 0).label("quarantined"),
        )
        .where(calls.c.provider == provider)
        .where(calls.c.start_time >= to_utc_bound(since, "since"))
        .where(calls.c.start_time < to_utc_bound(until, "until"))
        .group_by(key)
        .order_by(key)
    )
    with engine.connect() as conn:
        result = conn.execute(statement).all()
    return [
        BilledRow(
            key=record.key.isoformat() if isinstance(record.key, date) else str(record.key),
            requests=int(record.requests),
            images=int(record.images),
            output_tokens=int(record.output_tokens),
            cost_usd=summed_cost(record.cost, engine),
            estimated_usd=summed_cost(record.estimated, engine),
            unpriced_requests=int(record.unpriced),
            estimated_successes=int(record.estimated_successes),
            quarantined_requests=int(record.quarantined),
        )
        for record in result
    ]
