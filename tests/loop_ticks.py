"""Counts how often the event loop ran another task: zero while something blocks the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


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
