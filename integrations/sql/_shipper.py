"""``OutboxShipper``: one thread draining outboxes into the target database, resumably.

The shipper reads the oldest rows of an outbox in batches, inserts them into the target with
``ON CONFLICT (request_id)``, keeping a row already there
(:class:`~tracking.integrations.sql._target.SpendLogsInserter`) and only then deletes them from the
outbox. A crash between the two steps replays the batch on restart, and the conflict clause turns
the replay into a no-op: every acknowledged row reaches the target exactly once. While the target
is unreachable the rows stay on disk and the shipper retries with capped exponential backoff; a row
the target refuses for good is moved to the target's ``ledger_quarantine`` table (or, failing
that, to the outbox's ``rejected`` table), logged and counted, so it cannot block the rows behind
it: see :class:`~tracking.integrations.sql._drain.OutboxDrain`, which moves the rows.

:meth:`OutboxShipper.stuck_for` tells how long rows have been waiting without any reaching the
target (what the proxy's readiness reports): from the moment the shipper took up rows to ship
with none shipped since, so an attempt that hangs (a database that took the connection and
stopped answering) counts as much as attempts that fail.

Besides its own process's outbox, the shipper drains orphans (outboxes of dead processes, see
:func:`~tracking.integrations.sql._outbox.claim_orphans`): at start, and again every ``rescan``
seconds (:data:`RESCAN_SECONDS`), when it also runs its ``on_scan`` callable (an intent journal's
shipper recovers dead processes' intent logs into its own outbox there). Rows that reach the
target late (after a failure, or from an orphan or a previous run) are *replayed* and reported
to ``replay_hooks``; ``ship_hooks`` run after every shipped batch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from ._drain import NotTrimmed, OutboxDrain
from ._hooks import call_count_hooks
from ._outbox import Outbox, claim_orphans
from ._target import SpendLogsInserter

__all__ = ["RESCAN_SECONDS", "OutboxShipper", "ShipperOwner"]

log = logging.getLogger("tracking.ledger")

#: How often a running shipper looks for what dead processes left (outboxes, intent logs): a
#: peer killed while this process runs has its rows shipped within about this many seconds.
RESCAN_SECONDS = 30.0


class OutboxShipper:
    """Drains an outbox (and orphaned ones) into the target; see the module docstring."""

    def __init__(
        self,
        outbox: Outbox,
        inserter: SpendLogsInserter,
        *,
        max_batch: int = 2000,
        retry_initial: float = 0.05,
        retry_max: float = 2.0,
        rescan: float | None = None,
        replay_hooks: list[Callable[[int], None]] | None = None,
        ship_hooks: list[Callable[[float, int], None]] | None = None,
        quarantine_hooks: list[Callable[[int], None]] | None = None,
        on_scan: Callable[[], int] | None = None,
    ) -> None:
        self.outbox = outbox
        self.inserter = inserter
        self.max_batch = max_batch
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.rescan = RESCAN_SECONDS if rescan is None else rescan
        #: Run at every rescan (not at start): rows it commits to ``outbox`` (it returns how
        #: many) are shipped as replayed.
        self._on_scan = on_scan
        # Given before the thread starts, so rows drained from orphans at once are reported too.
        self.replay_hooks = replay_hooks if replay_hooks is not None else []
        self.ship_hooks = ship_hooks if ship_hooks is not None else []
        self.drain = OutboxDrain(inserter, quarantine_hooks)
        #: Since when (monotonic) rows have waited with none shipped: set when the shipper takes
        #: up rows, cleared by each batch that reaches the target. None while nothing waits.
        self._waiting_since: float | None = None
        self.replayed_rows = 0
        self._orphans: list[Outbox] = []
        self._replaying = outbox.pending() > 0  # rows left by a previous run of this pid
        self._cond = threading.Condition()
        self._closing = False
        self._stopped = False  # the thread has ended
        self._close_when_stopped = False  # ``close`` gave up waiting: the thread closes them
        self._after_stop: list[Callable[[], None]] = []
        self._failing = False
        self._next_scan = 0.0
        self._scan_orphans()  # before returning, so a flush right after start includes them
        self._thread = threading.Thread(target=self._run, name="tracking-ledger-ship", daemon=True)
        self._thread.start()

    # -- called by others -----------------------------------------------------------------------

    @property
    def quarantined_rows(self) -> int:
        """Rows moved to the target's ``ledger_quarantine`` table."""
        return self.drain.quarantined_rows

    @property
    def rejected_rows(self) -> int:
        """Rows the quarantine refused too, kept in their outbox's ``rejected`` table."""
        return self.drain.rejected_rows

    def wake(self) -> None:
        """New rows were committed to the outbox."""
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        """Rows in this process's outbox and in the orphans it is draining."""
        return self.outbox.pending() + sum(o.pending() for o in tuple(self._orphans))

    def stuck_for(self) -> float:
        """Seconds rows have waited with none reaching the target (0: nothing waits).

        Counted from when the shipper took them up, not from its first failed attempt: until
        2026-12-06 an attempt that never ended (a database that stopped answering) left it at
        0 however long the rows waited, and a first attempt that timed out reported the rows
        stuck only from its end. Rows in the target that their outbox, locked elsewhere, keeps
        (being deleted from it, or sent again and ignored) reached it: 0 while they are
        deleted, and counted afresh from the attempt after (until 2026-12-07 the count went
        on, and readiness said ``stuck`` of a target that had every row).
        """
        since = self._waiting_since
        if since is None or self.pending() == 0 or self.drain.is_trimming():
            return 0.0
        return time.monotonic() - since

    def say_waiting(self) -> None:
        """Warn of the rows still to reach the target, this process's outbox's and those of the
        outboxes it took over from dead processes (until 2026-12-07 only the first were
        counted), apart from rows in the target that a locked outbox keeps (said as the
        shipper stops)."""
        sources = (self.outbox, *tuple(self._orphans))
        counts = [(o, o.pending() - self.drain.trimming(o)) for o in sources]
        waiting = sum(count for _, count in counts)
        if waiting <= 0:
            return
        others = sum(1 for o, count in counts if count > 0 and o is not self.outbox)
        also = f" and {others} outbox{'es' if others > 1 else ''} left by dead processes"
        also = also if others else ""
        log.warning(
            "ledger: %d rows wait in %s%s for the target; the next start ships them",
            waiting,
            self.outbox.path,
            also,
        )

    def wait_shipped(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until the own outbox's rows up to ``seq``, and the orphans', reached the target."""

        def shipped() -> bool:
            drained = not any(o.pending() for o in tuple(self._orphans))
            return drained and self.outbox.shipped_through >= seq

        with self._cond:
            return self._cond.wait_for(shipped, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread (between batches) and close the outboxes; unshipped rows stay on disk.

        A thread still in an attempt after ``timeout`` (a database that stopped answering)
        closes them itself when the attempt ends. They stayed open, locked by this process,
        until it exited (until 2026-12-06): a ledger opened again in the same process could not
        claim them, and their rows waited for the next process.

        Their writes waiting for a lock another process holds give up first
        (:meth:`~tracking.integrations.sql._outbox.Outbox.stop_waiting`): the thread's, which
        leaves its rows in the outbox, and the ledger writer's, whose rows it kept elsewhere.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for outbox in (*tuple(self._orphans), self.outbox):
            outbox.stop_waiting()
        self._thread.join(timeout)
        with self._cond:
            if not self._stopped:
                self._close_when_stopped = True
                log.error(
                    "ledger shipper did not stop in time; its outboxes are left to the next "
                    "ledger once its attempt ends"
                )
                return
        self._close_outboxes()

    def after_stop(self, action: Callable[[], None]) -> bool:
        """Run ``action`` when the thread ends (after a :meth:`close` that gave up waiting):
        True; False when it has ended already (the caller runs it)."""
        with self._cond:
            if self._stopped:
                return False
            self._after_stop.append(action)
            return True

    def _close_outboxes(self) -> None:
        for outbox in (*self._orphans, self.outbox):
            outbox.close()

    # -- the thread -----------------------------------------------------------------------------

    def _scan_orphans(self) -> None:
        self._next_scan = time.monotonic() + self.rescan
        skip = frozenset({self.outbox.path, *(o.path for o in self._orphans)})
        found = claim_orphans(self.outbox.path.parent, skip)
        for orphan in found:
            if orphan.pending():  # none: only rejected rows, set aside when it is closed
                log.info("ledger: draining %d rows left in %s", orphan.pending(), orphan.path)
        self._orphans.extend(found)

    def _next_source(self) -> Outbox | None:
        for orphan in list(self._orphans):
            if orphan.pending() > 0:
                return orphan
            orphan.close()  # drained: its files go away
            self._orphans.remove(orphan)
        return self.outbox if self.outbox.pending() > 0 else None

    def _run(self) -> None:
        try:
            self._ship_until_closed()
        finally:
            with self._cond:
                self._stopped = True
                close = self._close_when_stopped
            if close:
                self._close_outboxes()
            for action in self._after_stop:
                try:
                    action()
                except Exception:
                    log.exception("ledger: ending the shipper's work failed")

    def _ship_until_closed(self) -> None:
        delay = self.retry_initial
        while True:
            if time.monotonic() >= self._next_scan:
                try:
                    if self._on_scan is not None and self._on_scan() > 0:
                        self._replaying = True
                    self._scan_orphans()
                except Exception:
                    log.exception("ledger: looking for what dead processes left failed")
            with self._cond:
                if self._closing:
                    return
                source = self._next_source()
                if source is None:
                    self._cond.wait(max(0.0, self._next_scan - time.monotonic()))
                    continue
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            try:
                self._ship(source)
                delay = self.retry_initial
                self._waiting_since = None
                if self._failing:
                    self._failing = False
                    log.info("ledger: the target is reachable again; shipping the backlog")
            except NotTrimmed as exc:
                self._replaying = True  # they are in the target: sent again, and ignored there
                self._waiting_since = None  # they reached it: nothing is stuck
                self._not_trimmed(exc, delay)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.retry_max)
            except Exception as exc:
                # Never let the thread die: the rows are safe in the outbox, so log and retry
                # (once per outage at warning level; the retries after it at debug level).
                level = logging.DEBUG if self._failing else logging.WARNING
                self._failing = self._replaying = True
                log.log(
                    level,
                    "ledger: shipping to the target failed (%s); %d rows wait in the outbox, "
                    "retrying in %.2fs",
                    type(getattr(exc, "orig", None) or exc).__name__,
                    self.pending(),
                    delay,
                    exc_info=not self.inserter.is_transient(exc),
                )
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, delay)
                delay = min(delay * 2, self.retry_max)

    def _not_trimmed(self, exc: NotTrimmed, delay: float) -> None:
        """Rows reached the target but their outbox's lock, held by another connection, kept
        them in it: said as such, not as a failure to ship (until 2026-12-06 "shipping to the
        target failed (OperationalError)"). At shutdown (the wait given up, see :meth:`close`)
        nothing is wrong; meanwhile the lock was held past the outbox's whole wait."""
        if self._closing:
            log.info(
                "ledger: %d rows shipped; their outbox %s could not be trimmed at shutdown "
                "(locked by another process): they will be sent again and ignored",
                exc.rows,
                exc.path,
            )
            return
        log.warning(
            "ledger: %d rows shipped, but their outbox %s could not be trimmed (locked by "
            "another process): they will be sent again and ignored; retrying in %.2fs",
            exc.rows,
            exc.path,
            delay,
        )

    def _ship(self, source: Outbox) -> None:
        rows = source.peek(self.max_batch)
        if not rows:
            return
        started = time.perf_counter()
        self.drain.move(source, rows)
        elapsed = time.perf_counter() - started
        replayed = self._replaying or source is not self.outbox
        if source is self.outbox and source.pending() == 0:
            self._replaying = False  # the backlog is gone: shipping is on time again
        with self._cond:
            self._cond.notify_all()
        self._report(elapsed, len(rows), len(rows) if replayed else 0)

    def _report(self, seconds: float, rows: int, replayed: int) -> None:
        if replayed:
            self.replayed_rows += replayed
        for hook in tuple(self.ship_hooks):
            try:
                hook(seconds, rows)
            except Exception:
                log.exception("ledger ship hook %r failed", hook)
        if replayed:
            call_count_hooks(self.replay_hooks, replayed, "replay")


class ShipperOwner:
    """What owns one process's shipper (made anew in a forked child): the parts in common."""

    _shipper: OutboxShipper | None = None
    _pid = 0  # the process the shipper belongs to (a forked child makes its own)

    def shipper(self) -> OutboxShipper:
        raise NotImplementedError

    def own_shipper(self) -> OutboxShipper | None:
        """This process's shipper, if it has made one (none is made)."""
        return self._shipper if self._pid == os.getpid() else None

    def pending(self) -> int:
        return 0 if self._shipper is None else self._shipper.pending()

    def wait_shipped(self, timeout: float | None) -> bool:
        shipper = self.shipper()
        return shipper.wait_shipped(shipper.outbox.last_seq, timeout)

    @staticmethod
    def ship_then_close(shipper: OutboxShipper, timeout: float | None) -> bool:
        """Ship for at most ``timeout`` seconds in all, then stop; True if all was shipped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delivered = shipper.wait_shipped(shipper.outbox.last_seq, timeout)
        if not delivered:
            shipper.say_waiting()
        # What is left of the time, not the whole of it again (and a moment to stop in).
        shipper.close(None if deadline is None else max(0.1, deadline - time.monotonic()))
        return delivered
