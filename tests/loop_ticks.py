"""Counts how often the event loop ran another task (zero while something blocks the loop), and
which functions ran on the loop's own thread."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import Any


class Ticks:
    count = 0


@contextlib.asynccontextmanager
async def loop_ticks(every: float = 0.01) -> AsyncIterator[Ticks]:
    """A task that counts a tick every ``every`` seconds of the loop's time, for the block."""
    ticks = Ticks()

    async def tick() -> None:
        while True:
            await asyncio.sleep(every)
            ticks.count += 1

    running = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        running.cancel()


@contextlib.contextmanager
def called_on_this_thread(name: str) -> Iterator[list[str]]:
    """The calls of Python functions named ``name`` made on this thread inside the block, by
    their files. ``sys.setprofile`` is per thread: what runs in another (``asyncio.to_thread``)
    is not seen, so on an event loop's thread an empty list means it stayed off the loop."""
    calls: list[str] = []

    def seen(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == name:
            calls.append(frame.f_code.co_filename)

    sys.setprofile(seen)
    try:
        yield calls
    finally:
        sys.setprofile(None)
