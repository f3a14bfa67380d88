"""A completed stream whose ``usage`` cannot be used is estimated with its partial images.

A stream's usage counts its partial images' output tokens (about 100 each). A completed event
without a usable ``usage`` (none, ``null``, counts that are strings, all zero) was estimated as a
plain answer's output alone, leaving out the partial images the upstream had sent and billed:
less than the same call costs from its usage, and less than the budget reservation held for it.
It then counted the partial images the request asked for, not those the upstream sent (a call
asking for 3 that received 1 was estimated with 3), as a broken stream no longer does.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

import tracking
from tests.conftest import edits_upstream, make_png
from tests.scripted_upstream import stream_call
from tracking.pricing import reset_prices

MODEL = "gpt-image-2"
PNG_B64 = base64.b64encode(make_png(8, 8)).decode()
COMMON = {"b64_json": PNG_B64, "created_at": 1, "size": "1024x1024", "quality": "low"}
#: The completed event's ``usage`` each case sends (absent for "none").
USAGES: dict[str, Any] = {
    "none": ...,
    "null": None,
    "string counts": {"input_tokens": "50", "output_tokens": "472", "total_tokens": "522"},
    "all zero": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
}


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _answer(request: web.Request) -> web.StreamResponse:
    """Two partial images (or as many as ``x-partials`` says), then a completed event with the
    usage ``x-usage`` names."""
    await request.read()
    completed: dict[str, Any] = {"type": "image_edit.completed", **COMMON}
    usage = USAGES[request.headers["x-usage"]]
    if usage is not ...:
        completed["usage"] = usage
    answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await answer.prepare(request)
    for index in range(int(request.headers.get("x-partials", "2"))):
        partial = {"type": "image_edit.partial_image", "partial_image_index": index, **COMMON}
        await answer.write(_frame(partial))
    await answer.write(_frame(completed))
    await answer.write_eof()
    return answer


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with edits_upstream(_answer, "completed-without-usage") as api_base:
        yield api_base


#: The input allowance of an estimate: the prompt ("a hat", 5 characters) at the registered
#: $5 per 1M input text tokens (no input image price is registered: the image adds nothing).
INPUT = 5 * Decimal(5) / Decimal(1_000_000)


@pytest.fixture(autouse=True)
def prices() -> Iterator[None]:
    tracking.register_prices(MODEL, tokens_per_million={"output_image": "30", "input_text": "5"})
    yield
    reset_prices()


def _stream(api_base: str, usage: str, use_async: bool, **extra: Any) -> list[str]:
    params: dict[str, Any] = {
        **stream_call(MODEL, api_base),
        "max_retries": 0,
        "extra_headers": {"x-usage": usage},
        **extra,
    }
    if use_async:

        async def consume() -> list[str]:
            return [event.type async for event in await tracking.aimage_edit(**params)]

        return asyncio.run(consume())
    return [event.type for event in tracking.image_edit(**params)]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("usage", sorted(USAGES))
def test_a_completed_stream_without_usable_usage_is_estimated_with_its_partial_images(
    upstream, recorder, usage, use_async
):
    seen = _stream(upstream, usage, use_async)
    assert seen[-1] == "image_edit.completed" and len(seen) == 3
    (event,) = recorder.events
    assert event.status == "success" and event.cost_source == "estimate"
    # 1024x1024 low: 200 output tokens (gpt-image-2's $0.006 at $30 per 1M), plus 100 output
    # tokens for each of the two partial images the upstream sent and billed, and the input
    assert event.cost_usd == Decimal(200 + 2 * 100) * Decimal(30) / Decimal(1_000_000) + INPUT


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("asked", "sent"), [(3, 1), (3, 0), (1, 1)])
def test_the_estimate_counts_the_partial_images_received_not_asked_for(
    upstream, recorder, asked, sent, use_async
):
    headers = {"x-usage": "none", "x-partials": str(sent)}
    seen = _stream(upstream, "none", use_async, partial_images=asked, extra_headers=headers)
    assert seen == ["image_edit.partial_image"] * sent + ["image_edit.completed"]
    (event,) = recorder.events
    assert event.status == "success" and event.cost_source == "estimate"
    assert event.cost_usd == Decimal(200 + sent * 100) * Decimal(30) / Decimal(1_000_000) + INPUT
