"""Encoding a multipart/form-data body once, as bytes, so every retry resends the same body."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .images import ImageFile

__all__ = ["encode_multipart"]


def encode_multipart(
    fields: Iterable[tuple[str, str]], files: Iterable[tuple[str, ImageFile]]
) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` for the given text fields and files."""
    boundary = os.urandom(16).hex()
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


def _quote(value: str) -> bytes:
    # As browsers do (WHATWG): escape the three characters that would break the header.
    return (
        value.replace("\\", "\\\\")
        .replace('"', "%22")
        .replace("\r", "%0D")
        .replace("\n", "%0A")
        .encode()
    )
