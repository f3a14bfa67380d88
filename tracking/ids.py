"""Request ids: UUID version 7 (RFC 9562), so ids sort by the time they were made.

A time-ordered id keeps the ledger's primary-key index appending at its end instead of writing
to a random page per row, and lets anyone sort rows by id. The text form is the usual
36-character UUID, so nothing that reads it as a UUID needs to change.

The random bits come from a private :class:`random.Random` of this module, seeded from the OS at
import and again in every forked child, not from ``os.urandom``: an id must be unique, not
secret, and a system call per id would also hand the GIL to the ledger's writer thread in the
middle of every request. Private, because the global generator belongs to the application: a
program that calls ``random.seed(n)`` (for reproducible prompts, say) must not make two calls in
the same millisecond share an id, which the ledger's idempotent insert would then drop.
"""

from __future__ import annotations

import os
import random
import time

__all__ = ["new_request_id"]

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62))

_BITS = random.Random()  # seeded from os.urandom; nothing else draws from it


def _reseed() -> None:
    """A forked child would otherwise draw the same bits as its parent: seed it anew."""
    _BITS.seed()


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A new UUIDv7 string: 48 bits of Unix milliseconds, then 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | _BITS.getrandbits(80)
    text = f"{(value & _KEEP) | _VERSION_7 | _VARIANT_RFC:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
