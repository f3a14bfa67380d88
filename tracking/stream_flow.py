"""The life of one streamed image-edit call, written once for sync and async callers.

:func:`stream_flow` is a generator that does no I/O, like :func:`tracking.flow.edit_flow`, and
shares its attempts, routing, error mapping and event. Its own effects: :class:`OpenStream`
(send the request, keep the answer open once it says 2xx), :class:`ReadStream` (the next bytes
of that answer) and :class:`Deliver` (hand one typed event to the caller; a caller that stops
listening is thrown :class:`~tracking.errors.StreamClosed` there). The drivers are in
:mod:`tracking.streaming`.

An event of :data:`~tracking.flow.READ_OFF_THE_LOOP` bytes or more (a completed event's image
at 4K) is parsed (its JSON read, its image checked) in a worker thread on the async path, as a
large plain answer is, so the proxy's event loop serves its other requests meanwhile; usual
events are parsed where they are, with no thread hop.

The order of a call: attempts (retries, fallbacks) until one answer is open *and* its first
event has arrived; from then on nothing is retried, since the caller has seen that event. Events
are delivered as they arrive, the completed event last; then the call's one
:class:`~tracking.events.ImageEditEvent` is emitted. A call that completed is priced from the
completed event's usage; one that broke off, was cancelled or was closed early after the upstream
accepted it is a failure priced by estimate (``cost_source="estimate"``): the upstream may bill it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .call_control import claim
from .errors import (
    APIResponseError,
    StreamClosed,
    StreamInterruptedError,
    TrackingError,
    mask_secrets,
)
from .flow import (
    READ_OFF_THE_LOOP,
    Answer,
    CallType,
    DirectRoute,
    Emit,
    Sleep,
    _attempts,
    _make_event,
    _off_the_loop,
    _Progress,
    _status_error,
    _transport_error,
    _upstream_text,
    end_streamed_attempt,
)
from .frozen import fast_init
from .ids import new_request_id
from .pricing import price_day, unreadable_success
from .pricing.estimate import estimate_incomplete_stream
from .providers import PreparedRequest, Provider
from .request import MAX_PARTIAL_IMAGES, CallOptions, ImageEditRequest, Operation
from .response import ImageResponse
from .sse import EventTooLarge, SSEDecoder
from .stream_events import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageEditStreamEvent,
    parse_stream_event,
)
from .targets import Consult, Route, run_steps

if TYPE_CHECKING:
    from .events import ImageEditEvent

__all__ = ["Deliver", "OpenStream", "ReadStream", "StreamEffect", "stream_flow"]


@fast_init
@dataclass(frozen=True, slots=True)
class OpenStream:
    """Send the request; answer an :class:`~tracking.flow.Answer` whose body is empty when the
    status is 2xx (the answer then stays open for :class:`ReadStream`), else the whole body."""

    request: PreparedRequest
    timeout: float


@dataclass(frozen=True, slots=True)
class ReadStream:
    """The next bytes of the open answer: ``b""`` at its end, or the exception reading raised."""


@fast_init
@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``item`` to the caller; resumes when the caller asks for the next one."""

    item: ImageEditStreamEvent
    request_id: str
    #: The upstream's own id of the answer being read (its ``x-request-id``), when it sent one.
    upstream_request_id: str | None = None


StreamEffect = OpenStream | ReadStream | Deliver | Sleep | Emit | Consult
#: ``price_ref`` of the estimate for streamed attempts accepted upstream that broke off.
INCOMPLETE_STREAM_REF = "estimate:stream-incomplete"
_READ = ReadStream()


#: The qualities a partial image's event may tell an attempt that asked for ``auto`` (or none)
#: was made at: its estimate if it breaks off is that quality's, not the dearest one's. Another
#: value (a 2.6 model's ``xhigh``, a word of the upstream's) keeps the request's worst case.
_SAID_QUALITIES = frozenset({"low", "medium", "high"})


class _StreamReader:
    """The open answer of the current attempt: its decoder and the events parsed ahead."""

    def __init__(
        self,
        started: float,
        parsed: list[tuple[ImageEditRequest, CallOptions]],
        accepted: list[ImageEditRequest],
    ) -> None:
        self.started = started
        #: the requests of attempts an upstream answered 2xx: each may be billed, whole, even if
        #: it broke off (a fallback's ask another model); the call's ``_Progress.accepted``, so
        #: that a budget's hold before a retry counts them
        self.accepted = accepted
        #: the partial images each of them sent (usable events), in the same order: a broken
        #: one's estimate counts these, not the ones it asked for
        self.partials_received: list[int] = []
        self._parsed = parsed  # the call's requests as parsed: the last is the attempt's
        self.first_image_ms: float | None = None
        self.completed: ImageEditCompletedEvent | None = None
        self.upstream_request_id: str | None = None
        self.http_status: int | None = None
        self._decoder = SSEDecoder()
        self._ready: deque[ImageEditStreamEvent] = deque()
        #: what ended the answer, raised once the events parsed before it are delivered
        self._failed: BaseException | None = None
        self._events = 0  # parsed from this attempt's answer
        self._partials = 0  # of them, partial images
        self._prepared: PreparedRequest | None = None
        self._operation: Operation = "image_edit"  # the attempt's: the events' names say it
        self._timeout = 0.0  # the call's: the most a wait for one event may take
        #: the quality the attempt's first partial image said, not yet in ``accepted``
        self._said_quality: str | None = None

    def open(
        self, prepared: PreparedRequest, timeout: float, provider: Provider, progress: _Progress
    ) -> Generator[StreamEffect, Any, ImageEditStreamEvent]:
        """One attempt: open the answer and read up to its first event."""
        self._decoder = SSEDecoder()
        self._ready.clear()
        self.settle_quality()  # (the attempt before: none is pending once one delivered)
        self._failed, self._events, self._partials = None, 0, 0
        self._prepared = prepared
        self._operation = self._parsed[-1][0].operation
        self._timeout = timeout
        sent = time.perf_counter()
        outcome: Answer | BaseException = yield OpenStream(prepared, timeout)
        progress.upstream_latency_ms = (time.perf_counter() - sent) * 1000
        if isinstance(outcome, BaseException):
            progress.outcome = outcome  # sent whole, then lost? (the call path's unknown outcomes)
            raise _transport_error(outcome, prepared) from None
        upstream_id = _upstream_text(outcome.headers.get("x-request-id"), prepared.secrets)
        progress.upstream_request_id = self.upstream_request_id = upstream_id
        progress.http_status = self.http_status = outcome.status
        if outcome.status >= 400:
            raise _status_error(outcome, prepared, upstream_id, provider)
        self.accepted.append(self._parsed[-1][0])
        self.partials_received.append(0)
        content_type = outcome.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise APIResponseError(
                f"{prepared.host} answered {content_type or 'no content type'}, "
                "not a stream of events (text/event-stream)",
                status_code=outcome.status,
                upstream_request_id=upstream_id,
            )
        return (yield from self.next_event())

    def next_event(self) -> Generator[StreamEffect, Any, ImageEditStreamEvent]:
        """The next typed event, reading as much of the answer as it takes. An unusable event
        (not JSON, an ``error`` event, an image that is none) ends the answer, but only after
        the events before it, even those in the same chunk, are delivered. Each read may take
        the call's timeout (the driver's idle timeout), and so may the wait for the event: an
        answer whose bytes keep coming without one (keep-alive comments, events of unknown
        types, an event dripped a byte at a time) is broken off then, as a silent one is."""
        prepared = self._prepared
        assert prepared is not None
        self.settle_quality()  # the event before this one has been delivered
        waiting = time.perf_counter()  # (the caller's time between events is not counted)
        while not self._ready:
            if self._failed is not None:
                failed, self._failed = self._failed, None
                raise failed
            chunk: bytes | BaseException = yield _READ
            if isinstance(chunk, BaseException):
                error = _transport_error(chunk, prepared)
                if not isinstance(error, TrackingError):
                    raise error  # cancelled or interrupted: not an upstream failure
                raise StreamInterruptedError(
                    f"the stream from {prepared.host} broke off before its completed event: {error}"
                ) from None
            if not chunk:
                raise StreamInterruptedError(
                    f"the stream from {prepared.host} ended before its completed event"
                )
            try:
                decoded = self._decoder.feed(chunk)
            except EventTooLarge as exc:
                self._failed = self._unusable(APIResponseError(str(exc)), prepared)
                continue
            for sse in decoded:
                try:
                    if len(sse.data) < READ_OFF_THE_LOOP:
                        item = parse_stream_event(sse, self._operation)
                    else:  # a large image (a completed event at 4K): off the event loop
                        item = yield from _off_the_loop(parse_stream_event, sse, self._operation)
                except APIResponseError as exc:
                    self._failed = self._unusable(_masked(exc, prepared), prepared)
                    break
                if item is None:
                    continue
                if isinstance(item, ImageEditPartialImageEvent):
                    self._partials += 1
                    if self._partials > MAX_PARTIAL_IMAGES:  # an upstream that never finishes
                        self._failed = self._unusable(
                            APIResponseError(
                                f"the upstream sent more than {MAX_PARTIAL_IMAGES} partial "
                                "images, the most OpenAI's API makes"
                            ),
                            prepared,
                        )
                        break
                    self.partials_received[-1] = self._partials
                    if item.quality in _SAID_QUALITIES:
                        self._quality_said(item.quality)
                if self.first_image_ms is None:
                    self.first_image_ms = (time.perf_counter() - self.started) * 1000
                self._events += 1
                self._ready.append(item)
            waited = time.perf_counter() - waiting
            if not self._ready and self._failed is None and waited > self._timeout:
                raise StreamInterruptedError(
                    f"the stream from {prepared.host} sent no event for {self._timeout:g} s "
                    "(the call's timeout) before its completed event"
                )
        item = self._ready.popleft()
        if isinstance(item, ImageEditCompletedEvent):
            self.completed = item
        return item

    def _quality_said(self, quality: str) -> None:
        """The attempt's partial image says the quality it is made at: an attempt that asked
        for ``auto`` (or none) is estimated at it if it breaks off (OpenAI bills the image at
        the quality it made), not at the dearest quality ``auto`` could mean. Noted here and
        written into ``accepted`` by :meth:`settle_quality` once the event is delivered: a
        new request (``dataclasses.replace``, about 13 µs) is no part of the time to the
        first event, and nothing reads ``accepted`` before then (no attempt follows an
        attempt that delivered an event)."""
        if self._said_quality is None:
            self._said_quality = quality

    def settle_quality(self) -> None:
        """Write the quality a partial image said into the attempt's ``accepted`` request."""
        quality, self._said_quality = self._said_quality, None
        if quality is not None:
            asked = self.accepted[-1]
            if asked.quality in (None, "auto"):
                self.accepted[-1] = dataclasses.replace(asked, quality=quality)

    def _unusable(self, error: APIResponseError, prepared: PreparedRequest) -> BaseException:
        """What an unusable event ends the call with. As the answer's first event it is an
        answer that cannot be read (priced as an unknown outcome, or from the usage a completed
        event reported beside it); after other events the stream broke off mid-way, as a
        dropped connection does: a :class:`StreamInterruptedError`, estimated as a broken
        stream with its partial images."""
        if not self._events or getattr(error, "billed_usage", None) is not None:
            return error
        return StreamInterruptedError(
            f"the stream from {prepared.host} broke off before its completed event: {error}"
        )

    def response(self) -> ImageResponse | None:
        """The completed event as the plain call's response (what pricing and receivers read)."""
        done = self.completed
        if done is None:
            return None
        raw: dict[str, Any] = {
            "created": done.created_at,
            "data": [{"b64_json": done.b64_json}],
            "size": done.size,
            "quality": done.quality,
            "background": done.background,
            "output_format": done.output_format,
        }
        if "usage" in done.raw:
            raw["usage"] = done.raw["usage"]
        response = ImageResponse(raw={k: v for k, v in raw.items() if v is not None})
        response.partial_images_received = self._partials  # the completed attempt's
        response._hidden_params.update(
            upstream_request_id=self.upstream_request_id, http_status=self.http_status
        )
        return response


def _masked(error: APIResponseError, prepared: PreparedRequest) -> APIResponseError:
    """``error``, read from an event, with the upstream's words in it (an ``error`` event's
    message and code) masked of the call's secrets, the code bounded, as a status error's are."""
    secrets = prepared.secrets
    error.message = mask_secrets(error.message, secrets)
    error.args = (error.message,)
    if error.upstream_message is not None:
        error.upstream_message = mask_secrets(error.upstream_message, secrets)
    error.code = _upstream_text(error.code, secrets)
    return error


def stream_flow(
    call_type: CallType, params: dict[str, Any], route: Route | None = None
) -> Generator[StreamEffect, Any, None]:
    """One streamed call from raw parameters to its delivered events and its one event."""
    started = time.perf_counter()
    # the proxy's request id and start time, and whether its client has left
    control, preset_id, start_time = claim()
    request_id = preset_id or new_request_id()
    if route is None:
        route = DirectRoute(params)
    progress = _Progress()
    parsed: list[tuple[ImageEditRequest, CallOptions]] = []
    reader = _StreamReader(started, parsed, progress.accepted)
    failure: BaseException | None = None
    try:
        item = yield from _attempts(
            route,
            call_type,
            params,
            request_id,
            start_time,
            progress,
            parsed,
            reader.open,
            control=control,
        )
        while True:
            try:
                yield Deliver(item, request_id, reader.upstream_request_id)
            except StreamClosed:
                if isinstance(item, ImageEditCompletedEvent):
                    break  # closed once it had everything: a success
                raise
            if isinstance(item, ImageEditCompletedEvent):
                break
            item = yield from reader.next_event()
    except GeneratorExit:  # closed by its caller: nothing can be yielded any more
        run_steps(end_streamed_attempt(route, progress, StreamClosed("closed"), None))
        raise
    except BaseException as exc:  # every failure, even a cancellation, yields its event
        failure = exc
    reader.settle_quality()  # (the last event delivered, or the call failed or was closed)
    request, options = parsed[-1] if parsed else (None, None)
    response = reader.response() if failure is None else None
    yield from end_streamed_attempt(route, progress, failure, response)
    event = _make_event(
        request_id,
        call_type,
        params,
        request,
        options,
        response,
        failure,
        progress,
        start_time,
        started,
        route,
    )
    changes: dict[str, Any] = {"time_to_first_image_ms": reader.first_image_ms}
    # Accepted attempts that broke off (all of them when the call failed, else all but the
    # last) may each have been billed in full: their estimate is added to the call's cost.
    accepted = list(zip(reader.accepted, reader.partials_received, strict=True))
    broken = accepted[:-1] if failure is None else accepted
    if broken and getattr(failure, "billed_usage", None) is not None:
        broken = broken[:-1]  # its completed event said what it billed: priced from that
    elif broken and unreadable_success(failure):
        broken = broken[:-1]  # a 2xx that was no stream of events: the event estimated it
    if broken:
        changes.update(_with_broken_streams(event, broken, price_day(start_time)))
    if failure is not None and reader.accepted:  # answered 2xx: the event names the last answer
        changes.update(
            upstream_request_id=progress.upstream_request_id, http_status=progress.http_status
        )
    event = event.replace(**changes)
    if isinstance(failure, TrackingError):
        failure.ended(event)
    if control is not None:  # what the call cost, whatever it ends with (a cancellation too)
        control.record_cost(event.cost_usd)
    if response is not None:
        response.request_id = event.request_id
        response.cost_usd = event.cost_usd
    yield Emit(event, response, failure, progress.plan)
    if failure is not None:
        raise failure


def _with_broken_streams(
    event: ImageEditEvent, broken: list[tuple[ImageEditRequest, int]], day: date | None = None
) -> dict[str, Any]:
    """The cost fields of ``event`` with the ``broken`` attempts (accepted, then broken off: each
    one's request and the partial images it sent) estimated, each as what it asked, with the
    partial images it sent.

    A failed call costs their estimate, plus the estimate of attempts whose answer never came
    (already in ``event``); a call that succeeded costs its own price plus theirs. No price for
    the model: a failed call stays unpriced (never $0), a successful one keeps its own price.
    ``day``: the day whose prices apply (the call's start; None: today).
    """
    estimates = [estimate_incomplete_stream(asked, day, partials=got) for asked, got in broken]
    failed = event.status == "failure"
    if None in estimates:
        return (
            {
                "cost_usd": None,
                "cost_per_image_usd": None,
                "cost_source": "unpriced",
                "price_ref": None,
            }
            if failed
            else {}
        )
    total = sum((e for e in estimates if e is not None), Decimal(0))
    ref = INCOMPLETE_STREAM_REF
    if failed:
        # attempts sent whole whose answer never came back (estimated), or the last one's
        # completed event that reported its usage beside an unusable image (priced from it)
        if event.cost_source in ("estimate", "usage", "custom") and event.cost_usd is not None:
            total += event.cost_usd
            ref = f"{ref}+{event.price_ref}" if event.price_ref else ref
        return {
            "cost_usd": total,
            "cost_per_image_usd": None,
            "cost_source": "estimate",
            "price_ref": ref,
        }
    if event.cost_usd is None:
        return {}
    return {
        "cost_usd": event.cost_usd + total,
        "cost_source": "estimate",
        "price_ref": f"{event.price_ref}+{ref}" if event.price_ref else ref,
    }
