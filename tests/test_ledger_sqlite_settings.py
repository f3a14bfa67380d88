"""The settings every SQLite connection of the ledger runs with, read back from SQLite itself.

Durability rests on WAL with ``synchronous=FULL``; ``temp_store=MEMORY`` keeps a large batch's
statement journal out of ``/var/tmp`` (it spilled there about ten times a second under load, and
a read-only root file system has no room for it).
"""

from __future__ import annotations

from pathlib import Path

from tracking.integrations.sql._engine import create_ledger_engine
from tracking.integrations.sql._outbox import open_own_outbox

#: SQLite's codes: ``PRAGMA synchronous`` 2 is FULL, ``PRAGMA temp_store`` 2 is MEMORY.
FULL, MEMORY = 2, 2


def _pragma(connection: object, name: str) -> object:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]
    finally:
        cursor.close()


def test_the_ledgers_connections_are_durable_and_keep_temporary_data_in_memory(
    tmp_path: Path,
) -> None:
    engine = create_ledger_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        connection = engine.raw_connection()  # what the ledger's writer thread inserts with
        try:
            assert _pragma(connection, "journal_mode") == "wal"
            assert _pragma(connection, "synchronous") == FULL
            assert _pragma(connection, "temp_store") == MEMORY
        finally:
            connection.close()
    finally:
        engine.dispose()


def test_an_outbox_keeps_temporary_data_in_memory(tmp_path: Path) -> None:
    outbox = open_own_outbox(tmp_path)
    try:
        assert _pragma(outbox._db, "journal_mode") == "wal"
        assert _pragma(outbox._db, "synchronous") == FULL
        assert _pragma(outbox._db, "temp_store") == MEMORY
    finally:
        outbox.close()
