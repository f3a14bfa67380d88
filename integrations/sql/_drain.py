"""``OutboxDrain``: moves an outbox's oldest rows into the target, so no row can block the others.

A batch goes in with one insert (``ON CONFLICT (request_id)``: a replay is a no-op, see
:class:`~tracking.integrations.sql._target.SpendLogsInserter`) and only then leaves the outbox. If
the target refuses the batch for good (see
:meth:`~tracking.integrations.sql._target.SpendLogsInserter.is_transient`), its rows go in one by
one: a row refused is moved to the target's ``ledger_quarantine`` table with the database's error
text, logged and counted (``quarantine_hooks``), and the rows behind it go in. Only when the
quarantine itself refuses the row does it stay behind in the outbox's local ``rejected`` table
(an outbox left with only such rows is set aside when it closes, see
:mod:`tracking.integrations.sql._outbox`). A transient failure raises with the rows not yet in
the target kept in the outbox, for the next attempt. Rows that reached the target but could not
be deleted from the outbox (another connection held its write lock past the wait, or the outbox
is closing) raise :class:`NotTrimmed`: they stay, and are sent again as no-ops.

The :class:`~tracking.integrations.sql._shipper.OutboxShipper`'s thread drains outboxes with it,
and so does an SQLite ledger at start, for the rows an earlier ledger kept at shutdown.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from ._codec import line_request_id
from ._outbox import Outbox, lock_refused
from ._target import SpendLogsInserter, announce_quarantined, error_text

__all__ = ["NotTrimmed", "OutboxDrain"]

log = logging.getLogger("tracking.ledger")


class NotTrimmed(Exception):
    """``rows`` rows reached the target but stay in the outbox at ``path``: deleting them was
    refused (its write lock held by another connection: see ``__cause__``). Nothing is lost; they
    are sent again, and the target ignores them (it takes a request id once)."""

    def __init__(self, path: object, rows: int) -> None:
        super().__init__(f"{rows} rows in the target stay in {path}: it is locked")
        self.path = path
        self.rows = rows


class OutboxDrain:
    """Moves rows out of outboxes into the target; see the module docstring."""

    def __init__(
        self,
        inserter: SpendLogsInserter,
        quarantine_hooks: list[Callable[[int], None]] | None = None,
    ) -> None:
        self.inserter = inserter
        self.quarantine_hooks = quarantine_hooks if quarantine_hooks is not None else []
        #: Rows moved to the target's ``ledger_quarantine`` table.
        self.quarantined_rows = 0
        #: Rows the quarantine refused too, kept in their outbox's ``rejected`` table.
        self.rejected_rows = 0
        #: Rows that went into the target (a duplicate of a row already there included).
        self.written_rows = 0
        self._trimming: tuple[Outbox, int] | None = None  # see ``trimming``

    def empty(self, source: Outbox, batch: int) -> None:
        """Move every row out of ``source``, ``batch`` at a time; a transient failure raises."""
        while rows := source.peek(batch):
            self.move(source, rows)

    def move(self, source: Outbox, rows: list[tuple[int, str]]) -> None:
        """Move ``rows``, the oldest of ``source`` (from ``peek``), out of it; a transient
        failure raises, keeping in ``source`` the rows not yet in the target."""
        try:
            self.inserter.insert_lines([line for _, line in rows])
        except Exception as exc:
            if self.inserter.is_transient(exc):
                raise
            self._move_one_by_one(source, rows)
        else:
            self.written_rows += len(rows)
            self._trim(source, rows[-1][0], len(rows))

    def _move_one_by_one(self, source: Outbox, rows: list[tuple[int, str]]) -> None:
        # A row quarantined has left the outbox as surely as one shipped: both are counted in
        # ``gone``, which ``remove_through`` takes off the pending count.
        gone = 0
        for seq, line in rows:
            try:
                self.inserter.insert_lines([line])
            except Exception as exc:
                if self.inserter.is_transient(exc):
                    source.remove_through(seq - 1, gone)  # keep what already went through
                    raise
                try:
                    in_target = self._quarantine(source, seq, line, exc)
                except Exception:
                    source.remove_through(seq - 1, gone)
                    raise
                if not in_target:
                    continue  # moved to the outbox's rejected table, off the pending count
            else:
                self.written_rows += 1
            gone += 1
        self._trim(source, rows[-1][0], gone)

    def trimming(self, source: Outbox) -> int:
        """How many rows of ``source`` are in the target and being deleted from it now (waiting
        for its lock, held elsewhere, maybe): 0 between batches."""
        trimming = self._trimming
        return trimming[1] if trimming is not None and trimming[0] is source else 0

    def is_trimming(self) -> bool:
        """Rows of some outbox are in the target and being deleted from it now."""
        return self._trimming is not None

    def _trim(self, source: Outbox, seq: int, count: int) -> None:
        """Delete from ``source`` its ``count`` oldest rows, up to ``seq``, now in the target; a
        lock held elsewhere refusing it raises :class:`NotTrimmed`."""
        self._trimming = (source, count)
        try:
            source.remove_through(seq, count)
        except sqlite3.OperationalError as exc:
            if not lock_refused(exc):
                raise
            raise NotTrimmed(source.path, count) from exc
        finally:
            self._trimming = None

    def _quarantine(self, source: Outbox, seq: int, line: str, refusal: BaseException) -> bool:
        """Move a refused row to the target's quarantine: True, or False when the quarantine
        refused it too and it went to the outbox's ``rejected`` table. A transient failure of
        the quarantine raises (the row stays in the outbox for the next attempt)."""
        request_id = line_request_id(line)
        error = error_text(refusal)
        try:
            self.inserter.quarantine([(request_id, line, error)])
        except Exception as exc:
            if self.inserter.is_transient(exc):
                raise
            self.rejected_rows += 1
            log.error(
                "ledger row %s refused by the target (%s) and by its quarantine (%s); "
                "kept in %s, table rejected",
                request_id,
                error,
                error_text(exc),
                source.path,
            )
            source.reject(seq, line, error)
            return False
        self.quarantined_rows += 1
        announce_quarantined(request_id, error, self.quarantine_hooks)
        return True
