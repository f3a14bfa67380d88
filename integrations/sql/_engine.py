"""Where the ledger lives: the database URL and the SQLAlchemy engine made from it.

The URL comes from the caller, else ``TRACKING_DATABASE_URL``, else ``sqlite:///./tracking.db``.
``postgresql://`` and ``postgres://`` URLs are driven by psycopg 3, with a connection given
:data:`CONNECT_TIMEOUT` seconds to open unless the URL sets ``connect_timeout``. SQLite files run
in WAL mode with ``synchronous=FULL`` (a committed batch survives a power cut, and group commit
pays the fsync once per batch, not per row) and a busy timeout, so readers such as
``tracking spend`` never block the writer. The WAL is checkpointed into the database every
10,000 pages (about 40 MB) rather than SQLite's default 1,000: a page rewritten by many
batches (the indexes' hot pages) is copied back once, which keeps checkpoints from dominating
sustained ingest; the WAL file stays that large on disk. Temporary storage is kept in memory
(``temp_store=MEMORY``): a batch's statement journal past 64 KiB would otherwise spill to a file
in ``/var/tmp`` (about ten a second under load, measured 2026-12-04), and a container whose root
file system is read-only has nowhere to put it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from tracking.errors import ConfigurationError, mask_secrets

__all__ = [
    "DEFAULT_URL",
    "DatabaseUnreachableError",
    "connection_failed",
    "create_ledger_engine",
    "make_sqlite_folder",
    "outbox_target",
    "redact",
    "resolve_url",
    "unreachable",
]

DEFAULT_URL = "sqlite:///./tracking.db"
_ENV = "TRACKING_DATABASE_URL"
#: Seconds a PostgreSQL connection may take to open (libpq's ``connect_timeout``) unless the URL
#: says otherwise (``?connect_timeout=N``). libpq waits without end by default: a server that
#: accepts the connection but does not answer (stopped, a load balancer in front of nothing)
#: held the ``"sql"`` integration's first call, and with it every call of the process, until
#: 2026-12-05; a host that drops packets held it for the kernel's two minutes.
CONNECT_TIMEOUT = 10
#: Pages of WAL after which a commit checkpoints them into the database file.
_WAL_CHECKPOINT_PAGES = 10_000


def make_sqlite_folder(
    url: str | URL | None = None, say: Callable[[str], object] | None = None
) -> Path | None:
    """Create the folder of an SQLite ledger file when it is missing, and ``say`` so in one line
    (``created the folder /data/ledger for tracking.db (it did not exist)``): the folder created,
    else None (another database, an in-memory one, a ``file:`` URI, a folder already there). The
    proxy's start and ``tracking migrate`` both call it, so either may be the first to touch a
    new ledger. A folder that cannot be created is a
    :class:`~tracking.errors.ConfigurationError` naming it."""
    parsed = resolve_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if parsed.query.get("uri"):  # a file: URI names its file its own way: left to SQLite
        return None
    folder = Path(database).absolute().parent
    if folder.exists():
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create {folder}, the folder of the SQLite ledger: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    if say is not None:
        say(f"created the folder {folder} for {Path(database).name} (it did not exist)")
    return folder


def resolve_url(url: str | URL | None = None) -> URL:
    """The ledger URL: the argument, else ``TRACKING_DATABASE_URL``, else the local SQLite file."""
    raw = url if url is not None else (os.environ.get(_ENV) or DEFAULT_URL)
    try:
        parsed = make_url(raw)
    except (sa.exc.ArgumentError, ValueError):
        # The text may hold a password: never repeat it.
        raise ConfigurationError(
            "the ledger database URL is not a valid SQLAlchemy URL "
            "(expected e.g. sqlite:///./tracking.db or postgresql://user@host/db)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"the ledger supports SQLite and PostgreSQL, not {parsed.get_backend_name()!r}"
        )
    return parsed


#: Words naming a database URL's query parameter that holds a secret: libpq takes
#: ``?password=...`` (and ``sslpassword``) as it takes the password before the host.
_SECRET_QUERY_WORDS = ("password", "secret", "token")


def redact(url: URL) -> str:
    """The URL as text with any password hidden, for messages: the one before the host and a
    query parameter's (``?password=...``, which every message showed until 2026-12-07)."""
    secret = [name for name in url.query if any(w in name.lower() for w in _SECRET_QUERY_WORDS)]
    if not secret:
        return url.render_as_string(hide_password=True)
    hidden = url.update_query_dict(dict.fromkeys(secret, "***"))
    return hidden.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


def outbox_target(url: URL) -> str:
    """The target as its local outboxes' folder is named after it: the URL with any password
    hidden and, for an SQLite file, its path made absolute (symbolic links resolved).

    ``sqlite:///./tracking.db`` is another file in each working directory: named by its text,
    two applications in two folders shared one folder of outboxes and intents, and each wrote
    the other's kept rows and dead calls into its own ledger (until 2026-12-05). The same file
    named two ways (``./tracking.db``, its absolute path) now shares one folder too.
    """
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and not url.query.get("uri"):
        url = url.set(database=os.path.realpath(database))
    # not redact(): the folder's name must stay what it was, or a kept outbox is left behind
    return url.render_as_string(hide_password=True)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


#: Milliseconds an SQLite connection of the ledger's waits for a lock another connection holds.
BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any, busy_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        _wal_mode(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA cache_size=-8000")
        cursor.execute("PRAGMA temp_store=MEMORY")  # module docstring
        cursor.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
    finally:
        cursor.close()


def _wal_mode(cursor: Any, within: float = 10.0) -> None:
    """Switch to WAL, retrying while other processes hold the file: several processes opening
    a new ledger at once (``tracking serve --workers N``) race for the exclusive lock the
    switch needs, and SQLite may refuse it at once ("database is locked") instead of waiting."""
    deadline = time.monotonic() + within
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def create_ledger_engine(
    url: str | URL | None = None, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, **engine_options: Any
) -> Engine:
    """An engine for the ledger database (see the module docstring for the settings).
    ``busy_timeout_ms``: an SQLite connection's own wait for a lock held elsewhere (an SQLite
    ledger's writer waits in short slices it can give up between, see ``SqlLedger``)."""
    resolved = resolve_url(url)
    options: dict[str, Any] = {"json_serializer": _dumps}
    if resolved.get_backend_name() == "sqlite":
        database = resolved.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ConfigurationError(
                "the ledger needs an SQLite file, not an in-memory database "
                "(each connection would see a different, empty ledger)"
            )
    else:
        options["pool_pre_ping"] = True
        if "connect_timeout" not in resolved.query:
            options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    options.update(engine_options)
    try:
        engine = sa.create_engine(resolved, **options)
    except ModuleNotFoundError as exc:
        from tracking.extras import install_hint

        hint = (
            f": {install_hint('postgres')}" if resolved.get_backend_name() == "postgresql" else ""
        )
        raise ConfigurationError(
            f"the ledger database driver {exc.name!r} is not installed{hint}"
        ) from None
    except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        raise ConfigurationError(
            f"the ledger database URL names no driver SQLAlchemy knows "
            f"({resolved.drivername!r}): use sqlite:///PATH or postgresql+psycopg://... ({exc})"
        ) from None
    if resolved.get_backend_name() == "sqlite":
        sa.event.listen(
            engine,
            "connect",
            lambda connection, record: _sqlite_pragmas(connection, record, busy_timeout_ms),
        )
    return engine


class DatabaseUnreachableError(ConfigurationError):
    """The ledger's PostgreSQL could not be reached (see :func:`connection_failed`), as opposed
    to a database that answered and refused (a role, a password, a database that does not
    exist): the ledger opens anyway and keeps its rows in the local outbox meanwhile."""

    error_type = "ledger_unreachable"


#: What libpq and psycopg say when no server could be talked to (refused, timed out, no route,
#: a name that does not resolve, a connection dropped), or when the server answered that it
#: cannot take connections *now* (starting, shutting down, in recovery, full). Lower case.
_NOT_REACHED = (
    "connection refused",
    "timeout expired",
    "timed out",
    "failed to resolve host",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
    "server closed the connection unexpectedly",
    "connection reset by peer",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)


def connection_failed(exc: BaseException) -> bool:
    """True when ``exc`` (a driver error, or SQLAlchemy's wrapper of one) says the database
    could not be reached at all or not yet, rather than that it answered and refused.

    psycopg gives no SQLSTATE for a failed connection, so its message decides, and only the
    failures listed in ``_NOT_REACHED`` count: anything else (authentication, a database or
    role that does not exist, ``pg_hba.conf``, TLS, a server that is not PostgreSQL) is a
    mistake in the configuration and stays one.
    """
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    return any(marker in text for marker in _NOT_REACHED)


def unreachable(url: URL, exc: sa.exc.DBAPIError) -> ConfigurationError:
    """A clear error for a database that cannot be reached or opened (password masked): a
    :class:`DatabaseUnreachableError` when a PostgreSQL could not be reached (see
    :func:`connection_failed`)."""
    reason = mask_secrets(str(exc.orig or exc).strip().splitlines()[0], [url.password])
    message = f"cannot open the ledger database {redact(url)}: {reason}"
    if url.get_backend_name() == "postgresql" and connection_failed(exc):
        return DatabaseUnreachableError(message)
    return ConfigurationError(message)
