"""Running a test's calls within one calendar minute, as rpm limits count them.

An rpm limit counts calendar minutes: calls on either side of a minute's end are counted in two
windows, and a test expecting a refusal sees none. Waiting for the early seconds of a minute
before the calls waited up to 10 s for nothing, and still failed when the calls took longer
than the seconds left (a loaded machine). :func:`in_one_minute` runs them at once and, in the
rare case they straddled a minute's end, runs them again at the start of a minute none of them
was made in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["in_one_minute"]

_T = TypeVar("_T")


def in_one_minute(
    calls: Callable[[], _T],
    attempts: int = 3,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = time.sleep,
) -> _T:
    """What ``calls()`` returned on a run that began and ended in one calendar minute.

    A run that straddled a minute's end is discarded (its result unread: assert on the result,
    not inside ``calls``, what depends on the minute), and ``calls`` runs again once a minute
    begins that no call of the discarded run was made in, so that minute counts only the calls
    of the next run. ``calls`` must be fit to run again (a key regenerated in it is its own
    each time, a metric read before its calls is read again). Nothing is waited for before a
    run. ``clock`` and ``sleep`` are the wall clock's (rpm windows are read from it)."""

    def _minute() -> int:
        return int(clock() // 60)

    for _ in range(attempts):
        minute = _minute()
        result = calls()
        if _minute() == minute:
            return result
        while _minute() < minute + 2:
            sleep(0.2)
    raise AssertionError(f"the calls never fitted in one calendar minute ({attempts} runs)")
