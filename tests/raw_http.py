"""Reading one HTTP/1.1 message off a plain socket, for tests that speak HTTP by hand."""

from __future__ import annotations

import socket


def read_message(sock: socket.socket) -> bytes:
    """One request or answer with a ``Content-Length``, read whole: its head, the blank line
    and its body. A connection closed first fails the test."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body
