"""Counters the worker processes of one machine share through a SQLite file (no Redis needed).

``tracking serve --workers N`` without Redis gives every worker the same file (named by
``TRACKING_PROXY_COUNTERS_FILE``, created by the supervisor in a private temporary folder and
removed when it stops), so the per-key rpm windows and the budget counters are one set for the
whole machine, never one per worker. Each operation is one ``BEGIN IMMEDIATE`` transaction: SQLite
takes the file's write lock before reading, so two workers can never both take the last of a
budget. The semantics are those of :class:`~tracking.proxy.shared_counters.LocalCounters`
(seeded from the ledger, idle counters expire after ``IDLE_TTL`` and are deleted, each worker
looking for them once every ``IDLE_TTL``); operations run off the event loop.

Every worker's reservations in flight are in the file too (``holds``, each named by its worker's
id and the reservation, with its call's request id), so a counter seeded again (dropped when its
budget changed) starts from the ledger without those calls plus every worker's calls in flight on
it, as Redis's does.

A worker that dies mid-call (``kill -9``, out of memory) never settles its holds. Each worker
holds a lock of its own beside the file for as long as it lives (:mod:`.worker_locks`), so the
others know it dead at once, and never take a live one, however slow, for dead. A worker looks
for dead ones (those with holds in the file) at most once a second, in the transaction of a
reservation or of a reading of the calls in flight; once it has known one dead for
:data:`DEFAULT_DEAD_HOLD_SECONDS` (``TRACKING_DEAD_WORKER_HOLD_SECONDS``) it removes the dead
worker's holds and deletes each counter they were on, so the next reservation starts it again
from the ledger, as Redis's heartbeat does (:mod:`.redis_holds`): by then the proxies of the
machine have claimed the dead worker's intents (at a successor's start, else within
``RESCAN_SECONDS``, 30 s), and the counter counts its calls' ``incomplete`` rows. Until
2026-12-07 a dead worker's holds stayed counted until they had been an hour in the file, and in a
counter still in use until it was idle for an hour. A hold without a worker (written by a version
before that) still stops counting after ``IDLE_TTL``.

The file also counts the keys' changes (:class:`~tracking.proxy.keys.KeyChanges`, as Redis
does for instances sharing it): a key generated on one worker is known at once to the others,
which reload their sets of known keys when the count moved, instead of refusing it with a 401
until their sets are a second old.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..environment_numbers import seconds_from_environment
from .shared_counters import IDLE_TTL, minute_and_wait
from .worker_locks import WorkerLock, is_dead, remove_lock

__all__ = ["COUNTERS_FILE_ENV", "DEAD_HOLD_ENV", "DEFAULT_DEAD_HOLD_SECONDS", "MachineCounters"]

log = logging.getLogger("tracking.proxy")

COUNTERS_FILE_ENV = "TRACKING_PROXY_COUNTERS_FILE"
#: How long a worker known dead keeps its holds counted: past the 30 s within which the
#: machine's proxies claim its intents, so the counters started again count them.
DEAD_HOLD_ENV = "TRACKING_DEAD_WORKER_HOLD_SECONDS"
DEFAULT_DEAD_HOLD_SECONDS = 40.0
#: A worker looks for dead ones at most this often.
_LOOK_SECONDS = 1.0

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rpm (name TEXT NOT NULL, minute INTEGER NOT NULL,
                                count INTEGER NOT NULL, PRIMARY KEY (name, minute));
CREATE TABLE IF NOT EXISTS money (name TEXT PRIMARY KEY, units INTEGER NOT NULL,
                                  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS holds (name TEXT NOT NULL, holder TEXT NOT NULL,
                                  units INTEGER NOT NULL, expires REAL NOT NULL,
                                  request_id TEXT, worker TEXT, PRIMARY KEY (name, holder));
CREATE TABLE IF NOT EXISTS versions (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class MachineCounters:
    """The :class:`~tracking.proxy.shared_counters.Counters` of one machine's workers."""

    def __init__(
        self,
        path: str,
        clock: Callable[[], float] = time.time,
        *,
        dead_hold_seconds: float | None = None,
    ) -> None:
        self.path = path
        self._clock = clock
        if dead_hold_seconds is None:
            dead_hold_seconds = seconds_from_environment(DEAD_HOLD_ENV, DEFAULT_DEAD_HOLD_SECONDS)
        self.dead_hold_seconds = dead_hold_seconds
        #: dead workers with holds in the file -> when this worker first found them dead
        self._dead: dict[str, float] = {}
        self._looked = -math.inf
        #: when this worker last deleted the expired budget counters (once every IDLE_TTL)
        self._swept = clock()
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(holds)")}
            for column in ("request_id", "worker"):  # a file made before 2026-12-06, 2026-12-07
                if column not in columns:
                    self._conn.execute(f"ALTER TABLE holds ADD COLUMN {column} TEXT")
        self._own = WorkerLock(path)  # held while this process lives: the others know it dead
        self.worker = self._own.worker

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        def transaction() -> T:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = operation(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return result

        return await asyncio.to_thread(transaction)

    async def hit_rpm(self, name: str, limit: int) -> float | None:
        minute, wait = minute_and_wait()

        def hit(conn: sqlite3.Connection) -> float | None:
            conn.execute("DELETE FROM rpm WHERE name = ? AND minute < ?", (name, minute))
            row = conn.execute(
                "SELECT count FROM rpm WHERE name = ? AND minute = ?", (name, minute)
            ).fetchone()
            if row is not None and row[0] >= limit:
                return wait
            conn.execute(
                "INSERT INTO rpm (name, minute, count) VALUES (?, ?, 1) "
                "ON CONFLICT (name, minute) DO UPDATE SET count = count + 1",
                (name, minute),
            )
            return None

        return await self._run(hit)

    async def reserve(
        self,
        name: str,
        amount: int,
        limit: int,
        seed: int | None,
        hold: object = None,
        calls: frozenset[str] | None = None,
        since: int | None = None,  # this machine's resets always reach its file
    ) -> int | None:
        def reserve(conn: sqlite3.Connection) -> int | None:
            now = self._clock()
            if now - self._swept >= IDLE_TTL:  # past periods' counters are not kept forever
                self._swept = now
                conn.execute("DELETE FROM money WHERE expires <= ?", (now,))
                conn.execute("DELETE FROM holds WHERE expires <= ?", (now,))
            self._release_dead(conn, now)
            row = conn.execute(
                "SELECT units FROM money WHERE name = ? AND expires > ?", (name, now)
            ).fetchone()
            if row is None and seed is None:
                return None
            if row is None and calls is not None and _calls_on(conn, name, now) != calls:
                return None  # a call settled, or began, since the ledger was read: again
            if row is None:  # seeded: the ledger's figure counts none of the calls in flight
                (held,) = conn.execute(
                    "SELECT coalesce(sum(units), 0) FROM holds WHERE name = ? AND expires > ?",
                    (name, now),
                ).fetchone()
                current = int(seed or 0) + int(held)
            else:
                current = int(row[0])
            admitted = current < limit and current + amount <= limit
            after = current + amount if admitted else current
            conn.execute(
                "INSERT INTO money (name, units, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET units = excluded.units, "
                "expires = excluded.expires",
                (name, after, now + IDLE_TTL),
            )
            if admitted and amount and hold is not None:
                request_id = getattr(hold, "request_id", None)
                conn.execute(
                    "INSERT INTO holds (name, holder, units, expires, request_id, worker) "
                    "VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name, holder) DO UPDATE SET units = units + excluded.units, "
                    "expires = excluded.expires",
                    (
                        name,
                        self._holder(hold),
                        amount,
                        now + IDLE_TTL,
                        request_id if isinstance(request_id, str) else None,
                        self.worker,
                    ),
                )
            return after if admitted else -current - 1

        return await self._run(reserve)

    async def calls_in_flight(self, name: str) -> frozenset[str]:
        """Every worker's calls in flight on ``name`` (a dead worker's until its holds are
        released)."""

        def read(conn: sqlite3.Connection) -> frozenset[str]:
            now = self._clock()
            self._release_dead(conn, now)
            return _calls_on(conn, name, now)

        return await self._run(read)

    def _release_dead(self, conn: sqlite3.Connection, now: float) -> None:
        """(In the caller's transaction.) Release the holds of the workers known dead for
        ``dead_hold_seconds``, deleting the counters they were on (module docstring)."""
        if now - self._looked < _LOOK_SECONDS:
            return
        self._looked = now
        holding = conn.execute(
            "SELECT DISTINCT worker FROM holds WHERE worker IS NOT NULL AND worker != ?",
            (self.worker,),
        )
        found = {str(worker) for (worker,) in holding}
        self._dead = {w: at for w, at in self._dead.items() if w in found}
        released = counters = 0
        for worker in sorted(found):
            if not is_dead(self.path, worker):
                self._dead.pop(worker, None)
                continue
            if now - self._dead.setdefault(worker, now) < self.dead_hold_seconds:
                continue
            names = conn.execute("SELECT DISTINCT name FROM holds WHERE worker = ?", (worker,))
            dropped = [(str(name),) for (name,) in names]
            conn.execute("DELETE FROM holds WHERE worker = ?", (worker,))
            counters += conn.executemany("DELETE FROM money WHERE name = ?", dropped).rowcount
            del self._dead[worker]
            remove_lock(self.path, worker)  # its holds are gone: nothing to know it by
            released += 1
        if released:
            log.warning(
                "proxy counters: released the budget holds of %d dead worker(s) in the "
                "machine's file, %g s after their death was found (%d counter(s) start again "
                "from the ledger)",
                released,
                self.dead_hold_seconds,
                counters,
            )

    async def adjust(self, name: str, delta: int, hold: object = None) -> None:
        def adjust(conn: sqlite3.Connection) -> None:
            now = self._clock()
            if delta:
                conn.execute(
                    "UPDATE money SET units = units + ?, expires = ? "
                    "WHERE name = ? AND expires > ?",
                    (delta, now + IDLE_TTL, name, now),
                )
            if hold is not None:  # over: its real cost is in the ledger now
                conn.execute(
                    "DELETE FROM holds WHERE name = ? AND holder = ?", (name, self._holder(hold))
                )

        if delta or hold is not None:
            await self._run(adjust)

    async def drop(self, names: Sequence[str]) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM money WHERE name = ?", [(name,) for name in names])

        await self._run(drop)

    async def keys_version(self) -> int | None:
        """How many times a worker stored a key; None when the file cannot be read."""

        def read() -> int:
            with self._lock:  # a plain read: no write lock taken for each unknown key
                query = "SELECT value FROM versions WHERE name = 'keys'"
                row = self._conn.execute(query).fetchone()
            return int(row[0]) if row is not None else 0

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error:
            return None  # the workers fall back to their sets' age

    async def keys_changed(self) -> None:
        def bump(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO versions (name, value) VALUES ('keys', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )

        try:
            await self._run(bump)
        except sqlite3.Error:
            return None  # the other workers fall back to their sets' age

    async def aclose(self) -> None:
        """Close the file and let go of this worker's lock (its file removed unless holds of
        it are left, which the others then release)."""
        with self._lock:
            try:
                query = "SELECT count(*) FROM holds WHERE worker = ?"
                (left,) = self._conn.execute(query, (self.worker,)).fetchone()
            except sqlite3.Error:
                left = 1
            self._conn.close()
        self._own.release(remove=not left)

    def _holder(self, hold: object) -> str:
        """A reservation's name in the file: its worker's id and its own."""
        return f"{self.worker}:{id(hold)}"


def _calls_on(conn: sqlite3.Connection, name: str, now: float) -> frozenset[str]:
    """The request ids of the calls holding on ``name`` (in the caller's transaction)."""
    rows = conn.execute(
        "SELECT request_id FROM holds WHERE name = ? AND expires > ? AND request_id IS NOT NULL",
        (name, now),
    )
    return frozenset(str(request_id) for (request_id,) in rows)
