"""Streamed image edits for the caller: ``image_edit(..., stream=True)`` and its async twin.

:class:`ImageEditStream` (sync) and :class:`AsyncImageEditStream` iterate over the typed events
of :mod:`tracking.stream_events` as the upstream sends them. Both drive the one
:func:`~tracking.stream_flow.stream_flow`; the two drivers below are the only code that differs
(httpx for sync calls, aiohttp for async ones, from the same pools as plain calls).

Making the stream sends the request and waits for its first event, so a refused call raises
there, as the ``openai`` client does. Closing the stream, leaving its ``with`` block, breaking
out of the loop and dropping it all close the upstream connection, and a stream closed before its
completed event still ends with its one event (a failure, ``error_type="stream_closed"``, priced
by estimate). The call's event is emitted once the completed event has been handed over and the
caller asks for more (the end of a ``for`` loop), or when the stream is closed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import AsyncGenerator, Generator, Iterator
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from . import bus
from .errors import StreamClosed
from .events import ImageEditEvent
from .flow import Answer, Emit, Sleep, consult_async, consult_sync, release_frames
from .http import POOL, aread_capped, origin_of, read_capped
from .request import call_type_of
from .stream_events import ImageEditStreamEvent
from .stream_flow import Deliver, OpenStream, ReadStream, stream_flow
from .targets import Consult, Route

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AsyncImageEditStream", "ImageEditStream"]

_CLOSED_EARLY = "the caller closed the stream before its completed event"
#: After the completed event, what is left of an answer is read for at most this long and this
#: much, so its connection can be pooled (async calls; a sync call closes it).
_DRAIN_SECONDS = 0.05
_DRAIN_BYTES = 64 * 1024
#: An error answer to a streamed call is read up to this much (its message is at the start).
_ERROR_BYTES = 1024 * 1024


class _StreamState:
    """What the driver tells its stream object; separate, so that the two hold no cycle and a
    dropped stream is closed at once."""

    __slots__ = ("event", "request_id", "upstream_request_id")

    def __init__(self) -> None:
        self.request_id = ""
        self.upstream_request_id: str | None = None
        self.event: ImageEditEvent | None = None


class _StreamFacts:
    """The read-only facts both stream classes expose."""

    _state: _StreamState

    @property
    def request_id(self) -> str:
        """Our id for the call (its event's and ledger row's), known from the first event on."""
        return self._state.request_id

    @property
    def upstream_request_id(self) -> str | None:
        """The upstream's own id of the answer (its ``x-request-id``), known from the first
        event on when it sent one."""
        return self._state.upstream_request_id

    @property
    def event(self) -> ImageEditEvent | None:
        """The call's one event, once the stream has ended (completed, broken or closed)."""
        return self._state.event

    @property
    def cost_usd(self) -> Decimal | None:
        """The call's cost once it has ended: from the completed event's usage, else estimated."""
        event = self._state.event
        return event.cost_usd if event is not None else None


class ImageEditStream(_StreamFacts):
    """The events of a streamed edit (``tracking.image_edit(..., stream=True)``)."""

    def __init__(self, params: dict[str, Any], route: Route | None = None) -> None:
        self._state = _StreamState()
        self._events: Generator[ImageEditStreamEvent, None, None] = _drive_sync(
            stream_flow(call_type_of(params, asynchronous=False), params, route), self._state
        )
        self._first: ImageEditStreamEvent | None = next(self._events)

    def __iter__(self) -> ImageEditStream:
        return self

    def __next__(self) -> ImageEditStreamEvent:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return next(self._events)

    def close(self) -> None:
        """Stop listening: the upstream connection is closed and the call's event emitted."""
        self._first = None
        self._events.close()

    def __enter__(self) -> ImageEditStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncImageEditStream(_StreamFacts):
    """The events of a streamed async edit (``await tracking.aimage_edit(..., stream=True)``)."""

    def __init__(self, params: dict[str, Any], route: Route | None = None) -> None:
        self._state = _StreamState()
        flow = stream_flow(call_type_of(params, asynchronous=True), params, route)
        answer = _AsyncAnswer()
        self._events = _drive_async(flow, self._state, answer)
        self._first: ImageEditStreamEvent | None = None
        # A dropped async stream is closed by the loop, which may never get to it (dropped as
        # its loop ends: asyncio.run cancels the closing task before it starts); this finishes
        # the call's closing path without the loop, once, unless the driver has emitted.
        weakref.finalize(self, _finish_abandoned, flow, self._state, answer)

    async def _start(self) -> AsyncImageEditStream:
        self._first = await self._events.__anext__()
        return self

    def __aiter__(self) -> AsyncImageEditStream:
        return self

    async def __anext__(self) -> ImageEditStreamEvent:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop listening: the upstream connection is closed and the call's event emitted."""
        self._first = None
        await self._events.aclose()

    close = aclose  # the name the openai package's AsyncStream uses

    async def __aenter__(self) -> AsyncImageEditStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def open_async_stream(
    params: dict[str, Any], route: Route | None = None
) -> AsyncImageEditStream:
    """An async stream whose first event has arrived (a refused call raises here)."""
    return await AsyncImageEditStream(params, route)._start()


# -- drivers: the only code that differs between sync and async -----------------------------


class _Stepper:
    """Steps the flow for a driver: sends results, and throws :class:`StreamClosed` into it once
    the caller has stopped listening (the flow then emits the call's event and ends)."""

    __slots__ = ("_throw", "closed", "flow")

    def __init__(self, flow: Generator[Any, Any, None]) -> None:
        self.flow = flow
        self.closed = False
        self._throw = False

    def next(self, result: Any, interrupted: BaseException | None = None) -> Any:
        """The flow's next effect, or None once it has ended (or ended closed by the caller).
        ``interrupted``: what ended the last effect's work (a cancellation), thrown into the
        flow, which records it in the call's event and raises it."""
        try:
            if self._throw:
                self._throw = False
                return self.flow.throw(StreamClosed(_CLOSED_EARLY))
            if interrupted is not None:
                return self.flow.throw(interrupted)
            return self.flow.send(result)
        except StopIteration:
            return None
        except StreamClosed as exc:
            if self.closed:
                return None  # the flow has emitted the closed call's event
            release_frames(exc)
            raise
        except BaseException as exc:
            release_frames(exc)
            raise

    def caller_closed(self) -> None:
        self.closed = self._throw = True


def _drive_sync(
    flow: Generator[Any, Any, None], state: _StreamState
) -> Generator[ImageEditStreamEvent, None, None]:
    answer = _SyncAnswer()
    stepper = _Stepper(flow)
    result: Any = None
    interrupted: BaseException | None = None
    try:
        while (effect := stepper.next(result, interrupted)) is not None:
            result = interrupted = None
            if isinstance(effect, ReadStream):
                result = answer.read()
            elif isinstance(effect, Deliver):
                state.request_id = effect.request_id
                state.upstream_request_id = effect.upstream_request_id
                try:
                    yield effect.item
                except GeneratorExit:  # closed or dropped: the flow records it, then we stop
                    stepper.caller_closed()
            elif isinstance(effect, OpenStream):
                result = answer.open(effect)
            elif isinstance(effect, Sleep | Consult):
                try:  # interrupted (Ctrl-C) while it waits: the flow records it, as async
                    if isinstance(effect, Sleep):
                        time.sleep(effect.seconds)
                    else:  # the router's shared state (Redis)
                        result = consult_sync(effect)
                except BaseException as exc:
                    interrupted = exc
            elif isinstance(effect, Emit):
                answer.close()  # the upstream is done with before receivers run
                state.event = effect.event
                bus.emit_sync(effect.event, effect.response, effect.exception, effect.plan)
                del effect  # the flow raises its failure next: no frame may hold it
    finally:
        answer.close()
        flow.close()


async def _drive_async(
    flow: Generator[Any, Any, None], state: _StreamState, answer: _AsyncAnswer
) -> AsyncGenerator[ImageEditStreamEvent, None]:
    stepper = _Stepper(flow)
    result: Any = None
    interrupted: BaseException | None = None
    try:
        while (effect := stepper.next(result, interrupted)) is not None:
            result = interrupted = None
            if isinstance(effect, ReadStream):
                result = await answer.read()
            elif isinstance(effect, Deliver):
                state.request_id = effect.request_id
                state.upstream_request_id = effect.upstream_request_id
                try:
                    yield effect.item
                except GeneratorExit:
                    stepper.caller_closed()
            elif isinstance(effect, OpenStream):
                result = await answer.open(effect)
            elif isinstance(effect, Sleep | Consult):
                # Cancelled while it waits (a backoff, a large event parsed in a worker
                # thread, the router's shared state): the flow is told, so the call still
                # ends with its one event (before, it was closed without one).
                try:
                    if isinstance(effect, Sleep):
                        await asyncio.sleep(effect.seconds)
                    else:
                        result = await consult_async(effect)
                except BaseException as exc:
                    interrupted = exc
            elif isinstance(effect, Emit):
                state.event = effect.event
                ending = asyncio.ensure_future(_finish_and_emit(answer, effect))
                _ENDING.add(ending)
                ending.add_done_callback(_ENDING.discard)
                del effect  # the flow raises its failure next: no frame may hold it
                # Shielded: a caller cancelled now (the proxy's relay, when its client hangs
                # up after the completed event) must not take the call's one event with it.
                await asyncio.shield(ending)
    finally:
        answer.close()
        flow.close()


#: Calls ending (their answers finishing, their events being emitted) whose caller may have
#: been cancelled meanwhile: held here until done (the loop keeps only weak references).
_ENDING: set[asyncio.Future[None]] = set()


async def _finish_and_emit(answer: _AsyncAnswer, effect: Emit) -> None:
    if effect.exception is None:
        await answer.finish()  # the connection goes back to the pool if it can
    answer.close()
    await bus.emit_async(effect.event, effect.response, effect.exception, effect.plan)


def _finish_abandoned(
    flow: Generator[Any, Any, None], state: _StreamState, answer: _AsyncAnswer
) -> None:
    """An async stream was dropped before its end: close its answer and run the flow's closing
    path here, emitting the call's event (``stream_closed``, estimated) synchronously. Nothing
    when the driver has emitted it; a flow that is running or finished is left alone."""
    if state.event is not None or inspect.getgeneratorstate(flow) != inspect.GEN_SUSPENDED:
        return
    answer.close()
    try:
        effect = flow.throw(StreamClosed(_CLOSED_EARLY))
        while True:
            result: Any = None
            if isinstance(effect, Emit):
                state.event = effect.event
                bus.emit_sync(effect.event, effect.response, effect.exception, effect.plan)
            elif isinstance(effect, Consult):  # the router's shared state (Redis)
                result = consult_sync(effect)
            else:  # nothing else follows a close: the flow is not awaited any more
                return
            effect = flow.send(result)
    except (StopIteration, StreamClosed):
        pass
    except Exception as exc:  # a finalizer must not raise: report, as the bus does
        bus.report_failure("stream", "finishing a dropped stream failed", exc)
    finally:
        flow.close()


class _SyncAnswer:
    """The open streamed answer of a sync call (httpx, from the shared pool)."""

    def __init__(self) -> None:
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] = iter(())

    def open(self, effect: OpenStream) -> Answer | BaseException:
        self.close()
        prepared = effect.request
        try:
            client = POOL.sync_client(origin_of(prepared.url))
            request = client.build_request(
                "POST",
                prepared.url,
                content=prepared.body,
                headers=prepared.headers,
                timeout=effect.timeout,
            )
            response = client.send(request, stream=True)
            if response.status_code >= 400:  # an error answer: its first bytes say what failed
                try:
                    body = read_capped(response, _ERROR_BYTES)
                except httpx.TransportError:  # cut short: the status said it all (not billed)
                    body = b""
                finally:
                    response.close()
                return Answer(response.status_code, response.headers, body)
        except BaseException as exc:  # handed to the flow, which maps, records and re-raises it
            return exc
        self._response = response
        self._chunks = response.iter_bytes()
        return Answer(response.status_code, response.headers, b"")

    def read(self) -> bytes | BaseException:
        try:
            for chunk in self._chunks:
                if chunk:
                    return chunk
        except BaseException as exc:
            return exc
        return b""

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()  # unread: httpx closes the connection rather than pooling it


class _AsyncAnswer:
    """The open streamed answer of an async call (aiohttp, from the loop's shared session)."""

    def __init__(self) -> None:
        self._response: aiohttp.ClientResponse | None = None

    async def open(self, effect: OpenStream) -> Answer | BaseException:
        from .aiohttp_sender import as_httpx_errors

        self.close()
        prepared = effect.request
        try:
            sender = await POOL.async_client(origin_of(prepared.url))
            response = await sender.open(
                prepared.url, body=prepared.body, headers=prepared.headers, timeout=effect.timeout
            )
            if response.status >= 400:
                try:
                    with as_httpx_errors():
                        body = await aread_capped(response, _ERROR_BYTES)
                except httpx.TransportError:  # cut short: as the sync one
                    body = b""
                finally:
                    response.close()  # an error answer's connection is not worth pooling
                return Answer(response.status, response.headers, body)
        except BaseException as exc:  # handed to the flow, which maps, records and re-raises it
            return exc
        self._response = response
        return Answer(response.status, response.headers, b"")

    async def read(self) -> bytes | BaseException:
        from .aiohttp_sender import as_httpx_errors

        response = self._response
        if response is None:
            return b""
        try:
            with as_httpx_errors():
                return await response.content.readany()
        except BaseException as exc:
            return exc

    async def finish(self) -> None:
        """After the completed event: read what is left of the answer (its closing chunk, in
        practice already there) for a moment, so that a finished answer's connection is pooled
        for the next call instead of closed. An upstream that lingers is simply closed."""
        from .aiohttp_sender import as_httpx_errors

        response = self._response
        if response is None:
            return
        left = _DRAIN_BYTES
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                with as_httpx_errors():
                    while left > 0 and (chunk := await response.content.readany()):
                        left -= len(chunk)
        except Exception:  # noqa: S110 - lingering or broken: close() below drops it
            pass
        if response.content.at_eof():
            self._response = None
            response.release()

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()  # drops the connection: an unread stream is never pooled
