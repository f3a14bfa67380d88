"""A loopback TCP relay to a real database server that a test can cut, as an outage would.

``cut()`` drops every relayed connection and refuses new ones until ``restore()``; ``pause()``
keeps the connections open but forwards nothing, as a server that stops answering (not down:
paused) would; ``hold_replies()`` forwards what clients send but none of the server's answers,
until ``drop_live()`` drops the connections whose answers it held (a request the server carried
out whose answer was lost), new connections relayed as before; ``hold_replies_to(marker)`` holds
the answers of the one connection whose request next holds ``marker`` (until its client gives
up on it), the others relayed as before; ``delay`` (seconds) holds each answer that long before
relaying it, as a slow server would. The server behind it keeps
running for every other test (the machine's shared PostgreSQL and Redis are never touched).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpRelay:
    """Relays ``127.0.0.1:<port>`` to the host and port of ``database_url``."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy.engine import make_url

        parsed = make_url(database_url)
        self.target = (parsed.host or "127.0.0.1", parsed.port or 5432)
        self.up = True
        self.paused = False
        self.holding = False
        self.delay = 0.0
        self._hold_marker: bytes | None = None
        #: the server sides of the connections whose answers are held (hold_replies_to)
        self._held: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port: int = self._server.getsockname()[1]
        #: ``database_url`` pointed at the relay instead of the server.
        self.url: str = parsed.set(port=self.port).render_as_string(hide_password=False)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up:
                client.close()  # the database is "down": the connection is refused at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst, answers in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=(src, dst, answers), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if not answers and self._hold_marker is not None and self._hold_marker in data:
                    self._hold_marker = None
                    self._held.add(dst)  # before the server can answer
                # held, never delivered while paused (or, for answers, while held)
                while (
                    self.paused or (answers and (self.holding or src in self._held))
                ) and not self._stopping:
                    time.sleep(0.01)
                if answers and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._sockets.discard(sock)
                self._held.discard(sock)
            with contextlib.suppress(OSError):  # already shut by the other side
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        """The database becomes unreachable: live connections die, new ones are refused."""
        self.up = False
        with self._lock:
            live = list(self._sockets)
        self._drop(*live)

    def pause(self) -> None:
        """Connections stay open, but nothing reaches either side until ``restore()``."""
        self.paused = True

    def hold_replies(self) -> None:
        """Requests go on reaching the server; its answers are held until :meth:`drop_live`."""
        self.holding = True

    def hold_replies_to(self, marker: bytes) -> None:
        """The next request holding ``marker`` reaches the server; its connection's answers are
        held until its client drops it (a request carried out whose answer never came)."""
        self._hold_marker = marker

    def drop_live(self) -> None:
        """Drop every live connection (their held answers lost); new ones are relayed."""
        with self._lock:
            live = list(self._sockets)
        self._drop(*live)  # first: a held answer must never reach its client
        self.holding = False

    def restore(self) -> None:
        self.up = True
        self.paused = False

    def close(self) -> None:
        self._stopping = True
        self.cut()
        self._acceptor.join(5)
        self._server.close()
        for thread in self._threads:
            thread.join(5)
