"""The reads and writes behind LiteLLM's extra management routes (:mod:`.litellm_routes`).

Listing, changing and re-keying virtual keys, (un)blocking end users and their listing's spend, and
the ``/global/spend/*`` sums, all over the same tables :class:`~.account_store.AccountStore` uses
(``proxy_keys``, ``proxy_end_users`` and the ledger's ``spend_logs``); which end users
``/customer/list`` lists and ``/customer/delete`` deletes, :mod:`.known_end_users` decides.
Synchronous SQLAlchemy Core: the routes call these through ``asyncio.to_thread``. Spend figures are
summed by the database over the ledger's ``spend_calls`` view: ``spend_logs`` and the calls in the
ledger's quarantine (rows the database refused, billed all the same), each call once by its own row,
as budgets count them (:func:`tracking.integrations.sql.quarantined_calls`). Their amounts and their
flags come from the database alone, the same rows: the calls this host keeps in its local outboxes
count once shipped, as other hosts' do (a global figure does not depend on the host that answers),
but for ``/customer/list``'s rows, which count them as ``/customer/info`` does
(:func:`end_user_spend`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .errors import ProxyError
from .limits import MAX_ID_CHARS

if TYPE_CHECKING:
    from .account_store import AccountStore, EndUserRecord, KeyRecord

__all__ = [
    "delete_existing",
    "end_user_spend",
    "list_keys",
    "missing_key",
    "money",
    "set_blocked",
    "spend_by",
    "spend_by_tag",
    "spend_report",
    "total_spend",
    "update_key",
]

_QUANTUM = Decimal("1e-10")
#: What ``/global/spend/*`` groups by, LiteLLM's names -> the ledger's columns.
GROUPS = {"api_key": "api_key_hash", "customer": "end_user", "team": "team", "model": "model"}


def money(value: Any) -> str:
    """An amount as every spend figure is written, here as in ``tracking spend`` and the
    proxy's other routes: the exact decimal at the ledger's scale (``"0.2500000000"``)."""
    return f"{Decimal(str(value or 0)).quantize(_QUANTUM):f}"


def missing_key() -> ProxyError:
    return ProxyError(404, "no such key", param="key", code="key_not_found")


def list_keys(
    store: AccountStore,
    *,
    page: int,
    size: int,
    key_alias: str | None,
    team: str | None,
) -> tuple[list[KeyRecord], int]:
    """One page of keys (oldest first) and how many match."""
    import sqlalchemy as sa

    if store.nothing_stored():
        return [], 0
    from .account_tables import keys

    conditions: list[Any] = []
    if key_alias is not None:
        conditions.append(keys.c.key_alias == key_alias)
    if team is not None:
        conditions.append(keys.c.team == team)
    statement = (
        sa.select(keys.c.key_hash)
        .where(*conditions)
        .order_by(keys.c.created_at, keys.c.key_hash)
        .limit(size)
        .offset((page - 1) * size)
    )
    count = sa.select(sa.func.count()).select_from(keys).where(*conditions)
    with store.engine.connect() as conn:
        hashes = [str(h) for h in conn.execute(statement).scalars()]
        total = int(conn.execute(count).scalar_one())
    records = [store.get_key(h) for h in hashes]
    return [r for r in records if r is not None], total


def update_key(store: AccountStore, key_hash: str, changes: Mapping[str, Any]) -> KeyRecord:
    """Change some of a key's fields (``keys`` column names; a new ``key_hash`` re-keys it: its
    alias, limits and spend history stay), stamping ``updated_at``; 404 for an unknown key."""
    from .account_tables import keys

    values = dict(changes)
    if values:  # its budget counters seeded before this start again (budgets._changed)
        values["updated_at"] = datetime.now(UTC)
    if values.get("models") is not None:
        values["models"] = list(values["models"])
    if values:
        with store.engine.begin() as conn:
            found = conn.execute(
                keys.update().where(keys.c.key_hash == key_hash).values(**values)
            ).rowcount
        if not found:
            raise missing_key()
    record = store.get_key(values.get("key_hash", key_hash))
    if record is None:
        raise missing_key()
    return record


def delete_existing(store: AccountStore, column: Any, values: Sequence[str]) -> list[str]:
    """Delete the rows whose ``column`` is one of ``values``; returns the values found."""
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        found = [
            str(v)
            for v in conn.execute(sa.select(column).where(column.in_(list(values)))).scalars()
        ]
        if found:
            conn.execute(sa.delete(column.table).where(column.in_(found)))
    return found


def set_blocked(store: AccountStore, ids: Sequence[str], blocked: bool) -> list[EndUserRecord]:
    """Block or unblock end users, creating those not known yet (as LiteLLM does)."""
    from .account_store import EndUserRecord

    records = []
    for end_user_id in ids:
        current = store.get_end_user(end_user_id)
        if current is None:
            now = datetime.now(UTC)
            record = EndUserRecord(end_user_id, None, None, blocked, now, now)
            try:
                store.create_end_user(record)
            except ProxyError:  # created meanwhile by another call: update it instead
                record = store.update_end_user(end_user_id, {"blocked": blocked})
        elif current.blocked != blocked:
            record = store.update_end_user(end_user_id, {"blocked": blocked})
        else:
            record = replace(current)
        records.append(record)
    return records


def _window(statement: Any, column: Any, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        statement = statement.where(column >= start)
    if end is not None:
        statement = statement.where(column < end)
    return statement


def _only(statement: Any, only: Mapping[str, str]) -> Any:
    """``statement`` kept to the calls of these values (``{"customer": "alice"}``: by the
    column :data:`GROUPS` names for each)."""
    from tracking.integrations.sql import spend_calls

    for group, value in only.items():
        statement = statement.where(spend_calls.c[GROUPS[group]] == value)
    return statement


def total_spend(
    store: AccountStore, start: datetime | None, end: datetime | None
) -> tuple[str, dict[str, Any]]:
    """What every call in the window cost, and the flags of its calls (``unpriced_requests``:
    calls of no known price, left out of the amount; the flagged pairs, recorded at an estimate,
    quarantined: the part of it they are), each only when there are such calls."""
    import sqlalchemy as sa

    if store.nothing_stored():
        return money(0), {}
    from tracking.integrations.sql import (
        cost_sum,
        flagged_figures,
        flagged_measures,
        spend_calls,
        summed_cost,
    )

    engine = store.engine
    statement = sa.select(
        cost_sum(engine, source=spend_calls).label("spend"),
        *flagged_measures(engine, spend_calls, unpriced=True),
    )
    statement = _window(statement, spend_calls.c.start_time, start, end)
    with engine.connect() as conn:
        record = conn.execute(statement).one()
    flags = flagged_figures(record, engine, text=True, unpriced=True)
    return money(summed_cost(record.spend, engine)), flags


def _per_value(engine: Any, column: Any) -> Any:
    """``value``, ``spend``, ``requests``, the count of calls of no known price and the flagged
    pairs' measures per value of a ``spend_calls`` column, the calls without one left out."""
    import sqlalchemy as sa

    from tracking.integrations.sql import cost_sum, flagged_measures, spend_calls

    return (
        sa.select(
            column.label("value"),
            cost_sum(engine, source=spend_calls).label("spend"),
            sa.func.count().label("requests"),
            *flagged_measures(engine, spend_calls, unpriced=True),
        )
        .where(column.is_not(None))
        .group_by(column)
    )


#: A value's spend: the value, what its calls cost, how many there were, their flags
#: (``unpriced_requests`` and the flagged pairs, each only when there are such calls).
ValueSpend = tuple[str, str, int, dict[str, Any]]


def _value_rows(engine: Any, rows: Sequence[Any]) -> list[ValueSpend]:
    from tracking.integrations.sql import flagged_figures, summed_cost

    return [
        (
            str(r.value),
            money(summed_cost(r.spend, engine)),
            int(r.requests),
            flagged_figures(r, engine, text=True, unpriced=True),
        )
        for r in rows
    ]


def spend_by(
    store: AccountStore,
    group: str,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[ValueSpend]:
    """``(value, spend, requests, flags)`` per value of a ledger column, dearest first;
    the quarantined calls (rows the database refused, billed all the same) included."""
    if store.nothing_stored():
        return []
    from tracking.integrations.sql import cost_order, spend_calls

    column = spend_calls.c[GROUPS[group]]
    engine = store.engine
    statement = (
        _per_value(engine, column).order_by(*cost_order(engine, spend_calls), column).limit(limit)
    )
    statement = _window(statement, spend_calls.c.start_time, start, end)
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return _value_rows(engine, rows)


#: Each call's request tags (``spend_logs.tags`` and a quarantined row's ``tags``: a JSON array,
#: JSON on SQLite and JSONB on PostgreSQL), one row per (call, tag) however often a call's rows
#: name it; an element that is not text, or a value that is no array, names none; a tag longer
#: than ``MAX_ID_CHARS`` is its first ``MAX_ID_CHARS`` characters and ``…``, one tag with every
#: other alike in them (only an old row or another writer's holds one: until 2026-12-07 a listing
#: wrote each whole, megabytes ``limit`` times over; a ``tags`` filter names none). Only
#: constants of this module are interpolated; the window's bounds are bound parameters.
_SQLITE_TAG = (
    f"CASE WHEN length(j.value) > {MAX_ID_CHARS} THEN substr(j.value, 1, {MAX_ID_CHARS}) || "
    "'\u2026' ELSE j.value END"
)
_PG_TAG = (
    f"CASE WHEN length(e.value #>> '{{}}') > {MAX_ID_CHARS} THEN left(e.value #>> "
    f"'{{}}', {MAX_ID_CHARS}) || '\u2026' ELSE e.value #>> '{{}}' END"
)
_TAGS_SQL = {
    "sqlite": (
        "SELECT s.request_id AS request_id, {sqlite_tag} AS tag FROM spend_logs AS s, "
        "json_each(COALESCE(CASE WHEN json_valid(s.tags) THEN CASE WHEN json_type(s.tags) = "
        "'array' THEN s.tags END END, '[]')) AS j WHERE j.type = 'text'{logged} "
        "UNION SELECT q.request_id, {sqlite_tag} FROM ledger_quarantine AS q, "
        "json_each(COALESCE(CASE WHEN json_valid(q.line) THEN CASE WHEN json_type(q.line, "
        "'$.tags') = 'array' THEN json_extract(q.line, '$.tags') END END, '[]')) AS j "
        "WHERE j.type = 'text' AND q.request_id IS NOT NULL"
    ),
    "postgresql": (
        "SELECT s.request_id AS request_id, {pg_tag} AS tag "
        "FROM spend_logs AS s "
        "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(s.tags) = 'array' "
        "THEN s.tags ELSE '[]'::jsonb END) AS e(value) "
        "WHERE jsonb_typeof(e.value) = 'string'{logged} "
        "UNION SELECT q.request_id, {pg_tag} FROM ledger_quarantine AS q "
        "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof("
        "tracking_json_object(q.line) -> 'tags') = 'array' THEN tracking_json_object(q.line) "
        "-> 'tags' ELSE '[]'::jsonb END) AS e(value) "
        "WHERE jsonb_typeof(e.value) = 'string' AND q.request_id IS NOT NULL"
    ),
}


def _call_tags(engine: Any, start: datetime | None, end: datetime | None) -> Any:
    """``(request_id, tag)`` of every call's tags (:data:`_TAGS_SQL`); the logged rows read in
    the window alone (a call's ``spend_calls`` row starts when its logged row does), the
    quarantined ones all (few, and a quarantined call's time is read from its JSON)."""
    import sqlalchemy as sa

    from tracking.integrations.sql import UTCDateTime

    logged = ""
    bounds = []
    if start is not None:
        logged += " AND s.start_time >= :start"
        bounds.append(sa.bindparam("start", start, type_=UTCDateTime()))
    if end is not None:
        logged += " AND s.start_time < :end"
        bounds.append(sa.bindparam("end", end, type_=UTCDateTime()))
    dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
    sql = _TAGS_SQL[dialect].format(logged=logged, sqlite_tag=_SQLITE_TAG, pg_tag=_PG_TAG)
    text = sa.text(sql).bindparams(*bounds)
    return text.columns(sa.column("request_id", sa.String), sa.column("tag", sa.String)).subquery(
        "call_tags"
    )


def spend_by_tag(
    store: AccountStore,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    tags: Sequence[str] | None = None,
) -> list[ValueSpend]:
    """``(tag, spend, requests, flags)`` per request tag (of ``tags`` alone, when given), dearest
    first, then by tag: each call counts once in each of its tags (a call of two tags in both,
    as LiteLLM's ``/spend/tags`` counts it), a call without tags in none; the quarantined calls
    included, as every ``/global/spend/*`` sum."""
    if store.nothing_stored():
        return []
    from tracking.integrations.sql import cost_order, spend_calls

    engine = store.engine
    tagged = _call_tags(engine, start, end)
    column = tagged.c.tag
    joined = spend_calls.join(tagged, tagged.c.request_id == spend_calls.c.request_id)
    statement = _per_value(engine, column).select_from(joined)
    if tags is not None:
        statement = statement.where(column.in_(list(tags)))
    statement = statement.order_by(*cost_order(engine, spend_calls), column).limit(limit)
    statement = _window(statement, spend_calls.c.start_time, start, end)
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return _value_rows(engine, rows)


def end_user_spend(
    store: AccountStore, ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """What each of these end users spent and the flags of their calls, as ``/customer/info``
    gives them (its ``total_spend``, then ``unpriced_requests`` and the flagged pairs, each only
    when there are such calls): summed by the database for them alone, ``LOOKUP_CHUNK`` ids a
    statement (an ``IN`` list every dialect takes), the quarantined calls included, over the
    calls that count for each (:func:`~.known_end_users.counted_calls`: those since their last
    deletion, with a record or without); an end user of whom this host keeps calls in its local
    outboxes (waiting for the database, or refused by it and its quarantine) has, amount and
    flags, the figures of :meth:`~.account_store.AccountStore.spent_and_flagged`, which count
    them too, from the same rows (until 2026-12-07 its row left them out, which its
    ``/customer/info`` counted). An end user without calls is not in the answer."""
    if store.nothing_stored() or not ids:
        return {}
    from tracking.integrations.sql import spend_calls

    from .known_end_users import chunks, counted_calls

    column = spend_calls.c.end_user
    engine = store.engine
    wanted = list(dict.fromkeys(ids))
    local = store.calls_kept_locally()  # read before the database
    kept = {c.end_user for c in local if c.end_user is not None}.intersection(wanted)
    joined, counts = counted_calls()
    spend: dict[str, tuple[str, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for chunk in chunks(wanted):
            statement = (
                _per_value(engine, column).select_from(joined).where(counts, column.in_(chunk))
            )
            rows = conn.execute(statement).all()
            spend.update((v, (amount, f)) for v, amount, _, f in _value_rows(engine, rows))
    for end_user in sorted(kept):  # usually none: only while rows wait (or were refused twice)
        amount, flags = store.spent_and_flagged(end_user=end_user, since=None)
        spend[end_user] = (money(amount), flags)
    return spend


def _flags_of(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The flagged pairs of groups (each group's :func:`flagged_figures` with ``every``)
    summed exactly, as JSON values, each pair only when there are such calls."""
    from tracking.integrations.sql import SpendRow

    rows = [SpendRow(None, 0, 0, 0, Decimal(0), 0, **part) for part in parts]
    total = SpendRow.total_of(rows)
    return {name: total.figure(name) for name in total.flagged()}


#: How LiteLLM's ``/global/spend/report?group_by=team`` names the calls of no team.
UNASSIGNED_TEAM = "Unassigned Team"
#: A (model, key) pair's spend in a report: what it cost, its tokens, its flagged figures.
_PairSpend = tuple[Decimal, int, dict[str, Any]]


def spend_report(
    store: AccountStore,
    group: str,
    *,
    start: datetime | None,
    end: datetime | None,
    only: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """LiteLLM's ``/global/spend/report``, in its shapes, summed by the database (the
    quarantined calls included, each call once).

    ``team`` and ``customer``: per UTC day, per team (or end user), ``total_spend`` and
    ``metadata``, one entry per (model, key) pair as LiteLLM's query groups them. A team is
    named as LiteLLM names it, ``team_name``: a team here is its id (there are no team objects
    with an alias), and calls of no team are LiteLLM's ``UNASSIGNED_TEAM``; ``team_id`` is the
    id itself (null for those). ``api_key``:
    LiteLLM's other shape, not per day: per key, dearest first, ``total_cost``, its input and
    output tokens and ``model_details`` per model. Each team's (end user's, key's) entry,
    and each of its ``metadata`` (``model_details``) entries, has the flagged pairs of its calls
    beside LiteLLM's fields (``estimated_requests`` / ``estimated_usd``,
    ``quarantined_requests`` / ``quarantined_usd``), each pair only when there are such
    calls. ``only`` keeps the calls of one key, end user or team (by :data:`GROUPS`' names:
    ``{"customer": "alice"}``), as LiteLLM's ``api_key``, ``customer_id`` and ``team_id``
    filters do."""
    if store.nothing_stored():
        return []
    if group == "api_key":
        return _report_per_key(store, start, end, only or {})
    import sqlalchemy as sa

    from tracking.integrations.sql import (
        cost_sum,
        flagged_figures,
        flagged_measures,
        spend_calls,
        summed_cost,
        utc_day,
    )

    engine = store.engine
    day_of = utc_day(engine, spend_calls)
    column = spend_calls.c[GROUPS[group]]
    model = sa.func.coalesce(spend_calls.c.model, "")
    key = spend_calls.c.api_key_hash
    statement = (
        sa.select(
            day_of.label("day"),
            column.label("value"),
            model.label("model"),
            key.label("api_key"),
            cost_sum(engine, source=spend_calls).label("spend"),
            sa.func.coalesce(sa.func.sum(spend_calls.c.total_tokens), 0).label("tokens"),
            *flagged_measures(engine, spend_calls),
        )
        .where(spend_calls.c.start_time.is_not(None))
        .group_by(day_of, column, model, key)
    )
    statement = _only(_window(statement, spend_calls.c.start_time, start, end), only or {})
    # day -> team (or end user) -> (model, key hash) -> (spend, tokens, flagged figures)
    days: dict[str, dict[str | None, dict[tuple[str, str | None], _PairSpend]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(statement):
            day = row.day if isinstance(row.day, str) else row.day.isoformat()
            value = None if row.value is None else str(row.value)
            pairs = days.setdefault(day, {}).setdefault(value, {})
            api_key = None if row.api_key is None else str(row.api_key)
            pairs[(str(row.model), api_key)] = (
                summed_cost(row.spend, engine),
                int(row.tokens),
                flagged_figures(row, engine, every=True),
            )
    name = {"customer": "customer", "team": "team_name"}[group]
    plural = {"customer": "customers", "team": "teams"}[group]
    report = []
    for day, groups in sorted(days.items()):
        entries = []
        for value, pairs in groups.items():
            total = sum((spend for spend, _, _ in pairs.values()), Decimal(0))
            flags = _flags_of([figures for _, _, figures in pairs.values()])
            metadata = [
                {
                    "model": m,
                    "api_key": k,
                    "spend": money(spend),
                    "total_tokens": tokens,
                    **_flags_of([figures]),
                }
                for (m, k), (spend, tokens, figures) in sorted(
                    pairs.items(), key=lambda item: (item[0][0], item[0][1] or "")
                )
            ]
            entry: dict[str, Any] = {name: value}
            if group == "team":  # LiteLLM's name for calls of no team, and the id beside it
                entry = {name: UNASSIGNED_TEAM if value is None else value, "team_id": value}
            entries.append({**entry, "total_spend": money(total), **flags, "metadata": metadata})
        report.append({"group_by_day": day, plural: entries})
    return report


def _report_per_key(
    store: AccountStore, start: datetime | None, end: datetime | None, only: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``/global/spend/report?group_by=api_key``: LiteLLM's rows per key (dearest first), each
    with ``model_details`` per model. The ledger's ``spend_calls`` holds no input token count:
    a call's input tokens are its total less its output tokens (total is input plus output)."""
    import sqlalchemy as sa

    from tracking.integrations.sql import (
        cost_sum,
        flagged_figures,
        flagged_measures,
        spend_calls,
        summed_cost,
    )

    engine = store.engine
    key = spend_calls.c.api_key_hash
    model = sa.func.coalesce(spend_calls.c.model, "")
    output = sa.func.coalesce(spend_calls.c.output_tokens, 0)
    statement = sa.select(
        key.label("api_key"),
        model.label("model"),
        cost_sum(engine, source=spend_calls).label("spend"),
        sa.func.coalesce(sa.func.sum(spend_calls.c.total_tokens - output), 0).label("input"),
        sa.func.coalesce(sa.func.sum(spend_calls.c.output_tokens), 0).label("output"),
        *flagged_measures(engine, spend_calls),
    ).group_by(key, model)
    statement = _only(_window(statement, spend_calls.c.start_time, start, end), only)
    # key hash -> (model, spend, input tokens, output tokens, flagged figures) per model
    keys: dict[str | None, list[tuple[str, Decimal, int, int, dict[str, Any]]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(statement):
            api_key = None if row.api_key is None else str(row.api_key)
            spend = summed_cost(row.spend, engine)
            figures = flagged_figures(row, engine, every=True)
            keys.setdefault(api_key, []).append(
                (str(row.model), spend, int(row.input), int(row.output), figures)
            )
    totals = {k: sum((m[1] for m in models), Decimal(0)) for k, models in keys.items()}
    # dearest first, as LiteLLM orders them (exactly: the sums are Decimals); then by key
    order = sorted(keys, key=lambda k: (-totals[k], k is None, k or ""))
    return [
        {
            "api_key": api_key,
            "total_cost": money(totals[api_key]),
            "total_input_tokens": sum(m[2] for m in keys[api_key]),
            "total_output_tokens": sum(m[3] for m in keys[api_key]),
            **_flags_of([m[4] for m in keys[api_key]]),
            "model_details": [
                {
                    "model": m,
                    "total_cost": money(cost),
                    "total_input_tokens": tokens_in,
                    "total_output_tokens": tokens_out,
                    **_flags_of([figures]),
                }
                for m, cost, tokens_in, tokens_out, figures in sorted(
                    keys[api_key], key=lambda detail: detail[0]
                )
            ],
        }
        for api_key in order
    ]
