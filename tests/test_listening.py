"""``tracking.listening``: a host bound at every address it resolves to, on one port.

Real sockets on the loopback addresses; where a name's addresses are needed, the resolver's
answer (``socket.getaddrinfo``) stands in for the hosts file, as in
:func:`tests.proxy_support.localhost_at_both_command`.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.proxy_support import require_ipv6_loopback
from tracking.listening import CannotListen, closing_all, listening_sockets, url


@pytest.fixture
def localhost_at_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` at ``::1`` and then ``127.0.0.1``, as most hosts files have it."""
    require_ipv6_loopback()
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "localhost":
            return system(host, *args, **kwargs)
        return system("::1", *args, **kwargs) + system("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _bound_at(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound and listened on now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError:
            return False
    return True


def test_every_address_of_a_name_listens_on_the_one_port_chosen(localhost_at_both):
    sockets = listening_sockets("localhost", 0, backlog=8)
    with closing_all(sockets):
        names = [sock.getsockname()[:2] for sock in sockets]
        port = names[0][1]
        assert names == [("::1", port), ("127.0.0.1", port)]
        assert url("localhost", sockets) == f"http://localhost:{port}"
        for host in ("::1", "127.0.0.1"):
            assert not _bound_at(host, port)  # held
    assert all(sock.fileno() == -1 for sock in sockets)


def test_a_busy_address_closes_the_ones_bound_before_it(localhost_at_both):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(CannotListen) as raised:
            listening_sockets("localhost", port, backlog=8)
    assert str(raised.value) == (
        f"cannot listen on 127.0.0.1:{port} (an address of localhost): the port is in use "
        "(another process listens there; stop it or choose another --port)"
    )
    assert _bound_at("::1", port)  # the first address's socket was closed


def test_the_empty_host_is_both_wildcards_without_a_collision():
    """``--host ""`` is every address, IPv4's and IPv6's (``0.0.0.0`` and ``::``, as asyncio
    reads it): the IPv6 socket is IPv6-only, or the two would collide on the one port."""
    require_ipv6_loopback()  # for ``::`` too
    sockets = listening_sockets("", 0, backlog=8)
    with closing_all(sockets):
        port = sockets[0].getsockname()[1]
        assert sorted(sock.getsockname()[0] for sock in sockets) == ["0.0.0.0", "::"]
        assert {sock.getsockname()[1] for sock in sockets} == {port}
        v6 = next(sock for sock in sockets if sock.family == socket.AF_INET6)
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def _connects(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as client:
        client.settimeout(30)
        try:
            client.connect((host, port))
        except OSError:
            return False
    return True


def test_the_ipv6_wildcard_alone_is_every_address_ipv4_too():
    """``--host ::`` means every address, as ``--host ""`` does with two sockets: one
    dual-stack socket (``IPV6_V6ONLY`` cleared, not left to the system's default, which
    ``net.ipv6.bindv6only=1`` makes IPv6-only), reached over IPv4 and IPv6 at its one port."""
    require_ipv6_loopback()
    sockets = listening_sockets("::", 0, backlog=8)
    with closing_all(sockets):
        (sock,) = sockets
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        assert url("::", sockets) == f"http://[::]:{port}"
        assert _connects("127.0.0.1", port) and _connects("::1", port)
        assert not _bound_at("0.0.0.0", port)  # held at IPv4's wildcard too
