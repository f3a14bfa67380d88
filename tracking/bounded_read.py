"""Reading a file the user names, never more than a bound: a device (``/dev/zero``), a pipe or
a file still growing has no size to check first, and reading it whole exhausted memory (a
``MemoryError`` traceback from ``tracking prices list --prices-file /dev/zero``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_at_most"]

_CHUNK = 64 * 1024


def read_at_most(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than ``limit`` (the rest never read).
    ``OSError`` as :func:`open` raises it."""
    with path.open("rb") as file:
        if os.fstat(file.fileno()).st_size > limit:
            return None
        # in chunks: read(n) would reserve n bytes at once
        chunks: list[bytes] = []
        total = 0
        while chunk := file.read(_CHUNK):
            total += len(chunk)
            if total > limit:
                return None
            chunks.append(chunk)
    return b"".join(chunks)
