"""An integration that keeps every event it is handed, for tests of code that makes calls.

Register it like any integration (``tracking.callbacks.append(recorder)``), or use
:func:`recording` to register it for the length of a ``with`` block; ``events`` then holds each
finished call's :class:`~tracking.events.ImageEditEvent`, one per call, in the order the calls
ended. It is thread-safe and does no I/O, so it can sit beside any other integration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events import ImageEditEvent
    from ..integration import CallStart

__all__ = ["EventRecorder", "recording"]


class EventRecorder:
    """Implements the integration protocol; ``started`` and ``events`` list what it saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: list[CallStart] = []
        self.events: list[ImageEditEvent] = []

    def on_start(self, call: CallStart) -> None:
        with self._lock:
            self.started.append(call)

    def on_end(self, event: ImageEditEvent) -> None:
        with self._lock:
            self.events.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        pass

    @property
    def last(self) -> ImageEditEvent:
        """The most recent event; an ``IndexError`` before any."""
        return self.events[-1]

    def for_request(self, request_id: str) -> list[ImageEditEvent]:
        """The events of one call (exactly one, when the SDK keeps its promise)."""
        return [event for event in self.events if event.request_id == request_id]

    def clear(self) -> None:
        with self._lock:
            self.started.clear()
            self.events.clear()


@contextmanager
def recording() -> Iterator[EventRecorder]:
    """A fresh :class:`EventRecorder` registered in ``tracking.callbacks`` inside the block."""
    import tracking

    recorder = EventRecorder()
    tracking.callbacks.append(recorder)
    try:
        yield recorder
    finally:
        tracking.callbacks[:] = [entry for entry in tracking.callbacks if entry is not recorder]
