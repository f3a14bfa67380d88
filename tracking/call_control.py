"""What the code that starts a call can tell it from outside: the id to use, and "the caller left".

The proxy answers one HTTP request with one call, and wants the two to share a request id (the
answer's ``x-request-id`` is the ledger row's key), and wants a call whose client has hung up to
stop spending: no new attempt once the client is gone. :func:`controlled` sets a
:class:`CallControl` for the calls started inside its block (a context variable, so it follows
the task and nothing else); :func:`tracking.flow.edit_flow` reads it. The attempt in flight when
the client leaves is not cut off: the upstream may already be making (and billing) the image, so
it runs to its end and its event, cost included, is recorded as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["CallControl", "CallerGone", "claim", "controlled", "current_control"]


class CallerGone(Exception):
    """Reported to the route for a target that was chosen but never sent: the caller left."""


@dataclass(slots=True)
class CallControl:
    #: The request id the next call takes (once: a second call in the block gets its own).
    request_id: str | None = None
    #: Set when the caller has gone away: no new attempt, no waiting before one.
    abandoned: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def abandon(self) -> None:
        self.abandoned = True
        self._wake.set()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the caller goes away meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()


_CURRENT: ContextVar[CallControl | None] = ContextVar("tracking_call_control", default=None)


@contextlib.contextmanager
def controlled(control: CallControl) -> Iterator[CallControl]:
    """Calls started inside the block (in this task) follow ``control``."""
    token = _CURRENT.set(control)
    try:
        yield control
    finally:
        _CURRENT.reset(token)


def claim() -> tuple[CallControl | None, str | None]:
    """For a starting call: the control in force and the request id preset for it (taken)."""
    control = _CURRENT.get()
    if control is None:
        return None, None
    request_id, control.request_id = control.request_id, None
    return control, request_id


def current_control() -> CallControl | None:
    return _CURRENT.get()
