"""What the code that starts a call can tell it from outside: the id to use, and "the caller left".

The proxy answers one HTTP request with one call, and wants the two to share a request id (the
answer's ``x-request-id`` is the ledger row's key), wants a call whose client has hung up to
stop spending: no new attempt once the client is gone, and wants no attempt the call's budget
hold cannot cover (``cover``: a retry after an attempt that may have been billed unseen, or a
fallback to a dearer model). :func:`controlled` sets a
:class:`CallControl` for the calls started inside its block (a context variable, so it follows
the task and nothing else); :func:`tracking.flow.edit_flow` reads it. The attempt in flight when
the client leaves is not cut off: the upstream may already be making (and billing) the image, so
it runs to its end and its event, cost included, is recorded as usual. Once the call's event is
made, the control holds what it cost (``ended``, ``cost_usd``), whatever the call then raises: a
cancellation or a bug of ours says nothing of it, and the proxy settles the call's budget hold at
that figure, as the ledger records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .request import ImageEditRequest
    from .response import ImageResponse

__all__ = [
    "CallControl",
    "CallerGone",
    "Cover",
    "Finish",
    "NotCovered",
    "Withheld",
    "caller_context",
    "claim",
    "controlled",
    "current_control",
]


class Withheld(Exception):
    """Reported to the route for a target that was chosen but never sent: withheld by the call
    (the call then ends with the failure of the attempt before it), or cut off by the call's
    cancellation or interruption before its request went (then this one's ``__cause__`` is the
    ``CancelledError`` / ``KeyboardInterrupt``, and the call ends with that)."""


class CallerGone(Withheld):
    """The caller left."""


class NotCovered(Withheld):
    """The call's hold (the proxy's budgets) could not cover another attempt."""


#: ``cover(lost, upcoming)``: before each attempt after the first, with the requests of the
#: call's attempts whose outcome is unknown so far (maybe billed) and the request about to be
#: sent; raises to withhold the attempt.
Cover = Callable[["Sequence[ImageEditRequest]", "ImageEditRequest"], Awaitable[None]]


#: ``finish(response, request_id)``: see :attr:`CallControl.finish`.
Finish = Callable[["ImageResponse", str], Mapping[str, Any]]

log = logging.getLogger("tracking")

#: How often a backoff sleep reads ``probe`` (the caller left: stop waiting).
PROBE_INTERVAL = 0.05


@dataclass(slots=True)
class CallControl:
    """How a call is controlled from outside: its preset id, and whether its caller has gone.

    The caller's leaving is known one of two ways: ``abandon()`` (something watching the
    connection says so), or ``probe``, a check that costs nothing, read when the call is about
    to start an attempt or wait before one (the proxy reads its HTTP server's own flag, so no
    task per request has to sit waiting for a disconnect that almost never comes).
    """

    #: The request id the next call takes (once: a second call in the block gets its own).
    request_id: str | None = None
    #: Returns True once the caller has gone away (None: only ``abandon()`` says so).
    probe: Callable[[], bool] | None = None
    #: Awaited before each attempt after the first of an async call (:data:`Cover`); what it
    #: raises withholds the attempt (:class:`NotCovered`). A sync call does not run it.
    cover: Cover | None = None
    #: Whether a call has started under this control (taken its id): before that, nothing of
    #: it can have been sent or billed.
    claimed: bool = False
    #: The instant the next call starts at (its event's ``start_time``, once, as ``request_id``):
    #: the proxy reads its clock once per call, so the call's budget periods (a UTC day, a
    #: month) and its ledger row's day are the same. None: when the call starts.
    start_time: datetime | None = None
    #: Whether the call's event has been made: from then on ``cost_usd`` is what it cost, as its
    #: ledger row records it (None: unpriced), whatever exception the call ends with.
    ended: bool = False
    cost_usd: Decimal | None = None
    #: Run once a call has succeeded, before its event is made (in a worker thread on the async
    #: path): given the response and the call's request id, it returns what to add to the
    #: event's ``metadata`` (the proxy stores a URL answer's images here, so the ledger row says
    #: how the answer was served). Taken by the first call to succeed; what it raises is logged.
    #: A streamed call does not run it (its images went out as its events).
    finish: Finish | None = None
    #: What to add to the event's ``metadata`` instead of ``finish``'s answer when the call is
    #: cancelled before ``finish`` ran or while it runs (the proxy's URL answer: nothing was
    #: answered, and why).
    finish_cancelled: Mapping[str, Any] | None = None
    #: Whether a fallback model group may serve the call (the proxy's key's ``models`` under
    #: ``enforce_fallback_model_access``): a router skips the fallbacks it refuses. None: any.
    may_serve: Callable[[str], bool] | None = None
    _gone: bool = False
    _wake: asyncio.Event | None = None

    @property
    def abandoned(self) -> bool:
        """Whether the caller has gone away: no new attempt, no waiting before one."""
        if not self._gone and self.probe is not None and self.probe():
            log.info("the caller disconnected during the upstream call: no further attempts")
            self.abandon()
        return self._gone

    def record_cost(self, cost_usd: Decimal | None) -> None:
        """The call's event is made and says it cost ``cost_usd``."""
        self.ended, self.cost_usd = True, cost_usd

    def abandon(self) -> None:
        self._gone = True
        if self._wake is not None:
            self._wake.set()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the caller goes away meanwhile."""
        if self.probe is not None:
            deadline = time.monotonic() + seconds
            while not self.abandoned and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110 - a probe cannot wake a waiter: it is read
                await asyncio.sleep(min(left, PROBE_INTERVAL))
            return
        if self._gone:
            return
        if self._wake is None:
            self._wake = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()


_CURRENT: ContextVar[CallControl | None] = ContextVar("tracking_call_control", default=None)


class controlled:  # lower-case, as the function it replaced: ``with controlled(control):``
    """Calls started inside the block (in this task) follow ``control``."""

    __slots__ = ("_control", "_token")

    def __init__(self, control: CallControl) -> None:
        self._control = control

    def __enter__(self) -> CallControl:
        self._token = _CURRENT.set(self._control)
        return self._control

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._token)


def claim() -> tuple[CallControl | None, str | None, datetime]:
    """For a starting call: the control in force, the request id preset for it and its start
    time (the preset one, else now; both taken)."""
    control = _CURRENT.get()
    if control is None:
        return None, None, datetime.now(UTC)
    request_id, control.request_id = control.request_id, None
    start_time, control.start_time = control.start_time, None
    control.claimed = True
    return control, request_id, start_time or datetime.now(UTC)


def current_control() -> CallControl | None:
    return _CURRENT.get()


def caller_context() -> Context:
    """A copy of the current context for code that runs later, elsewhere, on the caller's
    behalf (a user callback): the caller's context variables, without the control of the call
    that just ended, which a call made from there (a callback calling ``image_edit``) would
    otherwise claim: its budget cover, its cost as the proxy's request's."""
    context = copy_context()
    if _CURRENT.get() is not None:
        context.run(_CURRENT.set, None)
    return context
