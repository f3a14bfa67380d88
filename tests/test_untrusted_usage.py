"""A billed answer whose ``usage`` cannot be trusted is priced by estimate, never from it.

An upstream (an OpenAI-compatible server, a broken gateway) may answer 200 with a ``usage`` whose
details are not objects, whose counts are negative, absurd or not whole numbers. Before, a string
``input_tokens_details`` raised a bare ``AttributeError`` after the call was billed (no event, no
row, the image lost), and ``cached_tokens: -1000000`` billed $5.03 for a $0.03 call as ``usage``.
Now such a usage is ignored: the call succeeds, its cost is the model's estimate, flagged
``cost_source="estimate"``, and the event carries no usage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

import tracking
from tracking.response import MAX_TOKENS

from .conftest import edits_upstream, make_png

B64_PNG = "iVBORw0KGgo="  # what the image is does not matter here: only the usage is read
GOOD = {
    "input_tokens": 100,
    "output_tokens": 1000,
    "total_tokens": 1100,
    "input_tokens_details": {"text_tokens": 100, "image_tokens": 0},
}


async def _answer(request: web.Request) -> web.Response:
    """One image and the usage the request's ``x-usage`` header holds (JSON), with the size its
    ``x-size`` header names, if any."""
    await request.read()
    body: dict[str, Any] = {"created": 1, "data": [{"b64_json": B64_PNG}]}
    body["usage"] = json.loads(request.headers["x-usage"])
    if "x-size" in request.headers:  # the size the answer says it made
        body["size"] = request.headers["x-size"]
    return web.json_response(body)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with edits_upstream(_answer, "usage-upstream") as api_base:
        yield api_base


def _edit(
    upstream: str, usage: Any, *, use_async: bool, size: str | None = None
) -> tracking.ImageResponse:
    params: dict[str, Any] = {
        "model": "gpt-image-2",
        "image": make_png(),
        "prompt": "a red hat",
        "size": "1024x1024",
        "quality": "low",
        "api_base": upstream,
        "api_key": "sk-test",
        "max_retries": 0,
        "extra_headers": {"x-usage": json.dumps(usage), **({"x-size": size} if size else {})},
    }
    if use_async:
        return asyncio.run(tracking.aimage_edit(**params))
    return tracking.image_edit(**params)


UNTRUSTED = {
    "details a string": {**GOOD, "input_tokens_details": "x"},
    "details a list": {**GOOD, "input_tokens_details": [1]},
    "output details a string": {**GOOD, "output_tokens_details": "x"},
    "cached details a string": {
        **GOOD,
        "input_tokens_details": {"text_tokens": 100, "cached_tokens_details": "x"},
    },
    "negative cached tokens": {
        **GOOD,
        "input_tokens_details": {"text_tokens": 100, "cached_tokens": -1_000_000},
    },
    "more cached than input": {
        **GOOD,
        "input_tokens_details": {"text_tokens": 100, "cached_tokens": 5000},
    },
    "negative output": {**GOOD, "output_tokens": -5},
    "absurd output": {**GOOD, "output_tokens": 10**26},
    "just past the bound": {**GOOD, "output_tokens": MAX_TOKENS + 1},
    "a float count": {**GOOD, "output_tokens": 1000.5},
    "a string count": {**GOOD, "output_tokens": "1000"},
    "a boolean count": {**GOOD, "input_tokens": True},
}


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("case", list(UNTRUSTED))
def test_an_untrusted_usage_is_priced_by_estimate(upstream, recorder, case, use_async):
    response = _edit(upstream, UNTRUSTED[case], use_async=use_async)
    assert len(response.data) == 1  # the billed image reaches the caller
    (event,) = recorder.events
    assert event.status == "success" and event.usage is None
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and Decimal(0) < event.cost_usd < Decimal(1)
    assert response.cost_usd == event.cost_usd


def test_a_trusted_usage_is_still_priced_from_its_tokens(upstream, recorder):
    _edit(upstream, GOOD, use_async=False)
    (event,) = recorder.events
    assert event.cost_source == "usage" and event.usage is not None
    assert event.usage.output_tokens == 1000 and event.usage.input_text_tokens == 100


def test_null_details_and_counts_read_as_absent(upstream, recorder):
    usage = {**GOOD, "output_tokens_details": None, "input_tokens_details": None}
    _edit(upstream, usage, use_async=False)
    (event,) = recorder.events
    assert event.cost_source == "usage" and event.usage is not None
    assert event.usage.input_text_tokens == 100  # all input counted as text, as before


@pytest.mark.parametrize("reported", ["99999x99999", "3840x2161000"])
def test_an_estimate_never_prices_a_size_the_model_cannot_make(upstream, recorder, reported):
    """Without usage the estimate prices the size the answer reports; a size larger than the
    model produces is a fault (it priced one image at $2,009), so the requested size is used."""
    _edit(upstream, {}, use_async=False, size="1024x1024")
    _edit(upstream, {}, use_async=False, size=reported)
    requested, absurd = recorder.events
    assert requested.cost_source == absurd.cost_source == "estimate"
    assert absurd.cost_usd == requested.cost_usd and requested.cost_usd is not None
    assert requested.cost_usd < Decimal(1)


def test_an_estimate_still_prices_a_larger_size_the_model_makes(upstream, recorder):
    _edit(upstream, {}, use_async=False, size="1024x1024")
    _edit(upstream, {}, use_async=False, size="3840x2160")
    small, large = recorder.events
    assert large.cost_usd is not None and small.cost_usd is not None
    assert large.cost_usd > small.cost_usd  # 4K priced by its area, as before
