"""The ledger's side of a reconciliation: what it recorded of one provider's calls, grouped by
UTC day or by the model the provider served, with exact sums (see :mod:`._queries`); the calls
in the ledger's quarantine (rows the database refused, billed all the same) included."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from ._quarantined_calls import QuarantinedCall, quarantined_calls
from ._queries import _day, cost_sum, summed_cost, to_utc_bound, unpriced_count
from ._schema import spend_logs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["BilledRow", "query_billed"]


#: A failed call recorded with an estimate: maybe billed, so not a price the provider confirmed.
_ESTIMATED_FAILURE = sa.and_(
    spend_logs.c.status != "success", spend_logs.c.cost_source == "estimate"
)
#: A successful call whose cost holds an estimate (an earlier attempt's answer was lost, or the
#: answer's usage could not be read): its row cannot be split into price and estimate.
_ESTIMATED_SUCCESS = sa.and_(
    spend_logs.c.status == "success", spend_logs.c.cost_source == "estimate"
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
    unpriced: int = 0
    #: successful calls whose cost holds an estimate: no price can be read from ``cost_usd``
    estimated_successes: int = 0
    #: calls counted here whose rows are in the ledger's quarantine (refused by the database)
    quarantined: int = 0

    def plus(self, call: QuarantinedCall) -> BilledRow:
        """This group with a quarantined call added, counted as the SQL above counts a row."""
        success = call.status == "success"
        estimate = call.cost_source == "estimate"
        cost = call.cost_usd if call.cost_usd is not None else Decimal(0)
        return replace(
            self,
            requests=self.requests + success,
            images=self.images + call.images_returned,
            output_tokens=self.output_tokens + call.output_tokens,
            cost_usd=self.cost_usd + cost,
            estimated_usd=self.estimated_usd + (cost if estimate and not success else 0),
            unpriced=self.unpriced + (call.cost_usd is None),
            estimated_successes=self.estimated_successes + (estimate and success),
            quarantined=self.quarantined + 1,
        )


def query_billed(
    engine: Engine,
    *,
    provider: str,
    since: date | datetime,
    until: date | datetime,
    by: Literal["day", "model"],
) -> list[BilledRow]:
    """The ledger's calls to ``provider`` from ``since`` (inclusive) to ``until`` (exclusive)."""
    key: sa.ColumnElement[Any] = (
        _day(engine) if by == "day" else sa.func.coalesce(spend_logs.c.served_model, "")
    )
    statement = (
        sa.select(
            key.label("key"),
            sa.func.coalesce(
                sa.func.sum(sa.case((spend_logs.c.status == "success", 1), else_=0)), 0
            ).label("requests"),
            sa.func.coalesce(sa.func.sum(spend_logs.c.images_returned), 0).label("images"),
            sa.func.coalesce(sa.func.sum(spend_logs.c.output_tokens), 0).label("output_tokens"),
            cost_sum(engine).label("cost"),
            cost_sum(engine, _ESTIMATED_FAILURE).label("estimated"),
            unpriced_count().label("unpriced"),
            sa.func.coalesce(sa.func.sum(sa.case((_ESTIMATED_SUCCESS, 1), else_=0)), 0).label(
                "estimated_successes"
            ),
        )
        .where(spend_logs.c.provider == provider)
        .where(spend_logs.c.start_time >= to_utc_bound(since, "since"))
        .where(spend_logs.c.start_time < to_utc_bound(until, "until"))
        .group_by(key)
        .order_by(key)
    )
    start, end = to_utc_bound(since, "since"), to_utc_bound(until, "until")
    with engine.connect() as conn:
        result = conn.execute(statement).all()
        refused = quarantined_calls(conn, provider=provider, since=start, until=end)
    rows = [
        BilledRow(
            key=record.key.isoformat() if isinstance(record.key, date) else str(record.key),
            requests=int(record.requests),
            images=int(record.images),
            output_tokens=int(record.output_tokens),
            cost_usd=summed_cost(record.cost, engine),
            estimated_usd=summed_cost(record.estimated, engine),
            unpriced=int(record.unpriced),
            estimated_successes=int(record.estimated_successes),
        )
        for record in result
    ]
    if not refused:
        return rows
    groups = {row.key: row for row in rows}
    for call in refused:  # billed all the same: the provider's bill has them
        day = call.day
        group = (day.isoformat() if day else "") if by == "day" else (call.served_model or "")
        groups[group] = groups.get(group, BilledRow(group, 0, 0, 0, Decimal(0))).plus(call)
    return [groups[key] for key in sorted(groups)]
