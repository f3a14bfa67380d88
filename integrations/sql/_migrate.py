"""Schema migrations of the ledger, run programmatically through Alembic.

The migrations live in the repository's ``migrations/`` folder and ship inside the wheel as
``tracking/integrations/sql/migrations`` (``force-include`` in ``pyproject.toml``), so an installed
package can migrate a database without any file of the user's. The ledger keeps its own
version table (``tracking_alembic_version``) and only ever looks at its own tables, so it can
live in a database the host application already migrates with its own Alembic.

:func:`check_schema` is how a ledger starts: SQLite is brought to the head revision
automatically; PostgreSQL must be migrated (``tracking migrate`` or ``auto_migrate=True``), and a
database at an older or a newer revision than this package knows is a clear
:class:`SchemaVersionError`, never a half-working writer.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from tracking.errors import ConfigurationError

from ._engine import redact, unreachable
from ._schema import OUR_TABLES, VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "SchemaVersionError",
    "check_schema",
    "current_revision",
    "downgrade",
    "head_revision",
    "migrations_path",
    "upgrade",
]


class SchemaVersionError(ConfigurationError):
    """The ledger database is not at the schema revision this version of tracking uses."""

    error_type = "ledger_schema_error"


def refuse_dropping_rows(
    connection: Connection, table: str, advice: str, *, rows_are: str = "billed calls"
) -> None:
    """For a migration's way down: refuse (the whole downgrade, in its one transaction) to drop
    ``table`` while it holds rows (``rows_are`` what they are: billed calls, keys and budgets).
    ``advice`` says what to do first."""
    refuse_offline(f"{table} holds no rows ({rows_are})")
    held = connection.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()
    if held:
        raise SchemaVersionError(f"{table} holds {held} row(s), {rows_are}: {advice}")


def refuse_offline(check: str) -> None:
    """For a migration's way down: an offline run (``alembic downgrade ... --sql``) writes SQL
    without a database to look at, so the check that ``check`` cannot be made; refuse with
    Alembic's own error (``FAILED: ...``) rather than a traceback from a query that returned
    nothing, and never write a script that could drop what the check protects."""
    from alembic import context

    if context.is_offline_mode():
        from alembic.util import CommandError

        raise CommandError(
            f"an offline (--sql) downgrade cannot check that {check}: run the downgrade on "
            "the database (alembic without --sql, or tracking.integrations.sql.downgrade)"
        )


def migrations_path() -> Path:
    """The folder holding Alembic's ``env.py`` and ``versions/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError("the ledger's migrations are missing from this installation")


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision this package ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when the ledger was never migrated there."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the newest), all of it or nothing."""
    from alembic import command

    with _one_transaction(engine) as conn:
        command.upgrade(_config(conn), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (default: remove the ledger's tables), all of
    it or nothing. Refused while ``ledger_quarantine`` holds rows (billed calls not yet in
    ``spend_logs``) and the way down drops it."""
    from alembic import command

    with _one_transaction(engine) as conn:
        command.downgrade(_config(conn), revision)


@contextlib.contextmanager
def _one_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that DDL joins. PostgreSQL's DDL is transactional as it
    is; Python's sqlite3 commits each CREATE and ALTER on its own, so a migration that failed
    halfway kept what it had done (a ``spend_logs`` without a version row, refused for good).
    On SQLite the transaction is opened by hand, with the driver's own handling off."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        previous = raw.isolation_level
        raw.isolation_level = None  # the driver opens nothing
        try:
            with conn.begin():
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # one writer migrates at a time
                yield conn
        finally:
            raw.isolation_level = previous


def _has_spend_logs(engine: Engine) -> bool:
    with engine.connect() as conn:
        return sa.inspect(conn).has_table("spend_logs")


def _clashing_tables(engine: Engine) -> list[str]:
    """The tables and views a migration from empty would create that are there already."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        present = {*inspector.get_table_names(), *inspector.get_view_names()}
    return sorted(present & (OUR_TABLES - {VERSION_TABLE}))


def check_schema(engine: Engine, *, auto_migrate: bool | None = None) -> str | None:
    """Make sure the database is at the head revision, migrating it where that is allowed.
    Returns the revision this call migrated from (``""``: an empty database), None when it
    migrated nothing (the database was current, or another process migrated it meanwhile).

    ``auto_migrate=None`` means: migrate SQLite, never PostgreSQL.
    """
    try:
        return _check_schema(engine, auto_migrate)
    except sa.exc.DatabaseError as exc:  # unreachable, or not a database at all (a stray file)
        raise unreachable(engine.url, exc) from None


#: The newest revision under ``migrations/versions`` (a test keeps it equal to Alembic's head):
#: a database already there is recognised with one query, without importing Alembic (75 ms).
HEAD_REVISION = "0011"


def _stored_revision(engine: Engine) -> str | None:
    """The revision in the ledger's version table, read with plain SQL (None: no table)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        row = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()  # noqa: S608
    return None if row is None else str(row[0])


def _check_schema(engine: Engine, auto_migrate: bool | None) -> str | None:
    if _stored_revision(engine) == HEAD_REVISION:
        return None  # the usual start: nothing to migrate, and no Alembic to import
    migrate = engine.dialect.name == "sqlite" if auto_migrate is None else auto_migrate
    where = redact(engine.url)
    head = head_revision()
    if current_revision(engine) == head:
        return None
    # Several processes may start on one new database at once (`tracking serve --workers N`):
    # one migrates while the others wait for it, then find the schema current. Everything is
    # decided under the lock: mid-migration, another process would see half a schema.
    with _migration_lock(engine):
        return _migrate_locked(engine, migrate, where, head)


def _migrate_locked(engine: Engine, migrate: bool, where: str, head: str) -> str | None:
    current = current_revision(engine)
    if current == head:
        return None
    if current is None and (clashing := _clashing_tables(engine)):
        names = ", ".join(clashing)
        raise SchemaVersionError(
            f"the database {where} has {names} that tracking's migrations did not create (no "
            f"{VERSION_TABLE} row) and the ledger needs those names; move them aside or use "
            "another database"
        )
    if current is not None and current not in _known_revisions():
        raise SchemaVersionError(
            f"the ledger in {where} is at schema revision {current!r}, newer than this version "
            f"of image-edit-tracking knows (it knows up to {head!r}): upgrade the package"
        )
    if not migrate:
        state = "has no ledger tables yet" if current is None else f"is at revision {current!r}"
        raise SchemaVersionError(
            f"the ledger database {where} {state}; this version needs revision {head!r}: "
            "run `tracking migrate --database-url URL` (or pass auto_migrate=True)"
        )
    try:
        upgrade(engine)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        if "already exists" not in str(exc.orig):
            raise
        raise SchemaVersionError(
            f"migrating the ledger in {where} from revision {current or 'empty'} to {head} "
            f"failed, and nothing of it was kept: {str(exc.orig).strip()}. A table or view of "
            f"another application has a name the ledger uses ({', '.join(sorted(OUR_TABLES))}): "
            "move it aside"
        ) from None
    return current or ""


def _sqlite_file(engine: Engine) -> str | None:
    """The real path of an SQLite database file (None: in memory, or not SQLite): however a
    process names the file (a symlink, a relative path, a ``file:`` URI), the same path."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI (``?uri=true``): its path, unquoted
        path = urllib.parse.urlsplit(database).path
        if engine.url.query.get("mode") == "memory" or path in ("", ":memory:"):
            return None
        database = urllib.parse.unquote(path)
    return os.path.realpath(database)


#: pg_advisory_lock key serialising migrations of one PostgreSQL database ("trackmig" in hex).
_PG_LOCK_KEY = 0x747261636B6D6967


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold a lock no other process migrating the same database can hold at the same time."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
        return
    path = _sqlite_file(engine)
    if path is None:
        yield
        return
    import fcntl

    with open(f"{path}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
