"""The three callback lists of :mod:`tracking`, checked whenever an entry goes in.

``tracking.success_callback``, ``failure_callback`` and ``callbacks`` are each a
:class:`CallbackList`: a list whose every way of adding entries (``append``, ``extend``,
``insert``, ``+=``, ``lst[i] = ...``, ``lst[a:b] = ...``) checks them first
(:func:`tracking.bus.check_entries`), so a bad one is a
:class:`~tracking.errors.ConfigurationError` naming the list and the entry's place, and the list
is left as it was. Assigning the module attribute stores a checked copy (see ``tracking``'s
``__setattr__``). Everything else is a plain list's: equality, ``repr``, ``+`` and ``*`` (plain
lists), removing and reordering. Nothing here runs on a call's path: the bus reads the lists as
lists.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, Self, SupportsIndex

__all__ = ["CallbackList", "stored"]


class CallbackList(list[Any]):
    """A callback list named ``name`` (``"success_callback"``...), checked as it is changed.

    ``entries``: what the list is set to, as ``tracking.success_callback = ...`` takes it (any
    iterable; None is no entry; a lone name, function, logger or integration is one entry),
    checked before anything is kept. ``extend``, ``+=`` and slice assignment take the same.
    """

    __slots__ = ("name",)

    def __init__(self, name: str, entries: Any = None) -> None:
        self.name = name
        super().__init__(() if entries is None else self._checked(entries, 0))

    def _checked(self, entries: Any, start: int, step: int = 1) -> tuple[Any, ...]:
        from .bus import check_entries  # loaded on the first change, not by ``import tracking``

        return check_entries(self.name, entries, start=start, step=step)

    def append(self, entry: Any) -> None:
        self._checked((entry,), len(self))
        super().append(entry)

    def extend(self, entries: Iterable[Any]) -> None:
        super().extend(self._checked(entries, len(self)))

    def __iadd__(self, entries: Iterable[Any]) -> Self:  # type: ignore[misc]  # as list's own
        self.extend(entries)
        return self

    def insert(self, index: SupportsIndex, entry: Any) -> None:
        size, place = len(self), operator.index(index)
        self._checked((entry,), min(max(place + size if place < 0 else place, 0), size))
        super().insert(place, entry)

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            start, _, step = index.indices(len(self))
            value = self._checked(value, start, step)
        elif hasattr(index, "__index__"):  # else the list's own TypeError
            place = operator.index(index)
            self._checked((value,), place + len(self) if place < 0 else place)
        super().__setitem__(index, value)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied as what it is: its name and entries (checked again when loaded)."""
        return (type(self), (self.name, list(self)))


def stored(name: str, value: Any) -> CallbackList:
    """What ``tracking.<name> = value`` keeps: ``value`` itself when it is already that list
    (after ``+=``, or a list put back as ``monkeypatch`` does), else a checked copy of it."""
    if type(value) is CallbackList and value.name == name:
        return value
    return CallbackList(name, value)
