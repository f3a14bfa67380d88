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
from collections.abc import Iterator
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
#: (a line on its stdin) or for ``sys.argv[3]`` seconds; it then says which came first. A line
#: ``count`` starts its ``sys.argv[2]`` seconds again: what it waits for is timed from then.
_LOCKER = textwrap.dedent(
    """
    import select, sqlite3, sys

    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    hold = float(sys.argv[3])
    while True:
        told, _, _ = select.select([sys.stdin], [], [], hold)
        if not told or sys.stdin.readline().strip() != "count":
            break
        hold = float(sys.argv[2])
    db.execute("ROLLBACK")
    print("told" if told else "not told", flush=True)
    """
)
#: How long the locking process keeps the lock unless told to let go: shutdown(1) returns well
#: within it, as it did not (10 s, SQLite's wait for the lock, until 2026-12-06).
_LOCK_HELD = 6.0


class _Release:
    """Tells the locking process to let go (a call, which answers what it said) or to time its
    hold from now (:meth:`count`)."""

    def __init__(self, locker: subprocess.Popen[str]) -> None:
        self.locker = locker

    def _say(self, line: str) -> None:
        assert self.locker.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.locker.stdin.write(f"{line}\n")
            self.locker.stdin.flush()

    def count(self) -> None:
        self._say("count")

    def __call__(self) -> str:
        assert self.locker.stdout is not None
        self._say("let go")
        return self.locker.stdout.readline().strip()


@contextlib.contextmanager
def _locked_by_another_process(path: Path, first: float = _LOCK_HELD) -> Iterator[_Release]:
    """Hold ``path``'s write lock in another process; yields ``release``, which tells that
    process to let go and returns ``"told"`` when it still held the lock then, ``"not told"``
    when it had let go on its own (after ``first`` seconds, or ``_LOCK_HELD`` seconds after
    ``release.count()``)."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(_LOCK_HELD), str(first)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdin is not None
        assert locker.stdout.readline().strip() == "locked"

        yield _Release(locker)
    finally:
        locker.kill()
        locker.communicate()


def _run(url: str, rows: int, timeout: float, env: dict[str, str], prefix: str = "u") -> str:
    return _python(_WRITER, url, str(rows), str(timeout), prefix, env=env)


def _python(script: str, *args: str, env: dict[str, str]) -> str:
    """``script`` run by another Python process (in the checkout), which must end with 0;
    returns what it wrote to stderr (its log)."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


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


# -- what shutdown leaves behind: no thread waiting past it, counts that are true -------------


def test_a_writer_waiting_for_a_locked_sqlite_file_gives_up_at_shutdown(tmp_path):
    """Another process holds the SQLite ledger file's write lock: shutdown(1) kept its bound,
    but the writer thread stayed in SQLite's own 10 s wait for the lock after it, which
    nothing interrupts, and wrote its batch into the file once the lock was let go, after
    shutdown had kept those rows elsewhere. The writer waits in slices now and gives up at
    shutdown, while the lock is still held; the rows kept are written, once, by the next
    ledger for the file."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    folder = tmp_path / "outbox"
    os.environ["TRACKING_OUTBOX_DIR"] = str(folder)
    try:
        SqlLedger(url, auto_migrate=True).shutdown(10)
        ledger = SqlLedger(url, mode="background", linger=0.0)
        events = [make_event(user=f"held{n}") for n in range(3)]
        with _locked_by_another_process(path) as release:
            for event in events:
                ledger.on_end(event)
            ledger.shutdown(1)
            writer = ledger.writer._thread
            assert writer is not None
            wait_for(lambda: not writer.is_alive(), timeout=30)
            assert release() == "told", "the writer waited for the lock past shutdown"
        assert _users(path) == []  # nothing written after shutdown kept the rows
        assert list(folder.rglob("outbox-*.db")), "the rows were not kept for the next start"
        SqlLedger(url).shutdown(10)  # the next start writes them
        assert _users(path) == ["held0", "held1", "held2"]
        SqlLedger(url).shutdown(10)  # once
        assert _users(path) == ["held0", "held1", "held2"]
    finally:
        del os.environ["TRACKING_OUTBOX_DIR"]


_LEAVES_AN_OUTBOX = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from tests.ledger_support import row_line
    from tracking.integrations.sql._outbox import open_own_outbox

    outbox = open_own_outbox(Path(sys.argv[1]))
    outbox.append([row_line(f"left-{n}") for n in range(int(sys.argv[2]))])
    outbox.close()
    """
)


def test_the_shutdown_warning_counts_the_rows_of_outboxes_taken_over_too(
    postgres_url, tmp_path, caplog
):
    """A dead process's outbox holds 3 rows and this process's own 2 more, with the database
    away: shutdown warned that 2 rows "wait ... for the target", the 3 it had taken over left
    uncounted. It counts all 5 now, and says where they are; all ship once it is back."""
    folder = tmp_path / "outbox"
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=folder).shutdown(10)
    _python(_LEAVES_AN_OUTBOX, str(folder), "3", env=dict(os.environ))
    away = "postgresql://postgres@127.0.0.1:1/tracking_away"  # nothing listens on port 1
    ledger = SqlLedger(away, mode="durable", outbox_dir=folder)
    for n in range(2):
        ledger.on_end(make_event(request_id=f"own-{n}"))
    assert ledger.outbox_rows() == 5
    with caplog.at_level(logging.WARNING, logger="tracking.ledger"):
        ledger.shutdown(1)
    said = [r.getMessage() for r in caplog.records if "for the target" in r.getMessage()]
    assert said == [
        f"ledger: 5 rows wait in {ledger.outbox_path} and 1 outbox left by dead processes for "
        "the target; the next start ships them"
    ], said
    expected = sorted([*(f"left-{n}" for n in range(3)), *(f"own-{n}" for n in range(2))])
    assert _shipped_ids(postgres_url, folder) == expected


def test_rows_in_the_target_that_a_locked_outbox_keeps_are_not_stuck(postgres_url, tmp_path):
    """Rows reached the target and wait to be deleted from their outbox, whose lock another
    process holds: readiness's ``stuck_for`` went on counting from when the shipper took them
    up, as if the target had none of them. It is 0 while they are deleted."""
    SqlLedger(postgres_url, auto_migrate=True, outbox_dir=tmp_path / "schema").shutdown(10)
    folder = tmp_path / "outbox"
    ids = [f"in-target-{n}" for n in range(3)]
    left = open_own_outbox(folder)
    left.append([row_line(request_id) for request_id in ids])
    left.close()
    engine = create_ledger_engine(postgres_url)
    try:
        with _locked_by_another_process(left.path) as release:
            ledger = SqlLedger(postgres_url, outbox_dir=folder)
            try:
                wait_for(lambda: ids_in(engine) == set(ids))  # now it waits to delete them
                assert ledger.outbox_rows() == 3
                assert ledger.stuck_for() == 0.0
            finally:
                ledger.shutdown(1)
            assert release() == "told"
    finally:
        engine.dispose()


_EXITS_WITH_A_LOCKED_FILE = textwrap.dedent(
    """
    import sys
    from tests.ledger_support import make_event
    from tracking.integrations.sql import SqlLedger

    ledger = SqlLedger(sys.argv[1], mode="background", linger=0.0)
    ledger.on_end(make_event(user="at-exit"))
    print("exiting", flush=True)
    """
)


def test_the_exit_handlers_wait_is_a_setting(tmp_path):
    """``TRACKING_LEDGER_EXIT_SECONDS``: the interpreter's exit gave the ledger 10 s, with no
    setting; a process whose SQLite file another process had locked waited for it. With the
    setting at 0.5 it exits while the lock is still held, the row kept for the next start."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    env = {
        **os.environ,
        "TRACKING_OUTBOX_DIR": str(tmp_path / "outbox"),
        "TRACKING_LEDGER_EXIT_SECONDS": "0.5",
    }
    _run(url, 0, 10, env)  # creates the ledger
    # The lock's 6 s are timed from the moment the process starts to exit (its start and
    # imports take seconds on a loaded machine): 0.5 s fits in them, the default 10 s does not.
    with _locked_by_another_process(path, first=120) as release:
        exiting = subprocess.Popen(
            [sys.executable, "-c", _EXITS_WITH_A_LOCKED_FILE, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
        )
        assert exiting.stdout is not None
        said = exiting.stdout.readline().strip()
        release.count()
        _, log = exiting.communicate(timeout=60)
        assert (said, exiting.returncode) == ("exiting", 0), log
        assert release() == "told", "the exit waited for the lock past the setting"
    assert _users(path) == []
    _run(url, 0, 10, env)
    assert _users(path) == ["at-exit"]


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_an_exit_wait_that_is_no_number_of_seconds_is_logged_and_the_default_kept(
    tmp_path, caplog, value, monkeypatch
):
    monkeypatch.setenv("TRACKING_LEDGER_EXIT_SECONDS", value)
    with caplog.at_level(logging.WARNING, logger="tracking"):
        ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", auto_migrate=True)
    ledger.shutdown(10)
    said = [
        r.getMessage() for r in caplog.records if "TRACKING_LEDGER_EXIT_SECONDS" in r.getMessage()
    ]
    assert said == [f"TRACKING_LEDGER_EXIT_SECONDS={value!r} is not a number of seconds; using 10"]


def test_a_write_given_up_at_shutdown_is_not_logged_as_retried(tmp_path):
    """A process whose SQLite ledger file another process keeps locked past its shutdown: the
    writer's write gave up and it logged "ledger write of 3 rows failed (...); retrying in
    0.05s", though nothing retried (shutdown keeps the rows for the next start). It says so
    now, and the rows are written by the next start."""
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    env = {**os.environ, "TRACKING_OUTBOX_DIR": str(tmp_path / "outbox")}
    _run(url, 0, 10, env)  # creates the ledger
    with _locked_by_another_process(path) as release:
        # the writer's thread is waited for: its last word is read before the process ends
        joined = _WRITER + "ledger.writer._thread.join(30)\n"
        said = _python(joined, url, "3", "1", "held", env=env)
        release()
    assert "retrying" not in said
    assert "ledger write of 3 rows failed at shutdown" in said
    assert "not retried: the rows not yet written are kept for the next start" in said
    assert "3 rows not yet written are kept in" in said
    _run(url, 0, 10, env)  # the next start writes them
    assert _users(path) == ["held0", "held1", "held2"]
