"""The proxy's ledger: every call's row committed before its answer leaves, without stalling.

DESIGN 7 wants a proxied response sent only once its ledger row is acknowledged. The ledger's
own ``durable`` mode waits inside ``on_end``, which for an async call blocks the event loop: no
other request moves until that one row is committed, so every row pays for a commit of its own.
Here the rows are queued as in ``background`` mode (:class:`ProxyLedger` is the integration on
the bus; ``on_end`` only queues and notes the row's sequence number for the request being
served), and the request handler then awaits :meth:`ProxyLedger.acknowledged`: one waiter thread
follows the writer's commits and wakes every request whose row is in, so concurrent requests
share one group commit and the loop never blocks. ``ledger_mode: background`` skips the wait.

The ledger is ``general_settings.database_url``, else ``TRACKING_DATABASE_URL``, else
``sqlite:///./tracking.db``; SQLite is migrated at start, PostgreSQL only with ``auto_migrate:
true`` (else ``tracking migrate`` first).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from integrations.sql import SqlLedger

    from ..config import ProxyConfig
    from ..events import ImageEditEvent
    from ..integration import CallStart

__all__ = ["ProxyLedger", "ledger_url", "open_ledger"]

#: The sequence number of the row queued by the call the current task is serving.
_ROW: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "tracking_proxy_row", default=None
)
_POLL = 1.0  # seconds: how often the waiter looks for a shutdown while rows are pending


def ledger_url(config: ProxyConfig) -> str:
    """general_settings.database_url, else TRACKING_DATABASE_URL, else ./tracking.db."""
    from integrations.sql import DEFAULT_URL

    return config.general_settings.database_url or DEFAULT_URL


def open_ledger(config: ProxyConfig) -> ProxyLedger:
    """The ledger every proxied call is recorded in, its schema checked at once."""
    from integrations.sql import SqlLedger

    general = config.general_settings
    ledger = SqlLedger(
        url=ledger_url(config),
        mode="background",  # the wait happens in the request handler, off the loop
        auto_migrate=True if general.auto_migrate else None,
    )
    return ProxyLedger(ledger, durable=general.ledger_mode != "background")


class ProxyLedger:
    """The ``"sql"`` ledger as the proxy runs it (an integration for the bus)."""

    def __init__(self, ledger: SqlLedger, *, durable: bool = True) -> None:
        self.ledger = ledger
        self.durable = durable
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the integration protocol -------------------------------------------------------------

    def on_start(self, call: CallStart) -> None:
        """Nothing before the exchange: the row is written when the call ends."""

    def on_end(self, event: ImageEditEvent) -> None:
        _ROW.set(self.ledger.record(event))

    def flush(self, timeout: float | None = None) -> bool:
        return self.ledger.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        self.ledger.shutdown(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the request handler's side ---------------------------------------------------------------

    @staticmethod
    def begin() -> None:
        """Forget any row noted in this context: the request about to be served has none yet."""
        _ROW.set(None)

    async def acknowledged(self) -> None:
        """Return once the row of the call just served (if it made one) is committed."""
        seq = _ROW.get()
        if seq is None or not self.durable or self.ledger.writer.wait(seq, 0):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            heapq.heappush(self._waiting, (seq, next(self._order), future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._follow_commits, name="tracking-proxy-ledger-acks", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        await future

    def _follow_commits(self) -> None:
        writer = self.ledger.writer
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return
                lowest = self._waiting[0][0]
            writer.wait(lowest, _POLL)
            ready: list[asyncio.Future[None]] = []
            with self._cond:
                while self._waiting and writer.wait(self._waiting[0][0], 0):
                    ready.append(heapq.heappop(self._waiting)[2])
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for future in ready:
                by_loop.setdefault(future.get_loop(), []).append(future)
            for loop, futures in by_loop.items():  # one wake-up per loop for the whole commit
                loop.call_soon_threadsafe(_settle, futures)


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # the request may have been cancelled meanwhile
            future.set_result(None)
