"""Delivery of each call's event to integrations and user callbacks.

The foundation only defines the two entry points the call flow uses; the callback bus of
DESIGN 4 (registration, isolation, batching, flush and shutdown) is built on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import ImageEditEvent
    from .integration import CallStart
    from .response import ImageResponse

__all__ = ["dispatch_start", "emit_async", "emit_sync"]


def dispatch_start(call: CallStart) -> None:
    """Run every integration's cheap ``on_start`` hook; never raises."""


def emit_sync(
    event: ImageEditEvent, response: ImageResponse | None, exception: BaseException | None
) -> None:
    """Hand a finished sync call's event to every registered receiver."""


async def emit_async(
    event: ImageEditEvent, response: ImageResponse | None, exception: BaseException | None
) -> None:
    """Hand a finished async call's event to every registered receiver."""
