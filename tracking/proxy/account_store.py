"""Reading and writing the proxy's keys and end users, and the ledger sums budgets start from.

:class:`AccountStore` is synchronous SQLAlchemy Core over the ledger's database (the proxy calls
it through ``asyncio.to_thread``); every instance of a proxy points at the same database, so a key
generated on one is valid on all. Its schema is the ledger's Alembic chain: SQLite is migrated on
first use, PostgreSQL by ``tracking migrate`` (or ``auto_migrate: true``), as for the ledger.
The spend figures (per key, per end user since a period's start, the paginated log) are read
from ``spend_logs``, the one record of what was spent; what budgets start from adds the rows the
database refused for good (``ledger_quarantine``: their calls were billed all the same) and the
rows still waiting in this host's local outboxes for a database that cannot take them yet. An end
user's spend (their budget's, ``/customer/info``'s) counts from their last deletion, if any
(:meth:`AccountStore.counted_since`); the ledger's own reports keep every call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ProxyError

T = TypeVar("T")
log = logging.getLogger("tracking.proxy")


async def read_store(what: str, message: str, read: Callable[..., T], *args: Any) -> T:
    """A read of the key/budget store off the event loop; an unreachable database is a 503
    (``code: <what>_store_unavailable``) with ``message``, never a 500."""
    try:
        return await asyncio.to_thread(read, *args)
    except ProxyError:
        raise
    except Exception as exc:
        log.warning("the %s store is unavailable: %s", what, type(exc).__name__)
        raise ProxyError(
            503,
            message,
            code=f"{what}_store_unavailable",
            reason="store_unavailable",
            retry=True,
        ) from None


if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tracking.integrations.sql import QuarantinedCall

__all__ = ["AccountStore", "EndUserRecord", "KeyRecord"]

_QUANTUM = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as stored: everything but the key itself."""

    key_hash: str
    key_alias: str | None
    team: str | None
    models: tuple[str, ...] | None
    max_budget_usd: Decimal | None
    rpm_limit: int | None
    expires_at: datetime | None
    created_at: datetime
    #: The hashes the key had before it was regenerated, oldest first.
    prior_key_hashes: tuple[str, ...] = ()
    #: When the record last changed (None: before revision 0011, and not changed since).
    updated_at: datetime | None = None

    @property
    def spend_key_hashes(self) -> tuple[str, ...]:
        """Every hash the ledger's rows may name this key by: its spend is theirs summed."""
        return (*self.prior_key_hashes, self.key_hash)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "key_alias": self.key_alias,
            "team": self.team,
            "models": list(self.models) if self.models is not None else None,
            "max_budget": _money_text(self.max_budget_usd),
            "rpm_limit": self.rpm_limit,
            "expires": self.expires_at.isoformat() if self.expires_at else None,
            "created_at": self.created_at.isoformat(),
            # when the record last changed (None: made before revision 0011, unchanged since)
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True, slots=True)
class EndUserRecord:
    """An end user's budget and blocked flag; or, with no times, an end user known from their
    calls alone (no ``proxy_end_users`` row: no budget, not blocked)."""

    end_user_id: str
    budget_usd: Decimal | None
    budget_period: str | None
    blocked: bool
    #: None for an end user known from their calls alone (:meth:`from_calls`)
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_calls(cls, end_user_id: str) -> EndUserRecord:
        """An end user known from their calls alone: no record, no budget, not blocked."""
        return cls(end_user_id, None, None, False, None, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "end_user_id": self.end_user_id,
            "budget": _money_text(self.budget_usd),
            "budget_period": self.budget_period,
            "blocked": self.blocked,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def _money_text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def end_user_record(row: Any) -> EndUserRecord:
    """An ``end_users`` row as its record."""
    return EndUserRecord(
        end_user_id=row.end_user_id,
        budget_usd=_money(row.budget_usd) if row.budget_usd is not None else None,
        budget_period=row.budget_period,
        blocked=bool(row.blocked),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _money(value: Any) -> Decimal:
    # SQLite hands back a float (at most 15 significant digits): its text is the stored value.
    if value is None:
        return Decimal(0)
    return Decimal(str(value)).quantize(_QUANTUM)


class AccountStore:
    """Keys, end users and spend sums in one database."""

    def __init__(self, url: str | None, *, auto_migrate: bool | None = None) -> None:
        self._url = url
        self._auto_migrate = auto_migrate
        self._engine: Engine | None = None
        self._outbox_folder: Path | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine, created and checked against the schema on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from tracking.integrations.sql import (
                        check_schema,
                        create_ledger_engine,
                        outbox_folder,
                    )

                    engine = create_ledger_engine(self._url)
                    try:
                        check_schema(engine, auto_migrate=self._auto_migrate)
                    except BaseException:
                        engine.dispose()
                        raise
                    # the ledger's outboxes, named once (a relative SQLite path is the
                    # file in the working directory the store opened in, as the ledger's)
                    self._outbox_folder = outbox_folder(engine)
                    self._engine = engine
        return self._engine

    def nothing_stored(self) -> bool:
        """True while no database is configured and the default SQLite file does not exist:
        reads then find nothing rather than create the file (writes create it)."""
        if self._engine is not None or self._url or os.environ.get("TRACKING_DATABASE_URL"):
            return False
        from tracking.integrations.sql import DEFAULT_URL

        return not Path(DEFAULT_URL.removeprefix("sqlite:///")).exists()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- keys -------------------------------------------------------------------------------

    def insert_key(self, record: KeyRecord) -> None:
        from .account_tables import keys

        with self.engine.begin() as conn:
            conn.execute(
                keys.insert().values(
                    key_hash=record.key_hash,
                    key_alias=record.key_alias,
                    team=record.team,
                    models=list(record.models) if record.models is not None else None,
                    max_budget_usd=record.max_budget_usd,
                    rpm_limit=record.rpm_limit,
                    expires_at=record.expires_at,
                    created_at=record.created_at,
                    updated_at=record.updated_at or record.created_at,
                )
            )

    def get_key(self, key_hash: str) -> KeyRecord | None:
        import sqlalchemy as sa

        if self.nothing_stored():
            return None

        from .account_tables import keys

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(keys).where(keys.c.key_hash == key_hash)).first()
        if row is None:
            return None
        models = row.models
        return KeyRecord(
            key_hash=row.key_hash,
            key_alias=row.key_alias,
            team=row.team,
            models=tuple(str(m) for m in models) if models is not None else None,
            max_budget_usd=_money(row.max_budget_usd) if row.max_budget_usd is not None else None,
            rpm_limit=row.rpm_limit,
            expires_at=row.expires_at,
            created_at=row.created_at,
            prior_key_hashes=tuple(str(h) for h in row.prior_key_hashes or ()),
            updated_at=row.updated_at,
        )

    def key_hashes(self, limit: int) -> frozenset[str] | None:
        """Every stored key's hash, or None when there are more than ``limit``."""
        import sqlalchemy as sa

        if self.nothing_stored():
            return frozenset()

        from .account_tables import keys

        with self.engine.connect() as conn:
            found = conn.execute(sa.select(keys.c.key_hash).limit(limit + 1)).scalars().all()
        return frozenset(str(h) for h in found) if len(found) <= limit else None

    def delete_keys(self, key_hashes: Sequence[str]) -> list[str]:
        """Delete the keys; returns the hashes that existed."""
        from .account_tables import keys
        from .litellm_store import delete_existing

        return delete_existing(self, keys.c.key_hash, key_hashes)

    # -- end users --------------------------------------------------------------------------

    def get_end_user(self, end_user_id: str) -> EndUserRecord | None:
        import sqlalchemy as sa

        if self.nothing_stored():
            return None

        from .account_tables import end_users

        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(end_users).where(end_users.c.end_user_id == end_user_id)
            ).first()
        return None if row is None else end_user_record(row)

    def end_users_with_rules(self, limit: int) -> list[str] | None:
        """The ids of end users with a budget or a block; None when there are over ``limit``."""
        import sqlalchemy as sa

        if self.nothing_stored():
            return []

        from .account_tables import end_users

        query = (
            sa.select(end_users.c.end_user_id)
            .where(sa.or_(end_users.c.budget_usd.is_not(None), end_users.c.blocked))
            .limit(limit + 1)
        )
        with self.engine.connect() as conn:
            ids = [row[0] for row in conn.execute(query)]
        return None if len(ids) > limit else ids

    def create_end_user(self, record: EndUserRecord) -> None:
        import sqlalchemy as sa

        from .account_tables import end_users

        try:
            with self.engine.begin() as conn:
                conn.execute(end_users.insert().values(**_end_user_values(record)))
        except sa.exc.IntegrityError:
            raise ProxyError(
                400,
                f"end user {record.end_user_id!r} already exists; use POST /customer/update",
                param="user_id",
                code="end_user_exists",
            ) from None

    def update_end_user(self, end_user_id: str, changes: Mapping[str, Any]) -> EndUserRecord:
        from .account_tables import end_users

        values = {**changes, "updated_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            updated = conn.execute(
                end_users.update().where(end_users.c.end_user_id == end_user_id).values(**values)
            ).rowcount
        record = self.get_end_user(end_user_id) if updated else None
        if record is None:
            raise ProxyError(
                404,
                f"no end user {end_user_id!r}; create it with POST /customer/new",
                param="user_id",
                code="end_user_not_found",
            )
        return record

    # -- spend (from spend_logs) ------------------------------------------------------------

    def spent(
        self,
        *,
        key_hashes: Sequence[str] | None = None,
        end_user: str | None = None,
        since: datetime | None,
        excluding: Collection[str] = (),
    ) -> Decimal:
        """What one key (the rows naming any of ``key_hashes``: a regenerated key's hashes) or
        end user spent from ``since`` (inclusive; an end user's from their last deletion when
        that is later: :meth:`counted_since`) on, per the ledger: ``spend_logs``, the
        quarantined rows and the rows this host keeps in its local outboxes (waiting for a
        database that cannot take them yet, or refused by the database and its quarantine),
        each call once, but for the calls ``excluding`` names (request ids of calls in flight)
        (:func:`~tracking.integrations.sql.budget_spend_with_outboxes`)."""
        if self.nothing_stored():
            return Decimal(0)

        from tracking.integrations.sql import budget_spend_with_outboxes

        engine = self.engine  # names the outboxes' folder too
        return budget_spend_with_outboxes(
            engine,
            folder=self._outbox_folder,
            key_hashes=key_hashes,
            end_user=end_user,
            since=self.counted_since(end_user, since),
            excluding=excluding,
        )

    def spent_and_flagged(
        self,
        *,
        key_hashes: Sequence[str] | None = None,
        end_user: str | None = None,
        since: datetime | None,
    ) -> tuple[Decimal, dict[str, Any]]:
        """:meth:`spent` and, from the same rows (the database's and this host's outboxes'),
        :meth:`flagged_summary`'s figures with ``unpriced``
        (:func:`~tracking.integrations.sql.spend_and_flags_with_outboxes`)."""
        if self.nothing_stored():
            return Decimal(0), {}

        from tracking.integrations.sql import spend_and_flags_with_outboxes

        engine = self.engine  # names the outboxes' folder too
        return spend_and_flags_with_outboxes(
            engine,
            folder=self._outbox_folder,
            key_hashes=key_hashes,
            end_user=end_user,
            since=self.counted_since(end_user, since),
        )

    def counted_since(self, end_user: str | None, since: datetime | None) -> datetime | None:
        """From when an end user's spend counts: ``since``, or their last deletion
        (``/customer/delete``, remembered in ``proxy_end_user_deletions``) when that is later;
        ``since`` itself for a key (``end_user`` None). The calls before a deletion stay in the
        ledger and its reports, but are not the spend of the end user made again, as LiteLLM's
        customer row made again starts from $0: their budget, ``/customer/info`` and
        ``/customer/list`` count from it (:mod:`.known_end_users`). One read by primary key,
        made with each reading of the ledger: for a budget, when its counter starts from the
        ledger (or, while Redis is away, with the ledger's figure each reservation reads
        anyway), never otherwise on the call path."""
        if end_user is None or self.nothing_stored():
            return since
        import sqlalchemy as sa

        from .account_tables import end_user_deletions as deletions

        found = sa.select(deletions.c.deleted_at).where(deletions.c.end_user_id == end_user)
        with self.engine.connect() as conn:
            deleted: datetime | None = conn.execute(found).scalar()
        if deleted is None:
            return since
        return deleted if since is None else max(since, deleted)

    def calls_kept_locally(
        self, *, end_user: str | None = None, since: datetime | None = None
    ) -> list[QuarantinedCall]:
        """The calls this host keeps in its local outboxes (waiting for the database, or refused
        by it and its quarantine), of ``end_user`` and from ``since`` on (those given): what
        :meth:`spent_and_flagged` counts beyond the database. One read of the outboxes, nothing
        locked."""
        if self.nothing_stored():
            return []

        from tracking.integrations.sql import local_calls

        self.engine  # noqa: B018 (names the outboxes' folder)
        assert self._outbox_folder is not None
        return local_calls(self._outbox_folder, end_user=end_user, since=since)

    def spend_logs(
        self,
        *,
        key_hashes: Sequence[str] | None,
        end_user: str | None,
        start: datetime | None,
        end: datetime | None,
        page: int,
        page_size: int,
        request_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of ledger rows, newest first, and the number of rows matching (one call's
        alone with ``request_id``)."""
        import sqlalchemy as sa

        if self.nothing_stored():
            return [], 0

        from tracking.integrations.sql import spend_conditions, spend_logs

        conditions = spend_conditions(key_hashes, end_user, start)
        if end is not None:
            conditions.append(spend_logs.c.start_time < end)
        if request_id is not None:
            conditions.append(spend_logs.c.request_id == request_id)
        columns = [c for c in spend_logs.c if c.name not in ("metadata",)]
        statement = (
            sa.select(*columns)
            .where(*conditions)
            .order_by(spend_logs.c.start_time.desc(), spend_logs.c.request_id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        count = sa.select(sa.func.count()).select_from(spend_logs).where(*conditions)
        with self.engine.connect() as conn:
            rows = [_plain_row(row._mapping) for row in conn.execute(statement)]
            total = int(conn.execute(count).scalar_one())
        return rows, total

    def flagged_summary(
        self,
        *,
        key_hashes: Sequence[str] | None,
        end_user: str | None,
        start: datetime | None,
        end: datetime | None,
        unpriced: bool = False,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """How many calls matching these filters are flagged and what they cost, by the names
        every report gives them: recorded at an estimate (``estimated_requests``,
        ``estimated_usd``) and in the ledger's quarantine (rows the database refused, billed all
        the same: ``quarantined_requests``, ``quarantined_usd``); a pair only when there are
        such calls. With ``unpriced``, before them ``unpriced_requests``: how many calls had no
        known price (left out of every spend figure), only when there are some. Summed by the
        database over ``spend_calls`` (each call once, by its own row): the database alone, as
        ``/spend/logs``' rows are (this host's outbox rows count once shipped; see
        :meth:`spent_and_flagged`)."""
        import sqlalchemy as sa

        if self.nothing_stored():
            return {}
        from tracking.integrations.sql import (
            flagged_figures,
            flagged_measures,
            spend_calls,
            spend_conditions,
        )

        measures = flagged_measures(self.engine, spend_calls, unpriced=unpriced)
        statement = sa.select(*measures).where(
            *spend_conditions(key_hashes, end_user, start, source=spend_calls),
        )
        if end is not None:
            statement = statement.where(spend_calls.c.start_time < end)
        if request_id is not None:
            statement = statement.where(spend_calls.c.request_id == request_id)
        with self.engine.connect() as conn:
            record = conn.execute(statement).one()
        return flagged_figures(record, self.engine, text=True, unpriced=unpriced)

    def key_summary(
        self, key_hashes: Sequence[str] | None, *, page: int = 1, page_size: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Spend per key hash (one key's hashes, or every key that spent), dearest first (then
        by hash: pages never overlap), a page of them (``page_size`` None: all), and how many
        keys there are. Summed and paged by the database over ``spend_calls``: the quarantined
        calls (rows the database refused, billed all the same) included, each call once by its
        own row; a key with some has ``quarantined_requests`` and ``quarantined_usd``, a key with
        calls recorded at an estimate ``estimated_requests`` and ``estimated_usd``, and a key
        with calls of no known price (not in its ``spend``) ``unpriced_requests``. The database
        alone, amounts and flags (it pages and orders them): this host's outbox rows count once
        shipped (:meth:`spent_and_flagged`, ``/key/info``'s, counts them too)."""
        import sqlalchemy as sa

        if self.nothing_stored():
            return [], 0

        from tracking.integrations.sql import (
            cost_order,
            cost_sum,
            flagged_figures,
            flagged_measures,
            spend_calls,
            spend_conditions,
            summed_cost,
        )

        calls = spend_calls
        statement = (
            sa.select(
                calls.c.api_key_hash,
                sa.func.max(calls.c.key_alias).label("key_alias"),
                sa.func.max(calls.c.team).label("team"),
                sa.func.count().label("requests"),
                sa.func.coalesce(sa.func.sum(calls.c.images_returned), 0).label("images"),
                cost_sum(self.engine, source=calls).label("cost"),
                *flagged_measures(self.engine, calls, unpriced=True),
            )
            .where(calls.c.api_key_hash.is_not(None))
            .group_by(calls.c.api_key_hash)
            .order_by(*cost_order(self.engine, calls), calls.c.api_key_hash)
        )
        statement = statement.where(*spend_conditions(key_hashes, None, None, source=calls))
        counted = sa.select(sa.func.count()).select_from(statement.order_by(None).subquery())
        if page_size is not None:
            statement = statement.limit(page_size).offset((page - 1) * page_size)
        with self.engine.connect() as conn:
            result = conn.execute(statement).all()
            total = int(conn.execute(counted).scalar_one())
        rows = []
        for row in result:
            summary: dict[str, Any] = {
                "key_hash": row.api_key_hash,
                "key_alias": row.key_alias,
                "team": row.team,
                "requests": int(row.requests),
                "images": int(row.images),
                "spend": f"{summed_cost(row.cost, self.engine):f}",
            }
            summary.update(flagged_figures(row, self.engine, text=True, unpriced=True))
            rows.append(summary)
        return rows, total


def _end_user_values(record: EndUserRecord) -> dict[str, Any]:
    return {
        "end_user_id": record.end_user_id,
        "budget_usd": record.budget_usd,
        "budget_period": record.budget_period,
        "blocked": record.blocked,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _plain_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, Decimal):
            out[name] = f"{value:f}"
        elif isinstance(value, float) and name.endswith("_usd"):
            out[name] = f"{_money(value):f}"
        elif isinstance(value, datetime | date):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out
