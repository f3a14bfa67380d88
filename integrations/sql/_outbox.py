"""The local outbox: an SQLite file in WAL mode where rows are acknowledged before shipping.

Each process writes its own outbox, ``outbox-<pid>.db`` in a directory kept per target database,
and holds an exclusive ``flock`` on the matching ``.lock`` file for as long as it lives. The
kernel drops that lock when the process dies, however it dies, so a file whose lock can be taken
belongs to nobody: :func:`claim_orphans` hands such outboxes to a live process, whose shipper
drains them into the target. Two ledgers of one process (or a pid reused on another host
sharing the directory) simply get ``outbox-<pid>-1.db`` and so on.

Rows are kept as JSON lines (:mod:`tracking.integrations.sql._codec`) under an increasing ``seq``.
The file runs with ``synchronous=FULL``: a committed batch survives a crash of the process and of
the machine, which is what makes it an acknowledgement. Rows the target refuses for good (and
its quarantine too) are moved to the ``rejected`` table of the same file, kept for inspection
rather than lost.

An outbox closed with rows still waiting stays as it is, for the next ledger to claim. One closed
with nothing waiting but rejected rows is *set aside*: made one self-contained file (its WAL
folded in) and renamed ``rejected-<pid>[-n].db`` in the same directory (:func:`set_aside_files`
lists them, :func:`read_rejected` reads them; ``tracking ledger quarantine list`` shows their
rows), so that no ledger claims it again at every start and every rescan only to find nothing to
ship. A rename never replaces a file: rows are never lost, and should the rename fail the outbox
stays where it was, claimed again as before. The calls in the ``rejected`` tables, of outboxes
and of files set aside, count toward the proxy's budgets on this host
(:func:`tracking.integrations.sql._waiting.local_calls`).

Another process may hold an outbox's write lock (anyone can open the file). A write waits for it
up to :data:`BUSY_PATIENCE` seconds, as before, but in slices of :data:`BUSY_SLICE` ms, SQLite's
own wait (``busy_timeout``), which nothing interrupts, retried here: once the outbox is closing
(:meth:`Outbox.stop_waiting`, :meth:`Outbox.close`) a write gives up at the end of its slice
with SQLite's "database is locked" error instead of holding the outbox, and its close, for up to
10 s more than the shutdown's deadline (until 2026-12-06). Its rows are not lost: the ledger's
writer keeps them elsewhere (``SqlLedger._keep_unwritten``), and the shipper leaves them in the
outbox. Nothing is added when nothing is locked: the slices only start after a first refusal.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Outbox",
    "RejectedRow",
    "after_refusal",
    "claim_orphans",
    "default_outbox_dir",
    "lock_own_file",
    "lock_refused",
    "open_own_outbox",
    "patiently",
    "read_rejected",
    "set_aside_files",
    "try_lock",
]

log = logging.getLogger("tracking.ledger")

_ENV = "TRACKING_OUTBOX_DIR"
#: Milliseconds SQLite itself waits for a lock held by another connection, per statement; a
#: closing outbox's writes wait at most this long more (see the module docstring).
BUSY_SLICE = 100
#: Seconds a write waits in all, slice after slice, for a lock held by another connection.
BUSY_PATIENCE = 10.0
#: Seconds between two slices (SQLite does not wait itself on a stale snapshot).
_BUSY_PAUSE = 0.01
_T = TypeVar("_T")
#: The name of an outbox set aside with only rejected rows begins with it (see the docstring).
SET_ASIDE_PREFIX = "rejected-"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, line TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rejected "
    "(seq INTEGER PRIMARY KEY, line TEXT NOT NULL, reason TEXT NOT NULL, rejected_at TEXT)",
)


def default_outbox_dir(target: str) -> Path:
    """Where a target's outboxes live: ``$TRACKING_OUTBOX_DIR`` or the user's state directory.

    ``target`` is the database URL as :func:`~tracking.integrations.sql._engine.outbox_target`
    gives it (password hidden, an SQLite file's path absolute); one sub-folder per target keeps
    rows bound for different databases apart.
    """
    base = os.environ.get(_ENV)
    if base:
        # absolute, as read now: a relative folder could not be opened as a file: URI, which
        # made the budgets' reading and ``tracking ledger quarantine list`` raise ValueError
        root = Path(base).absolute()
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        root = Path(state) / "tracking" / "outbox"
    return root / hashlib.sha256(target.encode()).hexdigest()[:16]


def try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Outbox:
    """One outbox file, locked by this process; see the module docstring."""

    def __init__(self, path: Path, lock_fd: int, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._owner_pid = os.getpid()
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives the machine's crash. NORMAL (the rows an intent journal
        # recovered): it survives the process's death, without an fsync per commit.
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
        self._db.execute(f"PRAGMA busy_timeout={int(BUSY_PATIENCE * 1000)}")  # opening: as before
        self._db.execute("PRAGMA temp_store=MEMORY")  # no spill files (sql/_engine.py)
        for statement in _SCHEMA:
            self._db.execute(statement)
        count, last = self._db.execute("SELECT count(*), max(seq) FROM outbox").fetchone()
        self._db.execute(f"PRAGMA busy_timeout={BUSY_SLICE}")  # then in slices (``_patiently``)
        self._giving_up = False  # closing: a write waiting for a lock gives up (stop_waiting)
        self._pending: int = count
        self.last_seq: int = last or 0  #: the newest row appended (or found at open)
        self.shipped_through = 0  #: every row up to this seq has left the outbox
        self.closed = False

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, pending={self._pending})"

    def pending(self) -> int:
        """Rows acknowledged here and not yet in the target."""
        return self._pending

    def append(self, lines: Sequence[str]) -> int:
        """Commit rows in one transaction; returns the seq of the last one."""
        with self._mutex:
            first = self.last_seq + 1
            try:  # the hot path: nothing but the statement unless another connection has the lock
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                after_refusal(exc, self._begin, self._is_giving_up)
            try:
                self._db.executemany(
                    "INSERT INTO outbox (seq, line) VALUES (?, ?)",
                    zip(range(first, first + len(lines)), lines, strict=True),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.last_seq = first + len(lines) - 1
            self._pending += len(lines)
            return self.last_seq

    def peek(self, limit: int) -> list[tuple[int, str]]:
        """The oldest rows still waiting, at most ``limit``."""
        with self._mutex:
            return self._patiently(
                lambda: self._db.execute(
                    "SELECT seq, line FROM outbox ORDER BY seq LIMIT ?", (limit,)
                ).fetchall()
            )

    def remove_through(self, seq: int, count: int) -> None:
        """Forget the ``count`` oldest rows, now in the target: every row up to ``seq``."""
        with self._mutex:
            if count:
                self._patiently(
                    lambda: self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
                )
            self._pending -= count
            self.shipped_through = max(self.shipped_through, seq)

    def reject(self, seq: int, line: str, reason: str) -> None:
        """Move a row the target refuses for good to the ``rejected`` table."""
        now = datetime.now(UTC).isoformat()
        with self._mutex:
            self._patiently(self._begin)
            self._db.execute(
                "INSERT OR REPLACE INTO rejected (seq, line, reason, rejected_at) "
                "VALUES (?, ?, ?, ?)",
                (seq, line, reason, now),
            )
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._db.execute("COMMIT")
            self._pending -= 1

    def keep_refused(self, line: str, reason: str) -> None:
        """Keep a row that never entered the outbox in the ``rejected`` table."""
        now = datetime.now(UTC).isoformat()
        with self._mutex:
            self._patiently(
                lambda: self._db.execute(
                    "INSERT INTO rejected (line, reason, rejected_at) VALUES (?, ?, ?)",
                    (line, reason, now),
                )
            )

    def stop_waiting(self) -> None:
        """The outbox is closing: a write waiting for a lock another connection holds gives up
        at the end of its slice (:data:`BUSY_SLICE`), raising SQLite's "database is locked"
        error, and so does every later one. :meth:`close` does it first; a shipper stopping at
        shutdown does it before waiting for its thread."""
        self._giving_up = True

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _patiently(self, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, tried again while another connection holds the lock it needs, for up to
        :data:`BUSY_PATIENCE` seconds, unless the outbox is closing (see the module docstring)."""
        return patiently(attempt, self._is_giving_up)

    def _is_giving_up(self) -> bool:
        return self._giving_up

    def close(self) -> None:
        """Close and unlock; the files are removed when nothing is left in them, and set aside
        (see the module docstring) when only rejected rows are. Idempotent.

        A write waiting for a lock another connection holds gives up first (:meth:`stop_waiting`),
        so the close waits at most about a slice (:data:`BUSY_SLICE`) for it, and its own
        statements wait at most a slice each: a file that stays locked is kept as it is."""
        if os.getpid() == self._owner_pid:
            self.stop_waiting()
        with self._mutex:
            if self.closed:
                return
            self.closed = True
            if os.getpid() != self._owner_pid:
                return  # a forked child: the parent still owns this file, its lock and its rows
            try:
                (rejected,) = self._db.execute("SELECT count(*) FROM rejected").fetchone()
            except sqlite3.Error as exc:  # locked past a slice: kept as it is, claimed again
                log.warning("ledger outbox %s is kept as it is (%s)", self.path, exc)
                rejected = None
            set_aside = self._pending == 0 and rejected is not None and rejected > 0
            set_aside = set_aside and self._fold_wal()
            empty = self._pending == 0 and rejected == 0
            self._db.close()
            lock_path = self.path.with_suffix(".lock")
            if empty:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
            elif set_aside and _set_aside(self.path):
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)

    def _fold_wal(self) -> bool:
        """Make the file hold every row itself (no ``-wal`` beside it), before it is renamed;
        True when it does. Only rejected rows are left, so a crash here loses nothing either."""
        try:
            (waiting,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
            if waiting:  # never set aside a row still to ship, whatever the count said
                return False
            (mode,) = self._db.execute("PRAGMA journal_mode=DELETE").fetchone()
        except sqlite3.Error as exc:  # a reader holds it (the list command): next time, then
            log.warning("ledger outbox %s cannot be set aside yet (%s)", self.path, exc)
            return False
        return str(mode).lower() == "delete"


def patiently(attempt: Callable[[], _T], giving_up: Callable[[], bool]) -> _T:
    """``attempt()`` (statements on an SQLite connection whose ``busy_timeout`` is
    :data:`BUSY_SLICE`), tried again while another connection holds the lock it needs, slice
    after slice, for up to :data:`BUSY_PATIENCE` seconds in all, unless ``giving_up()`` says
    the caller is closing: SQLite's "database is locked" is raised then, at the end of the
    slice, instead of at the end of SQLite's own wait, which nothing interrupts. Only a refusal
    costs anything: the first try is the statement alone."""
    try:
        return attempt()
    except sqlite3.OperationalError as exc:
        return after_refusal(exc, attempt, giving_up)


def after_refusal(
    refused: sqlite3.OperationalError, attempt: Callable[[], _T], giving_up: Callable[[], bool]
) -> _T:
    """``attempt()`` again after its first try raised ``refused`` (re-raised unless a lock
    held elsewhere: SQLITE_BUSY), slice after slice, as :func:`patiently` says."""
    if not lock_refused(refused):
        raise refused
    deadline = time.monotonic() + BUSY_PATIENCE
    while not giving_up() and time.monotonic() < deadline:
        time.sleep(_BUSY_PAUSE)
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not lock_refused(exc):
                raise
            refused = exc
    raise refused


def lock_refused(exc: sqlite3.OperationalError) -> bool:
    """SQLite's SQLITE_BUSY (its extended codes too): another connection holds a lock."""
    return (exc.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY


def _set_aside(path: Path) -> bool:
    """Rename ``path`` (``outbox-<pid>[-n].db``) to a free ``rejected-<pid>[-n][-k].db`` beside
    it, never replacing a file; True when done."""
    stem = path.stem.removeprefix("outbox-")
    for k in range(1000):
        name = f"{SET_ASIDE_PREFIX}{stem}.db" if k == 0 else f"{SET_ASIDE_PREFIX}{stem}-{k}.db"
        target = path.with_name(name)
        try:
            os.link(path, target)  # fails if the name is taken: a rename would replace it
        except FileExistsError:
            continue
        except OSError:  # no hard links here: the outbox stays, claimed again as before
            log.exception("ledger outbox %s cannot be set aside; left in place", path)
            return False
        path.unlink()
        log.warning(
            "ledger: rows refused for good are kept in %s (table rejected); "
            "`tracking ledger quarantine list` shows them",
            target,
        )
        return True
    log.error("ledger outbox %s cannot be set aside: no free name; left in place", path)
    return False


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row kept in an outbox's ``rejected`` table: refused by the target and its quarantine."""

    path: Path
    seq: int
    line: str
    reason: str
    rejected_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "seq": self.seq,
            "error": self.reason,
            "rejected_at": self.rejected_at,
            "line": self.line,
        }


def set_aside_files(directory: Path) -> list[Path]:
    """The outboxes set aside in ``directory`` with only rejected rows, oldest name first."""
    try:
        return sorted(directory.glob(f"{SET_ASIDE_PREFIX}*.db"))
    except OSError:
        return []


def read_rejected(directory: Path) -> list[RejectedRow]:
    """Every rejected row kept in ``directory``: in the outboxes set aside and in those still in
    use or waiting to be claimed. Read only; nothing is locked or changed."""
    rows: list[RejectedRow] = []
    try:
        paths = sorted({*set_aside_files(directory), *directory.glob("outbox-*.db")})
    except OSError:
        return rows
    for path in paths:
        try:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
            try:
                found = db.execute(
                    "SELECT seq, line, reason, rejected_at FROM rejected ORDER BY seq"
                ).fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            log.exception("ledger outbox %s cannot be read", path)
            continue
        rows.extend(RejectedRow(path, seq, line, reason, at) for seq, line, reason, at in found)
    return rows


def lock_own_file(directory: Path, stem: str) -> tuple[Path, int]:
    """A name ``<stem>-<pid>[-n]`` in ``directory`` (created) whose ``.lock`` this process now
    holds, and the lock's descriptor."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    for n in range(1000):
        name = f"{stem}-{pid}" if n == 0 else f"{stem}-{pid}-{n}"
        fd = try_lock(directory / f"{name}.lock")
        if fd is not None:
            return directory / name, fd
    raise RuntimeError(f"no free {stem} name in {directory}")


def open_own_outbox(directory: Path, *, synchronous: str = "FULL") -> Outbox:
    """This process's outbox in ``directory`` (created), locked for as long as it is open."""
    base, fd = lock_own_file(directory, "outbox")
    return Outbox(base.with_name(f"{base.name}.db"), fd, synchronous=synchronous)


def claim_orphans(directory: Path, skip: frozenset[Path] = frozenset()) -> list[Outbox]:
    """Outboxes in ``directory`` whose process is gone, now locked by this one."""
    claimed: list[Outbox] = []
    try:
        candidates = sorted(directory.glob("outbox-*.db"))
    except OSError:
        return claimed
    for path in candidates:
        if path in skip:
            continue
        lock_path = path.with_suffix(".lock")
        fd = try_lock(lock_path)
        if fd is None:
            continue  # its process is alive
        if not path.exists():  # removed by its owner while we looked
            lock_path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        try:
            claimed.append(Outbox(path, fd))
        except sqlite3.Error:
            log.exception("ledger outbox %s cannot be opened; left in place", path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    return claimed
