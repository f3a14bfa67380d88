"""A server's listening sockets, bound once by the command that serves on them.

``tracking serve`` and ``tracking fake-openai`` bind their port here and hand the sockets to the
server (uvicorn, aiohttp), which never binds again: a port taken between a check and the
server's own bind can no longer end the start in the server's log line and status. A host is
bound at every address it resolves to (``getaddrinfo``, as asyncio's ``create_server`` does:
``localhost`` is often 127.0.0.1 and ::1), one socket each, made as uvicorn makes its own
(``SO_REUSEADDR``); each listens at once, with the backlog the server is given, so the port is
held from here on: a connection that arrives while the app starts waits in the backlog instead
of being refused.

``::`` alone means every address, IPv4's too (as ``--host ""`` does with two sockets): its socket
is dual-stack, ``IPV6_V6ONLY`` cleared whatever the system's default (Linux's
``net.ipv6.bindv6only``), as Go and Node.js bind it. With several addresses the IPv6 sockets are
IPv6-only (``IPV6_V6ONLY`` set, as asyncio sets it), so ``::`` and ``0.0.0.0`` of one name do not
collide; either way every address is served at one port. Port 0 is chosen by the system for the
first address and the others are bound at that same port (asyncio would let each choose its
own), so a name has one port, the one the start summary names; should that port be taken at
another address, the whole set is bound again, a few times, before the start fails.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

__all__ = ["CannotListen", "address", "closing_all", "listening_sockets", "port_of", "url"]

#: How many times port 0 is tried again when the port chosen for a name's first address is
#: taken at one of its others.
PORT_0_ATTEMPTS = 20

_Address = tuple[socket.AddressFamily, tuple[Any, ...]]


class CannotListen(Exception):
    """The port could not be bound or listened on; ``str()`` is the one line to show."""


class _Taken(Exception):
    """A later address's bind found the port chosen for the first taken (port 0 only)."""


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (``::1:4000`` reads ambiguously)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_of(sockets: Sequence[socket.socket]) -> int:
    """The port ``sockets`` listen on (one for them all; ``--port 0``: the one chosen)."""
    port: int = sockets[0].getsockname()[1]
    return port


def url(host: str, sockets: Sequence[socket.socket]) -> str:
    """The ``http://`` address a client reaches ``sockets`` at: ``host`` as given, and their
    port as bound."""
    return f"http://{address(host, port_of(sockets))}"


def listening_sockets(host: str, port: int, *, backlog: int) -> list[socket.socket]:
    """TCP sockets bound to every address of ``host`` at ``port`` (one port for all, even with
    port 0), listening; a name that does not resolve, or an address that is taken or cannot be
    bound, raises :class:`CannotListen` naming it, the sockets already bound closed. They are
    not inherited by programs the process runs (worker processes are handed them
    explicitly)."""
    addresses = _resolved(host, port)
    for _attempt in range(PORT_0_ATTEMPTS - 1):
        with contextlib.suppress(_Taken):
            return _bound_all(host, port, addresses, backlog)
    return _bound_all(host, port, addresses, backlog, last=True)


def closing_all(sockets: Sequence[socket.socket]) -> contextlib.ExitStack:
    """A ``with`` block that closes every one of ``sockets`` on leaving."""
    held = contextlib.ExitStack()
    for sock in sockets:
        held.callback(sock.close)
    return held


def _resolved(host: str, port: int) -> list[_Address]:
    """``host``'s addresses for a listening TCP socket, each once, in the resolver's order."""
    try:
        found = socket.getaddrinfo(
            host or None,  # "": every address, IPv4's and IPv6's (as asyncio reads it)
            port,
            type=socket.SOCK_STREAM,
            proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE,
        )
    except OSError as exc:
        raise _cannot(address(host, port), exc, host) from None
    addresses: list[_Address] = []
    for family, _type, _proto, _name, sockaddr in found:
        entry = (family, tuple(sockaddr))
        if family in (socket.AF_INET, socket.AF_INET6) and entry not in addresses:
            addresses.append(entry)
    if not addresses:
        raise CannotListen(f"cannot listen on {address(host, port)}: it has no IP address")
    return addresses


def _bound_all(
    host: str, port: int, addresses: list[_Address], backlog: int, *, last: bool = False
) -> list[socket.socket]:
    v6only = len(addresses) > 1  # so that :: and 0.0.0.0 of one name do not collide
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in addresses:
            chosen = port_of(sockets) if sockets else port
            try:
                bound = _listening(family, (sockaddr[0], chosen, *sockaddr[2:]), backlog, v6only)
            except OSError as exc:
                if port == 0 and sockets and exc.errno == errno.EADDRINUSE and not last:
                    raise _Taken from None
                raise _cannot(address(sockaddr[0], chosen), exc, host) from None
            sockets.append(bound)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listening(
    family: socket.AddressFamily, sockaddr: tuple[Any, ...], backlog: int, v6only: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            _set_v6only(sock, v6only)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _set_v6only(sock: socket.socket, v6only: bool) -> None:
    """IPv6 alone, or (``::``) IPv4 too, whatever the system's default; a system that allows
    no dual-stack socket (OpenBSD) keeps IPv6 alone."""
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    except OSError:
        if v6only:
            raise


def _cannot(where: str, exc: OSError, host: str) -> CannotListen:
    if exc.errno == errno.EADDRINUSE:
        reason = "the port is in use (another process listens there; stop it or choose "
        reason += "another --port)"
    else:
        reason = exc.strerror or str(exc)
    named = f" (an address of {host})"
    if not host or _is_literal(host) or where.startswith(f"{host}:"):
        named = ""
    return CannotListen(f"cannot listen on {where}{named}: {reason}")


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
