"""An unusable event in the middle of a stream: the events before it are delivered, and the call
is a stream that broke off (a QA pass's two findings on streaming).

An upstream's answer may carry, after its first events, one the SDK cannot use: data that is not
JSON, an ``error`` event, an image that is none. It was priced as an answer that could not be
read at all (an unknown outcome, with no ``http_status``) instead of as a stream broken off after
its partial images; and a valid event that arrived in the same network chunk as the bad one was
dropped, so the proxy answered a 502 instead of relaying it and then an ``error`` event.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest
from aiohttp import web

import tracking
from tests.conftest import API_KEY, edits_upstream, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.recorder import EventRecorder
from tests.scripted_upstream import stream_call
from tracking.pricing import reset_prices
from tracking.pricing.estimate import estimate_incomplete_stream
from tracking.request import parse_call

MODEL = "gpt-image-2"
PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
PARTIAL = {
    "type": "image_edit.partial_image",
    "b64_json": PNG_B64,
    "partial_image_index": 0,
    "created_at": 1,
    "size": "1024x1024",
    "quality": "low",
    "background": "opaque",
    "output_format": "png",
}
#: The unusable events, as the bytes of their SSE frames.
BAD = {
    "not-json": b"event: image_edit.partial_image\ndata: {oops\n\n",
    "error-event": b"event: error\ndata: "
    + json.dumps({"type": "error", "error": {"message": "boom", "code": "server_error"}}).encode()
    + b"\n\n",
    "not-an-image": b"event: image_edit.partial_image\ndata: "
    + json.dumps({**PARTIAL, "b64_json": "bm90IGFuIGltYWdl"}).encode()
    + b"\n\n",
}


def _frame(event: dict[str, object]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _upstream(bad: bytes, same_chunk: bool):  # type: ignore[no-untyped-def]
    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        if same_chunk:  # one write: one chunk on the wire
            await answer.write(_frame(PARTIAL) + bad)
        else:
            await answer.write(_frame(PARTIAL))
            await asyncio.sleep(0.05)
            await answer.write(bad)
        await answer.write_eof()
        return answer

    return edits_upstream(edit, "midstream-fault")


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    tracking.register_prices(MODEL, tokens_per_million={"output_image": "30", "input_text": "5"})
    yield
    reset_prices()


def _read(params: dict[str, object], use_async: bool) -> tuple[list[str], BaseException | None]:
    seen: list[str] = []
    try:
        if use_async:

            async def consume() -> None:
                async for event in await tracking.aimage_edit(**params):
                    seen.append(event.type)

            asyncio.run(consume())
        else:
            seen.extend(event.type for event in tracking.image_edit(**params))
    except tracking.TrackingError as exc:
        return seen, exc
    return seen, None


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("same_chunk", [False, True], ids=["own-chunk", "same-chunk"])
@pytest.mark.parametrize("bad", sorted(BAD))
def test_the_events_before_an_unusable_one_are_delivered_and_priced_as_a_broken_stream(
    recorder: EventRecorder, bad: str, same_chunk: bool, use_async: bool
) -> None:
    with _upstream(BAD[bad], same_chunk) as api_base:
        params = stream_call(MODEL, api_base)
        seen, error = _read(params, use_async)
    # the error first: one of another kind (a transport error) says more than a missing event
    assert isinstance(error, tracking.StreamInterruptedError), (error, seen)
    assert seen == ["image_edit.partial_image"]
    (event,) = recorder.events
    assert (event.status, event.error_type, event.http_status) == (
        "failure",
        "stream_interrupted",
        200,
    )
    request, _ = parse_call(**params)
    expected = estimate_incomplete_stream(request, partials=1)  # the one partial image received
    assert expected is not None and expected > 0
    assert (event.cost_usd, event.cost_source, event.price_ref) == (
        expected,
        "estimate",
        "estimate:stream-incomplete",
    )
    assert event.attempts == 1


def test_an_unusable_first_event_is_still_an_answer_that_cannot_be_read(
    recorder: EventRecorder,
) -> None:
    """Before any event there is no stream to have broken: the answer cannot be read."""

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        await answer.write(BAD["not-json"] + _frame(PARTIAL))
        await answer.write_eof()
        return answer

    with edits_upstream(edit, "first-event-fault") as api_base:
        seen, error = _read(stream_call(MODEL, api_base), use_async=False)
    assert seen == [] and isinstance(error, tracking.APIResponseError)
    assert not isinstance(error, tracking.StreamInterruptedError)
    (event,) = recorder.events
    assert event.status == "failure" and event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > Decimal(0)
    assert event.http_status == 200  # the answer it could not read was a 200


@pytest.mark.parametrize("same_chunk", [False, True], ids=["own-chunk", "same-chunk"])
def test_the_proxy_relays_the_events_before_an_unusable_one_then_an_error_event(
    tmp_path, same_chunk: bool
) -> None:
    with _upstream(BAD["error-event"], same_chunk) as api_base:
        config = tmp_path / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            f"    litellm_params: {{model: {MODEL}, api_key: {API_KEY}, api_base: '{api_base}',"
            " max_retries: 0}\n"
            f"prices:\n  {MODEL}:\n"
            '    tokens_per_million: {output_image: "30", input_text: "5"}\n'
            f"general_settings: {{master_key: {MASTER_KEY}}}\n"
        )
        image = tmp_path / "photo.png"
        image.write_bytes(make_png(16, 16))
        with ProxyProcess(config) as proxy:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=MASTER_KEY, max_retries=0)
            with client:
                stream = client.images.edit(
                    model=MODEL, image=image, prompt="p", stream=True, partial_images=2
                )
                assert stream.response.status_code == 200
                seen: list[str] = []
                with pytest.raises(openai.APIError):
                    seen.extend(event.type for event in stream)
            assert seen == ["image_edit.partial_image"]
            metrics = httpx.get(f"{proxy.url}/metrics", timeout=10).text
    assert 'error_type="stream_interrupted"' in metrics
