"""A large answer is read (its JSON parsed, its images checked) off the event loop on the async
path: about 1.4 ms per MB, so a few images at 4K held the loop, and every other request of a
proxy, for up to seconds. The reading is seen only if it runs on the loop's thread."""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterator

import pytest
from PIL import Image

import tracking
from tests.conftest import make_png
from tests.loop_ticks import called_on_this_thread
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream


def _noise_png(side: int) -> bytes:
    """Random pixels barely compress: about ``3 * side**2`` bytes of PNG."""
    pixels = random.Random(side).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG")
    return out.getvalue()


def _answer(png: bytes) -> dict:
    return {
        "created": 1,
        "data": [{"b64_json": base64.b64encode(png).decode()}],
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
            "output_tokens": 1056,
            "total_tokens": 1066,
        },
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


async def test_a_large_answer_is_read_in_a_worker_thread(upstream):
    large = _noise_png(1200)  # about 4.3 MB of PNG, 5.8 MB of base64
    upstream.reply = Reply(_answer(large))
    with called_on_this_thread("_read_answer") as on_the_loop:
        response = await tracking.aimage_edit(image=make_png(), **upstream.params("openai"))
    assert on_the_loop == []
    assert base64.b64decode(response.data[0].b64_json or "") == large
    assert response.cost_usd is not None and response.cost_usd > 0


async def test_a_usual_answer_is_read_where_it_is(upstream):
    upstream.reply = Reply(_answer(make_png(64, 64)))
    with called_on_this_thread("_read_answer") as on_the_loop:
        response = await tracking.aimage_edit(image=make_png(), **upstream.params("openai"))
    assert len(on_the_loop) == 1  # no thread hop for a few KB
    assert response.images_returned == 1


async def test_a_large_answer_that_cannot_be_read_fails_as_one_read_on_the_loop_would(upstream):
    """What reading it raised in the worker thread is the call's typed error, estimated."""
    upstream.reply = Reply(b'{"created": 1, "data": "' + b"A" * (5 * 1024 * 1024) + b'"}')
    with pytest.raises(tracking.APIResponseError, match="no 'data' list"):
        await tracking.aimage_edit(image=make_png(), **upstream.params("openai"))
