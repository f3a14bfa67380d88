"""Relaying a streamed edit (``stream=true``) to the proxy's client as Server-Sent Events.

The proxy makes the call with the SDK (:class:`~tracking.streaming.AsyncImageEditStream`), so a
call refused before its first event is answered as any other failure, with its status and
OpenAI-shaped JSON. Once the first event is in, the answer is ``200 text/event-stream`` and each
event is written as it arrives, its upstream JSON passed on as it came (``event: NAME`` and one
``data:`` line); nothing holds more than the event being relayed. The call's ledger row is
written when the SDK emits its event, after the completed event has been relayed and before the
answer ends; the budget reservation is settled with the event's cost.

Two ways a stream ends early, both ending the SDK call (its upstream connection closed, its one
event emitted as a failure priced by estimate): the client disconnects (seen on ``receive``; the
relay is cancelled, ``error_type`` ``cancelled`` or ``stream_closed``), or the upstream breaks
off (``stream_interrupted``), which the client hears as an OpenAI-shaped ``error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import StreamInterruptedError, TrackingError
from ..sse import encode_event
from ..stream_events import ImageEditStreamEvent
from ..streaming import AsyncImageEditStream
from .budgets import Reservation
from .errors import from_exception

__all__ = ["relay_stream"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_END = {"type": "http.response.body", "body": b"", "more_body": False}


async def relay_stream(
    stream: AsyncImageEditStream, reservation: Reservation, receive: Receive, send: Send
) -> None:
    """Answer with the stream's events until it ends or the client goes away."""
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # a buffering reverse proxy in front must pass it on
        (b"x-tracking-request-id", stream.request_id.encode()),
    ]
    upstream_id = stream.upstream_request_id  # (the first event is in hand: it is known)
    if upstream_id:
        headers.append((b"x-upstream-request-id", upstream_id.encode("latin-1", "replace")))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        first = await anext(stream)  # already in hand: sent before any task is made
        await send({"type": "http.response.body", "body": _encoded(first), "more_body": True})
        pump = asyncio.create_task(_pump(stream, send))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():  # the client went away (or this handler is cancelled)
                pump.cancel()
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    finally:
        await stream.aclose()  # a no-op once ended; else closes the upstream, emits the event
        await reservation.settle(stream.cost_usd)


async def _pump(stream: AsyncImageEditStream, send: Send) -> None:
    try:
        async for item in stream:
            await send({"type": "http.response.body", "body": _encoded(item), "more_body": True})
    except TrackingError as exc:  # broke off after the first event: its event is recorded
        error = from_exception(exc)
        message = (
            "the upstream's stream broke off before its completed event"
            if isinstance(exc, StreamInterruptedError)
            else error.message
        )
        payload = {
            "type": "error",
            "error": {
                "message": message,
                "type": error.type,
                "param": error.param,
                "code": exc.error_type,
            },
        }
        body = encode_event("error", json.dumps(payload).encode())
        await send({"type": "http.response.body", "body": body, "more_body": True})
    finally:
        await stream.aclose()
    await send(_END)


def _encoded(item: ImageEditStreamEvent) -> bytes:
    return encode_event(item.type, item.data)  # the upstream's JSON as it came


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
