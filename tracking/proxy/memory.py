"""Handing freed memory back to the system after large uploads (glibc only; elsewhere a no-op).

CPython frees a large ``bytes`` with ``free()``, but glibc keeps freed heap memory for reuse, and
after a large block is freed it raises its mmap threshold (up to 32 MB), so later uploads land in
the heap and a burst of them leaves hundreds of MB resident. :func:`release_free_memory` calls
``malloc_trim(0)``, which returns the free pages; the proxy calls it when the last upload in
flight is gone (:class:`~tracking.proxy.concurrency.UploadBytes`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from typing import Any

__all__ = ["release_free_memory"]

log = logging.getLogger("tracking.proxy")


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """Return the allocator's free memory to the system; False where that is not possible."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
