"""The life of one image call (an edit or a generation), written once for sync and async
callers.

:func:`edit_flow` is a generator that does no I/O: it yields *effects* (:class:`Send` one HTTP
request, :class:`Sleep` before a retry, :class:`~tracking.targets.Consult` a router's shared
state or work kept off the event loop, :class:`Emit` the finished event) and receives the
results. :func:`run_sync` and :func:`run_async` drive it; they are the only places where the two
worlds differ. Parsing, provider choice, retries, error mapping, pricing and the event are here,
once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

import httpx

from . import bus
from .call_control import CallControl, CallerGone, NotCovered, Withheld, claim, current_control
from .errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APITimeoutError,
    ConfigurationError,
    ContentPolicyError,
    TrackingError,
    ValidationError,
    mask_secrets,
    status_error_class,
)
from .events import NO_METADATA, ImageEditEvent, TokenUsage, freeze_metadata
from .frozen import fast_init, replacing
from .http import POOL, AnswerTooLarge, max_response_bytes, origin_of, send_sync
from .ids import new_request_id
from .images import read_image, read_images
from .integration import CallStart
from .pricing import price_call, price_day
from .providers import (
    Poll,
    PreparedRequest,
    Provider,
    is_provider,
    prepare_call,
    prepares_heavily,
)
from .request import (
    DEFAULT_MAX_RETRIES,
    MAX_N,
    CallOptions,
    CallType,
    ImageEditRequest,
    call_type_of,
    end_user_of,
    metadata_tags,
    metadata_team,
    parse_call,
)
from .response import ImageResponse
from .targets import Consult, Route, Routing, Steps, Target, run_steps
from .unknown_outcomes import outcome_unknown, with_unknown_outcomes

__all__ = ["CallType", "Emit", "Send", "Sleep", "edit_flow", "run_async", "run_sync"]

log = logging.getLogger("tracking")

#: Retry pacing, as the official client: exponential from 0.5 s, at most 8 s, with jitter;
#: a Retry-After of up to 60 s is honoured as given.
_INITIAL_BACKOFF = 0.5
_MAX_BACKOFF = 8.0
_MAX_RETRY_AFTER = 60.0
#: An upstream's Retry-After is read as at most a day (and passed on to callers as such).
MAX_RETRY_AFTER_HINT = 86_400.0
#: Upstream request ids, error codes and params are kept to this many characters.
_MAX_UPSTREAM_TEXT = 256


@fast_init
@dataclass(frozen=True, slots=True)
class Send:
    request: PreparedRequest
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float
    #: A retry's backoff: cut short when the caller goes away (a poll's wait is not).
    before_retry: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class Emit:
    event: ImageEditEvent
    response: ImageResponse | None
    exception: BaseException | None
    #: the receivers the call started with (``bus.dispatch_start``): the same ones end it, even
    #: if the lists changed meanwhile; None when the call never started (refused before it)
    plan: Any = None


@fast_init
@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for a :class:`Send`: the HTTP answer, read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes


Effect = Send | Sleep | Emit | Consult
R = TypeVar("R")
#: One attempt: (prepared request, timeout, provider, progress) -> its effects and result
#: (:func:`send_once`, or a streamed call's opening in :mod:`tracking.stream_flow`).
Attempt = Callable[[PreparedRequest, float, Provider, "_Progress"], Generator[Any, Any, R]]
#: ``dataclasses.replace(prepared, headers=...)``: the integrations' headers (``traceparent``)
#: added to every call's request, for 40% of ``replace``'s instructions
_with_headers = replacing(PreparedRequest, "headers")


def edit_flow(
    call_type: CallType, params: dict[str, Any], route: Route | None = None
) -> Generator[Effect, Any, ImageResponse]:
    """One call from raw parameters to a priced response, yielding the effects it needs.

    With a ``route`` (a :class:`tracking.Router` call) the route chooses each attempt's
    deployment and decides retries and fallbacks; without one the call goes where its
    parameters say and retries ``max_retries`` times.
    """

    started = time.perf_counter()
    # the proxy's request id and start time, and whether its client has left
    control, preset_id, start_time = claim()
    request_id = preset_id or new_request_id()
    if route is None:
        route = DirectRoute(params)
    progress = _Progress()
    request: ImageEditRequest | None = None
    options: CallOptions | None = None
    response: ImageResponse | None = None
    failure: BaseException | None = None
    parsed: list[tuple[ImageEditRequest, CallOptions]] = []
    try:
        try:
            response = yield from _attempts(
                route,
                call_type,
                params,
                request_id,
                start_time,
                progress,
                parsed,
                control=control,
            )
        finally:
            if parsed:
                request, options = parsed[-1]
    except GeneratorExit:
        raise
    except BaseException as exc:  # every failure, even a cancellation, yields its event
        failure = exc
    finished: Mapping[str, Any] = {}
    interrupted: BaseException | None = None  # the call succeeded: its event says so
    if response is not None and control is not None and control.finish is not None:
        finish, control.finish = control.finish, None
        try:
            finished = yield from _off_the_loop(finish, response, request_id)
        except GeneratorExit:
            raise
        except Exception:
            log.warning("finishing call %s failed", request_id, exc_info=True)
        except BaseException as exc:  # a cancellation: the event first, then the exception
            interrupted = exc
            finished = control.finish_cancelled or {}  # what was answered: not finish's answer
    elif control is not None and control.finish is not None and _error_type(failure) == "cancelled":
        # cancelled before its finish could start (during an attempt): nothing was answered
        control.finish = None
        finished = control.finish_cancelled or {}
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
        finished,
    )
    if isinstance(failure, TrackingError):  # the caller can find the failure's event by it
        failure.ended(event)
    if control is not None:  # what the call cost, whatever it ends with (a cancellation too)
        control.record_cost(event.cost_usd)
    if response is not None:
        response.request_id = event.request_id
        response.cost_usd = event.cost_usd
        response._hidden_params.update(
            response_cost=float(event.cost_usd) if event.cost_usd is not None else None,
            cost_source=event.cost_source,
            model=event.resolved_model,
            provider=event.provider,
            api_base=event.api_base,
            request_id=event.request_id,
            litellm_call_id=event.request_id,
            upstream_latency_ms=event.upstream_latency_ms,
        )
    yield Emit(event, response, failure, progress.plan)
    if failure is not None:
        raise failure
    if interrupted is not None:
        raise interrupted
    assert response is not None
    return response


# -- attempts: a route (a Router's, or the direct one) picks each attempt's target ----------


class DirectRoute:
    """The route of a call made without a router: where its parameters say, retried
    ``max_retries`` times on retryable errors with backoff, then the last error raised."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        # parse_call validates max_retries; a bad value fails the first attempt before any retry
        max_retries = params.get("max_retries")
        self.max_retries: int = (
            max_retries
            if isinstance(max_retries, int) and not isinstance(max_retries, bool)
            else DEFAULT_MAX_RETRIES
        )
        self.attempts = 0

    def next(self, failure: BaseException | None) -> Steps[Target]:
        yield from ()  # nothing to consult: a direct call has no shared state
        return self._next(failure)

    def _next(self, failure: BaseException | None) -> Target:
        if failure is not None:
            retryable = isinstance(failure, APIError) and failure.retryable
            if not retryable or self.attempts > self.max_retries:
                raise failure
        self.attempts += 1
        if failure is None:
            return _SAME_TARGET
        assert isinstance(failure, APIError)
        return Target(overrides={}, backoff=True, retry_after=failure.retry_after)

    def done(
        self,
        target: Target,
        error: BaseException | None,
        latency_ms: float | None,
        response: ImageResponse | None,
    ) -> Steps[None]:
        yield from ()

    def routing(self, model: str, model_group: str | None) -> Routing:
        return Routing(model, model_group)


_SAME_TARGET = Target(overrides={})


def send_once(
    prepared: PreparedRequest,
    timeout: float,
    provider: Provider,
    progress: _Progress,
) -> Generator[Effect, Answer | BaseException | None, ImageResponse]:
    """One attempt of a plain call: send the request, read the whole answer (following a
    provider's job until its result when the answer is a :class:`Poll`)."""
    sent = time.perf_counter()
    deadline = time.monotonic() + timeout  # a job's: its submit, polls and download together
    outcome = progress.outcome = yield Send(prepared, timeout)
    answer = yield from _read_where_best(outcome, prepared, provider)
    if isinstance(answer, Poll):
        progress.job_accepted = True  # billed from here on, whatever the polls say
        answer = yield from _follow(answer, provider, timeout, deadline)
    progress.upstream_latency_ms = (time.perf_counter() - sent) * 1000
    return _priced_as(answer, prepared)


def _attempts(
    route: Route,
    call_type: CallType,
    params: dict[str, Any],
    request_id: str,
    start_time: datetime,
    progress: _Progress,
    parsed: list[tuple[ImageEditRequest, CallOptions]],
    attempt: Attempt[R] = send_once,  # type: ignore[assignment]  # R is ImageResponse here
    control: CallControl | None = None,
) -> Generator[Any, Any, R]:  # the effects of ``attempt`` (a streamed call's too)
    """Attempts as the route directs: a target with overrides (another deployment or a
    fallback model) is validated anew for its model (a fallback the request does not fit is
    refused here and the route skips it); a target without reuses the prepared request. Each
    attempt is made by ``attempt`` (:func:`send_once`; a streamed call opens the stream and
    reads its first event) and reported back; ``route.next`` raises the error that ends the
    call once nothing is left to try. Once the caller has gone (``control.abandoned``) no new
    attempt starts: the last failure ends the call."""
    if not isinstance(route, DirectRoute):  # every target parses again: read files only once
        params = _images_read_once(params)
    headers: dict[str, str] | None = None
    start: CallStart | None = None
    failure: BaseException | None = None
    prepared: PreparedRequest | None = None
    told_lost = 0  # lost attempts the integrations were told of
    while True:
        if failure is not None and control is not None and control.abandoned:
            raise failure
        target = yield from route.next(failure)
        # what the event names if this target is withheld: the attempt before it
        before = len(parsed), progress.api_base, progress.server_port
        if target.overrides or prepared is None:
            try:
                request, options = parse_call(**{**params, **target.overrides})
                parsed.append((request, options))
                if prepares_heavily(request):  # a mask to decode, large images to encode
                    provider, prepared = yield from _off_the_loop(prepare_call, request, options)
                else:
                    provider, prepared = prepare_call(request, options)
                request = _request_priced_as(request, prepared)
                parsed[-1] = (request, options)
            except BaseException as exc:  # not sent: the route skips a fallback or gives up
                prepared = None
                if before[0]:  # the event names the attempt before it, not a target never sent
                    del parsed[before[0] :]
                # reported whatever it is: a call cancelled while a large request was prepared
                # off the loop kept its place among the deployment's calls in flight for good
                told = _unsent(exc)
                if isinstance(exc, GeneratorExit):  # closed: nothing can be yielded any more
                    run_steps(route.done(target, told, None, None))
                    raise
                yield from route.done(target, told, None, None)
                if not isinstance(exc, Exception):  # cancelled, interrupted: end here
                    raise
                failure = exc
                continue
            progress.api_base, progress.server_port = prepared.host, prepared.port
            if headers is None:  # integrations see one start per call, for its first target
                start = CallStart(
                    request_id,
                    call_type,
                    request,
                    options,
                    prepared.host,
                    start_time,
                    server_port=prepared.port,
                )
                progress.plan = bus.dispatch_start(start)
                headers = start.headers
            if headers:
                prepared = _with_headers(prepared, {**prepared.headers, **headers})
        latency_ms: float | None = None
        sent: float | None = None
        progress.outcome = None
        progress.job_accepted = False
        try:
            # maybe billed so far: answers lost, and streams accepted that then broke off
            lost = [*progress.unknown_outcomes, *progress.accepted]
            if failure is not None and control is not None and control.cover is not None:
                refused = yield _cover(control, lost, request)  # the proxy's budgets
                if isinstance(refused, Exception):
                    raise NotCovered(str(refused)) from None  # the target is released, not sent
            if target.backoff:
                yield Sleep(_backoff(progress.attempts, target.retry_after), before_retry=True)
            if failure is not None and control is not None and control.abandoned:
                raise CallerGone  # left while we waited: the target is released, not sent
            if len(lost) > told_lost and start is not None:  # rare: answers lost, maybe billed
                told_lost = len(lost)
                bus.dispatch_lost_attempts(
                    dataclasses.replace(start, request=request), tuple(lost), progress.plan
                )
            progress.attempts += 1
            progress.last_lost = False
            sent = time.perf_counter()
            result = yield from attempt(prepared, options.timeout, provider, progress)
            latency_ms = progress.upstream_latency_ms
        except BaseException as exc:  # reported (in-flight counts, cooldowns) before deciding
            if sent is not None:
                latency_ms = (time.perf_counter() - sent) * 1000
            if outcome_unknown(progress.outcome, exc) or (  # sent whole, answer lost: maybe billed
                # an accepted job whose result never came (its polls failed, it timed out, its
                # result could not be downloaded) is billed all the same; a moderated one is not,
                # and one whose failure says what it was billed (FLUX.2's cost) is known
                progress.job_accepted
                and not isinstance(exc, ContentPolicyError)
                and getattr(exc, "billed_usd", None) is None
            ):
                progress.unknown_outcomes.append(request)  # priced as what this attempt asked
                progress.last_lost = True
            # cancelled in its backoff (or its budget check), the attempt was never sent
            ended = exc if sent is not None else _unsent(exc)
            if isinstance(exc, GeneratorExit):  # closed: nothing can be yielded any more
                run_steps(route.done(target, ended, latency_ms, None))
                raise
            yield from route.done(target, ended, latency_ms, None)
            if isinstance(exc, Withheld) and failure is not None:
                del parsed[before[0] :]  # never sent: the call ends as the attempt before it
                progress.api_base, progress.server_port = before[1], before[2]
                raise failure from None
            if not isinstance(exc, Exception):  # cancelled, interrupted, closed: end here
                raise
            failure = exc
            continue
        if isinstance(result, ImageResponse):
            yield from route.done(target, None, latency_ms, result)
        else:  # a stream's first event: the attempt ends with its stream (stream_flow says when)
            progress.open_stream = (target, latency_ms)
        return result


def _unsent(exc: BaseException) -> Exception:
    """What the route is told of a target that ``exc`` ended before it was sent: an error as it
    is, a cancellation (or an interruption) as :class:`Withheld`, so that the route counts no
    attempt and gives the deployment's place back; its ``__cause__`` is the interruption."""
    if isinstance(exc, Exception):
        return exc
    withheld = Withheld(f"not sent: {type(exc).__name__}")
    withheld.__cause__ = exc
    return withheld


def _cover(
    control: CallControl, lost: list[ImageEditRequest], upcoming: ImageEditRequest
) -> Consult:
    """Ask ``control.cover`` whether the next attempt may go (async calls only: a sync call's
    driver answers None, as the proxy, the one setting it, is async)."""
    assert control.cover is not None
    cover, lost_now = control.cover, tuple(lost)
    return Consult(lambda: None, lambda: cover(lost_now, upcoming))


def _off_the_loop(work: Callable[..., R], *args: Any) -> Generator[Consult, Any, R]:
    """``work(*args)`` for work an event loop should not do (a mask decoded, large images
    encoded, a large answer read): on the async path in a worker thread, so the loop (the
    proxy's, serving every other request) goes on meanwhile; on the sync path where it is.
    What it raises is raised here."""
    done = yield Consult(lambda: work(*args), lambda: asyncio.to_thread(work, *args))
    if isinstance(done, Exception):  # handed back as a value by the driver
        raise done
    result: R = done
    return result


def _images_read_once(params: dict[str, Any]) -> dict[str, Any]:
    """Images read and inspected once, as :class:`~tracking.images.ImageFile` objects: an open
    file can be read only once, and every target parses the call again (reusing them as read)."""
    read = dict(params)
    if params.get("image") is not None:
        images = list(read_images(params["image"]))
        read["image"] = images if isinstance(params["image"], list) else images[0]
    for name in ("mask", "markup"):
        if params.get(name) is not None:
            read[name] = read_image(params[name], param=name)
    return read


@dataclass
class _Progress:
    attempts: int = 0
    api_base: str | None = None
    server_port: int | None = None
    upstream_latency_ms: float | None = None
    upstream_request_id: str | None = None
    http_status: int | None = None
    #: the requests of attempts sent whole whose answer never came back whole (a fallback's
    #: attempts ask another model: each is estimated as what it asked)
    unknown_outcomes: list[ImageEditRequest] = field(default_factory=list)
    outcome: Any = None  #: what the transport gave back for the attempt's request
    #: the last attempt sent is the last of ``unknown_outcomes`` (the call ended on it)
    last_lost: bool = False
    #: the requests of streamed attempts an upstream answered 2xx: each may be billed whole,
    #: even one that broke off before its first event and was retried (a fallback's ask
    #: another model)
    accepted: list[ImageEditRequest] = field(default_factory=list)
    #: the attempt's job was accepted upstream (its answer was a poll): billed, whatever follows
    job_accepted: bool = False
    #: the bus's receivers as the call started (see :class:`Emit`)
    plan: Any = None
    #: a streamed attempt that delivered its first event: its target and latency, reported to
    #: the route when the stream ends (:func:`end_streamed_attempt`), not at its first event
    open_stream: tuple[Any, float | None] | None = None


def end_streamed_attempt(
    route: Route,
    progress: _Progress,
    failure: BaseException | None,
    response: ImageResponse | None,
) -> Steps[None]:
    """Report a streamed attempt to its route once its stream has ended: it was in flight until
    then, and its completed event's usage is what it counts toward the deployment's tpm; a
    stream that broke off is the deployment's failure (cooldowns), one its caller closed not."""
    if progress.open_stream is None:
        return
    (target, latency_ms), progress.open_stream = progress.open_stream, None
    yield from route.done(target, failure, latency_ms, response)


#: An answer body from which it is read (its JSON parsed, its images checked) off the event loop:
#: about 1.4 ms per MB here, so a few images at 4K (hundreds of MB at most) would hold the loop,
#: and with it every other request of a proxy, for up to seconds. A usual answer (one image,
#: a few MB of base64) is read where it is, with no thread hop.
READ_OFF_THE_LOOP = 4 * 1024 * 1024


def _read_where_best(
    outcome: Answer | BaseException | None,
    prepared: PreparedRequest,
    provider: Provider,
) -> Generator[Effect, Any, ImageResponse | Poll]:
    """:func:`_read_answer`, in a worker thread on the async path for an answer of
    :data:`READ_OFF_THE_LOOP` bytes or more."""
    if not isinstance(outcome, Answer) or len(outcome.body) < READ_OFF_THE_LOOP:
        return _read_answer(outcome, prepared, provider)
    return (yield from _off_the_loop(_read_answer, outcome, prepared, provider))


def _read_answer(
    outcome: Answer | BaseException | None,
    prepared: PreparedRequest,
    provider: Provider,
) -> ImageResponse | Poll:
    if isinstance(outcome, BaseException):
        raise _transport_error(outcome, prepared) from None
    assert outcome is not None
    upstream_id = _upstream_text(outcome.headers.get("x-request-id"), prepared.secrets)
    if outcome.status >= 400:
        raise _status_error(outcome, prepared, upstream_id, provider)
    try:
        parse = prepared.read or provider.parse
        response = parse(outcome.status, dict(outcome.headers), outcome.body)
    except APIError as error:  # an unusable answer, or a refusal in its body (Gemini's)
        if isinstance(error, APIResponseError):
            error.status_code = outcome.status
        error.upstream_request_id = error.upstream_request_id or upstream_id
        error.answer_status = outcome.status
        raise
    except Exception as exc:  # a parser's own fault (a provider of a user's, say): the upstream
        # answered 2xx, so the call was most likely billed: an unreadable answer, estimated
        # as one (never $0) and not retried, with the fault kept as its cause
        unread = APIResponseError(
            f"the answer could not be read ({type(exc).__name__} in the "
            f"{getattr(provider, 'name', 'provider')} provider's parser)",
            status_code=outcome.status,
            upstream_request_id=upstream_id,
        )
        unread.answer_status = outcome.status
        raise unread from exc
    if isinstance(response, ImageResponse):
        response._hidden_params["upstream_request_id"] = upstream_id
        response._hidden_params["http_status"] = outcome.status
    return response


def _request_priced_as(request: ImageEditRequest, prepared: PreparedRequest) -> ImageEditRequest:
    """The request, its ``served_as`` the model the provider serves it with when that is
    another than the one asked (``prepared.price_model``: a FLUX Kontext edit with a mask runs
    on FLUX Fill): what a failure or a lost attempt of it is estimated at, as its success is
    priced (:func:`_priced_as`), never at the price of the model that did not run; its
    ``base_model`` (the deployment's terms: its own prices, its discount) is kept."""
    if prepared.price_model == request.served_as:
        return request
    return dataclasses.replace(request, served_as=prepared.price_model)


def _priced_as(response: ImageResponse, prepared: PreparedRequest) -> ImageResponse:
    """The response, told which per-image price applies when its own fields do not say it."""
    if prepared.price_size is not None:
        response.price_size = prepared.price_size
    if prepared.price_model is not None:
        response.price_model = prepared.price_model
    return response


#: Transient failures of one poll tolerated in a row before the job is given up.
_MAX_POLL_FAILURES = 5


def _follow(
    poll: Poll, provider: Provider, timeout: float, deadline: float
) -> Generator[Effect, Answer | BaseException | None, ImageResponse]:
    """A submitted job followed to its result: each poll after its wait, all before
    ``deadline`` (``time.monotonic()``: the call's ``timeout`` after the job was submitted),
    each poll and download given only what is left of it (a trickled answer cannot stretch it).

    A poll that fails transiently (a dropped connection, a 5xx, a 429) is tried again after a
    pause; any error that ends the job is made not retryable, because the route would otherwise
    submit (and pay for) the job again. Once the job has finished, any failure to download its
    result (see :func:`_result_lost`) is an :class:`~tracking.errors.APIResponseError`."""
    failures = 0
    last: APIError | None = None  # the last transient failure of this poll or download
    while True:
        remaining = deadline - time.monotonic()
        if poll.wait >= remaining:
            if poll.request.result:
                raise _not_retried(_result_lost(last, f"not within the call's {timeout:g} s"))
            raise _not_retried(
                APITimeoutError(f"the job at {poll.request.host} did not finish in {timeout:g} s")
            )
        if poll.wait > 0:
            yield Sleep(poll.wait)
        outcome = yield Send(poll.request, max(0.001, deadline - time.monotonic()))
        try:
            answer = yield from _read_where_best(outcome, poll.request, provider)
        except APIError as exc:
            failures += 1
            if not exc.retryable or failures > _MAX_POLL_FAILURES:
                if poll.request.result and not isinstance(exc, APIResponseError):
                    exc = _result_lost(exc)
                raise _not_retried(exc) from None
            last = exc
            poll = dataclasses.replace(poll, wait=_backoff(failures, exc.retry_after))
            continue
        failures = 0
        last = None
        if isinstance(answer, ImageResponse):
            return answer
        poll = answer


def _result_lost(error: APIError | None, why: str | None = None) -> APIResponseError:
    """A finished job whose result could not be downloaded: an error status that a wait cannot
    mend (404 or 403 once the URL has expired), transient failures (a 429, a 5xx, a dropped
    connection) that outlasted the retries, or the call's timeout spent waiting for them.

    The job ran and was billed, so this is the upstream's failure to hand over what it was paid
    for, like a result that is not an image: an ``APIResponseError`` (the proxy's 502), never
    the download's own 429 or 404, which would tell a client to retry (and submit, and pay for,
    the job again) or that the model is not there. ``status_code`` keeps the download's status."""
    detail = "; ".join(part for part in (why, str(error) if error else None) if part)
    return APIResponseError(
        f"the job ran and was billed, but its result could not be downloaded: {detail}",
        status_code=error.status_code if error is not None else None,
        upstream_request_id=error.upstream_request_id if error is not None else None,
        upstream_message=error.upstream_message if error is not None else None,
    )


def _not_retried(error: APIError) -> APIError:
    error.retryable = False  # this instance only: the job was submitted, so it is billed
    error.job_submitted = True  # nor sent to another deployment by a router (401/403/404)
    return error


def _transport_error(exc: BaseException, prepared: PreparedRequest) -> BaseException:
    if isinstance(exc, AnswerTooLarge):  # a success, maybe billed: recorded as unreadable
        return APIResponseError(
            f"the answer from {prepared.host} is larger than {exc.limit:,} bytes "
            "(TRACKING_MAX_RESPONSE_BYTES); it was not read past that",
            status_code=exc.status,
            upstream_request_id=_upstream_text(exc.headers.get("x-request-id"), prepared.secrets),
        )
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"the upstream at {prepared.host} did not answer in time")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ConfigurationError(f"api_base: not a usable http(s) URL ({prepared.host})")
    if isinstance(exc, httpx.HTTPError):
        detail = mask_secrets(str(exc) or type(exc).__name__, prepared.secrets)
        return APIConnectionError(f"connection to {prepared.host} failed: {detail}")
    return exc


def _status_error(
    answer: Answer, prepared: PreparedRequest, upstream_id: str | None, provider: Provider
) -> APIError:
    said = provider.read_error(answer.status, answer.body)
    message = mask_secrets(said.message or f"HTTP {answer.status}", prepared.secrets)
    # Every upstream word that flows on (to clients, the ledger, logs, spans) is masked.
    param = _upstream_text(said.param, prepared.secrets)
    code = _upstream_text(said.code, prepared.secrets)
    status = said.status or answer.status
    cls = status_error_class(status, code)
    retry_after = _retry_after(answer.headers)
    if retry_after is None and said.retry_after is not None:
        retry_after = _bounded_wait(said.retry_after)
    return cls(
        f"{answer.status} from {prepared.host}: {message}",
        status_code=status,
        param=param,
        code=code,
        upstream_request_id=upstream_id,
        retry_after=retry_after,
        upstream_message=message,
        upstream_type=said.type,
    )


def _upstream_text(value: str | None, secrets: tuple[str, ...]) -> str | None:
    """A short upstream word (an error's code or param, a request id): masked and bounded."""
    if value is None:
        return None
    return mask_secrets(value, secrets)[:_MAX_UPSTREAM_TEXT]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date):
    always finite, from 0 to :data:`MAX_RETRY_AFTER_HINT`; None when absent or unreadable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        seconds = _seconds(milliseconds)
        if seconds is not None:
            return _bounded_wait(seconds / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return _bounded_wait(seconds)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _bounded_wait((parsed - datetime.now(UTC)).total_seconds())


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # "inf" and "nan" say nothing usable


def _bounded_wait(seconds: float) -> float:
    return min(max(0.0, seconds), MAX_RETRY_AFTER_HINT)


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None and retry_after <= _MAX_RETRY_AFTER:
        return retry_after
    delay: float = min(_INITIAL_BACKOFF * 2.0 ** (attempt - 1), _MAX_BACKOFF)
    return delay * (1 - 0.25 * random.random())


def _named_provider(model: Any) -> str | None:
    """A call refused before parsing: the provider its model's prefix names (``xai/...``),
    else None (a bare name may be a router's group, whose deployment was never chosen)."""
    if not isinstance(model, str):
        return None
    prefix, sep, _ = model.partition("/")
    return prefix if sep and is_provider(prefix) else None


def _asked_n(value: Any) -> int:
    """A call refused before parsing: the ``n`` it asked for when that is a valid one (the
    refusal was for something else), else 1 (its event cannot hold an ``n`` no call may ask)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_N:
        return value
    return 1


def _make_event(
    request_id: str,
    call_type: CallType,
    params: dict[str, Any],
    request: ImageEditRequest | None,
    options: CallOptions | None,
    response: ImageResponse | None,
    failure: BaseException | None,
    progress: _Progress,
    start_time: datetime,
    started: float,
    route: Route,
    finished: Mapping[str, Any] | None = None,
) -> ImageEditEvent:
    latency_ms = (time.perf_counter() - started) * 1000
    # Read-only all the way down (parse_call froze it once), so callbacks cannot change it.
    if options is not None:
        metadata, team, tags = options.metadata, options.team, options.tags
    else:  # refused before parsing: frozen here, once
        raw_metadata: Any = params.get("metadata")
        try:
            metadata = freeze_metadata(raw_metadata if isinstance(raw_metadata, Mapping) else None)
        except ValueError:  # the very reason the call was refused: the row goes without it
            metadata = NO_METADATA
        team, tags = _team_and_tags(metadata)
    end_user, other_user = end_user_of(params)
    if other_user is not None:  # both ids were sent: the event keeps the one that lost
        metadata = MappingProxyType({**metadata, "user": other_user})
    if finished:  # what the call's finish added (CallControl.finish), frozen as the rest
        metadata = MappingProxyType({**metadata, **freeze_metadata(finished)})
    prompt = params.get("prompt")
    # a failure whose answer reported what it billed (a Gemini safety block) keeps that usage
    usage = response.usage if response is not None else getattr(failure, "billed_usage", None)
    images_returned = response.images_returned if response is not None else 0
    secrets = (options.api_key,) if options and options.api_key else ()
    asked = params.get("model")
    # the asked model group, the deployment and the fallback chain (a router's call)
    routing = route.routing(
        request.model if request else (asked if isinstance(asked, str) else ""),
        request.model if request else None,
    )
    # One day's prices for the whole call: those in force when it started (the proxy's
    # admission instant, which its budget hold was priced at), not when it ended.
    day = price_day(start_time)
    cost = price_call(request, response, day=day, failure=failure)
    if progress.unknown_outcomes:  # attempts that may have been billed unseen
        cost = with_unknown_outcomes(
            cost,
            progress.unknown_outcomes,
            failed=failure is not None,
            last=progress.last_lost,
            day=day,
        )
    return ImageEditEvent(
        request_id=request_id,
        call_type=call_type,
        status="success" if failure is None else "failure",
        upstream_request_id=(
            response._hidden_params.get("upstream_request_id")
            if response is not None
            else getattr(failure, "upstream_request_id", None)
        ),
        end_user=end_user,
        # The proxy names the caller's virtual key in metadata (tracking.proxy.accounts).
        api_key_hash=_str(metadata.get("user_api_key_hash")),
        key_alias=_str(metadata.get("user_api_key_alias")),
        team=team,
        tags=tags,
        metadata=metadata,
        model=routing.model,
        model_group=routing.model_group,
        deployment_id=routing.deployment_id,
        fallback_from=routing.fallback_from,
        resolved_model=request.upstream_model if request else None,
        provider=request.provider if request else _named_provider(asked),
        base_model=(request.served_as or request.base_model) if request else None,
        api_base=progress.api_base,
        server_port=progress.server_port,
        n=(request.n or 1) if request else _asked_n(params.get("n")),
        size=(response.size if response else None) or (request.size if request else None),
        quality=(response.quality if response else None) or (request.quality if request else None),
        background=(response.background if response else None)
        or (request.background if request else None),
        output_format=(response.output_format if response else None)
        or (request.output_format if request else None),
        response_format=request.requested_response_format if request else None,
        input_images=request.input_images if request else 0,
        input_bytes=request.input_bytes if request else 0,
        has_mask=bool(request and request.mask),
        has_markup=bool(request and request.markup),
        prompt_chars=len(prompt) if isinstance(prompt, str) else 0,
        images_returned=images_returned,
        usage=(
            TokenUsage(
                input_text_tokens=usage.input_text_tokens,
                input_image_tokens=usage.input_image_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            )
            if usage
            else None
        ),
        cost_usd=cost.usd,
        cost_per_image_usd=cost.per_image_usd,
        cost_source=cost.source,
        price_ref=cost.price_ref,
        start_time=start_time,
        end_time=datetime.now(UTC),
        latency_ms=latency_ms,
        upstream_latency_ms=progress.upstream_latency_ms,
        attempts=progress.attempts,
        retries=max(0, progress.attempts - 1)
        if routing.retries is None
        else min(routing.retries, max(0, progress.attempts - 1)),
        error_type=_error_type(failure),
        http_status=(
            response._hidden_params.get("http_status")
            if response is not None
            else _failure_status(failure)
        ),
        error_message=mask_secrets(str(failure), secrets)[:500] if failure is not None else None,
    )


def _failure_status(failure: BaseException | None) -> int | None:
    """The HTTP status a failed call's upstream answered: that of the answer the failure was
    read from (a Gemini safety block is a billed 200, though its ``ContentPolicyError`` says
    400, as OpenAI's moderation refusals do), else the error's own status."""
    answered = getattr(failure, "answer_status", None)
    return answered if answered is not None else getattr(failure, "status_code", None)


def _error_type(failure: BaseException | None) -> str | None:
    if failure is None:
        return None
    if isinstance(failure, TrackingError):
        return failure.error_type
    if isinstance(failure, KeyboardInterrupt) or type(failure).__name__ == "CancelledError":
        return "cancelled"
    return "internal_error"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _team_and_tags(metadata: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """A refused call's team and tags, each as :func:`parse_call` reads it, or none when it
    is not valid (it may be why the call was refused)."""
    try:
        team = metadata_team(metadata)
    except ValidationError:
        team = None
    try:
        tags = metadata_tags(metadata)
    except ValidationError:
        tags = ()
    return team, tags


# -- drivers: the only code that differs between sync and async -----------------------------


def run_sync(params: dict[str, Any], route: Route | None = None) -> ImageResponse:
    flow = edit_flow(call_type_of(params, asynchronous=False), params, route)
    result: Any = None  # an Answer, a consulted value, or an exception as a value
    interrupted: BaseException | None = None
    while True:
        try:
            effect = flow.send(result) if interrupted is None else flow.throw(interrupted)
        except StopIteration as stop:
            value: ImageResponse = stop.value
            return value
        except BaseException as exc:
            result = interrupted = None  # no frame may hold the failure: see release_frames
            release_frames(exc)
            raise
        result = interrupted = None
        try:
            if isinstance(effect, Send):
                result = _send_sync(effect)
            elif isinstance(effect, Sleep):
                time.sleep(effect.seconds)
            elif isinstance(effect, Consult):
                result = consult_sync(effect)
            else:
                bus.emit_sync(effect.event, effect.response, effect.exception, effect.plan)
                del effect  # the flow raises its failure next: no frame may hold it
        except BaseException as exc:  # an interrupted effect ends the flow through its own path
            interrupted = exc


async def run_async(params: dict[str, Any], route: Route | None = None) -> ImageResponse:
    flow = edit_flow(call_type_of(params, asynchronous=True), params, route)
    result: Any = None  # an Answer, a consulted value, or an exception as a value
    interrupted: BaseException | None = None
    while True:
        try:
            effect = flow.send(result) if interrupted is None else flow.throw(interrupted)
        except StopIteration as stop:
            value: ImageResponse = stop.value
            return value
        except BaseException as exc:
            result = interrupted = None  # no frame may hold the failure: see release_frames
            release_frames(exc)
            raise
        result = interrupted = None
        try:
            if isinstance(effect, Send):
                result = await _send_async(effect)
            elif isinstance(effect, Sleep):
                control = current_control() if effect.before_retry else None
                await (control.sleep if control else asyncio.sleep)(effect.seconds)
            elif isinstance(effect, Consult):
                result = await consult_async(effect)
            else:
                await bus.emit_async(effect.event, effect.response, effect.exception, effect.plan)
                del effect  # the flow raises its failure next: no frame may hold it
        except BaseException as exc:  # a cancelled effect (a backoff sleep) yields its event too
            interrupted = exc


def release_frames(exc: BaseException) -> BaseException:
    """``exc`` with the variables of the finished frames its traceback holds released.

    A call's frames keep its parameters (the images, the prompt) and the exception itself (the
    flow stores it to emit and raise it): a cycle only the garbage collector breaks, so every
    failed call held its upload until a full collection, which a proxy that freezes its heap
    and collects rarely (``tracking.proxy.app``) made unbounded. The traceback keeps its files
    and lines; only the finished frames' variables go."""
    traceback.clear_frames(exc.__traceback__)
    return exc


def consult_sync(effect: Consult) -> Any:
    try:
        return effect.run()
    except Exception as exc:  # handed to the route's state, which falls back to local state
        return exc


async def consult_async(effect: Consult) -> Any:
    try:
        return await effect.arun()
    except Exception as exc:  # handed to the route's state, which falls back to local state
        return exc


def _send_sync(effect: Send) -> Answer | BaseException:
    prepared = effect.request
    try:
        status, headers, body = send_sync(
            POOL.sync_client(origin_of(prepared.url)),
            prepared.method,
            prepared.url,
            body=prepared.body,
            headers=prepared.headers,
            timeout=effect.timeout,
            limit=max_response_bytes(),
        )
    except BaseException as exc:  # handed to the flow, which maps, records and re-raises it
        return exc
    return Answer(status, headers, body)


async def _send_async(effect: Send) -> Answer | BaseException:
    prepared = effect.request
    try:
        sender = await POOL.async_client(origin_of(prepared.url))
        status, headers, body = await sender.post(
            prepared.url,
            body=prepared.body,
            headers=prepared.headers,
            timeout=effect.timeout,
            method=prepared.method,
            limit=max_response_bytes(),
        )
    except BaseException as exc:  # handed to the flow, which maps, records and re-raises it
        return exc
    return Answer(status, headers, body)
