"""The proxy's ledger: every call's row acknowledged before its answer leaves.

The proxy registers one :class:`tracking.integrations.sql.SqlLedger` in ``durable`` mode: for the
async calls the proxy makes, the bus awaits the ledger's ``aon_end``, which returns once the row is
committed to the ledger (or, with a PostgreSQL target, to the process's local outbox), without
blocking the event loop; concurrent requests share group commits. Before each call goes
upstream its *intent* is committed to a local journal (:mod:`tracking.integrations.sql._intents`),
so a process killed mid-call leaves a row marked ``incomplete`` with an estimated cost, never
nothing. ``ledger_mode: background`` in ``general_settings`` answers without waiting and keeps no
intents (a crash may then lose the rows not yet written).

The ledger is ``general_settings.database_url``, else ``TRACKING_DATABASE_URL``, else
``sqlite:///./tracking.db``; SQLite is migrated at start, PostgreSQL only with ``auto_migrate:
true`` (else ``tracking migrate`` first). An SQLite file's folder is made at start when it is
missing (a container's volume may be mounted empty), and a line says so: a misspelt path shows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracking.integrations.sql import SqlLedger

    from ..config import ProxyConfig

__all__ = ["ledger_url", "make_ledger_folder", "open_ledger"]

log = logging.getLogger("tracking.proxy")


def ledger_url(config: ProxyConfig) -> str:
    """general_settings.database_url, else TRACKING_DATABASE_URL, else ./tracking.db."""
    from tracking.integrations.sql import DEFAULT_URL

    return config.general_settings.database_url or DEFAULT_URL


def open_ledger(config: ProxyConfig) -> SqlLedger:
    """The ledger every proxied call is recorded in, its schema checked at once."""
    from tracking.integrations.sql import SqlLedger

    general = config.general_settings
    durable = general.ledger_mode != "background"
    return SqlLedger(
        url=ledger_url(config),
        mode="durable" if durable else "background",
        auto_migrate=True if general.auto_migrate else None,
        intents=durable,  # a call killed in flight leaves an incomplete row, never nothing
    )


def make_ledger_folder(config: ProxyConfig) -> Path | None:
    """Create the folder of an SQLite ledger file when it is missing, and say so in one line
    (:func:`~tracking.integrations.sql.make_sqlite_folder`, as ``tracking migrate`` does); the
    folder created, else None. A folder that cannot be created is a configuration fault."""
    from tracking.integrations.sql import make_sqlite_folder

    return make_sqlite_folder(ledger_url(config), lambda line: log.info("ledger: %s", line))
