"""The ledger's side of a reconciliation: what it recorded of one provider's calls, grouped by
UTC day or by the model the provider served, with exact sums (see :mod:`._queries`); the calls
in the ledger's quarantine (rows the database refused, billed all the same) included, each call
once by its own row (the ``spend_calls`` view)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from ._queries import cost_sum, summed_cost, to_utc_bound, unpriced_count, utc_day
from ._schema import spend_calls, spend_logs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["BilledRow", "query_billed", "query_other_hosts"]


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
    hosts: Collection[str] | None = None,
) -> list[BilledRow]:
    """The ledger's calls to ``provider`` from ``since`` (inclusive) to ``until`` (exclusive);
    with ``hosts``, only those sent to one of them (host names, any case, any port) or to no
    recorded host."""
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
        .where(sa.true() if hosts is None else _to(hosts))
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


def query_other_hosts(
    engine: Engine,
    *,
    provider: str,
    since: date | datetime,
    until: date | datetime,
    hosts: Collection[str],
) -> list[tuple[str, int]]:
    """The hosts other than ``hosts`` that the ledger's calls to ``provider`` in the window were
    sent to (a reseller's or a gateway's ``api_base``), each with its number of calls, most
    first: what :func:`query_billed` with ``hosts`` left out."""
    logs = spend_logs
    count = sa.func.count(sa.distinct(logs.c.request_id)).label("calls")
    statement = (
        sa.select(logs.c.api_base, count)
        .where(logs.c.provider == provider)
        .where(logs.c.start_time >= to_utc_bound(since, "since"))
        .where(logs.c.start_time < to_utc_bound(until, "until"))
        .where(_elsewhere(logs, hosts))
        .group_by(logs.c.api_base)
        .order_by(count.desc(), logs.c.api_base)
    )
    with engine.connect() as conn:
        return [(str(host), int(n)) for host, n in conn.execute(statement).all()]


def _elsewhere(logs: sa.FromClause, hosts: Collection[str]) -> sa.ColumnElement[bool]:
    """A row sent to a recorded ``host[:port]`` whose host is none of ``hosts`` (names,
    compared without case, on any port)."""
    sent_to = sa.func.lower(logs.c.api_base)
    named = [
        sa.or_(sent_to == host, sent_to.startswith(f"{host}:", autoescape=True))
        for host in sorted({host.lower() for host in hosts})
    ]
    return sa.and_(logs.c.api_base.is_not(None), sa.not_(sa.or_(sa.false(), *named)))


def _to(hosts: Collection[str]) -> sa.ColumnElement[bool]:
    """A call none of whose rows in ``spend_logs`` went to a host other than ``hosts``: sent to
    one of them, to no recorded host, or known only from the quarantine (whose host the
    ``spend_calls`` view does not hold: counted)."""
    logs = spend_logs.alias("elsewhere")
    return ~sa.exists(
        sa.select(1)
        .select_from(logs)
        .where(logs.c.request_id == spend_calls.c.request_id)
        .where(_elsewhere(logs, hosts))
    )
