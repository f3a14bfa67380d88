"""``SqlLedger``: the built-in ``"sql"`` integration, one ``spend_logs`` row per call.

Registered by name (``tracking.success_callback = ["sql"]``, URL from ``TRACKING_DATABASE_URL``,
else ``sqlite:///./tracking.db``) or as an instance (``SqlLedger(url=...)``). ``on_end`` turns the
event into a row and hands it to a :class:`~integrations.sql._writer.LedgerWriter`, which writes
off the call path. In ``background`` mode (the SDK's default) the call returns at once and
``flush()`` or interpreter exit delivers what is queued; in ``durable`` mode ``on_end`` returns
only once the row is committed.
"""

from __future__ import annotations

import atexit
from datetime import date, datetime
from typing import TYPE_CHECKING, Literal

from tracking.errors import ConfigurationError

from ._engine import create_ledger_engine
from ._migrate import check_schema
from ._queries import GroupBy, SpendRow, query_spend
from ._schema import event_to_row
from ._writer import LedgerWriter, WriteHook

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

    from tracking.events import ImageEditEvent
    from tracking.integration import CallStart

__all__ = ["LedgerMode", "SqlLedger"]

LedgerMode = Literal["background", "durable"]
_EXIT_TIMEOUT = 10.0


class SqlLedger:
    """Records every call's event as a row of ``spend_logs``."""

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        auto_migrate: bool | None = None,
        mode: LedgerMode = "background",
        max_batch: int = 2000,
    ) -> None:
        if mode not in ("background", "durable"):
            raise ConfigurationError(f"ledger mode must be 'background' or 'durable', not {mode!r}")
        if engine is not None and url is not None:
            raise ConfigurationError("give the ledger a url or an engine, not both")
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else create_ledger_engine(url)
        try:
            check_schema(self.engine, auto_migrate=auto_migrate)
        except BaseException:
            if self._owns_engine:
                self.engine.dispose()
            raise
        self.mode: LedgerMode = mode
        self.writer = LedgerWriter(self.engine, max_batch=max_batch)
        self._closed = False
        atexit.register(self._at_exit)

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"SqlLedger({url!r}, mode={self.mode!r})"

    # -- the integration protocol -------------------------------------------------------------

    def on_start(self, call: CallStart) -> None:
        """Nothing to do before the exchange: the row is written when the call ends."""

    def on_end(self, event: ImageEditEvent) -> None:
        seq = self.writer.submit(event_to_row(event))
        if self.mode == "durable":
            self.writer.wait(seq)

    def flush(self, timeout: float | None = None) -> bool:
        return self.writer.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        self.writer.close(timeout)
        if self._owns_engine:
            self.engine.dispose()

    def _at_exit(self) -> None:
        self.shutdown(_EXIT_TIMEOUT)

    # -- metrics feed -------------------------------------------------------------------------

    def queue_depth(self) -> int:
        """Rows handed to the ledger and not yet committed."""
        return self.writer.queue_depth()

    @property
    def write_hooks(self) -> list[WriteHook]:
        """Callables run as ``hook(seconds, rows)`` after every commit."""
        return self.writer.write_hooks

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
        """Spend in the ledger; see :func:`integrations.sql.query_spend`."""
        return query_spend(self.engine, user=user, since=since, until=until, by=by, limit=limit)
