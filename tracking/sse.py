"""Server-Sent Events: an incremental decoder for what the upstream streams, and the encoder the
proxy relays with.

:class:`SSEDecoder` takes the answer's bytes as they arrive, in chunks of any size, and returns
each event once its closing blank line has arrived: the ``event:`` name and the ``data:`` lines
joined by ``\\n``, as bytes (a streamed image is a few MB of base64: it is neither decoded nor
copied more than once). Lines end in ``\\n``, ``\\r\\n`` or ``\\r``, as the specification allows
(a ``\\r\\n`` split between two chunks is one line end); comment lines (``:``) and fields other
than ``event`` and ``data`` are skipped, as the SSE specification says. One event may hold at
most ``max_event_bytes`` (its data lines with the ``\n`` each adds, so endless empty ``data:``
lines are refused too): an upstream that never ends its event gets an error, not all memory;
the events a chunk completed before the one that grew too large are returned first, and the
error is raised by the next ``feed``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent", "encode_event"]

#: The most one event may hold: a 3840x2160 PNG in base64 stays well below it.
MAX_EVENT_BYTES = 96 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event: its name (``event:``, None when absent) and its data lines joined by ``\\n``."""

    event: str | None
    data: bytes


class EventTooLarge(ValueError):
    """An event grew past :data:`MAX_EVENT_BYTES` without ending."""


class SSEDecoder:
    """Bytes in, complete events out (see the module docstring)."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._scanned = 0  #: bytes of the buffer already searched for a line end
        self._event: str | None = None
        self._data: list[bytes] = []
        self._size = 0
        self._max = max_event_bytes
        self._too_large = False  # an event passed the limit in a chunk that completed others
        self._after_cr = False  # the last chunk ended in \r: a \n starting the next is its end

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk`` (often none, sometimes several)."""
        if self._too_large:
            raise self._error()
        if self._after_cr and chunk:
            if chunk[:1] == b"\n":  # the rest of a \r\n split between chunks
                chunk = chunk[1:]
            self._after_cr = False
        buffer = self._buffer
        buffer += chunk
        events: list[ServerSentEvent] = []
        start = 0
        lf = -2  # the first \n at or after ``start`` (-1: there is none), -2 until looked for
        while True:
            scan = max(start, self._scanned)
            if lf == -2 or 0 <= lf < scan:  # each byte is searched once, even with many \r
                lf = buffer.find(b"\n", scan)
            # a \r before that \n (or anywhere, without one) ends the line first: \r\n or \r
            cr = buffer.find(b"\r", scan, lf if lf >= 0 else len(buffer))
            if cr >= 0:
                line = bytes(buffer[start:cr])
                if lf == cr + 1:
                    start = lf + 1
                else:
                    start = cr + 1
                    self._after_cr = start == len(buffer)  # its \n may come in the next chunk
            elif lf >= 0:
                line = bytes(buffer[start:lf])
                start = lf + 1
            else:
                break
            event = self._line(line)
            if event is not None:
                events.append(event)
        if start:
            del buffer[:start]
        self._scanned = len(buffer)
        if self._size + len(buffer) > self._max:
            if not events:
                raise self._error()
            self._too_large = True  # what it completed before is delivered first
            del buffer[:]
            self._data, self._size = [], 0
        return events

    def _error(self) -> EventTooLarge:
        return EventTooLarge(f"a streamed event grew past {self._max:,} bytes without ending")

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:  # a blank line ends the event, if it has any data
            if not self._data:
                self._event = None
                return None
            event = ServerSentEvent(self._event, b"\n".join(self._data))
            self._event, self._data, self._size = None, [], 0
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._size += len(value) + 1  # with the \n it is joined by: empty lines count too
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None

    @property
    def pending(self) -> bool:
        """Part of an event has arrived and not its end."""
        return bool(self._buffer or self._data)


def encode_event(event: str, data: bytes) -> bytes:
    """One event as SSE bytes: ``event: NAME``, one ``data:`` line per line of ``data``.

    A one-line ``data`` (as upstreams send events) is copied once: a completed event at 4K is
    tens of MB of base64, and each copy is time the proxy's event loop serves no one else."""
    head = b"event: " + event.encode() + b"\ndata: "
    if b"\n" in data:
        data = data.replace(b"\n", b"\ndata: ")
    return b"".join((head, data, b"\n\n"))
