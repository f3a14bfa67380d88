"""Encoding a multipart/form-data body once, as bytes, so every retry resends the same body.

Boundaries are 128 bits of the OS's randomness, so no one can predict one and hide a part in an
image's bytes. They are drawn from a pool filled 4 KiB at a time: a system call per body would
also hand the GIL to another thread (the proxy's ledger writer) in the middle of every call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

from .images import ImageFile

__all__ = ["encode_multipart"]


def encode_multipart(
    fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, ImageFile]]
) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` for the given text fields and files."""
    boundary = _ENTROPY.hex(16)
    dash = f"--{boundary}".encode()
    parts: list[bytes] = []
    for name, value in fields:
        parts += [
            dash,
            b'\r\nContent-Disposition: form-data; name="',
            _quote(name),
            b'"\r\n\r\n',
            value.encode(),
            b"\r\n",
        ]
    for name, file in files:
        parts += [
            dash,
            b'\r\nContent-Disposition: form-data; name="',
            _quote(name),
            b'"; filename="',
            _quote(file.filename),
            b'"\r\nContent-Type: ',
            file.content_type.encode("ascii", "replace"),
            b"\r\n\r\n",
            file.content,
            b"\r\n",
        ]
    parts += [dash, b"--\r\n"]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class _Entropy:
    """OS randomness drawn :data:`POOL_BYTES` at a time, each byte handed out once."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # Also run in a forked child, which must not hand out its parent's bytes again (nor
        # wait on a lock another thread of the parent held at the fork).
        self._lock = threading.Lock()
        self._pool = bytearray()

    def hex(self, size: int) -> str:
        with self._lock:
            if len(self._pool) < size:
                self._pool[:] = os.urandom(POOL_BYTES)
            drawn = self._pool[-size:]
            del self._pool[-size:]
        return drawn.hex()


#: Bytes of OS randomness fetched per system call (256 boundaries).
POOL_BYTES = 4096
_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY.reset)


#: A quoted name's escapes: as browsers do (WHATWG), ``"``, CR and LF percent-encoded, and so
#: every other control character (NUL, DEL...), which a server's header parser refuses.
_ESCAPES = {code: f"%{code:02X}" for code in (*range(0x20), 0x7F)} | {
    ord('"'): "%22",
    ord("\\"): "\\\\",
}


def _quote(value: str) -> bytes:
    if value.isprintable() and '"' not in value and "\\" not in value:  # nearly every name
        return value.encode()
    # A lone surrogate (a file name os.fsdecode could not decode) cannot be UTF-8: a "?".
    return value.translate(_ESCAPES).encode("utf-8", "replace")
