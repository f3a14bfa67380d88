"""``SqlLedger``: the built-in ``"sql"`` integration, one ``spend_logs`` row per call.

Registered by name (``tracking.success_callback = ["sql"]``, URL from ``TRACKING_DATABASE_URL``,
else ``sqlite:///./tracking.db``) or as an instance (``SqlLedger(url=...)``). ``on_end`` turns the
event into a row and hands it to a :class:`~tracking.integrations.sql._writer.LedgerWriter`, which
group-commits rows off the call path to where they are *acknowledged*:

* an SQLite target is its own outbox: a row is acknowledged once committed to the ledger file
  (rows the file cannot take by the end of ``shutdown()`` are kept in a local outbox, which the
  next ledger for the file writes when it opens, quarantining a row the file refuses for good);
* any other target (PostgreSQL), or an SQLite target given an ``outbox_dir``, gets a local outbox
  (:mod:`tracking.integrations.sql._outbox`): a row is acknowledged once committed there, and an
  :class:`~tracking.integrations.sql._shipper.OutboxShipper` moves it to the target, retrying
  through outages and resuming after a crash or restart.

Two modes: ``background`` (the SDK's default) returns at once and acknowledges off the
call path, so a kill -9 can lose rows not yet acknowledged; ``durable`` returns only once the
row is acknowledged (sync calls wait in ``on_end``, async calls await ``aon_end`` without
blocking their loop). ``flush()`` waits until rows are in the target; ``shutdown()`` and
interpreter exit deliver what they can and leave the rest in the outbox for the next start.

Metrics: ``queue_depth()``, ``outbox_rows()``, ``write_hooks`` (each acknowledgement commit),
``replay_hooks`` (rows shipped late) and ``quarantine_hooks`` (rows refused for good). A replay or
quarantine hook added after the ledger opened is first told the rows counted so far, those of
the opening included (:class:`~tracking.integrations.sql._hooks.CountHooks`), so none is missed
whenever it was added. The ledger keeps its figures itself and answers
``ledger_stats()`` (a :class:`tracking.ledger_stats.LedgerStats`); every ledger adds itself to
:mod:`tracking.ledger_stats`'s live set, which the Prometheus integration reads at scrape time
(``tracking_ledger_*``), so the ledger pushes nothing and needs no exporter loaded before it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tracking import ledger_stats, process_exit
from tracking.environment_numbers import seconds_from_environment
from tracking.errors import ConfigurationError
from tracking.ledger_stats import LedgerStats, WriteTimes

from ._codec import (
    encode_row,
    encode_values,
    event_sqlite_params,
    line_of_sqlite_params,
    line_request_id,
    readable_line,
)
from ._drain import OutboxDrain
from ._engine import DatabaseUnreachableError, create_ledger_engine, outbox_target, redact
from ._fork import new_lock_in_child
from ._gate import SchemaGate
from ._hooks import CountHooks, call_count_hooks
from ._intents import IntentJournal
from ._migrate import check_schema
from ._outbox import BUSY_SLICE, claim_orphans, default_outbox_dir, open_own_outbox
from ._queries import GroupBy, SpendRow, query_spend
from ._schema import event_to_row, event_values
from ._shipper import OutboxShipper, ShipperOwner
from ._target import SpendLogsInserter, error_text
from ._writer import DirectDestination, LedgerWriter, Unstorable, WriteHook

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

    from tracking.events import ImageEditEvent
    from tracking.integration import CallStart
    from tracking.request import ImageEditRequest

__all__ = ["LedgerMode", "ReplayHook", "SqlLedger"]

log = logging.getLogger("tracking.ledger")

#: Seconds a ``background`` ledger's writer gathers rows before committing them (cut short by
#: ``flush()``, shutdown and a full batch). A stream of calls then costs one commit per 50 ms
#: instead of one per call; a kill -9 may lose at most these rows more than without it.
BACKGROUND_LINGER = 0.05

LedgerMode = Literal["background", "durable"]
#: Called with a number of rows: that reached the target late (after an outage, from an orphan),
#: or (a quarantine hook) that it refused for good. See ``SqlLedger.replay_hooks``.
ReplayHook = Callable[[int], None]
#: Seconds the ledger's exit handler gives ``shutdown`` at interpreter exit, unless
#: ``TRACKING_LEDGER_EXIT_SECONDS`` says otherwise (read as the ledger opens; a value that is not
#: a number of seconds >= 0 is logged and this default kept).
_EXIT_TIMEOUT = 10.0
EXIT_SECONDS_ENV = "TRACKING_LEDGER_EXIT_SECONDS"
#: At shutdown, how long to keep shipping: acknowledged rows are safe on disk either way.
_SHIP_AT_SHUTDOWN = 5.0
_MODE_ENV = "TRACKING_LEDGER_MODE"


class _OutboxDestination(ShipperOwner):
    """The writer's destination in front of a remote target: this process's outbox.

    Opened (and its shipper started, draining orphans) at once, and again in a forked child,
    which must have an outbox of its own.
    """

    def __init__(
        self,
        directory: Path,
        inserter: SpendLogsInserter,
        replay_hooks: list[ReplayHook],
        quarantine_hooks: list[ReplayHook],
        *,
        max_batch: int,
        retry_max: float,
    ) -> None:
        self.directory = directory
        self.inserter = inserter
        self._replay_hooks = replay_hooks
        self._quarantine_hooks = quarantine_hooks
        self._max_batch = max_batch
        self._retry_max = retry_max
        self._lock = threading.Lock()
        self._pid = 0
        self._shipper: OutboxShipper | None = None
        self.shipper()
        new_lock_in_child(self)  # another thread may have held it at a fork

    def shipper(self) -> OutboxShipper:
        with self._lock:
            if self._shipper is None or self._pid != os.getpid():
                # A forked child leaves the parent's outbox alone (the parent owns its rows).
                shipper = OutboxShipper(
                    open_own_outbox(self.directory),
                    self.inserter,
                    max_batch=self._max_batch,
                    retry_max=self._retry_max,
                    replay_hooks=self._replay_hooks,
                    quarantine_hooks=self._quarantine_hooks,
                )
                self._shipper, self._pid = shipper, os.getpid()
            return self._shipper

    def prepare(self, row: dict[str, Any]) -> str:
        return encode_row(row)  # ValueError: a row that cannot be stored

    def request_id(self, item: str) -> str:
        return line_request_id(item)

    def write(self, lines: Sequence[str]) -> None:
        shipper = self.shipper()
        shipper.outbox.append(lines)
        shipper.wake()

    def is_transient(self, exc: BaseException) -> bool:
        # Row content never fails here (prepare encoded it); disk full, a lock, even a damaged
        # file: keep the rows in memory and retry rather than drop them.
        return isinstance(exc, sqlite3.Error)

    #: ``quarantine_item`` keeps rows in this outbox's own ``rejected`` table (see the writer).
    quarantines_locally = True

    def quarantine_item(self, item: str, error: str) -> None:
        self.shipper().outbox.keep_refused(item, error)

    def close(self, timeout: float | None) -> None:
        """Ship for at most ``timeout`` seconds in all, then stop the shipper."""
        with self._lock:
            shipper = self._shipper if self._pid == os.getpid() else None
        if shipper is not None:
            self.ship_then_close(shipper, timeout)


class SqlLedger:
    """Records every call's event as a row of ``spend_logs``."""

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        auto_migrate: bool | None = None,
        mode: LedgerMode | None = None,
        outbox_dir: str | os.PathLike[str] | None = None,
        max_batch: int = 2000,
        max_queue: int = 100_000,
        retry_max: float = 2.0,
        linger: float | None = None,
        intents: bool = False,
    ) -> None:
        chosen = mode or os.environ.get(_MODE_ENV) or "background"
        if chosen not in ("background", "durable"):
            raise ConfigurationError(
                f"ledger mode must be 'background' or 'durable', not {chosen!r}"
            )
        if intents and chosen != "durable":
            raise ConfigurationError("ledger intents need mode='durable'")
        if engine is not None and url is not None:
            raise ConfigurationError("give the ledger a url or an engine, not both")
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else create_ledger_engine(url)
        gate = self._check_schema(auto_migrate)
        self.mode: LedgerMode = "durable" if chosen == "durable" else "background"
        self._write_times = WriteTimes()
        # Before anything is replayed or quarantined: the opening below may do both.
        self._replay_hooks = CountHooks("replay")
        self._quarantine_hooks = CountHooks("quarantine")
        inserter = SpendLogsInserter(self.engine, schema_gate=gate)
        self._schema_gate = gate
        #: Writes the rows an earlier SQLite ledger for the file kept (``_write_leftovers``).
        self._leftovers = OutboxDrain(inserter, self._quarantine_hooks)
        #: This target's folder of local outboxes and intents (named once: a relative SQLite
        #: path is the file in the working directory the ledger opened in).
        self._folder = default_outbox_dir(outbox_target(self.engine.url))
        self._outbox: _OutboxDestination | None = None
        if outbox_dir is not None or self.engine.dialect.name != "sqlite":
            directory = Path(outbox_dir) if outbox_dir is not None else self._folder
            self._outbox = _OutboxDestination(
                directory,
                inserter,
                self._replay_hooks,
                self._quarantine_hooks,
                max_batch=max_batch,
                retry_max=retry_max,
            )
        else:
            self._write_leftovers()
        self._intents: IntentJournal | None = None
        #: ``(seq, request id)`` of calls whose intent is done once that row is acknowledged.
        self._done_later: list[tuple[int, str]] = []
        self._lock = threading.Lock()  # a fresh one in a forked child (below)
        new_lock_in_child(self)
        if intents:
            self._intents = IntentJournal(
                Path(outbox_dir) if outbox_dir is not None else self._folder,
                inserter,
                replay_hooks=self._replay_hooks,
                quarantine_hooks=self._quarantine_hooks,
                retry_max=retry_max,
            )
        #: An SQLite ledger's writer's own engine, whose connections wait for the file's lock
        #: a slice at a time (``_outbox.BUSY_SLICE`` ms), tried again for as long as SQLite's
        #: own wait was: shutdown makes a write still waiting give up at the end of its slice,
        #: where SQLite's 10 s wait, which nothing interrupts, outlived shutdown's bound (its
        #: rows are kept for the next start either way). Not with an engine of the caller's.
        self._writer_engine: Engine | None = None
        if self._outbox is None and self._owns_engine:
            self._writer_engine = create_ledger_engine(self.engine.url, busy_timeout_ms=BUSY_SLICE)
        if linger is None:  # nobody waits in background mode: gather rows into fewer commits
            linger = BACKGROUND_LINGER if self.mode == "background" else 0.0
        self.writer = LedgerWriter(
            self._outbox
            if self._outbox is not None
            # in background mode the callers go on while their rows are written
            else DirectDestination(
                self._writer_engine or self.engine,
                callers_run_on=self.mode == "background",
                busy_slices=self._writer_engine is not None,
            ),
            max_batch=max_batch,
            max_queue=max_queue,
            retry_max=retry_max,
            linger=linger,
        )
        self.writer.write_hooks.append(self._count_written)
        self.writer.quarantine_hooks = self._quarantine_hooks
        if self._outbox is None:  # the outbox keeps doubly refused rows in its own table
            self.writer.keep_locally = self._keep_refused
        self._prepare: Callable[[ImageEditEvent], Any] = (
            _outbox_line if self._outbox is not None else event_sqlite_params
        )
        self._closed = False
        self._exit_timeout = seconds_from_environment(EXIT_SECONDS_ENV, _EXIT_TIMEOUT)
        ledger = weakref.ref(self)

        def dispose_in_child() -> None:
            alive = ledger()
            if alive is not None:  # the parent's pooled connections must not be shared
                alive.engine.dispose(close=False)
                if alive._writer_engine is not None:
                    alive._writer_engine.dispose(close=False)

        os.register_at_fork(after_in_child=dispose_in_child)
        process_exit.on_exit(self._at_exit)
        # Rows wait in memory (background mode) and a call in flight has none yet: SIGTERM
        # must end the process through its exit, which writes them, not kill it.
        process_exit.exit_on_sigterm()
        ledger_stats.add_source(self)

    def __repr__(self) -> str:
        return f"SqlLedger({redact(self.engine.url)!r}, mode={self.mode!r})"

    def _check_schema(self, auto_migrate: bool | None) -> SchemaGate | None:
        """Check the schema now; None when it passed, a gate when a PostgreSQL was unreachable.

        Only an unreachable PostgreSQL (refused, timed out, a name that does not resolve, a
        server still starting: a :class:`DatabaseUnreachableError`) defers the check: the ledger
        opens in front of its local outbox, calls go on, their rows wait there, and the check
        runs when the database answers, before any row ships (``_gate``). A database that
        answers and refuses (its schema, a password, a role) or a URL, driver or SQLite file
        that is wrong raises ``ConfigurationError`` here, as before: those are mistakes to
        fix, which waiting cannot. Until 2026-12-05 an unreachable PostgreSQL failed every call
        made while it was away at the process's start (the ``"sql"`` integration's first use).
        """
        try:
            check_schema(self.engine, auto_migrate=auto_migrate)
        except DatabaseUnreachableError as exc:
            log.warning(
                "ledger: %s; calls go on, their rows are kept in the local outbox and ship once "
                "the database answers and its schema is checked",
                exc,
            )
            return SchemaGate(self.engine, auto_migrate)
        except BaseException:
            if self._owns_engine:
                self.engine.dispose()
            raise
        return None

    @property
    def schema_checked(self) -> bool:
        """False while the database has not been reached since the ledger opened (its rows
        wait in the local outbox, its schema unchecked), True once it has."""
        return self._schema_gate is None or self._schema_gate.checked

    # -- the integration protocol -------------------------------------------------------------

    def on_start(self, call: CallStart) -> None:
        """With intents, commit the call's intent before it is sent (see ``_intents``)."""
        if self._intents is not None:
            self._intents.record(call)

    def on_lost_attempts(self, call: CallStart, lost: tuple[ImageEditRequest, ...]) -> None:
        """With intents, rewrite the call's intent to count the attempts whose answer was lost:
        a process killed before the call ends then leaves a row estimating them too."""
        if self._intents is not None:
            self._intents.record(call, lost)

    def on_end(self, event: ImageEditEvent) -> None:
        if self._closed:
            self._keep_late(event)
            return
        seq = self._submit(event)
        if self.mode == "durable":
            try:
                self.writer.wait(seq)
            except BaseException:  # interrupted (Ctrl-C): the row is still written
                self._complete_when_acknowledged(seq, event.request_id)
                raise
            if self._intents is not None:
                self._intents.complete(event.request_id)

    async def aon_end(self, event: ImageEditEvent) -> None:
        """``on_end`` for async calls: a durable call awaits its acknowledgement, loop free."""
        if self._closed:
            self._keep_late(event)
            return
        seq = self._submit(event)
        if self.mode == "durable":
            try:
                await self.writer.wait_async(seq)
            except BaseException:  # cancelled (a client gone): the row is still written
                self._complete_when_acknowledged(seq, event.request_id)
                raise
            if self._intents is not None:
                self._intents.complete(event.request_id)

    def on_end_nowait(self, event: ImageEditEvent) -> None:
        """The row queued without waiting for its acknowledgement: the call's ending was
        interrupted before this ledger's turn (the bus's hand-over). A durable row is still
        written; only the wait is skipped."""
        if self._closed:
            self._keep_late(event)
            return
        self._complete_when_acknowledged(self._submit(event), event.request_id)

    def _complete_when_acknowledged(self, seq: int, request_id: str) -> None:
        """Mark the call's intent done once row ``seq`` is acknowledged, nobody waiting for it
        (an ending interrupted or cancelled). Until 2026-12-05 its intent stayed open for the
        process's life: kept in memory and in every rewrite of the log, and recovered as an
        ``incomplete`` row at the next start (counted twice where the call's own row had been
        quarantined)."""
        if self._intents is None:
            return
        with self._lock:
            self._done_later.append((seq, request_id))
        self._complete_acknowledged()  # it may be acknowledged already

    def _complete_acknowledged(self) -> None:
        if not self._done_later or self._intents is None:
            return
        acknowledged = self.writer.acknowledged()
        with self._lock:
            done = [request_id for seq, request_id in self._done_later if seq <= acknowledged]
            self._done_later = [item for item in self._done_later if item[0] > acknowledged]
        for request_id in done:
            self._intents.complete(request_id)

    def _submit(self, event: ImageEditEvent) -> int:
        # The hot path: the event goes straight to the writer's form, with no row dict between.
        try:
            item = self._prepare(event)
        except ValueError:  # a value the ledger cannot store: the writer logs and counts it
            return self.writer.submit(event_to_row(event))
        return self.writer.submit_prepared((item,))

    def _keep_late(self, event: ImageEditEvent) -> None:
        """A row handed over after :meth:`shutdown` (a call that ended on a thread its
        application left running when it closed the ledger): kept in a local outbox, which the
        next ledger for the target writes, as rows unwritten at shutdown are. It was refused
        with a ``RuntimeError``, and the billed call's row lost (until 2026-12-05)."""
        try:
            line = _item_line(self._prepare(event))
        except ValueError:  # a value no ledger stores: for the quarantine, readable
            self._keep_refused(readable_line(event_to_row(event)), "not storable")
            return
        outbox = open_own_outbox(self._leftovers_dir())
        try:
            outbox.append([line])
        finally:
            outbox.close()
        log.warning(
            "ledger: a row handed over after shutdown is kept in %s; the next ledger for %s "
            "writes it",
            outbox.path,
            redact(self.engine.url),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row handed over so far is in the target database."""
        if self._closed:  # what is left waits in the outbox for the next start
            return self.queue_depth() == 0 and self.outbox_rows() == 0
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.writer.flush(timeout):
            return False
        for shipping in (self._outbox, self._intents):
            if shipping is None:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not shipping.wait_shipped(remaining):
                return False
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Acknowledge what is queued (within ``timeout``), ship for at most 5 s, then close.

        Rows acknowledged but not yet shipped stay in the outbox file; the next ledger for the
        same target (in this process or another) ships them.

        Returns within about ``timeout`` seconds, a few tenths of a second more at most (a
        shipper's last moment to stop, a locked outbox's last wait, ``_outbox.BUSY_SLICE`` ms, and
        keeping the unwritten rows), even while another process holds the write lock of the
        SQLite file or of the outbox.
        """
        if self._closed:
            return
        self._closed = True
        process_exit.cancel(self._at_exit)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.writer.close(timeout):
            self._keep_unwritten()
        if self._outbox is not None:
            remaining = _SHIP_AT_SHUTDOWN
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - time.monotonic()))
            self._outbox.close(remaining)
        if self._intents is not None:
            remaining = _SHIP_AT_SHUTDOWN
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - time.monotonic()))
            self._intents.close(remaining)
        ledger_stats.retire_source(self)
        if self._owns_engine:
            self._dispose_when_unused()

    def _dispose_when_unused(self) -> None:
        """Dispose of the engine now, or, when a shipper's attempt outlived shutdown's deadline
        (a database that stopped answering), once the last such attempt ends: disposing of it
        before left the connection that attempt held open, never closed."""
        shippers = [d.own_shipper() for d in (self._outbox, self._intents) if d is not None]
        lock = threading.Lock()
        left = [len(shippers) + 1]

        def one_done() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self.engine.dispose()
                if self._writer_engine is not None:  # a write still in its slice: closed after
                    self._writer_engine.dispose()

        for shipper in shippers:
            if shipper is None or not shipper.after_stop(one_done):
                one_done()
        one_done()

    def _leftovers_dir(self) -> Path:
        """Where rows kept outside the writer's way go: the outbox folder (given or chosen)."""
        return self._outbox.directory if self._outbox is not None else self._folder

    def _keep_refused(self, item: Any, reason: str) -> None:
        """A row this SQLite file and its quarantine both refuse: kept in a local outbox's
        ``rejected`` table, set aside as ``rejected-<pid>.db`` where the leftovers live
        (``tracking ledger quarantine list`` shows it), never dropped."""
        line = _item_line(item)
        outbox = open_own_outbox(self._leftovers_dir())
        try:
            outbox.keep_refused(line, reason)
        finally:
            outbox.close()

    def _keep_unwritten(self) -> None:
        """Rows the writer could not acknowledge by shutdown's deadline (an SQLite file or an
        outbox file locked by another process, a full disk): they go into another local outbox,
        which the next ledger for the target writes, and the writer stops (it retried until the
        process exited, until 2026-12-06). Should keeping them fail too, each row is logged
        whole at ERROR level, the last place its money can be found. Until 2026-12-05 a
        PostgreSQL ledger's rows were only counted in a log line, and lost.

        The writer may still acknowledge the batch it is writing after this: the target takes
        a request id once, and budgets count a call once, so a row kept twice is never counted
        twice."""
        self.writer.abandon(self._keep_lines)  # a write waiting for the file's lock gives up

    def _keep_lines(self, items: list[Any]) -> None:
        lines = [item.line if isinstance(item, Unstorable) else _item_line(item) for item in items]
        if not lines:
            return
        try:
            outbox = open_own_outbox(self._leftovers_dir())
            try:
                outbox.append(lines)
            finally:
                outbox.close()
        except Exception:
            log.exception("ledger: %d unwritten rows could not be kept; they follow", len(lines))
            for line in lines:
                log.error("ledger: row not recorded: %s", line)
            return
        log.warning(
            "ledger: %d rows not yet written are kept in %s; the next ledger for %s writes them",
            len(lines),
            outbox.path,
            redact(self.engine.url),
        )

    def _write_leftovers(self) -> None:
        """Write the rows an earlier SQLite ledger for this file kept at shutdown (above), as
        the shipper ships an outbox: a row refused for good is quarantined, not in the way."""
        directory = self._leftovers_dir()
        if not directory.is_dir():
            return
        for outbox in claim_orphans(directory):
            if outbox.pending():
                log.info("ledger: writing %d rows kept in %s", outbox.pending(), outbox.path)
            written = self._leftovers.written_rows
            try:
                self._leftovers.empty(outbox, 500)
            except Exception as exc:  # transient (or the outbox file's): rows stay for next start
                log.warning(
                    "ledger: %d rows kept in %s not written yet (%s); the next start writes them",
                    outbox.pending(),
                    outbox.path,
                    error_text(exc),
                    exc_info=not self._leftovers.inserter.is_transient(exc),
                )
            finally:
                outbox.close()
                if late := self._leftovers.written_rows - written:
                    # rows written late, as a shipper's replay
                    call_count_hooks(self._replay_hooks, late, "replay")

    def _at_exit(self) -> None:
        self.shutdown(self._exit_timeout)

    # -- metrics feed -------------------------------------------------------------------------

    def queue_depth(self) -> int:
        """Rows handed to the ledger and not yet acknowledged."""
        return self.writer.queue_depth()

    def outbox_rows(self) -> int:
        """Rows acknowledged in the local outbox and not yet in the target (0 without one),
        with the rows that dead processes' intents left."""
        rows = 0 if self._outbox is None else self._outbox.pending()
        return rows + (0 if self._intents is None else self._intents.pending())

    @property
    def outbox_path(self) -> Path | None:
        """This process's outbox file, None when the SQLite ledger is its own outbox."""
        return None if self._outbox is None else self._outbox.shipper().outbox.path

    def _shippers(self) -> list[OutboxShipper]:
        """The shippers of this ledger's outbox and of dead processes' intents (those it has)."""
        return [d.shipper() for d in (self._outbox, self._intents) if d is not None]

    @property
    def rejected_rows(self) -> int:
        """Rows refused for good (logged; with an outbox, kept in its ``rejected`` table),
        recovered intents' included."""
        shipped = sum(s.rejected_rows for s in self._shippers())
        return self.writer.rejected_rows + self._leftovers.rejected_rows + shipped

    @property
    def quarantined_rows(self) -> int:
        """Rows this process moved to the target's ``ledger_quarantine`` table."""
        quarantined = self.writer.quarantined_rows + self._leftovers.quarantined_rows
        return quarantined + sum(s.quarantined_rows for s in self._shippers())

    def stuck_for(self) -> float:
        """Seconds acknowledged rows have waited with none reaching the target (0: fine).

        Only a ledger with an outbox can be stuck: an SQLite ledger's writer holds its
        callers instead (``queue_depth``).
        """
        return max((shipper.stuck_for() for shipper in self._shippers()), default=0.0)

    @property
    def replayed_rows(self) -> int:
        """Rows this process shipped late: after an outage, from a dead process's outbox or
        intents, or (an SQLite ledger) the rows an earlier ledger for the file kept at shutdown:
        what its ``replay_hooks`` were told (``ledger_stats().replayed_rows``)."""
        return self._replay_hooks.total

    @property
    def replay_hooks(self) -> list[ReplayHook]:
        """Callables run as ``hook(rows)`` with each number of rows that reached the target late
        (after an outage, from a dead process's outbox or intents, kept at shutdown by an
        earlier SQLite ledger for the file).

        A hook added to this list (``append``, ``extend``, ``insert``, ``+=``) after the ledger
        opened is first called at once with the rows replayed so far, those replayed while it
        opened included, then with each count after: what a hook is given always adds up to
        ``ledger_stats().replayed_rows``, whenever it was added. The list is the ledger's own
        (assigning another raises AttributeError); a hook that raises is logged.
        """
        return self._replay_hooks

    @replay_hooks.setter
    def replay_hooks(self, hooks: list[ReplayHook]) -> None:
        _same_hooks(self._replay_hooks, hooks, "replay_hooks")  # ``ledger.replay_hooks += [h]``

    @property
    def quarantine_hooks(self) -> list[ReplayHook]:
        """Callables run as ``hook(rows)`` with each number of rows moved to
        ``ledger_quarantine`` (refused for good).

        As with :attr:`replay_hooks`, a hook added after the ledger opened is first called with
        the rows quarantined so far, those quarantined while it opened included: what a hook is
        given always adds up to ``ledger_stats().quarantined_rows``.
        """
        return self._quarantine_hooks

    @quarantine_hooks.setter
    def quarantine_hooks(self, hooks: list[ReplayHook]) -> None:
        _same_hooks(self._quarantine_hooks, hooks, "quarantine_hooks")

    @property
    def write_hooks(self) -> list[WriteHook]:
        """Callables run as ``hook(seconds, rows)`` after every acknowledgement commit."""
        return self.writer.write_hooks

    def ledger_stats(self) -> LedgerStats:
        """This ledger's figures now, as the metrics show them (``tracking_ledger_*``)."""
        counts, seconds = self._write_times.snapshot()
        return LedgerStats(
            queue_depth=self.queue_depth(),
            outbox_rows=self.outbox_rows(),
            replayed_rows=self._replay_hooks.total,
            quarantined_rows=self._quarantine_hooks.total,
            write_counts=counts,
            write_seconds=seconds,
            stuck_seconds=self.stuck_for(),
        )

    def _count_written(self, seconds: float, rows: int) -> None:
        self._write_times.observe(seconds)
        self._complete_acknowledged()

    # -- queries ------------------------------------------------------------------------------

    def record(self, event: ImageEditEvent) -> int:
        """Queue one event's row directly (bypassing the bus); returns its sequence number."""
        return self.writer.submit(event_to_row(event))

    def spend(
        self,
        *,
        user: str | None = None,
        since: date | datetime | None = None,
        until: date | datetime | None = None,
        by: GroupBy | None = None,
        limit: int | None = None,
    ) -> list[SpendRow]:
        """Spend in the ledger; see :func:`tracking.integrations.sql.query_spend`."""
        return query_spend(self.engine, user=user, since=since, until=until, by=by, limit=limit)


def _same_hooks(own: CountHooks, given: list[ReplayHook], name: str) -> None:
    """``+=`` on a ledger's hook list assigns it back: the list itself is all that may be."""
    if given is not own:
        raise AttributeError(
            f"a ledger's {name} cannot be replaced (its outbox and shippers hold the list); "
            f"add to it: ledger.{name}.append(hook)"
        )


def _item_line(item: Any) -> str:
    """A writer's item as an outbox line: SQLite parameters encoded, an outbox line as is."""
    return line_of_sqlite_params(item) if isinstance(item, tuple) else str(item)


def _outbox_line(event: ImageEditEvent) -> str:
    return encode_values(event_values(event))
