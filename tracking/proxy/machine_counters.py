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
process id and the reservation, with its call's request id), so a counter seeded again (dropped
when its budget changed) starts from the ledger without those calls plus every worker's calls in
flight on it, as Redis's does; a hold that was never settled (its worker died) stops counting
after ``IDLE_TTL``.

The file also counts the keys' changes (:class:`~tracking.proxy.keys.KeyChanges`, as Redis
does for instances sharing it): a key generated on one worker is known at once to the others,
which reload their sets of known keys when the count moved, instead of refusing it with a 401
until their sets are a second old.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from .shared_counters import IDLE_TTL, minute_and_wait

__all__ = ["COUNTERS_FILE_ENV", "MachineCounters"]

COUNTERS_FILE_ENV = "TRACKING_PROXY_COUNTERS_FILE"

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rpm (name TEXT NOT NULL, minute INTEGER NOT NULL,
                                count INTEGER NOT NULL, PRIMARY KEY (name, minute));
CREATE TABLE IF NOT EXISTS money (name TEXT PRIMARY KEY, units INTEGER NOT NULL,
                                  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS holds (name TEXT NOT NULL, holder TEXT NOT NULL,
                                  units INTEGER NOT NULL, expires REAL NOT NULL,
                                  request_id TEXT, PRIMARY KEY (name, holder));
CREATE TABLE IF NOT EXISTS versions (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class MachineCounters:
    """The :class:`~tracking.proxy.shared_counters.Counters` of one machine's workers."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
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
            if "request_id" not in columns:  # a file made by a version before 2026-12-06
                self._conn.execute("ALTER TABLE holds ADD COLUMN request_id TEXT")

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
                    "INSERT INTO holds (name, holder, units, expires, request_id) "
                    "VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (name, holder) DO UPDATE SET units = units + excluded.units, "
                    "expires = excluded.expires",
                    (
                        name,
                        _holder(hold),
                        amount,
                        now + IDLE_TTL,
                        request_id if isinstance(request_id, str) else None,
                    ),
                )
            return after if admitted else -current - 1

        return await self._run(reserve)

    async def calls_in_flight(self, name: str) -> frozenset[str]:
        """Every worker's calls in flight on ``name`` (a dead worker's until its holds expire)."""
        return await self._run(lambda conn: _calls_on(conn, name, self._clock()))

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
                    "DELETE FROM holds WHERE name = ? AND holder = ?", (name, _holder(hold))
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
        with self._lock:
            self._conn.close()


def _calls_on(conn: sqlite3.Connection, name: str, now: float) -> frozenset[str]:
    """The request ids of the calls holding on ``name`` (in the caller's transaction)."""
    rows = conn.execute(
        "SELECT request_id FROM holds WHERE name = ? AND expires > ? AND request_id IS NOT NULL",
        (name, now),
    )
    return frozenset(str(request_id) for (request_id,) in rows)


def _holder(hold: object) -> str:
    """A reservation's name in the file: its worker's process id and its own."""
    return f"{os.getpid()}:{id(hold)}"
