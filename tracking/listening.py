"""A server's listening socket, bound once by the command that serves on it.

``tracking serve`` and ``tracking fake-openai`` bind their port here and hand the socket to the
server (uvicorn, aiohttp), which never binds again: a port taken between a check and the
server's own bind can no longer end the start in the server's log line and status. The socket
is made as uvicorn makes its own (``SO_REUSEADDR``, an IPv6 family for an address with a colon)
and listens at once, with the backlog the server is given, so the port is held from here on:
a connection that arrives while the app starts waits in the backlog instead of being refused.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["CannotListen", "address", "listening_socket", "url"]


class CannotListen(Exception):
    """The port could not be bound or listened on; ``str()`` is the one line to show."""


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``::1:4000`` reads ambiguously)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url(host: str, sock: socket.socket) -> str:
    """The ``http://`` address a client reaches ``sock`` at (its port as bound: ``--port 0``
    shows the one the system chose)."""
    port: int = sock.getsockname()[1]
    return f"http://{address(host, port)}"


def listening_socket(host: str, port: int, *, backlog: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; a port that is taken or cannot be
    bound raises :class:`CannotListen` naming the address. It is not inherited by programs the
    process runs (worker processes are handed it explicitly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use (another process listens there; stop it or choose "
            reason += "another --port)"
        else:
            reason = exc.strerror or str(exc)
        raise CannotListen(f"cannot listen on {address(host, port)}: {reason}") from None
    return sock
