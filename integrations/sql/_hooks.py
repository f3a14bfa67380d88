"""``CountHooks``: a ledger's ``replay_hooks`` and ``quarantine_hooks``, which never miss a row.

Both are lists of callables run as ``hook(rows)``, each time rows are replayed (written late) or
quarantined (refused for good). A ledger does some of that while it opens, before its creator
can add a hook of their own: the rows an earlier SQLite ledger kept at shutdown are written (or
quarantined) in ``SqlLedger(...)`` itself, and a dead process's outbox or intents are claimed at
once. So a hook added to one of these lists (``append``, ``extend``, ``insert``, ``+=``) is first
called, at once and on the adding thread, with the rows counted so far (when there were any),
then with each count after. A delivery counts its rows and takes the list of hooks under the
same lock as an addition reads the count so far, so every row is told to every hook exactly once,
whenever the hook was added (a catch-up and a delivery on another thread may run in either
order): the sum of what a hook is given is the ledger's count since it opened
(``ledger_stats()``'s ``replayed_rows`` and ``quarantined_rows``). Hooks run outside that lock.

A hook that raises is logged and never stops the others, nor the ledger (nor the addition).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self, SupportsIndex, overload

from ._fork import new_lock_in_child

__all__ = ["CountHook", "CountHooks", "call_count_hooks"]

log = logging.getLogger("tracking.ledger")

#: Called with a number of rows.
CountHook = Callable[[int], None]


class CountHooks(list[CountHook]):
    """Count hooks told about what was counted before they were added; see the module docstring."""

    def __init__(self, what: str, hooks: Iterable[CountHook] = ()) -> None:
        super().__init__(hooks)
        #: What is counted (``"replay"``, ``"quarantine"``), for the log of a failing hook.
        self.what = what
        #: Every row delivered so far.
        self.total = 0
        self._lock = threading.Lock()
        new_lock_in_child(self)  # another thread may have held it at a fork

    def deliver(self, rows: int) -> None:
        """Count ``rows`` and run every hook with it."""
        if rows <= 0:
            return
        with self._lock:
            self.total += rows
            hooks = tuple(self)
        for hook in hooks:
            self._run(hook, rows)

    def _run(self, hook: CountHook, rows: int) -> None:
        try:
            hook(rows)
        except Exception:
            log.exception("ledger %s hook %r failed", self.what, hook)

    def _catch_up(self, hooks: Sequence[CountHook], so_far: int) -> None:
        # ``so_far`` was read with the hooks' addition, under the lock: every delivery counted
        # in it took the hook list before they were in it, every later one finds them there.
        if so_far:
            for hook in hooks:
                self._run(hook, so_far)

    def append(self, hook: CountHook) -> None:
        with self._lock:
            super().append(hook)
            so_far = self.total
        self._catch_up((hook,), so_far)

    def insert(self, index: SupportsIndex, hook: CountHook) -> None:
        with self._lock:
            super().insert(index, hook)
            so_far = self.total
        self._catch_up((hook,), so_far)

    def extend(self, hooks: Iterable[CountHook]) -> None:
        added = list(hooks)
        with self._lock:
            super().extend(added)
            so_far = self.total
        self._catch_up(added, so_far)

    def __iadd__(self, hooks: Iterable[CountHook]) -> Self:  # type: ignore[override,misc]
        self.extend(hooks)
        return self

    @overload
    def __setitem__(self, index: SupportsIndex, hook: CountHook) -> None: ...

    @overload
    def __setitem__(self, index: slice, hook: Iterable[CountHook]) -> None: ...

    def __setitem__(self, index: Any, hook: Any) -> None:
        added = list(hook) if isinstance(index, slice) else [hook]
        with self._lock:
            super().__setitem__(index, added if isinstance(index, slice) else hook)
            so_far = self.total
        self._catch_up(added, so_far)


def call_count_hooks(hooks: Sequence[CountHook], rows: int, what: str) -> None:
    """Deliver ``rows`` to ``hooks``: a :class:`CountHooks` counts them too; any other sequence
    (a plain list given to a shipper or a drain of one's own) has each hook run."""
    if isinstance(hooks, CountHooks):
        hooks.deliver(rows)
        return
    for hook in tuple(hooks):
        try:
            hook(rows)
        except Exception:
            log.exception("ledger %s hook %r failed", what, hook)
