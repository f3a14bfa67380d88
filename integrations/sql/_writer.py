"""``LedgerWriter``: batched, idempotent writes of ledger rows on one background thread.

Callers hand rows to :meth:`LedgerWriter.submit`, which only appends to an in-memory queue and
returns a sequence number. One worker thread takes everything queued (up to ``max_batch`` rows),
inserts it in one transaction with ``INSERT ... ON CONFLICT (request_id) DO NOTHING`` and
commits: group commit, so rows that arrive while a commit is in progress share the next one
and no artificial delay is ever added. A replayed row is a no-op, never a double count.

A row is *acknowledged* once its transaction has committed; :meth:`wait` blocks until a given
sequence number is, which is what a ``durable`` mode waits on, and :meth:`flush` waits for
everything submitted so far. Connection failures and lock timeouts are retried with capped
exponential backoff, keeping the rows (the ledger never drops); a row the database itself refuses
(bad data) is isolated from its batch, logged with its request id and counted in
``rejected_rows``, so it cannot block the rows behind it.

For the metrics integration: :meth:`queue_depth` (rows submitted but not yet acknowledged) and
``write_hooks``, callables run as ``hook(seconds, rows)`` after every commit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ._schema import spend_logs

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["LedgerWriter", "WriteHook"]

log = logging.getLogger("tracking.ledger")

#: Called after each commit with the seconds the write took and the rows it carried.
WriteHook = Callable[[float, int], None]

_TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


def insert_ignoring_duplicates(engine: Engine) -> sa.Executable:
    """``INSERT INTO spend_logs ... ON CONFLICT (request_id) DO NOTHING`` for the engine."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(spend_logs).on_conflict_do_nothing(index_elements=["request_id"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(spend_logs).on_conflict_do_nothing(index_elements=["request_id"])


class LedgerWriter:
    """Group-commits rows into ``spend_logs``; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 2000,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.engine = engine
        self.max_batch = max_batch
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.write_hooks: list[WriteHook] = []
        self.rejected_rows = 0
        self._statement = insert_ignoring_duplicates(engine)
        self._cond = threading.Condition()
        self._pending: deque[dict[str, Any]] = deque()
        self._submitted = 0  # sequence number of the last row submitted
        self._acknowledged = 0  # every row up to this sequence number is committed (or rejected)
        self._closing = False
        self._thread: threading.Thread | None = None
        writer = weakref.ref(self)

        def restart_in_child() -> None:
            alive = writer()
            if alive is not None:
                alive._after_fork()

        os.register_at_fork(after_in_child=restart_in_child)

    # -- the call path ----------------------------------------------------------------------

    def submit(self, row: dict[str, Any]) -> int:
        """Queue one row; returns its sequence number for :meth:`wait`. Never blocks on I/O."""
        return self.submit_many((row,))

    def submit_many(self, rows: Sequence[dict[str, Any]]) -> int:
        """Queue several rows; returns the sequence number of the last one."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the ledger writer is shut down")
            self._pending.extend(rows)
            self._submitted += len(rows)
            seq = self._submitted
            if self._thread is None:
                self._start()
            self._cond.notify_all()
            return seq

    def queue_depth(self) -> int:
        """Rows submitted and not yet acknowledged (queued or in the batch being written)."""
        return self._submitted - self._acknowledged

    def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Block until row ``seq`` is acknowledged; False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._acknowledged >= seq, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row submitted so far is acknowledged."""
        return self.wait(self._submitted, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the worker; True when nothing was left unwritten. Idempotent."""
        delivered = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and delivered:
            thread.join(timeout)
        if not delivered:
            log.error("ledger writer shut down with %d rows not yet written", self.queue_depth())
        return delivered

    # -- the worker ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracking-ledger", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The parent's worker thread does not exist here, and its pooled connections must not be
        # shared: start afresh with an empty queue (the parent still owns the rows it queued).
        self._cond = threading.Condition()
        self._pending = deque()
        self._submitted = self._acknowledged = 0
        self._thread = None
        self.engine.dispose(close=False)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._closing)
                if not self._pending:
                    return  # closing and drained
                count = min(len(self._pending), self.max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
            self._write_with_retries(batch)
            with self._cond:
                self._acknowledged += len(batch)
                self._cond.notify_all()

    def _write_with_retries(self, batch: list[dict[str, Any]]) -> None:
        delay = self.retry_initial
        while True:
            try:
                self._write(batch)
                return
            except _TRANSIENT as exc:
                log.warning(
                    "ledger write of %d rows failed (%s); retrying in %.2fs",
                    len(batch),
                    type(getattr(exc, "orig", None) or exc).__name__,
                    delay,
                )
            except sa.exc.SQLAlchemyError:
                self._write_one_by_one(batch)
                return
            time.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        with self.engine.begin() as conn:
            conn.execute(self._statement, batch)
        elapsed = time.perf_counter() - started
        for hook in tuple(self.write_hooks):
            try:
                hook(elapsed, len(batch))
            except Exception:
                log.exception("ledger write hook %r failed", hook)

    def _write_one_by_one(self, batch: list[dict[str, Any]]) -> None:
        for row in batch:
            delay = self.retry_initial
            while True:
                try:
                    self._write([row])
                    break
                except _TRANSIENT:
                    time.sleep(delay)
                    delay = min(delay * 2, self.retry_max)
                except sa.exc.SQLAlchemyError as exc:
                    self.rejected_rows += 1
                    log.error(
                        "ledger row %s refused by the database (%s); it is not recorded",
                        row.get("request_id"),
                        type(getattr(exc, "orig", None) or exc).__name__,
                    )
                    break
