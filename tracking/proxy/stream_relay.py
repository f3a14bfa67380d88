"""Relaying a streamed edit (``stream=true``) to the proxy's client as Server-Sent Events.

The proxy makes the call with the SDK (:class:`~tracking.streaming.AsyncImageEditStream`), so a
call refused before its first event is answered as any other failure, with its status and
OpenAI-shaped JSON. Once the first event is in, the answer is ``200 text/event-stream`` and each
event is written as it arrives, its upstream JSON passed on as it came (``event: NAME`` and one
``data:`` line); nothing holds more than the event being relayed. The call's ledger row is
written when the SDK emits its event, after the upstream's completed event and before it is
relayed: the relayed completed event carries the call's cost in a ``tracking`` object
(``request_id``, ``response_cost``, ``cost_source``, as the non-streamed answer's headers), and
a client that has it knows the call's row is written. The name ``tracking`` is the proxy's: a
member of that name the upstream put in any event is taken out before it is relayed, so a client
never reads the upstream's figures as ours (the event is then written again from its parsed
JSON, off the event loop when large; every other event goes out as its bytes came). The caller
settles the budget reservation with the event's cost once the relay has ended, however it ended
(:mod:`tracking.proxy.app`).

Three ways a stream ends early, each ending the SDK call (its upstream connection closed, its one
event emitted as a failure priced by estimate): the client disconnects (seen on ``receive``; the
relay is cancelled, ``error_type`` ``cancelled`` or ``stream_closed``); the client stops reading,
so that one event is not taken within ``within`` seconds (``request_read_timeout``: the stream is
closed, ``stream_closed``, and so is the connection); or the upstream breaks off
(``stream_interrupted``), which the client hears as an OpenAI-shaped ``error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import StreamInterruptedError, TrackingError
from ..flow import READ_OFF_THE_LOOP
from ..sse import encode_event
from ..stream_events import ImageEditCompletedEvent, ImageEditStreamEvent
from ..streaming import AsyncImageEditStream
from .answer_cost import cost_fields, cost_headers, failure_cost_fields
from .errors import from_exception

__all__ = ["relay_stream"]

log = logging.getLogger("tracking.proxy")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_END = {"type": "http.response.body", "body": b"", "more_body": False}


class _ClientStalled(Exception):
    """The client took none of an event's bytes for ``within`` seconds: it reads no more."""


async def _write(send: Send, message: Message, within: float) -> None:
    """``send``, which waits while the client's connection is full, for at most ``within``.

    The deadline is what ``asyncio.timeout`` does (the task cancelled when it passes, that
    cancellation alone turned into :class:`_ClientStalled`, any other one passed on), without
    its state machine: on Python 3.11 entering and leaving one costs about 27,000 instructions
    (its state is an ``Enum``), a timer about a third of that, and the first event's write is
    on the way to the client's first event."""
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(within, expire)
    try:
        await send(message)
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            raise _ClientStalled from None
        raise
    finally:
        timer.cancel()
    if expired:  # it passed as the write completed: the cancellation is not delivered
        task.uncancel()


async def relay_stream(
    stream: AsyncImageEditStream,
    receive: Receive,
    send: Send,
    within: float,
) -> None:
    """Answer with the stream's events until it ends or the client goes away (or stops
    reading: an event it does not take within ``within`` seconds ends the stream)."""
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
        held: ImageEditCompletedEvent | None = None
        if isinstance(first, ImageEditCompletedEvent):
            held = first  # the only event (no partial images): sent with the call's cost
        else:
            body = await _encoded(first)
            await _write(
                send, {"type": "http.response.body", "body": body, "more_body": True}, within
            )
        pump = asyncio.create_task(_pump(stream, send, within, held))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():  # the client went away (or this handler is cancelled)
                pump.cancel()
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
    except _ClientStalled:  # the connection is closed (the answer was never completed)
        log.warning(
            "call %s: the client took no part of a streamed event for %s s "
            "(request_read_timeout): the stream and the connection are closed",
            stream.request_id,
            within,
        )
    finally:
        await stream.aclose()  # a no-op once ended; else closes the upstream, emits the event


async def _pump(
    stream: AsyncImageEditStream,
    send: Send,
    within: float,
    held: ImageEditCompletedEvent | None = None,
) -> None:
    """Relay the events after the first. The completed event is held until the stream ends
    (the call's event emitted, its ledger row written) and is sent with the call's cost in a
    ``tracking`` object, as the answer's headers (gone out with the first event) could not."""
    try:
        async for item in stream:
            if isinstance(item, ImageEditCompletedEvent):
                held = item
                continue
            chunk = {"type": "http.response.body", "body": await _encoded(item), "more_body": True}
            await _write(send, chunk, within)
        if held is not None:
            body = encode_event(held.type, _with_cost(await _own_data(held), stream))
            await _write(
                send, {"type": "http.response.body", "body": body, "more_body": True}, within
            )
    except TrackingError as exc:  # broke off after the first event: its event is recorded
        error = from_exception(exc)
        message = (
            "the upstream's stream broke off before its completed event"
            if isinstance(exc, StreamInterruptedError)
            else error.message
        )
        payload: dict[str, Any] = {
            "type": "error",
            "error": {
                "message": message,
                "type": error.type,
                "param": error.param,
                "code": exc.error_type,
            },
        }
        cost = failure_cost_fields(exc)  # what the call cost: the headers went out already
        if cost:
            payload["tracking"] = cost
        body = encode_event("error", json.dumps(payload).encode())
        await _write(send, {"type": "http.response.body", "body": body, "more_body": True}, within)
    finally:
        await stream.aclose()
    await _write(send, _END, within)


async def _encoded(item: ImageEditStreamEvent) -> bytes:
    return encode_event(item.type, await _own_data(item))


async def _own_data(item: ImageEditStreamEvent) -> bytes:
    """The upstream's JSON for ``item`` as it came, unless it holds a member named ``tracking``
    (the name of the proxy's own figures): then without it."""
    if _MEMBER not in item.raw:
        return item.data
    kept = {name: value for name, value in item.raw.items() if name != _MEMBER}
    if len(item.data) < READ_OFF_THE_LOOP:
        return _dumps(kept)
    return await asyncio.to_thread(_dumps, kept)  # a completed event at 4K: tens of MB


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


_MEMBER = "tracking"


def _with_cost(data: bytes, stream: AsyncImageEditStream) -> bytes:
    """The completed event's JSON object as it came (without any ``tracking`` member of the
    upstream's), with a last member ``tracking`` (the call's ``request_id``, ``response_cost``
    and ``cost_source``), written in without parsing the image."""
    event = stream.event
    if event is None:  # (the stream ended without its event: nothing to say)
        return data
    fields = cost_fields(event.request_id, cost_headers(event.cost_usd, event.cost_source))
    return with_last_member(data, b"tracking", json.dumps(fields).encode())


def with_last_member(data: bytes, name: bytes, value: bytes) -> bytes:
    """The JSON object ``data`` with ``"name": value`` added as its last member, its other bytes
    untouched; ``data`` itself when it does not end as an object does. It is copied once (a
    completed event at 4K is tens of MB): what it holds before its closing brace is a view."""
    end = _before_space(data, len(data))
    if not end or data[end - 1] != _CLOSE:  # (the SDK parsed it as an object: cannot happen)
        return data
    inner = _before_space(data, end - 1)
    separator = b"" if inner and data[inner - 1] == _OPEN else b","
    member = b'%s "%s": %s}' % (separator, name, value)
    return b"".join((memoryview(data)[:inner], member))


_OPEN, _CLOSE = ord("{"), ord("}")
_SPACE = frozenset(b" \t\r\n")


def _before_space(data: bytes, end: int) -> int:
    """Where the JSON whitespace that ends ``data[:end]`` begins."""
    while end and data[end - 1] in _SPACE:
        end -= 1
    return end


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
