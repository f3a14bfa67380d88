"""The end users ``/customer/info`` and ``/customer/list`` know, and the deletions they remember.

LiteLLM records an end user in its customer table at their first call (its proxy docs,
``proxy/customer_usage``: the customer id "will be automatically upserted into the database with
the new spend", read 2026-12-07), so its ``/customer/info`` and ``/customer/list`` know every end
user who called. No call writes anything here for it (the call path is the hot path): an end user
is known when they have a record (``proxy_end_users``: ``/customer/new``, ``/customer/block``,
``/customer/update``) or when the ledger holds calls of theirs, found when asked in the database
(``spend_calls``: ``spend_logs`` and the quarantined calls) and in this host's local outboxes,
the rows ``/customer/info`` counts.

``/customer/delete`` deletes the record and remembers when (``proxy_end_user_deletions``,
revision 0010); the ledger's rows stay. An end user counts only the calls that started at or
after their last deletion (:func:`counted_calls`; one never deleted, every call): without a
record and without such calls they are unknown (a 404, not listed); a call after it and they are
known again, with the spend of those calls alone, as LiteLLM's row, made again by that call,
starts from its cost; given a record again (``/customer/new``, ``/customer/block``,
``/customer/update``) they count the same calls, as LiteLLM's row made again by ``/customer/new``
starts from $0, and so does their budget
(:meth:`~.account_store.AccountStore.counted_since`). Until 2026-12-07 an end user given a record
again counted every call of theirs, those before the deletion included. The ledger's reports
(``/spend/logs?user=``, ``/global/spend/end_users``, ``/global/spend/report?customer_id=``) keep
every call: they are the ledger, not the end user's record. Synchronous SQLAlchemy Core (the
routes call these through ``asyncio.to_thread``); a listing is one page, paged by the database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .account_store import EndUserRecord, end_user_record
from .account_tables import end_user_deletions, end_users

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tracking.integrations.sql import QuarantinedCall

    from .account_store import AccountStore

__all__ = [
    "counted_calls",
    "delete_end_users",
    "known_end_user",
    "list_end_users",
    "record_if_called",
]

#: How many ids one statement compares a listing's ids with (:func:`_ranks`).
_RANKED = 100


def chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """``ids`` in lists of ``LOOKUP_CHUNK``, an ``IN`` list every dialect takes."""
    from tracking.integrations.sql import LOOKUP_CHUNK

    for first in range(0, len(ids), LOOKUP_CHUNK):
        yield list(ids[first : first + LOOKUP_CHUNK])


def counted_calls() -> tuple[Any, sa.ColumnElement[bool]]:
    """``spend_calls`` joined to the end users' deletions, and the condition that keeps the
    calls counting for their end user, with a record or without: those started at or after
    their last deletion (all, never deleted), as
    :meth:`~.account_store.AccountStore.counted_since` counts them for one end user."""
    from tracking.integrations.sql import spend_calls

    calls = spend_calls.c
    deleted_at = end_user_deletions.c.deleted_at
    joined = spend_calls.outerjoin(
        end_user_deletions, end_user_deletions.c.end_user_id == calls.end_user
    )
    since_deleted = sa.or_(deleted_at.is_(None), calls.start_time >= deleted_at)
    return joined, sa.and_(calls.end_user.is_not(None), since_deleted)


def _counted_locally(
    local: Sequence[QuarantinedCall],
    records: Mapping[str, EndUserRecord],
    deleted: Mapping[str, datetime],
) -> set[str]:
    """The end users without a record that ``local`` calls make known: calls started at or after
    their last deletion (all of them, never deleted)."""
    return {
        c.end_user
        for c in local
        if c.end_user is not None
        and c.end_user not in records
        and (
            (since := deleted.get(c.end_user)) is None
            or (c.start_time is not None and c.start_time >= since)
        )
    }


def _records_and_deletions(
    conn: Connection, ids: Sequence[str]
) -> tuple[dict[str, EndUserRecord], dict[str, datetime]]:
    """Of ``ids``: the records there are, and when each of the others was last deleted."""
    records: dict[str, EndUserRecord] = {}
    deleted: dict[str, datetime] = {}
    table = end_user_deletions
    for chunk in chunks(ids):
        for row in conn.execute(sa.select(end_users).where(end_users.c.end_user_id.in_(chunk))):
            records[row.end_user_id] = end_user_record(row)
        found = sa.select(table.c.end_user_id, table.c.deleted_at)
        for user, at in conn.execute(found.where(table.c.end_user_id.in_(chunk))):
            deleted[user] = at
    return records, {u: at for u, at in deleted.items() if u not in records}


def _known_from_calls(store: AccountStore, ids: Sequence[str]) -> set[str]:
    """Of ``ids``, those without a record who are known from their calls (in the database or
    this host's outboxes)."""
    from tracking.integrations.sql import spend_calls

    wanted = list(dict.fromkeys(ids))
    if store.nothing_stored() or not wanted:
        return set()
    local = store.calls_kept_locally(end_user=wanted[0] if len(wanted) == 1 else None)
    joined, counts = counted_calls()
    user = spend_calls.c.end_user
    found: set[str] = set()
    with store.engine.connect() as conn:
        records, deleted = _records_and_deletions(conn, wanted)
        candidates = [u for u in wanted if u not in records]
        for chunk in chunks(candidates):
            statement = sa.select(user).select_from(joined).where(counts, user.in_(chunk))
            found.update(conn.execute(statement.distinct()).scalars())
    found.update(_counted_locally(local, records, deleted).intersection(candidates))
    return found


def known_end_user(store: AccountStore, end_user_id: str) -> EndUserRecord | None:
    """The end user ``/customer/info`` shows: their record, or, without one, the end user known
    from their calls (:meth:`EndUserRecord.from_calls`); None when neither."""
    record = store.get_end_user(end_user_id)
    if record is not None:
        return record
    if end_user_id not in _known_from_calls(store, [end_user_id]):
        return None
    return EndUserRecord.from_calls(end_user_id)


def record_if_called(store: AccountStore, end_user_id: str) -> bool:
    """Give an end user known from their calls alone a record (no budget, not blocked), as
    LiteLLM's ``/customer/update`` finds the row their first call made; True when they have
    one now (made here or meanwhile), False when they are unknown."""
    from .errors import ProxyError

    found = known_end_user(store, end_user_id)
    if found is None:
        return False
    if found.created_at is None:
        now = datetime.now(UTC)
        with contextlib.suppress(ProxyError):  # made meanwhile by another request
            store.create_end_user(EndUserRecord(end_user_id, None, None, False, now, now))
    return True


def _ordered(column: Any, dialect: str) -> Any:
    """``column`` compared as Python compares text (by code point): PostgreSQL's ``"C"``
    collation, SQLite's own (bytes of UTF-8)."""
    return column.collate("C") if dialect == "postgresql" else column


def _ranks(conn: Connection, known: Any, ids: Sequence[str]) -> list[int]:
    """For each of ``ids``, how many of the ``known`` ids come before it."""
    dialect = conn.dialect.name
    ident = _ordered(known.c.id, dialect)
    ranks: list[int] = []
    for first in range(0, len(ids), _RANKED):
        before = [
            sa.func.coalesce(
                sa.func.sum(sa.case((ident < _ordered(sa.literal(i, sa.String()), dialect), 1))),
                0,
            )
            for i in ids[first : first + _RANKED]
        ]
        ranks.extend(int(n) for n in conn.execute(sa.select(*before).select_from(known)).one())
    return ranks


def list_end_users(store: AccountStore, *, page: int, size: int) -> list[EndUserRecord]:
    """One page of the end users ``/customer/list`` shows, by id (as Python orders text): those
    with a record and those known from their calls; one statement, paged by the database. The
    end users known from this host's outboxes alone (calls not shipped yet, or refused) are
    placed among them by their rank there."""
    from tracking.integrations.sql import spend_calls

    if store.nothing_stored():
        return []
    engine = store.engine
    local = store.calls_kept_locally()  # usually none: only while rows wait (or were refused)
    joined, counts = counted_calls()
    called = sa.select(spend_calls.c.end_user.label("id")).select_from(joined).where(counts)
    known = sa.union(sa.select(end_users.c.end_user_id.label("id")), called).subquery()
    offset = (page - 1) * size
    with engine.connect() as conn:
        alone = _known_locally_alone(conn, known, local)
        places = [rank + n for n, rank in enumerate(_ranks(conn, known, list(alone)))]
        inside = [u for u, p in zip(alone, places, strict=True) if offset <= p < offset + size]
        skipped = sum(1 for p in places if p < offset)
        statement = (
            sa.select(known.c.id, end_users)
            .select_from(known.outerjoin(end_users, end_users.c.end_user_id == known.c.id))
            .order_by(_ordered(known.c.id, engine.dialect.name))
            .limit(size - len(inside))
            .offset(offset - skipped)
        )
        rows = conn.execute(statement).all()
    listed = [
        end_user_record(r) if r.end_user_id is not None else EndUserRecord.from_calls(r.id)
        for r in rows
    ]
    listed += [EndUserRecord.from_calls(u) for u in inside]
    return sorted(listed, key=lambda record: record.end_user_id)


def _known_locally_alone(
    conn: Connection, known: Any, local: Sequence[QuarantinedCall]
) -> list[str]:
    """The end users known from ``local`` calls but not from the database, by id."""
    users = sorted({c.end_user for c in local if c.end_user is not None})
    if not users:
        return []
    counted = _counted_locally(local, *_records_and_deletions(conn, users))
    in_database: set[str] = set()
    for chunk in chunks(sorted(counted)):
        found = sa.select(known.c.id).where(known.c.id.in_(chunk))
        in_database.update(conn.execute(found).scalars())
    return sorted(counted - in_database)


def _remember(conn: Connection, ids: Sequence[str], at: datetime) -> None:
    """Record that ``ids`` were deleted ``at`` (a later deletion replaces an earlier one)."""
    if not ids:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(end_user_deletions)
    statement = statement.on_conflict_do_update(
        index_elements=[end_user_deletions.c.end_user_id],
        set_={"deleted_at": statement.excluded.deleted_at},
    )
    conn.execute(statement, [{"end_user_id": u, "deleted_at": at} for u in ids])


def delete_end_users(store: AccountStore, ids: Sequence[str]) -> list[str]:
    """Delete the end users (their records: budgets and flags), remembering when, so that those
    who called are not known from those calls any more (module docstring); their ledger rows
    stay. Returns the ids that were known (a record, or calls), in the order given."""
    wanted = list(dict.fromkeys(ids))
    called = _known_from_calls(store, wanted)
    now = datetime.now(UTC)
    recorded: set[str] = set()
    with store.engine.begin() as conn:
        column = end_users.c.end_user_id
        for chunk in chunks(wanted):
            recorded.update(conn.execute(sa.select(column).where(column.in_(chunk))).scalars())
            conn.execute(sa.delete(end_users).where(column.in_(chunk)))
        found = [u for u in wanted if u in recorded or u in called]
        _remember(conn, found, now)
    return found
