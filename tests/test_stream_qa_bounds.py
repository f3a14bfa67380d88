"""What bounds a streamed answer that keeps sending bytes but no events (a QA pass on streaming).

An upstream's stream was bounded only per read: a read that waited ``timeout`` for a byte broke
it off, but bytes that are no event (SSE keep-alive comments, empty ``data:`` lines, events of a
type nobody knows) kept it alive for as long as they came, holding the call (and through the
proxy a connection, a parallel slot and a budget hold) without limit. Empty ``data:`` lines were
not even counted against the one-event size limit, so each was kept in memory for good.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import edits_upstream, make_png
from tests.recorder import EventRecorder
from tests.scripted_upstream import stream_call
from tracking.pricing import reset_prices
from tracking.pricing.estimate import estimate_incomplete_stream
from tracking.request import parse_call
from tracking.sse import EventTooLarge, SSEDecoder

MODEL = "gpt-image-2"
PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
SHAPE = {"size": "1024x1024", "quality": "low", "background": "opaque", "output_format": "png"}
PARTIAL = {"type": "image_edit.partial_image", "b64_json": PNG_B64, "partial_image_index": 0}
COMPLETED = {
    "type": "image_edit.completed",
    "b64_json": PNG_B64,
    "usage": {
        "input_tokens": 10,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
        "output_tokens": 300,
        "total_tokens": 310,
    },
}
#: Bytes that are no event, one kind per test.
FILLERS = {
    "comment": b": keep-alive\n\n",
    "empty-data": b"data:\n",
    "unknown-event": b'event: image_edit.heartbeat\ndata: {"type": "image_edit.heartbeat"}\n\n',
}
#: How long the upstream keeps sending filler before its completed event (the call's timeout
#: is a fraction of it; a stream that ignores the filler waits the whole of it).
FILLER_SECONDS = 8.0


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps({**event, **SHAPE})}\n\n".encode()


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    tracking.register_prices(MODEL, tokens_per_million={"output_image": "30", "input_text": "5"})
    yield
    reset_prices()


def test_endless_empty_data_lines_are_refused_at_the_event_size_limit() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    # 600 lines of no data: each is one byte of the event (the newline it is joined with)
    assert decoder.feed(b"data:\n" * 600) == []
    with pytest.raises(EventTooLarge, match="1,000 bytes"):
        decoder.feed(b"data:\n" * 600)


def test_empty_data_lines_within_the_limit_are_still_newlines_of_the_event() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    (event,) = decoder.feed(b"data:\ndata: x\ndata:\n\n")
    assert event.data == b"\nx\n"


def _filling_upstream(filler: bytes) -> Any:
    """A partial image, then ``filler`` every 50 ms for :data:`FILLER_SECONDS` (or until the
    client has gone), then the completed event."""

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(_frame(PARTIAL))
        try:
            for _ in range(int(FILLER_SECONDS / 0.05)):
                await asyncio.sleep(0.05)
                await answer.write(filler)
            await answer.write(b"\n" + _frame(COMPLETED))
            await answer.write_eof()
        except (ConnectionError, RuntimeError):  # the client broke the stream off
            pass
        return answer

    return edits_upstream(edit, "filling-upstream")


def _read(params: dict[str, Any], use_async: bool) -> tuple[list[str], BaseException | None]:
    seen: list[str] = []
    try:
        if use_async:

            async def consume() -> None:
                async with await tracking.aimage_edit(**params) as stream:
                    async for event in stream:
                        seen.append(event.type)

            asyncio.run(consume())
        else:
            with tracking.image_edit(**params) as stream:
                seen.extend(event.type for event in stream)
    except tracking.TrackingError as exc:
        return seen, exc
    return seen, None


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("filler", sorted(FILLERS))
def test_bytes_that_are_no_event_do_not_keep_a_stream_past_its_timeout(
    recorder: EventRecorder, filler: str, use_async: bool
) -> None:
    with _filling_upstream(FILLERS[filler]) as api_base:
        params = {**stream_call(MODEL, api_base), "timeout": 1, "max_retries": 0}
        seen, error = _read(params, use_async)
    assert seen == ["image_edit.partial_image"]
    assert isinstance(error, tracking.StreamInterruptedError), error
    assert "sent no event for 1 s" in str(error)
    request, _ = parse_call(**params)
    estimate = estimate_incomplete_stream(request, partials=1)
    (event,) = recorder.events  # a broken stream's: priced as one
    got = (event.status, event.error_type, event.http_status, event.cost_usd, event.cost_source)
    assert got == ("failure", "stream_interrupted", 200, estimate, "estimate")


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_caller_slower_than_the_timeout_between_events_is_not_cut_off(
    recorder: EventRecorder, use_async: bool
) -> None:
    """Only the wait for the upstream counts: the caller's own time between events does not."""

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(_frame(PARTIAL) + _frame({**PARTIAL, "partial_image_index": 1}))
        await answer.write(_frame(COMPLETED))
        await answer.write_eof()
        return answer

    with edits_upstream(edit, "prompt-upstream") as api_base:
        params = {**stream_call(MODEL, api_base), "timeout": 0.5, "max_retries": 0}
        seen: list[str] = []
        if use_async:

            async def consume() -> None:
                async with await tracking.aimage_edit(**params) as stream:
                    async for item in stream:
                        seen.append(item.type)
                        await asyncio.sleep(0.8)

            asyncio.run(consume())
        else:
            with tracking.image_edit(**params) as stream:
                for item in stream:
                    seen.append(item.type)
                    time.sleep(0.8)
    assert seen == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    (event,) = recorder.events
    assert (event.status, event.cost_source) == ("success", "custom")  # (registered prices)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_upstream_sending_partial_images_without_end_is_broken_off_after_the_most(
    recorder: EventRecorder, use_async: bool
) -> None:
    """OpenAI makes at most 3 partial images (``partial_images`` 0 to 3): one that keeps sending
    them, each in time, held the call for as long as it liked."""

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        try:
            for index in range(50):
                await answer.write(_frame({**PARTIAL, "partial_image_index": index}))
            await answer.write(_frame(COMPLETED))
            await answer.write_eof()
        except (ConnectionError, RuntimeError):  # the client broke the stream off
            pass
        return answer

    with edits_upstream(edit, "endless-partials") as api_base:
        params = {**stream_call(MODEL, api_base), "max_retries": 0}
        seen, error = _read(params, use_async)
    assert seen == ["image_edit.partial_image"] * 3
    assert isinstance(error, tracking.StreamInterruptedError), error
    assert "more than 3 partial images" in str(error)
    request, _ = parse_call(**params)
    (event,) = recorder.events
    assert (event.error_type, event.cost_usd) == (
        "stream_interrupted",
        estimate_incomplete_stream(request, partials=3),  # the 3 received (2 asked for)
    )
