"""The internal protocol every built-in integration implements (docs/architecture.md).

Four methods over one typed event, nothing else:

* ``on_start(call)`` runs in the call, before the first HTTP attempt, on the caller's thread. It
  must be cheap and must never block or raise (what it raises, except ``KeyboardInterrupt``, is
  counted and logged by the bus, never passed to the call). It may add headers to
  ``call.headers`` (they are sent upstream: this is how a span propagates W3C trace context).
* ``on_end(event)`` runs once per call with the finished :class:`~tracking.events.ImageEditEvent`,
  success or failure. It may run without a matching ``on_start`` (a call refused by validation
  never starts) and must handle that. Hooks (metrics, span end) do their work here, cheaply;
  sinks (ledger, logs) enqueue and return.
* ``flush(timeout)`` delivers everything queued, returning True when all of it was delivered.
* ``shutdown(timeout)`` flushes and releases resources; calling it twice is harmless.

Three optional methods, and one attribute:

* ``async aon_end(event)``. When an integration has it, async calls await it *instead of*
  calling ``on_end`` (sync calls still call ``on_end``). It is for an integration that must
  finish something before the call returns without blocking the caller's event loop: the SQL
  ledger in ``durable`` mode awaits its row's acknowledgement there. Like ``on_end`` it must not
  raise; an exception is logged and counted, never passed to the caller.
* ``on_end_nowait(event)``. The event handed over without waiting for it to be acknowledged:
  called instead of ``on_end`` / ``aon_end`` when the call's ending was interrupted (its task
  cancelled, Ctrl-C) while an earlier integration waited, so every integration still gets the
  event and the interrupted caller is not held. The SQL ledger queues the row there.
* ``on_lost_attempts(call, lost)``. Runs in the call, on the caller's thread, before an attempt
  that follows attempts whose answer was lost (sent whole, then a timeout or a dropped
  connection: maybe billed; or a streamed answer accepted with 2xx that broke off before its
  first event); ``call.request`` is the request about to be sent and ``lost`` the
  request of each lost attempt so far. Rare, so it may write: the SQL ledger's intents record
  them, so a process killed before the call ends leaves a row that counts them too. The same
  rules as ``on_start``.
* ``same_records_as``: a hashable value two integrations share when one would record what the
  other does (two Prometheus loggers on one registry: every call counted twice). The bus keeps
  the first listed and logs a warning for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .events import ImageEditEvent
    from .request import CallOptions, ImageEditRequest

__all__ = ["CallStart", "Integration"]


@dataclass(slots=True)
class CallStart:
    """What is known of a call when it starts: enough to open a span around the exchange."""

    request_id: str
    call_type: str
    request: ImageEditRequest
    options: CallOptions
    api_base: str  #: host[:port] of the upstream
    start_time: datetime
    #: the upstream's port, its scheme's default when ``api_base`` names none
    server_port: int | None = None
    #: Extra headers for the upstream request (trace context); integrations may add to it.
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Integration(Protocol):
    """A built-in integration fed by the bus."""

    def on_start(self, call: CallStart) -> None: ...

    def on_end(self, event: ImageEditEvent) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> None: ...
