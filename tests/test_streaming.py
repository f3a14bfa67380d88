"""Streamed image edits through the SDK: typed events, one event per call, costs, closing.

Every test talks HTTP to the bundled fake upstream, which streams as OpenAI does (its usage
convention: 100 output tokens per partial image). The events are checked against the official
``openai`` package's own types, and costs against the completed event's usage priced by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai.types as oai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import API_KEY, edits_upstream, make_png
from tracking.integrations.otel import OtelLogger
from tracking.integrations.prometheus import PrometheusLogger
from tracking.pricing import reset_prices
from tracking.pricing.estimate import estimate_incomplete_stream, max_expected_cost
from tracking.request import parse_call
from tracking.testing import FakeOpenAI
from tracking.unknown_outcomes import estimate_unknown_outcomes

MODEL = "gpt-image-2"
#: Test prices for gpt-image-2 (USD per million tokens; per image): registered by the tests
#: whatever the packaged price file holds, so the expected costs below are worked out by hand.
TOKEN_PRICES = {"input_text": "5", "input_image": "8", "output_image": "30"}
PER_IMAGE = {
    "low": {"1024x1024": "0.006"},
    "medium": {"1024x1024": "0.053"},
    "high": {"1024x1024": "0.211"},
}
MILLION = Decimal(1_000_000)


@pytest.fixture(autouse=True)
def gpt_image_2_prices() -> Iterator[None]:
    tracking.register_prices(MODEL, tokens_per_million=TOKEN_PRICES, per_image=PER_IMAGE)
    yield
    reset_prices()


def _consume(params: dict[str, object], use_async: bool) -> None:
    """Read a streamed call to its end, through the sync or the async entry point."""

    async def consume_async() -> None:
        async for _ in await tracking.aimage_edit(**params):
            pass

    if use_async:
        asyncio.run(consume_async())
    else:
        list(tracking.image_edit(**params))


def call(upstream: dict[str, str], **extra: object) -> dict[str, object]:
    return {
        "image": make_png(),
        "prompt": "add a red hat",
        "model": MODEL,
        "size": "1024x1024",
        **upstream,
        **extra,
    }


def hand_priced(usage: oai.image_edit_completed_event.Usage) -> Decimal:
    details = usage.input_tokens_details
    return (
        details.text_tokens * Decimal(TOKEN_PRICES["input_text"])
        + details.image_tokens * Decimal(TOKEN_PRICES["input_image"])
        + usage.output_tokens * Decimal(TOKEN_PRICES["output_image"])
    ) / MILLION


# -- the events -------------------------------------------------------------------------------


@pytest.mark.parametrize("partial_images", [0, 1, 3])
def test_sync_stream_yields_openai_shaped_events_and_one_priced_event(
    partial_images, upstream, recorder
):
    stream = tracking.image_edit(**call(upstream), stream=True, partial_images=partial_images)
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image"] * partial_images + [
        "image_edit.completed"
    ]
    # Each event reads as the official client's own type, field for field.
    for index, event in enumerate(events[:-1]):
        official = oai.ImageEditPartialImageEvent.model_validate(event.to_dict())
        assert official.partial_image_index == event.partial_image_index == index
        assert official.b64_json == event.b64_json and official.size == event.size == "1024x1024"
    completed = oai.ImageEditCompletedEvent.model_validate(events[-1].to_dict())
    assert "output_tokens_details" not in events[-1].to_dict()["usage"]
    (event,) = recorder.events  # exactly one event for the call
    assert event.status == "success" and event.cost_source == "custom"
    assert event.cost_usd == hand_priced(completed.usage) == stream.cost_usd
    assert event.usage is not None and event.usage.output_tokens == completed.usage.output_tokens
    assert event.time_to_first_image_ms is not None and event.time_to_first_image_ms > 0
    assert event.request_id == stream.request_id and event.images_returned == 1
    assert event.http_status == 200 and (event.upstream_request_id or "").startswith("req_fake_")


def test_partial_images_add_100_output_tokens_each(upstream):
    def output_tokens(partial_images: int) -> int:
        *_, completed = tracking.image_edit(
            **call(upstream), quality="low", stream=True, partial_images=partial_images
        )
        assert completed.type == "image_edit.completed" and completed.usage is not None
        return completed.usage.output_tokens

    assert output_tokens(3) - output_tokens(0) == 300


@pytest.mark.parametrize("quality", ["low", "high"])
def test_a_budgets_reservation_covers_a_streams_partial_images(upstream, recorder, quality):
    # It left them out: a completed stream with partial images cost more than was reserved,
    # so sequential streamed calls spent past a budget.
    params = call(upstream, quality=quality, stream=True, partial_images=3)
    reserved = max_expected_cost([MODEL], params)
    plain = max_expected_cost([MODEL], {**params, "stream": False})
    assert reserved is not None and plain is not None
    assert reserved == plain + 3 * 100 * Decimal(TOKEN_PRICES["output_image"]) / MILLION
    for _ in tracking.image_edit(**params):
        pass
    cost = recorder.last.cost_usd
    assert recorder.last.status == "success" and cost is not None and cost <= reserved


@pytest.mark.parametrize("partial_images", [0, 1, 3])
def test_async_stream_yields_the_same_events(partial_images, upstream, recorder):
    async def main() -> list[tracking.ImageEditStreamEvent]:
        stream = await tracking.aimage_edit(
            **call(upstream), stream=True, partial_images=partial_images
        )
        return [event async for event in stream]

    events = asyncio.run(main())
    assert [e.type for e in events].count("image_edit.partial_image") == partial_images
    assert events[-1].type == "image_edit.completed"
    completed = oai.ImageEditCompletedEvent.model_validate(events[-1].to_dict())
    (event,) = recorder.events
    assert event.call_type == "aimage_edit" and event.status == "success"
    assert event.cost_usd == hand_priced(completed.usage)


def test_the_request_sent_upstream_asks_for_the_stream(fake, upstream):
    list(tracking.image_edit(**call(upstream), stream=True, partial_images=2))
    sent = fake.requests[-1].fields
    assert sent["stream"] == "true" and sent["partial_images"] == "2"


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "error", "param"),
    [
        ({"stream": True, "partial_images": 4}, tracking.ValidationError, "partial_images"),
        ({"stream": True, "partial_images": -1}, tracking.ValidationError, "partial_images"),
        ({"partial_images": 1}, tracking.ValidationError, "partial_images"),
        ({"stream": "yes"}, tracking.ValidationError, "stream"),
    ],
)
def test_bad_streaming_parameters_are_refused_before_sending(fake, upstream, extra, error, param):
    before = fake.hits
    with pytest.raises(error) as caught:
        tracking.image_edit(**call(upstream), **extra)
    assert caught.value.param == param
    assert fake.hits == before


def test_a_model_that_does_not_stream_is_refused(fake, upstream):
    before = fake.hits
    with pytest.raises(tracking.UnsupportedParamsError, match="does not stream"):
        tracking.image_edit(**call(upstream, model="dall-e-2", size=None), stream=True)
    assert fake.hits == before


# -- ending early: broken, closed, abandoned ---------------------------------------------------


def test_an_upstream_that_breaks_mid_stream_ends_with_an_estimated_failure(upstream, recorder):
    broken = {"x-fake-fault": "break_after=2"}
    stream = tracking.image_edit(
        **call(upstream), stream=True, partial_images=3, extra_headers=broken
    )
    seen: list[str] = []
    with pytest.raises(tracking.StreamInterruptedError) as caught:
        seen.extend(event.type for event in stream)
    assert seen == ["image_edit.partial_image"] * 2
    (event,) = recorder.events
    assert event.status == "failure" and event.error_type == "stream_interrupted"
    assert caught.value.request_id == event.request_id
    # asked for auto quality: estimated at the quality its partial images said (the fake's
    # medium), not at auto's dearest
    request, _ = parse_call(**call(upstream), stream=True, partial_images=3, quality="medium")
    assert event.cost_source == "estimate" and event.price_ref == "estimate:stream-incomplete"
    # the 2 partial images received, not the 3 asked for
    assert event.cost_usd == estimate_incomplete_stream(request, partials=2) and event.cost_usd > 0
    assert event.attempts == 1  # events were delivered: never retried


def test_a_break_before_the_first_event_is_retried(upstream, recorder):
    with FakeOpenAI(api_keys=[API_KEY], faults=["break_after=0"]) as fake:
        events = list(
            tracking.image_edit(**call(upstream, api_base=fake.url), stream=True, partial_images=1)
        )
        assert fake.hits == 2
    assert events[-1].type == "image_edit.completed"
    (event,) = recorder.events
    assert event.status == "success" and event.attempts == 2


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("fault", "error", "kwargs"),
    [
        ("latency=3", tracking.APITimeoutError, {"timeout": 0.3}),  # no answer before the timeout
        ("drop", tracking.APIConnectionError, {}),  # dropped after the request was read
    ],
)
def test_a_stream_sent_but_never_answered_is_estimated_never_zero(
    upstream, recorder, use_async, fault, error, kwargs
):
    """Streamed attempts sent whole and never answered may be billed, as plain calls' are."""
    params = {
        **call(upstream),
        "stream": True,
        "max_retries": 1,
        "extra_headers": {"x-fake-fault": fault},
        **kwargs,
    }

    with pytest.raises(error):
        _consume(params, use_async)
    (event,) = recorder.events
    assert event.status == "failure" and event.attempts == 2
    request, _ = parse_call(**call(upstream), stream=True)
    each = estimate_unknown_outcomes(request, 1).usd
    assert each is not None and each > 0
    assert event.cost_source == "estimate" and event.cost_usd == 2 * each
    assert event.price_ref and event.price_ref.startswith("estimate:outcome-unknown")


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("fault", ["malformed", "big_body=2000"])
def test_a_2xx_that_is_no_stream_of_events_is_estimated_once(upstream, recorder, fault, use_async):
    # Accepted (2xx), then unreadable as a stream: one attempt, one estimate. It was counted as
    # a stream that broke off and again as an unreadable answer: twice the cost.
    params = {
        **call(upstream),
        "stream": True,
        "partial_images": 1,
        "max_retries": 0,
        "extra_headers": {"x-fake-fault": fault},
    }

    with pytest.raises(tracking.APIResponseError) as caught:
        _consume(params, use_async)
    (event,) = recorder.events
    assert event.status == "failure" and event.attempts == 1
    request, _ = parse_call(**call(upstream), stream=True, partial_images=1)
    once = estimate_unknown_outcomes(request, 1).usd
    assert once is not None and once > 0
    assert event.cost_source == "estimate" and event.cost_usd == once
    assert caught.value.cost_usd == once


def test_a_success_after_a_stream_that_broke_off_adds_its_estimate(upstream, recorder):
    with FakeOpenAI(api_keys=[API_KEY], faults=["break_after=0"]) as fake:  # the first only
        events = list(
            tracking.image_edit(**call(upstream, api_base=fake.url), stream=True, partial_images=1)
        )
    completed = oai.ImageEditCompletedEvent.model_validate(events[-1].to_dict())
    (event,) = recorder.events
    assert event.status == "success" and event.attempts == 2
    request, _ = parse_call(**call(upstream), stream=True, partial_images=1)
    broken = estimate_incomplete_stream(request, partials=0)  # it broke before any event
    assert broken is not None and broken > 0
    assert event.cost_usd == hand_priced(completed.usage) + broken  # its own price, plus
    assert event.cost_source == "estimate"
    assert event.price_ref and event.price_ref.endswith("+estimate:stream-incomplete")


def test_a_failure_after_a_timeout_and_a_break_adds_both_estimates(upstream, recorder):
    with (
        FakeOpenAI(
            api_keys=[API_KEY], faults=["latency=3;times=1", "break_after=0;times=1"]
        ) as fake,
        pytest.raises(tracking.StreamInterruptedError),
    ):
        list(
            tracking.image_edit(
                # the second attempt's answer must start within the timeout (0.3 s was near
                # what a loaded machine took); the first's comes after 3 s, whatever it is
                **call(upstream, api_base=fake.url),
                stream=True,
                max_retries=1,
                timeout=1.5,
            )
        )
    (event,) = recorder.events
    assert event.status == "failure" and event.attempts == 2
    request, _ = parse_call(**call(upstream), stream=True)
    unanswered = estimate_unknown_outcomes(request, 1).usd
    broken = estimate_incomplete_stream(request)
    assert unanswered and broken
    assert event.cost_usd == unanswered + broken and event.cost_source == "estimate"
    assert event.price_ref.startswith("estimate:stream-incomplete+estimate:outcome-unknown")


def test_closing_early_records_the_call_once_as_closed(upstream, recorder):
    slow = {"x-fake-fault": "event_delay=0.2"}
    with tracking.image_edit(
        **call(upstream), stream=True, partial_images=3, extra_headers=slow
    ) as stream:
        first = next(stream)
    assert first.type == "image_edit.partial_image"
    (event,) = recorder.events
    assert event.status == "failure" and event.error_type == "stream_closed"
    assert event.cost_source == "estimate" and event.cost_usd == stream.cost_usd > 0
    assert list(stream) == []  # closed: nothing more, and no second event
    assert len(recorder.events) == 1


def test_closing_after_the_completed_event_is_a_success(upstream, recorder):
    stream = tracking.image_edit(**call(upstream), stream=True, partial_images=1)
    assert next(stream).type == "image_edit.partial_image"
    assert next(stream).type == "image_edit.completed"
    stream.close()
    (event,) = recorder.events
    assert event.status == "success" and event.cost_source == "custom"


def test_async_close_records_the_call_once(upstream, recorder):
    async def main() -> None:
        stream = await tracking.aimage_edit(
            **call(upstream),
            stream=True,
            partial_images=3,
            extra_headers={"x-fake-fault": "event_delay=0.2"},
        )
        async with stream:
            assert (await anext(stream)).type == "image_edit.partial_image"

    asyncio.run(main())
    (event,) = recorder.events
    assert event.status == "failure" and event.error_type == "stream_closed"


def client_connections(port: int) -> int:
    """ESTABLISHED TCP connections on this machine whose remote end is ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def settled_connections(port: int, deadline: float = 10.0) -> int:
    """The count once it has dropped to 0 (closing is asynchronous), or what is left."""
    end = time.monotonic() + deadline
    while (count := client_connections(port)) and time.monotonic() < end:
        time.sleep(0.05)
    return count


ABANDONED = 100
SLOW = {"x-fake-fault": "event_delay=30"}  # the completed event would come much later


def test_100_abandoned_sync_streams_leak_no_connection(recorder):
    with FakeOpenAI(api_keys=[API_KEY], canned=True) as fake:
        for _ in range(ABANDONED):
            stream = tracking.image_edit(
                **call({"api_base": fake.url, "api_key": API_KEY}),
                stream=True,
                partial_images=1,
                extra_headers=SLOW,
            )
            assert next(stream).type == "image_edit.partial_image"
            del stream  # dropped mid-stream, never closed by hand
        gc.collect()
        assert settled_connections(fake.port) == 0
    assert len(recorder.events) == ABANDONED
    assert {e.error_type for e in recorder.events} == {"stream_closed"}


def test_100_abandoned_async_streams_leak_no_connection(recorder):
    with FakeOpenAI(api_keys=[API_KEY], canned=True) as fake:
        upstream = {"api_base": fake.url, "api_key": API_KEY}

        async def main() -> int:
            for _ in range(ABANDONED):
                stream = await tracking.aimage_edit(
                    **call(upstream), stream=True, partial_images=1, extra_headers=SLOW
                )
                assert (await anext(stream)).type == "image_edit.partial_image"
                del stream
            gc.collect()
            for _ in range(100):  # the loop runs each dropped stream's aclose()
                await asyncio.sleep(0.01)
                if len(recorder.events) == ABANDONED:
                    break
            return await asyncio.to_thread(settled_connections, fake.port)

        assert asyncio.run(main()) == 0
    assert len(recorder.events) == ABANDONED
    assert {e.error_type for e in recorder.events} == {"stream_closed"}


# -- time to first image on the span and in Prometheus ---------------------------------------


def test_time_to_first_image_on_the_span_and_the_histogram(upstream, monkeypatch):
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    loggers = [OtelLogger(provider), PrometheusLogger(registry)]
    monkeypatch.setattr(tracking, "success_callback", loggers)
    monkeypatch.setattr(tracking, "failure_callback", loggers)
    stream = tracking.image_edit(**call(upstream), stream=True, partial_images=1)
    list(stream)
    assert stream.event is not None and stream.event.time_to_first_image_ms is not None
    (span,) = spans.get_finished_spans()
    seconds = (span.attributes or {})["gen_ai.response.time_to_first_chunk"]
    assert seconds == stream.event.time_to_first_image_ms / 1000
    labels = {"model": MODEL, "provider": "openai", "operation": "image_edit"}
    count = registry.get_sample_value("image_edit_time_to_first_image_seconds_count", labels)
    assert count == 1
    provider.shutdown()


def test_a_done_marker_after_the_completed_event_ends_the_stream_cleanly(recorder):
    """OpenAI-compatible servers often end a stream with ``data: [DONE]``; it failed the call
    (an event that is not JSON) and threw away the image the upstream had billed."""
    from aiohttp import web

    completed = {
        "type": "image_edit.completed",
        "b64_json": "iVBORw0KGgo=",
        "created_at": 1,
        "background": "opaque",
        "size": "1024x1024",
        "quality": "medium",
        "output_format": "png",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 100,
            "total_tokens": 110,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
        },
    }

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        data = json.dumps(completed)
        await answer.write(
            f"event: image_edit.completed\ndata: {data}\n\ndata: [DONE]\n\n".encode()
        )
        await answer.write_eof()
        return answer

    with edits_upstream(edit, "done-marker") as api_base:
        upstream = {"api_base": api_base, "api_key": API_KEY}
        events = list(tracking.image_edit(**call(upstream), stream=True))
    assert [e.type for e in events] == ["image_edit.completed"]
    (event,) = recorder.events
    assert event.status == "success" and event.cost_source == "custom"
    usage = oai.ImageEditCompletedEvent.model_validate(completed).usage
    assert event.cost_usd == hand_priced(usage)


def test_an_async_stream_dropped_as_its_loop_ends_still_records_the_call(upstream, recorder):
    """Dropped as ``asyncio.run`` returns, the loop cancels the task that would close it before
    it starts: the call, accepted and maybe billed upstream, left no event and no row."""

    async def open_and_drop() -> None:
        await tracking.aimage_edit(**call(upstream), stream=True, partial_images=1)

    asyncio.run(open_and_drop())
    (event,) = recorder.events
    assert event.status == "failure" and event.error_type == "stream_closed"
    assert event.cost_source == "estimate" and event.cost_usd and event.cost_usd > 0


def test_an_async_stream_read_to_its_end_and_dropped_records_one_success(upstream, recorder):
    async def read_all() -> int:
        stream = await tracking.aimage_edit(**call(upstream), stream=True, partial_images=1)
        return len([event async for event in stream])

    assert asyncio.run(read_all()) == 2
    (event,) = recorder.events
    assert event.status == "success"


@pytest.mark.parametrize("ticks", range(8))
def test_cancelled_while_finishing_after_the_completed_event_the_call_still_has_its_event(
    recorder, upstream, ticks
):
    """The proxy's relay cancels its pump when the client hangs up; after the completed event
    that pump is finishing the call (reading the answer's end, emitting the event). Cancelled
    there, the call had no event at all: no ledger row, no budget charge, cost None, for an
    image the upstream billed and the client received."""

    async def cancel_while_finishing() -> Decimal | None:
        stream = await tracking.aimage_edit(**call(upstream, stream=True, partial_images=1))
        async for event in stream:
            if event.type == "image_edit.completed":
                break
        pending = asyncio.ensure_future(stream.__anext__())
        for _ in range(ticks):
            await asyncio.sleep(0)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending
        await stream.aclose()
        await asyncio.sleep(0.05)  # the event's emission, shielded, may finish just after
        return stream.cost_usd

    cost = asyncio.run(cancel_while_finishing())
    assert tracking.flush(10)
    (event,) = recorder.events  # the tests' registered prices: "custom", from the usage
    assert event.status == "success" and event.cost_source == "custom"
    assert cost is not None and cost == event.cost_usd > 0
