"""A ledger that cannot take its last rows at shutdown (another process holds the SQLite file's,
or the outbox file's, write lock; a full disk) keeps them in a local outbox; the next ledger for
the target writes them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.accounts_support import wait_for
from tests.ledger_support import make_event
from tracking.integrations.sql import SqlLedger, create_ledger_engine

_WRITER = textwrap.dedent(
    """
    import sys
    from decimal import Decimal
    from tests.ledger_support import make_event
    from tracking.integrations.sql import SqlLedger

    ledger = SqlLedger(sys.argv[1], mode="background")
    for n in range(int(sys.argv[2])):
        ledger.on_end(make_event(user=f"{sys.argv[4]}{n}", cost=Decimal("0.0110000001")))
    ledger.shutdown(float(sys.argv[3]))
    """
)


def _run(url: str, rows: int, timeout: float, env: dict[str, str], prefix: str = "u") -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WRITER, url, str(rows), str(timeout), prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    assert result.returncode == 0, result.stderr


def _shipped_ids(postgres_url: str, folder: Path) -> list[str]:
    """The request ids in ``spend_logs`` once a ledger shipped what ``folder`` holds."""
    engine = create_ledger_engine(postgres_url)
    try:
        reader = SqlLedger(postgres_url, outbox_dir=folder)
        try:
            assert reader.flush(30)
        finally:
            reader.shutdown(10)
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.text("SELECT request_id FROM spend_logs")))
    finally:
        engine.dispose()


def _users(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return sorted(user for (user,) in db.execute("SELECT end_user FROM spend_logs"))
    finally:
        db.close()


def test_rows_a_locked_sqlite_file_refused_at_shutdown_are_written_by_the_next_start(tmp_path):
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    env = {**os.environ, "TRACKING_OUTBOX_DIR": str(tmp_path / "outbox")}
    _run(url, 1, 10, env, "first")  # creates the ledger, one row
    assert _users(path) == ["first0"]

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the shutdown
    try:
        _run(url, 3, 1, env, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _users(path) == ["first0"]  # not written: the file was locked

    _run(url, 0, 10, env)  # the next start writes what the last one kept
    expected = ["first0", "locked0", "locked1", "locked2"]
    assert _users(path) == expected
    _run(url, 0, 10, env)  # and only once
    assert _users(path) == expected
    assert not list((tmp_path / "outbox").rglob("outbox-*.db"))


@pytest.mark.parametrize("ending", ["on_end", "aon_end", "on_end_nowait"])
def test_a_row_handed_over_after_shutdown_is_kept_for_the_next_ledger(ledger_url, ending):
    """A call that ends on a thread its application left running after it shut the ledger
    down: its row is kept in a local outbox and written by the next ledger for the target. It
    was refused with a RuntimeError, the billed call's row lost."""
    first = SqlLedger(ledger_url, mode="durable", auto_migrate=True)
    first.on_end(make_event(user="before", cost=Decimal("0.0100000000")))
    first.shutdown(10)
    late = make_event(user="late", cost=Decimal("0.0420000000"))
    if ending == "aon_end":
        asyncio.run(first.aon_end(late))
    else:
        getattr(first, ending)(late)
    second = SqlLedger(ledger_url, mode="durable", auto_migrate=True)
    try:
        assert second.flush(30)
        engine = create_ledger_engine(ledger_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT end_user, cost_usd FROM spend_logs")).all()
        finally:
            engine.dispose()
    finally:
        second.shutdown(10)
    assert sorted((user, Decimal(str(cost))) for user, cost in rows) == [
        ("before", Decimal("0.01")),
        ("late", Decimal("0.042")),
    ]


def test_rows_a_locked_outbox_could_not_take_at_shutdown_are_kept_for_the_next_start(
    postgres_url, tmp_path
):
    """A PostgreSQL ledger acknowledges rows in its outbox file first; when that file cannot
    take them before shutdown's deadline (locked by another process here; a full disk, an I/O
    error), the rows still in memory were logged as "not yet written" and lost. They are now
    kept in another outbox file beside it, which the next ledger for the target ships."""
    folder = tmp_path / "outbox"
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=folder).shutdown(10)
    ledger = SqlLedger(postgres_url, mode="background", outbox_dir=folder, linger=0.0)
    assert ledger.outbox_path is not None
    holder = sqlite3.connect(ledger.outbox_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the outbox cannot take a row past the shutdown
    events = [make_event(user=f"held{n}") for n in range(3)]
    try:
        for event in events:
            ledger.on_end(event)
        ledger.shutdown(1)
        kept = set(folder.glob("outbox-*.db")) - {ledger.outbox_path}
        assert kept, "the rows the outbox could not take were not kept elsewhere"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _shipped_ids(postgres_url, folder) == sorted(e.request_id for e in events)


def test_a_writer_stuck_on_a_locked_outbox_stops_at_shutdown_and_its_rows_are_kept(
    postgres_url, tmp_path
):
    """The outbox cannot take the last rows by shutdown's deadline: they are kept in another
    outbox, the callers waiting for them are released, and the writer stops. It went on
    retrying on the closed outbox every 2 s, logging each time, until the process exited."""
    folder = tmp_path / "outbox"
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=folder).shutdown(10)
    ledger = SqlLedger(postgres_url, mode="durable", outbox_dir=folder)
    assert ledger.outbox_path is not None
    holder = sqlite3.connect(ledger.outbox_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    events = [make_event(user=f"stuck{n}") for n in range(3)]
    callers = [threading.Thread(target=ledger.on_end, args=(event,)) for event in events]
    try:
        for caller in callers:
            caller.start()
        wait_for(lambda: ledger.queue_depth() == 3)
        ledger.shutdown(1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    writer = ledger.writer._thread
    assert writer is not None
    wait_for(lambda: not writer.is_alive(), timeout=30)
    for caller in callers:
        caller.join(30)
        assert not caller.is_alive(), "a durable caller still waits for a row kept elsewhere"
    assert _shipped_ids(postgres_url, folder) == sorted(e.request_id for e in events)
