"""The ledger's own figures, read when metrics are scraped, in one process or across workers.

A ledger (:class:`tracking.integrations.sql.SqlLedger`) keeps its figures itself and answers
:meth:`LedgerStatsSource.ledger_stats` with a :class:`LedgerStats`; it adds itself to this
module's set of live ledgers when it is created (:func:`add_source`) and leaves it when it shuts
down (:func:`retire_source`), its counts staying in the process's totals so they never go down.
A metrics exporter asks for :func:`live_stats` when it is scraped, so the ledger pushes nothing
anywhere and needs no exporter loaded before or after it.

Several worker processes (``tracking serve --workers N``) cannot read each other's memory, so
each one writes its figures to ``ledger-<pid>.json`` in a shared folder once a second
(:func:`start_sharing`), and :func:`shared_stats` sums them for whichever worker is scraped: its
own figures live, the others' at most a second old. A process that has ended keeps its counts
(rows replayed or quarantined, write times: totals never go down) but not its gauges (queue
depth, outbox rows), as prometheus_client's ``livesum`` treats a dead worker's gauges.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

from .worker_files import others, write_own

__all__ = [
    "SHARE_INTERVAL",
    "WRITE_BUCKETS",
    "LedgerStats",
    "LedgerStatsSource",
    "WriteTimes",
    "add_source",
    "live_stats",
    "retire_source",
    "shared_stats",
    "start_sharing",
]

#: Upper bounds (seconds) of the write-time buckets; one more bucket holds the rest (+Inf).
WRITE_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
#: Seconds between two writes of a worker's figures to the shared folder.
SHARE_INTERVAL = 1.0
_NO_WRITES = (0,) * (len(WRITE_BUCKETS) + 1)
_FILE_PREFIX = "ledger-"


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """One ledger's figures (or a sum of several ledgers').

    ``write_counts`` holds how many acknowledgement commits fell in each bucket of
    :data:`WRITE_BUCKETS` (not cumulative; the last one is past the highest bound) and
    ``write_seconds`` their total time. ``stuck_seconds`` is how long rows have waited with none
    shipped (the database unreachable, not answering, or refusing them), the longest
    of several ledgers', not their sum.
    """

    queue_depth: int = 0
    outbox_rows: int = 0
    replayed_rows: int = 0
    quarantined_rows: int = 0
    write_counts: tuple[int, ...] = _NO_WRITES
    write_seconds: float = 0.0
    stuck_seconds: float = 0.0

    def __add__(self, other: LedgerStats) -> LedgerStats:
        return LedgerStats(
            queue_depth=self.queue_depth + other.queue_depth,
            outbox_rows=self.outbox_rows + other.outbox_rows,
            replayed_rows=self.replayed_rows + other.replayed_rows,
            quarantined_rows=self.quarantined_rows + other.quarantined_rows,
            write_counts=tuple(
                a + b for a, b in zip(self.write_counts, other.write_counts, strict=True)
            ),
            write_seconds=self.write_seconds + other.write_seconds,
            stuck_seconds=max(self.stuck_seconds, other.stuck_seconds),
        )

    def counts_only(self) -> LedgerStats:
        """These figures without the gauges: what a process that has ended still contributes."""
        return replace(self, queue_depth=0, outbox_rows=0, stuck_seconds=0.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LedgerStats:
        """Figures a worker wrote; ValueError when the text is not such figures."""
        try:
            data = json.loads(text)
            counts = tuple(int(c) for c in data["write_counts"])
            stats = cls(
                queue_depth=int(data["queue_depth"]),
                outbox_rows=int(data["outbox_rows"]),
                replayed_rows=int(data["replayed_rows"]),
                quarantined_rows=int(data["quarantined_rows"]),
                write_counts=counts,
                write_seconds=float(data["write_seconds"]),
                # a worker of an older version writes none
                stuck_seconds=float(data.get("stuck_seconds", 0.0)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not ledger figures: {exc}") from exc
        if len(counts) != len(_NO_WRITES):
            raise ValueError("not ledger figures: wrong number of write-time buckets")
        return stats


class LedgerStatsSource(Protocol):
    """What a ledger answers when its figures are scraped."""

    def ledger_stats(self) -> LedgerStats: ...


class WriteTimes:
    """A thread-safe tally of commit times in the buckets of :data:`WRITE_BUCKETS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * len(_NO_WRITES)
        self._seconds = 0.0

    def observe(self, seconds: float) -> None:
        bucket = next((i for i, bound in enumerate(WRITE_BUCKETS) if seconds <= bound), -1)
        with self._lock:
            self._counts[bucket] += 1
            self._seconds += seconds

    def snapshot(self) -> tuple[tuple[int, ...], float]:
        with self._lock:
            return tuple(self._counts), self._seconds


_sources: weakref.WeakSet[LedgerStatsSource] = weakref.WeakSet()
_sources_lock = threading.Lock()
#: The counts of the ledgers shut down in this process.
_retired = LedgerStats()


def add_source(source: LedgerStatsSource) -> None:
    """Count ``source``'s figures in :func:`live_stats` for as long as it exists."""
    with _sources_lock:
        _sources.add(source)


def retire_source(source: LedgerStatsSource) -> None:
    """``source`` has shut down: its gauges leave :func:`live_stats`, its counts stay."""
    global _retired
    final = _read(source)
    with _sources_lock:
        if source in _sources:
            _sources.discard(source)
            _retired += final.counts_only()


def live_stats() -> LedgerStats:
    """This process's ledgers' figures, read now: the live ones', with the counts of the
    ones shut down."""
    with _sources_lock:
        sources = list(_sources)
        total = _retired
    for source in sources:
        total += _read(source)
    return total


def _read(source: LedgerStatsSource) -> LedgerStats:
    try:
        return source.ledger_stats()
    except Exception as exc:
        from tracking import bus

        bus.report_failure("ledger", "reading the ledger's figures failed", exc)
        return LedgerStats()


def shared_stats(directory: str | os.PathLike[str]) -> LedgerStats:
    """This process's live figures plus every other worker's file in ``directory``."""
    total = live_stats()
    for pid, text in others(directory, _FILE_PREFIX):
        try:
            stats = LedgerStats.from_json(text)
        except ValueError:
            continue  # not ours: skipped
        total += stats if _alive(pid) else stats.counts_only()
    return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class _Sharer:
    """Writes this process's figures to the shared folder every :data:`SHARE_INTERVAL`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self._last = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracking-ledger-stats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SHARE_INTERVAL):
            self.write()

    def write(self) -> None:
        from tracking import bus_sharing

        bus_sharing.share(self.directory)  # the bus's counters, shared the same way
        text = live_stats().to_json()
        if text == self._last:
            return
        try:
            write_own(self.directory, _FILE_PREFIX, self.pid, text)
        except OSError as exc:
            if not self.directory.is_dir():  # the folder is gone: nobody reads it any more
                self._stop.set()
                return
            from tracking import bus

            bus.report_failure("ledger", "sharing the ledger's figures failed", exc)
            return
        self._last = text

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):  # not started in this process (forked)
            self._thread.join(SHARE_INTERVAL * 2)
        self.write()  # the final counts outlive the process


_sharer: _Sharer | None = None
_sharer_lock = threading.Lock()


def start_sharing(directory: str | os.PathLike[str]) -> None:
    """Write this process's figures to ``directory`` once a second from now on (idempotent)."""
    global _sharer
    folder = Path(directory)
    with _sharer_lock:
        current = _sharer
        if current is not None and current.pid == os.getpid() and current.directory == folder:
            return
        _sharer = _Sharer(folder)


def _stop_sharing() -> None:
    with _sharer_lock:
        sharer = _sharer
    if sharer is not None and sharer.pid == os.getpid():
        sharer.stop()


def _restart_in_child() -> None:
    global _sharer, _sharer_lock, _sources_lock
    _sharer_lock, _sources_lock = threading.Lock(), threading.Lock()
    parent = _sharer
    _sharer = None
    if parent is not None:  # the parent's thread did not survive the fork
        start_sharing(parent.directory)


atexit.register(_stop_sharing)
os.register_at_fork(after_in_child=_restart_in_child)
