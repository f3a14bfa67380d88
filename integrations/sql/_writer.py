"""``LedgerWriter``: group commit of ledger rows on one background thread, and acknowledgement.

Callers hand rows to :meth:`LedgerWriter.submit`, which prepares each row for its destination
(parameters or an outbox line, on the caller's thread, so the worker's time goes to the
database), appends it to an in-memory queue and returns a sequence number. One worker thread
takes everything queued (up to ``max_batch`` rows) and writes it to its *destination* in one
transaction: the SQLite ledger itself, or the local outbox in front of another database
(:mod:`tracking.integrations.sql._outbox`). That is group commit: rows that arrive while a commit
is in progress share the next one. No delay is added while anyone waits for a row; only with
``linger`` (``background`` mode, where nobody waits) does the worker gather rows for that long
before committing, and a ``wait``, ``flush`` or ``close`` cuts the gathering short.

A row is *acknowledged* once its batch has committed there; :meth:`wait` blocks until a given
sequence number is (what ``durable`` mode waits on in a sync call), :meth:`wait_async` awaits it
without blocking the event loop (one wake-up per loop per batch, however many calls wait), and
:meth:`flush` waits for everything submitted so far. Waiting threads are woken in a chain: the
worker releases the first one a commit acknowledged, each woken thread releases the next, and
the worker waits for the last (at most ``_CHAIN_WAIT``) before it takes its next batch. So the
woken threads do not all contend for the GIL at once, nor with the worker in mid-insert, and
the rows they hand in next share one commit instead of trickling into several.

Transient failures (a lock held elsewhere, a lost connection) are retried with capped
exponential backoff, keeping the rows: the ledger never drops. A row that cannot be prepared (a
naive timestamp, a non-finite amount in a hand-made event) is kept as its text
(:class:`Unstorable`) and quarantined by the worker with why, so it cannot block the rows behind
it (until 2026-12-04 it was logged and dropped). One the destination refuses is
quarantined (``quarantine_hooks``, ``quarantined_rows``); one its quarantine refuses too goes to
``keep_locally`` (an SQLite ledger's local ``rejected-<pid>.db``) and counts in
``rejected_rows``.

A :meth:`LedgerWriter.close` that cannot deliver everything by its deadline leaves the rows to
:meth:`LedgerWriter.abandon`, which hands them to the caller to keep elsewhere (the ledger keeps
them in another local outbox), releases the callers waiting for them, and stops the worker at
its next retry.

The queue is bounded (``max_queue``): it only fills when the destination cannot commit at all
(the outbox's disk, or a locked SQLite ledger), and then :meth:`submit` waits for room instead
of growing without limit. For metrics: :meth:`queue_depth` and ``write_hooks``, callables run as
``hook(seconds, rows)`` after every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._codec import readable_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["BatchDestination", "DirectDestination", "LedgerWriter", "Unstorable", "WriteHook"]

log = logging.getLogger("tracking.ledger")

#: Called after each commit with the seconds the write took and the rows it carried.
WriteHook = Callable[[float, int], None]
#: How long the worker waits at most for the threads it woke to be awake (see ``_run``).
_CHAIN_WAIT = 0.02
_Waiter = tuple[int, int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


@dataclass(frozen=True, slots=True)
class Unstorable:
    """A submitted row no destination can take as it is (``prepare`` raised ValueError): its
    text (:func:`~tracking.integrations.sql._codec.readable_line`) and why, quarantined by the
    worker like a row the database refused, so it is kept and counted, never dropped."""

    line: str
    reason: str


class _Abandoned(Exception):
    """The worker's rows were handed over (:meth:`LedgerWriter.abandon`): it stops."""


class BatchDestination(Protocol):
    """Where the writer commits: rows are prepared once, then written a batch per transaction."""

    def prepare(self, row: dict[str, Any]) -> Any:
        """The row in the form ``write`` takes; ValueError for a row that cannot be stored."""
        ...

    def write(self, items: Sequence[Any]) -> None: ...

    def is_transient(self, exc: BaseException) -> bool: ...

    def request_id(self, item: Any) -> str: ...

    def quarantine_item(self, item: Any, error: str) -> None:
        """Keep an item the destination refused for good, with the error (see _target)."""
        ...


class DirectDestination:
    """The target database itself (an SQLite ledger is its own outbox)."""

    def __init__(
        self, engine: Engine, *, callers_run_on: bool = False, busy_slices: bool = False
    ) -> None:
        from ._target import SpendLogsInserter

        self.inserter = SpendLogsInserter(
            engine, callers_run_on=callers_run_on, busy_slices=busy_slices
        )
        #: Closing: a write waiting for a lock held elsewhere gives up (``busy_slices`` only).
        self.stop_waiting = self.inserter.stop_waiting
        self.is_transient = self.inserter.is_transient
        self.prepare = self.inserter.prepare
        self.write = self.inserter.insert_prepared
        self.request_id = self.inserter.request_id
        self.quarantine_item = self.inserter.quarantine_item


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for future in waiters:
        if not future.done():  # a caller may have been cancelled meanwhile
            future.set_result(None)


class _SyncWaiter:
    """A thread waiting in :meth:`LedgerWriter.wait`, asleep on a lock of its own."""

    __slots__ = ("abandoned", "chained", "lock", "next")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.next: _SyncWaiter | None = None
        self.chained = False  # in a chain of acknowledged waiters: it will be woken
        self.abandoned = False  # its wait timed out before that

    def pass_on(self) -> None:
        if self.next is not None:
            self.next.lock.release()


class LedgerWriter:
    """Group-commits rows into a destination; see the module docstring."""

    def __init__(
        self,
        destination: Engine | BatchDestination,
        *,
        max_batch: int = 2000,
        max_queue: int = 100_000,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        linger: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_queue < max_batch:
            raise ValueError("max_queue must be at least max_batch")
        from sqlalchemy.engine import Engine

        self.destination: BatchDestination = (
            DirectDestination(destination) if isinstance(destination, Engine) else destination
        )
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        #: Seconds the worker waits for more rows after the first of a batch arrives, unless
        #: someone waits for a row (``wait``, ``flush``, ``close``) or the batch fills: for
        #: ``background`` mode, where nobody waits, so that a stream of single rows becomes one
        #: commit per ``linger`` instead of one commit (and one thread wake-up) per row.
        self.linger = linger
        self.write_hooks: list[WriteHook] = []
        #: Called with a count of rows moved to the quarantine.
        self.quarantine_hooks: list[Callable[[int], None]] = []
        #: The last resort for a row the destination and its quarantine both refuse:
        #: ``keep_locally(item, reason)`` keeps it in a local file (an SQLite ledger sets it;
        #: the outbox destination keeps such rows in its own ``rejected`` table).
        self.keep_locally: Callable[[Any, str], None] | None = None
        self.rejected_rows = 0
        self.quarantined_rows = 0
        self._reset()
        writer = weakref.ref(self)

        def restart_in_child() -> None:
            alive = writer()
            if alive is not None:
                alive._reset()

        os.register_at_fork(after_in_child=restart_in_child)

    def _reset(self) -> None:
        # Also run in a forked child: the parent's worker thread does not exist there, and the
        # parent still owns the rows it queued, so the child starts afresh.
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the worker waits here for rows
        self._acked = threading.Condition(lock)  # callers wait here for room in the queue
        self._pending: deque[Any] = deque()
        self._in_flight: list[Any] = []  # the batch the worker is writing (or retrying)
        self._submitted = 0  # sequence number of the last row submitted
        self._acknowledged = 0  # every row up to this sequence number is committed (or rejected)
        self._async_waiters: list[_Waiter] = []
        self._sync_waiters: list[tuple[int, int, _SyncWaiter]] = []
        self._tiebreak = itertools.count()
        self._closing = False
        self._idle = False  # the worker waits for a first row: a submit must wake it
        self._lingering = False  # the worker waits for more rows: only a waiter wakes it
        self._thread: threading.Thread | None = None
        self._write_seconds = 0.0  # time the current batch's writes took, for write_hooks
        #: Set by :meth:`abandon`: the worker stops at its next retry, writing nothing more.
        self._abandoned = threading.Event()

    # -- the call path ----------------------------------------------------------------------

    def submit(self, row: dict[str, Any]) -> int:
        """Queue one row; returns its sequence number for :meth:`wait`. Never blocks on I/O."""
        return self.submit_many((row,))

    def submit_many(self, rows: Sequence[dict[str, Any]]) -> int:
        """Queue several rows; returns the sequence number of the last one."""
        prepare = self.destination.prepare
        try:
            items = [prepare(row) for row in rows]
        except ValueError:
            items = self._prepare_one_by_one(rows)
        return self.submit_prepared(items)

    def submit_prepared(self, items: Sequence[Any]) -> int:
        """Queue items already in the destination's form; returns the last one's number."""
        rows = items
        with self._cond:
            if self._closing:
                raise RuntimeError("the ledger writer is shut down")
            if len(self._pending) + len(rows) > self.max_queue and self._pending:
                # The destination is not committing: wait for room rather than grow unbounded.
                self._acked.wait_for(
                    lambda: len(self._pending) + len(rows) <= self.max_queue or not self._pending
                )
            self._pending.extend(rows)
            self._submitted += len(rows)
            seq = self._submitted
            if self._thread is None:
                self._start()
            if self._idle or len(self._pending) >= self.max_batch:
                self._cond.notify()  # a busy worker takes these rows when its commit is done
            return seq

    def _prepare_one_by_one(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        prepared: list[Any] = []
        for row in rows:
            try:
                prepared.append(self.destination.prepare(row))
            except ValueError as exc:
                # Its text goes to the quarantine, from the worker's thread (``_keep_unstorable``).
                reason = f"the row cannot be stored as it is: {exc}"
                log.error("ledger row %s: %s; quarantined", row.get("request_id"), reason)
                prepared.append(Unstorable(readable_line(row), reason))
        return prepared

    def queue_depth(self) -> int:
        """Rows submitted and not yet acknowledged (queued or in the batch being written)."""
        return self._submitted - self._acknowledged

    def acknowledged(self) -> int:
        """The sequence number up to which every row is acknowledged (``write_hooks`` run
        after it moved)."""
        return self._acknowledged

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Block until row ``seq`` is acknowledged; False if ``timeout`` ran out first."""
        # Each waiter sleeps on a lock of its own. After a commit the worker releases only the
        # first acknowledged waiter; each one woken wakes the next (see ``_run``).
        with self._cond:
            if self._acknowledged >= seq:
                return True
            waiter = _SyncWaiter()
            heapq.heappush(self._sync_waiters, (seq, next(self._tiebreak), waiter))
            if self._lingering:
                self._cond.notify()  # someone waits now: commit without lingering
        woken = False
        try:
            woken = waiter.lock.acquire(timeout=-1 if timeout is None else timeout)
        finally:  # also on an exception (KeyboardInterrupt): the chain must go on
            if woken:
                waiter.pass_on()
            else:
                woken = self._leave(waiter)
        return woken

    def _leave(self, waiter: _SyncWaiter) -> bool:
        """A waiter gives up (timeout): True if its row was acknowledged after all."""
        with self._cond:
            if not waiter.chained:
                waiter.abandoned = True  # the worker skips it
                return False
        waiter.pass_on()  # woken any moment: wake the next one (before its turn is fine)
        return True

    async def wait_async(self, seq: int) -> None:
        """Wait, without blocking the running event loop, until row ``seq`` is acknowledged."""
        if self._acknowledged >= seq:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._acknowledged >= seq:
                return
            heapq.heappush(self._async_waiters, (seq, next(self._tiebreak), loop, future))
            if self._lingering:
                self._cond.notify()
        await future

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row submitted so far is acknowledged."""
        return self.wait(self._submitted, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the worker; True when nothing was left unwritten. Idempotent."""
        delivered = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._acked.notify_all()
            thread = self._thread
        if thread is not None and delivered:
            thread.join(timeout)
        if not delivered:
            log.error("ledger writer shut down with %d rows not yet written", self.queue_depth())
        return delivered

    def unwritten(self) -> list[Any]:
        """The rows not yet written: the batch being written (or retried), then the queue.

        After a :meth:`close` that could not deliver them, for keeping them elsewhere. The worker
        may still write the batch it holds; the ledger's inserts of a request id already there
        are no-ops, so keeping it too never counts it twice.
        """
        with self._cond:
            return [*self._in_flight, *self._pending]

    # -- the worker ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracking-ledger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: bool(self._pending) or self._closing)
                self._idle = False
                if self.linger > 0:
                    self._linger()
                if not self._pending:
                    return  # closing and drained (or abandoned)
                count = min(len(self._pending), self.max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
                self._in_flight = batch
            try:
                self._write_with_retries(batch)
            except _Abandoned:
                return  # its rows were handed over by ``abandon``
            sentinel = _SyncWaiter()
            with self._cond:
                if self._abandoned.is_set():
                    return  # written, and handed over too: the target takes a request id once
                self._in_flight = []
                self._acknowledged += len(batch)
                self._acked.notify_all()
                head = self._chain_sync_waiters(sentinel)
                ready = self._ready_waiters()
            self._report_written(len(batch))
            self._wake(head, ready)
            if head is not None:
                # Until the last of them is awake, most of those threads are handing in their
                # next row: waiting for it makes the next batch one group instead of a trickle
                # (and keeps them from contending for the GIL with the next write).
                sentinel.lock.acquire(timeout=_CHAIN_WAIT)

    @staticmethod
    def _wake(
        head: _SyncWaiter | None,
        ready: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]],
    ) -> None:
        """Wake the acknowledged waiters: the async ones' loops, and the first of the chain of
        sync ones (each wakes the next)."""
        for loop, futures in ready.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures)
        if head is not None:
            head.lock.release()

    def abandon(self, keep: Callable[[list[Any]], None]) -> None:
        """After a :meth:`close` that could not deliver: hand the rows not yet written (the
        batch being written or retried, then the queue) to ``keep``, which keeps them elsewhere,
        and stop the worker at its next retry instead of retrying until the process exits
        (every 2 s, logging each time, on an outbox already closed: until 2026-12-06). The
        callers still waiting for those rows are then released, as acknowledged: the rows are
        in ``keep``'s hands. A write waiting for a lock held elsewhere gives up (the
        destination's ``stop_waiting``: an SQLite ledger's file), logged as given up, not as
        retried ("retrying" was logged until 2026-12-07). The worker may still finish the write
        it is in; the target takes a request id once, so a row kept twice is never counted
        twice."""
        with self._cond:
            rows = [*self._in_flight, *self._pending]
            self._pending.clear()
            self._closing = True
            self._abandoned.set()
            self._cond.notify_all()
            self._acked.notify_all()
        # after ``_abandoned`` is set: the write it ends is not logged as one to retry
        stop_waiting = getattr(self.destination, "stop_waiting", None)
        if stop_waiting is not None:  # a write waiting for a lock held elsewhere gives up
            stop_waiting()
        try:
            keep(rows)
        finally:
            with self._cond:
                self._acknowledged = self._submitted
                head = self._chain_sync_waiters(_SyncWaiter())
                ready = self._ready_waiters()
            self._wake(head, ready)

    def _pause(self, seconds: float) -> None:
        """Wait before a retry; raise :class:`_Abandoned` once the rows were handed over."""
        if self._abandoned.wait(seconds):
            raise _Abandoned

    def _linger(self) -> None:
        """Wait (holding ``_cond``'s lock between waits) for more rows, up to ``linger``."""
        deadline = time.monotonic() + self.linger
        self._lingering = True
        try:
            while (
                len(self._pending) < self.max_batch
                and not self._closing
                and not self._sync_waiters
                and not self._async_waiters
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
        finally:
            self._lingering = False

    def _chain_sync_waiters(self, sentinel: _SyncWaiter) -> _SyncWaiter | None:
        # The acknowledged waiters are woken in a chain, each by the one before it, so that
        # they do not all contend for the GIL (and with this thread) at once.
        head: _SyncWaiter | None = None
        tail: _SyncWaiter | None = None
        waiters = self._sync_waiters
        while waiters and waiters[0][0] <= self._acknowledged:
            waiter = heapq.heappop(waiters)[2]
            if waiter.abandoned:
                continue
            waiter.chained = True
            if tail is None:
                head = waiter
            else:
                tail.next = waiter
            tail = waiter
        if tail is not None:
            tail.next = sentinel  # the last one wakes this thread
        return head

    def _ready_waiters(self) -> dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]]:
        ready: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        waiters = self._async_waiters
        while waiters and waiters[0][0] <= self._acknowledged:
            _, _, loop, future = heapq.heappop(waiters)
            ready.setdefault(loop, []).append(future)
        return ready

    def _write_with_retries(self, batch: list[Any]) -> None:
        if any(type(item) is Unstorable for item in batch):
            for item in batch:
                if type(item) is Unstorable:
                    self._keep_unstorable(item)
            batch = [item for item in batch if type(item) is not Unstorable]
            if not batch:
                return
        delay = self.retry_initial
        while True:
            try:
                self._write(batch)
                return
            except Exception as exc:
                if not self.destination.is_transient(exc):
                    self._write_one_by_one(batch)
                    return
                error = type(getattr(exc, "orig", None) or exc).__name__
                if self._abandoned.is_set():
                    # shutdown gave up on the write (a lock held elsewhere): nothing retries;
                    # "retrying" was logged here until 2026-12-07
                    log.warning(
                        "ledger write of %d rows failed at shutdown (%s); not retried: the "
                        "rows not yet written are kept for the next start",
                        len(batch),
                        error,
                    )
                    raise _Abandoned from None
                log.warning(
                    "ledger write of %d rows failed (%s); retrying in %.2fs",
                    len(batch),
                    error,
                    delay,
                )
            self._pause(delay)
            delay = min(delay * 2, self.retry_max)

    def _write(self, batch: Sequence[Any]) -> None:
        started = time.perf_counter()
        self.destination.write(batch)
        self._write_seconds += time.perf_counter() - started

    def _report_written(self, rows: int) -> None:
        # After the acknowledgement, so a hook reading ``queue_depth`` sees these rows gone (an
        # idle ledger's gauge reads 0, not the size of its last batch).
        seconds, self._write_seconds = self._write_seconds, 0.0
        for hook in tuple(self.write_hooks):
            try:
                hook(seconds, rows)
            except Exception:
                log.exception("ledger write hook %r failed", hook)

    def _write_one_by_one(self, batch: list[Any]) -> None:
        for row in batch:
            delay = self.retry_initial
            while True:
                try:
                    self._write([row])
                    break
                except Exception as exc:
                    if self.destination.is_transient(exc):
                        self._pause(delay)
                        delay = min(delay * 2, self.retry_max)
                        continue
                    refusal = exc
                if self._set_aside(row, refusal):
                    break
                self._pause(delay)
                delay = min(delay * 2, self.retry_max)

    def _keep_unstorable(self, item: Unstorable) -> None:
        """Quarantine a row that could not be prepared, as its text. An outbox (a remote
        target's) keeps it in its own ``rejected`` table, as a row the target's quarantine
        refused, and ``rejected_rows`` counts it: its values would not go into the target."""
        if not getattr(self.destination, "quarantines_locally", False):
            self._until_done(lambda: self._set_aside(item.line, ValueError(item.reason)))
            return

        def keep() -> bool:
            try:
                self.destination.quarantine_item(item.line, item.reason)
            except Exception as exc:
                if self.destination.is_transient(exc):
                    return False  # tried again
                log.exception("ledger: a row that cannot be stored could not be kept either")
            return True

        self._until_done(keep)
        self.rejected_rows += 1

    def _until_done(self, attempt: Callable[[], bool]) -> None:
        """Call ``attempt`` until it returns True, backing off between tries."""
        delay = self.retry_initial
        while not attempt():
            self._pause(delay)
            delay = min(delay * 2, self.retry_max)

    def _set_aside(self, row: Any, refusal: BaseException) -> bool:
        """Quarantine a row the destination refused for good; False to try again later."""
        from ._target import announce_quarantined, error_text

        request_id = self.destination.request_id(row)
        error = error_text(refusal)
        try:
            self.destination.quarantine_item(row, error)
        except Exception as exc:
            if self.destination.is_transient(exc):
                return False
            self.rejected_rows += 1
            reason = f"{error}; its quarantine refused it too: {error_text(exc)}"
            if self.keep_locally is not None:
                try:
                    self.keep_locally(row, reason)
                except Exception as kept:
                    reason = f"{reason}; keeping it locally failed: {error_text(kept)}"
                else:
                    log.error("ledger row %s refused (%s); kept locally", request_id, reason)
                    return True
            log.error("ledger row %s refused (%s); it is not recorded", request_id, reason)
            return True
        self.quarantined_rows += 1
        announce_quarantined(request_id, error, self.quarantine_hooks)
        return True
