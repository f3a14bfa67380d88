"""A fresh lock in a forked child, for objects a ledger shares between its threads."""

from __future__ import annotations

import os
import threading
import weakref

__all__ = ["new_lock_in_child"]


def new_lock_in_child(owner: object) -> None:
    """After a fork, give ``owner`` (while it lives) a new ``_lock``: another thread of the
    parent may have held the old one at the fork, and no thread of the child would release it."""
    owner_ref = weakref.ref(owner)

    def renew() -> None:
        alive = owner_ref()
        if alive is not None:
            alive._lock = threading.Lock()  # type: ignore[attr-defined]

    os.register_at_fork(after_in_child=renew)
