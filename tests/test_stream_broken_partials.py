"""A stream that broke off is estimated with the partial images it received, not those it asked for.

The upstream accepted the call and may bill it in full (the final image's price stays in the
estimate), but of the partial images only those it sent were made: a call asking for 3 that
broke off after 1 counted 3 partial images' output tokens (the tenth session's closing note).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest

import tracking
from tests.conftest import API_KEY
from tests.recorder import EventRecorder
from tests.scripted_upstream import stream_call
from tracking.pricing import reset_prices
from tracking.pricing.estimate import PARTIAL_IMAGE_TOKENS, estimate_incomplete_stream
from tracking.request import parse_call
from tracking.testing import FakeOpenAI

MODEL = "gpt-image-2"
OUTPUT_PER_MILLION = Decimal(30)


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    tracking.register_prices(
        MODEL,
        tokens_per_million={"input_text": "5", "input_image": "8", "output_image": "30"},
        per_image={"low": {"1024x1024": "0.006"}},
    )
    yield
    reset_prices()


def _params(api_base: str, **extra: object) -> dict[str, object]:
    return {**stream_call(MODEL, api_base), "partial_images": 3, **extra}


def _read(
    params: dict[str, object], use_async: bool, seen: list[tracking.ImageEditStreamEvent]
) -> None:
    if use_async:

        async def consume() -> None:
            async for event in await tracking.aimage_edit(**params):
                seen.append(event)

        asyncio.run(consume())
    else:
        seen.extend(tracking.image_edit(**params))


def _partials_cost(count: int) -> Decimal:
    return OUTPUT_PER_MILLION * PARTIAL_IMAGE_TOKENS * count / Decimal(1_000_000)


def _asking_for(params: dict[str, object], partials: int) -> Decimal:
    """The estimate of the same call had it asked for ``partials`` partial images."""
    request, _ = parse_call(**{**params, "partial_images": partials})
    estimate = estimate_incomplete_stream(request)
    assert estimate is not None and estimate > 0
    return estimate


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("received", [1, 2])
def test_a_broken_stream_counts_the_partial_images_it_received(
    recorder: EventRecorder, received: int, use_async: bool
) -> None:
    fault = {"x-fake-fault": f"break_after={received}"}
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        params = _params(fake.url, extra_headers=fault)
        seen: list[tracking.ImageEditStreamEvent] = []
        with pytest.raises(tracking.StreamInterruptedError):
            _read(params, use_async, seen)
    assert [item.type for item in seen] == ["image_edit.partial_image"] * received
    (event,) = recorder.events
    assert (event.status, event.error_type) == ("failure", "stream_interrupted")
    # the final image in full (the upstream may bill it), and the partial images received
    expected = _asking_for(params, 0) + _partials_cost(received)
    assert expected == _asking_for(params, received) < _asking_for(params, 3)
    assert (event.cost_usd, event.cost_source, event.price_ref) == (
        expected,
        "estimate",
        "estimate:stream-incomplete",
    )


def test_an_attempt_broken_before_any_event_adds_no_partial_image(
    recorder: EventRecorder,
) -> None:
    """Broken before its first event (and retried): none of its partial images were made."""
    with FakeOpenAI(api_keys=[API_KEY], faults=["break_after=0;times=1"]) as fake:
        params = _params(fake.url)
        seen: list[tracking.ImageEditStreamEvent] = []
        _read(params, False, seen)
    completed = seen[-1]
    assert isinstance(completed, tracking.ImageEditCompletedEvent) and completed.usage
    usage = completed.usage
    own = (
        usage.input_tokens_details.text_tokens * Decimal(5)
        + usage.input_tokens_details.image_tokens * Decimal(8)
        + usage.output_tokens * OUTPUT_PER_MILLION
    ) / Decimal(1_000_000)
    (event,) = recorder.events
    assert (event.status, event.attempts) == ("success", 2)
    assert event.cost_usd == own + _asking_for(params, 0)
    assert event.price_ref is not None and event.price_ref.endswith("+estimate:stream-incomplete")


def test_without_a_count_the_estimate_is_the_partial_images_asked_for() -> None:
    """A budget's hold before an attempt counts what the attempt may make: all it asks for."""
    params = _params("http://127.0.0.1:9")
    request, _ = parse_call(**params)
    assert estimate_incomplete_stream(request) == _asking_for(params, 3)
    assert estimate_incomplete_stream(request, partials=1) == _asking_for(params, 1)
    assert _asking_for(params, 3) == _asking_for(params, 0) + _partials_cost(3)


@pytest.mark.parametrize("asked", [None, "auto"])
def test_a_broken_auto_quality_stream_is_estimated_at_the_quality_its_partial_image_said(
    recorder: EventRecorder, asked: str | None
) -> None:
    """A call asking for ``auto`` (or no quality) whose partial image said ``medium`` was made at
    medium: broken off after it, it is estimated at medium, not at the dearest quality ``auto``
    could mean (four times as much on gpt-image-2's bundled prices)."""
    reset_prices()  # the bundled prices, which list every quality: the module's list only low
    fault = {"x-fake-fault": "break_after=1"}
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        params = _params(fake.url, extra_headers=fault)
        params.pop("quality")
        if asked is not None:
            params["quality"] = asked
        seen: list[tracking.ImageEditStreamEvent] = []
        with pytest.raises(tracking.StreamInterruptedError):
            _read(params, False, seen)
    (partial,) = seen
    assert isinstance(partial, tracking.ImageEditPartialImageEvent)
    assert partial.quality == "medium"  # the fake makes auto at medium, and says so
    (event,) = recorder.events
    at_medium = _asking_for({**params, "quality": "medium"}, 1)
    assert (event.cost_usd, event.cost_source) == (at_medium, "estimate")
    assert at_medium < _asking_for(params, 1)  # what auto's worst case would have said


def test_a_broken_stream_that_asked_for_a_quality_keeps_it_whatever_its_event_said(
    recorder: EventRecorder,
) -> None:
    """The quality asked for is what the call is billed at: an event's word does not lower it."""
    fault = {"x-fake-fault": "break_after=1"}
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        params = _params(fake.url, extra_headers=fault, quality="high")
        seen: list[tracking.ImageEditStreamEvent] = []
        with pytest.raises(tracking.StreamInterruptedError):
            _read(params, False, seen)
    (event,) = recorder.events
    assert event.cost_usd == _asking_for(params, 1)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_stream_closed_after_its_first_partial_image_is_estimated_at_the_quality_it_said(
    recorder: EventRecorder, use_async: bool
) -> None:
    """The quality a partial image says is written into the attempt's request once the event is
    delivered (not before: the time to the first event): a caller that closes the stream right
    after that first event still has the call estimated at the quality it said."""
    reset_prices()  # the bundled prices, which list every quality
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        params = _params(fake.url)
        params.pop("quality")  # auto
        if use_async:

            async def first_then_close() -> tracking.ImageEditStreamEvent:
                stream = await tracking.aimage_edit(**params)
                try:
                    return await anext(stream)
                finally:
                    await stream.aclose()

            first = asyncio.run(first_then_close())
        else:
            stream = tracking.image_edit(**params)
            first = next(stream)
            stream.close()
    assert isinstance(first, tracking.ImageEditPartialImageEvent)
    assert first.quality == "medium"  # the fake makes auto at medium, and says so
    (event,) = recorder.events
    assert event.status == "failure"
    # the partial images read before the close count (1 to 3: a loaded machine reads on)
    at_medium = {_asking_for({**params, "quality": "medium"}, k): k for k in (1, 2, 3)}
    assert event.cost_source == "estimate" and event.cost_usd in at_medium, event.cost_usd
    assert event.cost_usd < _asking_for(params, at_medium[event.cost_usd])  # auto: the dearest
