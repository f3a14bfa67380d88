"""A streamed call's large event (a completed event's image at 4K: megabytes of base64) is parsed
(its JSON read, its image checked) in a worker thread on the async path, as a large plain answer
is (``test_answer_read_off_the_loop``): on the loop it held the proxy's every other request for
as long. Usual events are parsed where they are. The parsing is seen only if it runs on the
loop's thread.

The upstream is a loopback server of this test's own that streams a small partial image, then a
completed event of about 6 MB.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

import tracking
from tests.conftest import make_png
from tests.loop_ticks import called_on_this_thread
from tracking.flow import READ_OFF_THE_LOOP
from tracking.testing import recording
from tracking.testing.app_thread import AppThread

USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
    "output_tokens": 1156,
    "total_tokens": 1166,
}


def _noise_png(side: int) -> bytes:
    """Random pixels barely compress: about ``3 * side**2`` bytes of PNG."""
    pixels = random.Random(side).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG")
    return out.getvalue()


LARGE = _noise_png(1200)  # about 4.3 MB of PNG, 5.8 MB of base64


def _sse(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


@pytest.fixture(scope="module")
def streaming() -> Iterator[str]:
    """An upstream whose every edit streams a small partial image and a large completed one."""
    events = [
        _sse(
            {
                "type": "image_edit.partial_image",
                "b64_json": base64.b64encode(make_png(16, 16)).decode(),
                "partial_image_index": 0,
            }
        ),
        _sse(
            {
                "type": "image_edit.completed",
                "b64_json": base64.b64encode(LARGE).decode(),
                "size": "1024x1024",
                "quality": "low",
                "usage": USAGE,
            }
        ),
    ]
    assert len(events[1]) > READ_OFF_THE_LOOP

    async def edit(request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        for event in events:
            await answer.write(event)
        await answer.write_eof()
        return answer

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/images/edits", edit)
    server = AppThread(app, name="streaming-upstream")
    port = server.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.stop()


def _params(api_base: str) -> dict[str, Any]:
    return {
        "image": make_png(),
        "prompt": "a hat",
        "model": "gpt-image-2",
        "quality": "low",
        "size": "1024x1024",
        "stream": True,
        "partial_images": 1,
        "max_retries": 0,
        "api_base": api_base,
        "api_key": "test-key-0123456789",
    }


async def test_a_large_streamed_event_is_parsed_in_a_worker_thread(streaming):
    with called_on_this_thread("parse_stream_event") as on_the_loop:
        stream = await tracking.aimage_edit(**_params(streaming))
        items = [item async for item in stream]
    # the partial image (a few hundred bytes) was parsed on the loop, the completed one not
    assert len(on_the_loop) == 1
    assert [item.type for item in items] == ["image_edit.partial_image", "image_edit.completed"]
    assert base64.b64decode(items[-1].b64_json) == LARGE
    assert stream.cost_usd is not None and stream.cost_usd > 0


async def test_a_call_cancelled_while_its_large_event_is_parsed_still_has_its_event(
    streaming, monkeypatch
):
    """The caller is cancelled while the worker thread parses the completed event: the call
    still ends with its one event (cancelled, estimated: the upstream accepted it), as one
    cancelled while reading its answer does."""
    from tracking import stream_flow

    parsing, release = threading.Event(), threading.Event()
    parse = stream_flow.parse_stream_event

    def held(sse: Any, *rest: Any) -> Any:
        if len(sse.data) >= READ_OFF_THE_LOOP:
            parsing.set()
            release.wait(30)
        return parse(sse, *rest)

    monkeypatch.setattr(stream_flow, "parse_stream_event", held)

    async def read_all() -> None:
        stream = await tracking.aimage_edit(**_params(streaming))
        async for _ in stream:
            pass

    with recording() as recorder:
        reading = asyncio.create_task(read_all())
        try:
            while not parsing.is_set():
                await asyncio.sleep(0.01)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
        finally:
            release.set()
    (event,) = recorder.events
    assert (event.status, event.error_type, event.cost_source) == (
        "failure",
        "cancelled",
        "estimate",
    )
    assert event.cost_usd is not None and event.cost_usd > 0
