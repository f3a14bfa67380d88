"""A ledger that cannot take its last rows at shutdown (another process holds the SQLite file's,
or the outbox file's, write lock; a full disk) keeps them in a local outbox; the next ledger for
the target writes them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.accounts_support import wait_for
from tests.ledger_support import ids_in, make_event, row_line
from tracking.integrations.sql import SqlLedger, create_ledger_engine
from tracking.integrations.sql._outbox import open_own_outbox
from tracking.integrations.sql._shipper import OutboxShipper
from tracking.integrations.sql._target import SpendLogsInserter

_WRITER = textwrap.dedent(
    """
    import sys
    from decimal import Decimal
    from tests.ledger_support import ids_in, make_event, row_line
    from tracking.integrations.sql import SqlLedger

    ledger = SqlLedger(sys.argv[1], mode="background")
    for n in range(int(sys.argv[2])):
        ledger.on_end(make_event(user=f"{sys.argv[4]}{n}", cost=Decimal("0.0110000001")))
    ledger.shutdown(float(sys.argv[3]))
    """
)


#: Another process takes the file's write lock, says so, and keeps it until told to let go
#: (a line on its stdin) or for ``sys.argv[2]`` seconds; it then says which came first.
_LOCKER = textwrap.dedent(
    """
    import select, sqlite3, sys

    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    told, _, _ = select.select([sys.stdin], [], [], float(sys.argv[2]))
    db.execute("ROLLBACK")
    print("told" if told else "not told", flush=True)
    """
)
#: How long the locking process keeps the lock unless told to let go: shutdown(1) returns well
#: within it, as it did not (10 s, SQLite's wait for the lock, until 2026-12-06).
_LOCK_HELD = 6.0


@contextlib.contextmanager
def _locked_by_another_process(path: Path) -> Iterator[Callable[[], str]]:
    """Hold ``path``'s write lock in another process; yields ``release``, which tells that
    process to let go and returns ``"told"`` when it still held the lock then, ``"not told"``
    when it had let go on its own (after ``_LOCK_HELD`` seconds)."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(_LOCK_HELD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdin is not None
        assert locker.stdout.readline().strip() == "locked"

        def release() -> str:
            assert locker.stdout is not None and locker.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                locker.stdin.write("let go\n")
                locker.stdin.flush()
            return locker.stdout.readline().strip()

        yield release
    finally:
        locker.kill()
        locker.communicate()


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
    kept in another outbox file beside it, which the next ledger for the target ships.

    And shutdown(1) returns while the other process still holds the lock: it waited for
    SQLite's 10 s wait on the lock to end (the writer held the outbox through it, and closing
    the outbox waited for the writer) until 2026-12-06."""
    folder = tmp_path / "outbox"
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=folder).shutdown(10)
    ledger = SqlLedger(postgres_url, mode="background", outbox_dir=folder, linger=0.0)
    assert ledger.outbox_path is not None
    events = [make_event(user=f"held{n}") for n in range(3)]
    # the outbox cannot take a row past the shutdown
    with _locked_by_another_process(ledger.outbox_path) as release:
        for event in events:
            ledger.on_end(event)
        ledger.shutdown(1)
        kept = set(folder.glob("outbox-*.db")) - {ledger.outbox_path}
        assert kept, "the rows the outbox could not take were not kept elsewhere"
        assert release() == "told", "shutdown(1) returned only once the lock was let go"
    assert _shipped_ids(postgres_url, folder) == sorted(e.request_id for e in events)


def test_a_writer_stuck_on_a_locked_outbox_stops_at_shutdown_and_its_rows_are_kept(
    postgres_url, tmp_path
):
    """The outbox cannot take the last rows by shutdown's deadline: they are kept in another
    outbox, the callers waiting for them are released, and the writer stops. It went on
    retrying on the closed outbox every 2 s, logging each time, until the process exited.
    Shutdown, the callers' release and the writer's end all come while the other process still
    holds the lock (each waited for SQLite's 10 s wait on it to end until 2026-12-06)."""
    folder = tmp_path / "outbox"
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=folder).shutdown(10)
    ledger = SqlLedger(postgres_url, mode="durable", outbox_dir=folder)
    assert ledger.outbox_path is not None
    events = [make_event(user=f"stuck{n}") for n in range(3)]
    callers = [threading.Thread(target=ledger.on_end, args=(event,)) for event in events]
    with _locked_by_another_process(ledger.outbox_path) as release:
        for caller in callers:
            caller.start()
        wait_for(lambda: ledger.queue_depth() == 3)
        ledger.shutdown(1)
        writer = ledger.writer._thread
        assert writer is not None
        wait_for(lambda: not writer.is_alive(), timeout=30)
        for caller in callers:
            caller.join(30)
            assert not caller.is_alive(), "a durable caller still waits for a row kept elsewhere"
        assert release() == "told", "shutdown(1) returned only once the lock was let go"
    assert _shipped_ids(postgres_url, folder) == sorted(e.request_id for e in events)


def test_an_outbox_write_waits_for_a_lock_held_elsewhere_until_its_outbox_closes(tmp_path):
    """A write still waits for a lock another process holds (up to 10 s, as before, in slices
    retried), and takes it once it is let go; closing the outbox makes a waiting write give up
    at once, with SQLite's error, its rows not written."""
    waited = open_own_outbox(tmp_path / "waits")
    given_up = open_own_outbox(tmp_path / "gives-up")
    try:
        with _locked_by_another_process(waited.path) as release:
            done = threading.Event()
            writer = threading.Thread(target=lambda: (waited.append(["a"]), done.set()))
            writer.start()
            # far past a slice: a write that gave up after it would be done (and have failed)
            assert not done.wait(1.0), "the write did not wait for the lock"
            assert release() == "told"
            writer.join(30)
        assert done.is_set() and waited.peek(10) == [(1, "a")]

        failures: list[BaseException] = []

        def write() -> None:
            try:
                given_up.append(["b"])
            except sqlite3.OperationalError as exc:
                failures.append(exc)

        with _locked_by_another_process(given_up.path) as release:
            writer = threading.Thread(target=write)
            writer.start()
            wait_for(lambda: given_up._mutex.locked())  # the write holds the outbox, waiting
            given_up.close()  # returns once the write gave up: before the lock is let go
            writer.join(30)
            assert release() == "told", "closing the outbox waited for the lock to be let go"
        assert len(failures) == 1 and "locked" in str(failures[0])
        assert given_up.pending() == 0 and given_up.last_seq == 0
    finally:
        waited.close()
        given_up.close()


def test_a_shipper_stopping_while_its_outbox_is_locked_closes_it_before_the_lock_is_let_go(
    postgres_url, tmp_path
):
    """The shipper has put rows into the target and waits to delete them from its outbox, whose
    lock another process holds: stopping it ends that wait, the rows left in the outbox (the
    target takes a request id once), and the outbox is closed, its lock free for the next
    ledger. The thread waited for SQLite's 10 s, the outbox locked meanwhile, until 2026-12-06."""
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=tmp_path / "schema").shutdown(10)
    ids = [f"shipped-{n}" for n in range(3)]
    outbox = open_own_outbox(tmp_path / "outbox")
    outbox.append([row_line(request_id) for request_id in ids])
    engine = create_ledger_engine(postgres_url)
    try:
        with _locked_by_another_process(outbox.path) as release:
            shipper = OutboxShipper(outbox, SpendLogsInserter(engine))
            wait_for(lambda: ids_in(engine) == set(ids))  # now it waits to delete them
            shipper.close(None)
            assert outbox.closed
            assert release() == "told", "the shipper stopped only once the lock was let go"
        assert outbox.path.exists()  # the rows stay for the next ledger, which finds them there
        assert _shipped_ids(postgres_url, tmp_path / "outbox") == sorted(ids)
    finally:
        engine.dispose()


def test_rows_shipped_whose_outbox_stays_locked_at_shutdown_are_logged_as_shipped(
    postgres_url, tmp_path, caplog
):
    """A ledger ships an outbox's rows while another process holds that outbox's write lock,
    then shuts down before it can delete them: the rows reached the target and stay in the
    outbox, sent again and ignored by the next ledger. That was logged as a failure, "shipping
    to the target failed (OperationalError)", after a warning that the rows "wait in <outbox>
    for the target"; it is now said as it is, at info level."""
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=tmp_path / "schema").shutdown(10)
    folder = tmp_path / "outbox"
    ids = [f"untrimmed-{n}" for n in range(3)]
    left = open_own_outbox(folder)  # an outbox a process left with rows in it
    left.append([row_line(request_id) for request_id in ids])
    left.close()
    engine = create_ledger_engine(postgres_url)
    try:
        with _locked_by_another_process(left.path) as release:
            ledger = SqlLedger(postgres_url, outbox_dir=folder)  # its shipper takes them up
            assert ledger._outbox is not None
            shipper = ledger._outbox.own_shipper()
            assert shipper is not None
            wait_for(lambda: ids_in(engine) == set(ids))  # shipped; now it waits to delete them
            with caplog.at_level(logging.DEBUG, logger="tracking.ledger"):
                ledger.shutdown(1)
                wait_for(lambda: not shipper._thread.is_alive())  # what its attempt ends with
            assert release() == "told"
        said = [(r.levelno, r.getMessage()) for r in caplog.records]
        assert not [m for _, m in said if "for the target" in m or "target failed" in m], said
        trimmed = [(level, m) for level, m in said if "could not be trimmed at shutdown" in m]
        assert trimmed == [
            (
                logging.INFO,
                f"ledger: 3 rows shipped; their outbox {left.path} could not be trimmed at "
                "shutdown (locked by another process): they will be sent again and ignored",
            )
        ], said
        assert left.path.exists()  # the rows stay, and the next ledger's sending is a no-op
        assert _shipped_ids(postgres_url, folder) == sorted(ids)
    finally:
        engine.dispose()
