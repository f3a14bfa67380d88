"""An answer's status line and headers leave the proxy with its body, in one write: one TCP
segment on loopback where uvicorn alone sends two (``tracking.proxy.protocol.HeadWithBody``).
A head whose body is not ready yet (an event stream waiting for its first event) still leaves
at the end of the loop's iteration, ``100 Continue`` is never held, and closing sends what is
held first. Counted with the kernel's own figure, ``tcpi_data_segs_in`` of ``TCP_INFO``."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tracking.proxy.protocol import HeadWithBody

from .conftest import make_png
from .proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config
from .raw_http import read_message

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's TCP_INFO")

#: ``struct tcp_info``'s ``tcpi_data_segs_in`` (Linux 4.6 and later): segments that carried data.
_DATA_SEGS_IN = 152

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, _DATA_SEGS_IN)[0])


# -- the proxy, end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("writes")
    config = write_config(
        folder / "config.yaml",
        one_deployment_config(
            fake.url, model_name="gpt-image-2", general_settings={"master_key": MASTER_KEY}
        ),
    )
    with ProxyProcess(config) as running:
        yield running


def _edit_request() -> bytes:
    boundary = "writesboundary"
    png = make_png(64, 64)
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            "gpt-image-2\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
            "a hat\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'.encode(),
            png,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return (
        b"POST /v1/images/edits HTTP/1.1\r\nHost: proxy\r\n"
        b"Authorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /health/liveliness HTTP/1.1\r\nHost: proxy\r\n\r\n", _edit_request()],
    ids=["health", "edit"],
)
def test_an_answer_arrives_in_one_segment(proxy, request_bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(3):  # kept alive: every answer on the connection, not only the first
            before = data_segments_in(sock)
            sock.sendall(request_bytes)
            answer = read_message(sock)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
            assert len(answer) < 60_000  # one segment can hold it (loopback's MSS is ~65 kB)
            assert data_segments_in(sock) - before == 1, answer[:300]


# -- HeadWithBody on a real loopback connection -------------------------------------------------


def _loops() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    loops: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:  # the proxy extra's; asyncio's own loop is still checked
        return loops
    return [*loops, uvloop.new_event_loop]


def _with_connection(
    make_loop: Callable[[], asyncio.AbstractEventLoop],
    body: Callable[[HeadWithBody, socket.socket, asyncio.AbstractEventLoop], Awaitable[None]],
) -> None:
    """Runs ``body`` with a real transport of ``make_loop``'s loop wrapped in a HeadWithBody,
    and the peer's plain socket (non-blocking)."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    peer.setblocking(False)
    loop = make_loop()

    async def run() -> None:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, accepted)
        try:
            await body(HeadWithBody(transport, loop), peer, loop)
        finally:
            transport.close()
            await asyncio.sleep(0)

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
        peer.close()


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def _until_received(peer: socket.socket, size: int) -> bytes:
    got = b""
    for _ in range(200):
        got += _received(peer)
        if len(got) >= size:
            return got
        await asyncio.sleep(0.01)
    return got


@pytest.mark.parametrize("make_loop", _loops())
def test_the_head_and_body_leave_in_one_segment(make_loop) -> None:
    async def body(wrapped: HeadWithBody, peer: socket.socket, _: object) -> None:
        wrapped.write(HEAD)
        assert _received(peer) == b""  # held
        wrapped.write(b"{}")
        assert await _until_received(peer, len(HEAD) + 2) == HEAD + b"{}"
        assert data_segments_in(peer) == 1

    _with_connection(make_loop, body)


@pytest.mark.parametrize("make_loop", _loops())
def test_a_head_whose_body_is_not_ready_leaves_when_the_iteration_ends(make_loop) -> None:
    async def body(wrapped: HeadWithBody, peer: socket.socket, _: object) -> None:
        wrapped.write(HEAD)
        await asyncio.sleep(0)  # the loop's iteration ends: an event stream's first wait
        assert await _until_received(peer, len(HEAD)) == HEAD
        wrapped.write(b"data: 1\n\n")  # what follows is written as it comes
        assert await _until_received(peer, 9) == b"data: 1\n\n"

    _with_connection(make_loop, body)


@pytest.mark.parametrize("make_loop", _loops())
def test_100_continue_is_never_held(make_loop) -> None:
    async def body(wrapped: HeadWithBody, peer: socket.socket, _: object) -> None:
        wrapped.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert await _until_received(peer, 25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        wrapped.write(HEAD)  # the answer's head is still held for its body
        assert _received(peer) == b""
        wrapped.write(b"{}")
        assert await _until_received(peer, len(HEAD) + 2) == HEAD + b"{}"

    _with_connection(make_loop, body)


@pytest.mark.parametrize("make_loop", _loops())
def test_closing_sends_the_held_head_first(make_loop) -> None:
    async def body(wrapped: HeadWithBody, peer: socket.socket, _: object) -> None:
        wrapped.write(HEAD)
        wrapped.close()  # a failure after the head: uvicorn closes the connection
        got = await _until_received(peer, len(HEAD))
        assert got == HEAD
        assert wrapped.is_closing()  # the rest is the transport's

    _with_connection(make_loop, body)
