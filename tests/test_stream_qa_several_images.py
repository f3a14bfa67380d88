"""``stream=True`` with ``n`` above 1 is refused before sending for every model, not only those
of the family table (a QA pass on streaming).

A stream ends at its first completed event. For a model the table does not know (an Azure
deployment's name, an OpenAI-compatible server's model, a newer OpenAI model) a stream of
several images was sent; an upstream that streamed them (one completed event each) billed all
of them while the call delivered, recorded and priced the first alone, as a success.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import make_png
from tests.recorder import EventRecorder
from tracking.testing.app_thread import AppThread

PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
    "output_tokens": 200,
    "total_tokens": 210,
}
MODELS = ["openai_compatible/my-model", "openai/acme-image-edit-9", "azure/my-deployment"]


class _SeveralImages:
    """An upstream on every path that streams one completed event per image asked for."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        for kind in ("image_edit.completed", "image_edit.completed"):
            event = {"type": kind, "b64_json": PNG_B64, "size": "1024x1024", "usage": USAGE}
            await answer.write(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode())
        await answer.write_eof()
        return answer


@pytest.fixture
def several() -> Iterator[tuple[_SeveralImages, str]]:
    upstream = _SeveralImages()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", upstream.handle)
    server = AppThread(app, name="several-images", shutdown_timeout=0.1)
    port = server.start()
    try:
        yield upstream, f"http://127.0.0.1:{port}/v1"
    finally:
        server.stop()


def _stream(params: dict[str, Any], use_async: bool) -> list[str]:
    if not use_async:
        return [event.type for event in tracking.image_edit(**params)]

    async def consume() -> list[str]:
        return [event.type async for event in await tracking.aimage_edit(**params)]

    return asyncio.run(consume())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("model", MODELS)
def test_a_stream_of_several_images_is_refused_for_a_model_the_table_does_not_know(
    several: tuple[_SeveralImages, str], recorder: EventRecorder, model: str, use_async: bool
) -> None:
    upstream, api_base = several
    params: dict[str, Any] = {
        "model": model,
        "prompt": "a hat",
        "image": make_png(16, 16),
        "api_base": api_base,
        "api_key": "sk-test",
        "stream": True,
        "n": 2,
        "max_retries": 0,
    }
    if model.startswith("azure/"):
        params["api_version"] = "2025-04-01-preview"
    with pytest.raises(tracking.ValidationError) as refused:
        _stream(params, use_async)
    assert (refused.value.param, refused.value.rule, refused.value.code) == (
        "n",
        "stream_single_image",
        "unsupported_parameter",
    )
    assert upstream.requests == 0  # nothing was sent, nothing billed
    (event,) = recorder.events
    assert (event.status, event.cost_usd) == ("failure", 0)


def test_one_image_of_such_a_model_still_streams(
    several: tuple[_SeveralImages, str], recorder: EventRecorder
) -> None:
    upstream, api_base = several
    params = {
        "model": "openai_compatible/my-model",
        "prompt": "a hat",
        "image": make_png(16, 16),
        "api_base": api_base,
        "api_key": "sk-test",
        "stream": True,
        "n": 1,
    }
    assert _stream(params, use_async=False) == ["image_edit.completed"]
    assert upstream.requests == 1
