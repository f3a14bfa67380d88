"""The proxy's HTTP protocol: uvicorn's httptools protocol with a deadline on the header section,
and OpenAI-shaped refusals of requests the HTTP parser cannot read.

uvicorn bounds the idle time between requests (keep-alive) but not how long a client may take
to send a request's headers, so a client trickling a header line byte by byte ("slowloris")
holds its connection for ever. Here every request's header section must be complete within
``header_timeout`` seconds (``general_settings.request_read_timeout``) of the connection being
made or of the request's first byte, else the connection is closed; the body has its own
deadline in :mod:`tracking.proxy.form`. Imported only by the server: it needs uvicorn and
httptools (the proxy extra).

A request whose framing httptools refuses (a malformed or repeated ``Content-Length``,
``Transfer-Encoding`` beside ``Content-Length``, an unknown method, a request line or header
past the parser's limits) never reaches the app: uvicorn answers it with a 400 and closes the
connection. That answer keeps uvicorn's status and ``connection: close`` but carries the
proxy's JSON error (``code: invalid_http_request``, ``x-should-retry: false``, an
``x-request-id``) instead of ``text/plain`` "Invalid HTTP request received.".

An answer's status line and headers leave with its first body part, in one write: uvicorn writes
the head when the app starts the answer and the body when it sends it, two system calls (and
two segments the client reads) where one does. Each request's cycle writes through
:class:`HeadWithBody`, which holds the head until the next write, or until the loop's current
iteration ends (an answer whose body is not ready yet, such as an event stream waiting for its
first event, sends its head then, as before).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import DEFAULT_REQUEST_READ_TIMEOUT
from ..ids import new_request_id
from .errors import ProxyError

__all__ = ["HeadWithBody", "HeaderDeadlineProtocol"]


class HeaderDeadlineProtocol(HttpToolsProtocol):
    #: Set once per process from the config (a class attribute: uvicorn builds the protocol).
    header_timeout: float = DEFAULT_REQUEST_READ_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a later request on a kept-alive connection gets its own deadline

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle  # made just now: its task has not run yet
        if cycle is not None:
            cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, as an OpenAI-shaped error."""
        error = ProxyError(
            400,
            "invalid HTTP request: its request line or headers could not be parsed "
            "(for example a malformed or repeated Content-Length, or Transfer-Encoding "
            "with Content-Length)",
            code="invalid_http_request",
        )
        body = error.body()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()),
            (b"x-request-id", new_request_id().encode()),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class HeadWithBody:
    """A transport that holds an answer's head (its first write, unless it is ``100 Continue``)
    until the next write, so head and body leave in one ``writelines``. What is held is written
    at the end of the loop's iteration if nothing followed, and before the transport closes.
    Everything else is the transport's."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif self._first and not data.startswith(_CONTINUE):
            self._first = False
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_CONTINUE = b"HTTP/1.1 100 "
