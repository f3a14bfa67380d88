"""A call whose answer does not say what it cost is never recorded below what is known of it.

A success answered without ``usage`` was estimated from the per-image output price alone,
leaving out the prompt and the input images the upstream bills by the token: $0.006 recorded for
a gpt-image-2 edit billed $0.0086, and under the estimate the same call got when its outcome was
unknown (which counts the input). Both are now one estimate (``request_estimate``), flagged
``cost_source="estimate"``.

A dall-e-2 call that names no size was recorded as an estimate although the model's documented
default (1024x1024, OpenAI's OpenAPI description) has a known price: the price file now records
each per-size-priced model's documented defaults with their source, and such a call is billed
from the table, exactly.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tracking
from tracking.errors import ConfigurationError
from tracking.pricing import estimate_call_cost
from tracking.pricing.table import load_price_file
from tracking.testing import EventRecorder, FakeOpenAI

from .conftest import API_KEY, edit_with_fault, make_png
from .price_files import write_prices_file

EDIT: dict[str, Any] = {
    "model": "gpt-image-2",
    "prompt": "a red hat",
    "size": "1024x1024",
    "quality": "low",
    "max_retries": 0,
}


def _edit(fake: FakeOpenAI, fault: str | None) -> None:
    params = {**EDIT, "image": make_png()}
    if fault is None:
        tracking.image_edit(api_base=fake.url, api_key=API_KEY, **params)
    else:
        try:
            edit_with_fault(fake, fault, use_async=False, **params)
        except tracking.APIError:
            assert fault == "drop"  # the answer never came: the outcome is unknown


def test_an_answer_without_usage_is_estimated_with_its_inputs(
    fake: FakeOpenAI, recorder: EventRecorder
) -> None:
    _edit(fake, None)  # the bill, as the usage states it
    billed = recorder.last
    _edit(fake, "no_usage")  # the same call, made and billed, its usage left out
    unsaid = recorder.last
    _edit(fake, "drop")  # the same call, its outcome unknown
    unknown = recorder.last

    assert billed.cost_source == "usage"
    # 3 text tokens at $5, 323 image tokens at $8 and 200 output tokens at $30 per 1M
    assert billed.cost_usd == Decimal("0.008599")
    assert unsaid.status == "success" and unsaid.usage is None
    assert unsaid.cost_source == "estimate"
    # the output's per-image price plus the input allowance: 9 prompt characters at $5 and
    # 1,000 tokens for the input image at $8 per 1M
    assert unsaid.cost_usd == Decimal("0.006") + Decimal("0.000045") + Decimal("0.008")
    assert unsaid.cost_usd is not None and billed.cost_usd is not None
    assert unsaid.cost_usd >= billed.cost_usd
    assert unknown.status == "failure" and unknown.cost_source == "estimate"
    assert unsaid.cost_usd == unknown.cost_usd  # one estimator for both


def test_a_dall_e_2_edit_naming_no_size_is_billed_at_its_default(
    fake: FakeOpenAI, recorder: EventRecorder
) -> None:
    params = {"model": "dall-e-2", "prompt": "a red hat", "max_retries": 0}
    tracking.image_edit(api_base=fake.url, api_key=API_KEY, image=make_png(), **params)
    event = recorder.last
    assert fake.requests[-1].fields.get("size") is None  # OpenAI picks the size: its default
    assert event.cost_source == "table"
    assert event.cost_usd == Decimal("0.020")  # dall-e-2's 1024x1024 price
    assert event.price_ref == "packaged:dall-e-2#official"


def test_a_budget_prices_a_call_naming_no_size_or_quality_at_the_defaults() -> None:
    # dall-e-3 documents 1024x1024 at standard: $0.040, not its dearest image ($0.120, hd)
    assert estimate_call_cost("dall-e-3").usd == Decimal("0.040")
    assert estimate_call_cost("dall-e-2").usd == Decimal("0.020")


def _price_file(tmp_path: Path, defaults: Any) -> Path:
    per_image = {"standard": {"512x512": "0.01"}}
    return write_prices_file(tmp_path, "my-sized-model", per_image, defaults=defaults)


def test_a_price_file_default_is_a_priced_size_with_its_source(tmp_path: Path) -> None:
    page = {"source": "https://example.com/d", "retrieved": "2026-12-07"}
    good = {"value": "512x512", **page, "confidence": "official"}
    table = load_price_file(_price_file(tmp_path, {"size": good}))
    assert table["my-sized-model"][0].defaults == {"size": "512x512"}
    with pytest.raises(ConfigurationError, match=r"defaults\.size\.value: a size the entry"):
        load_price_file(_price_file(tmp_path, {"size": {**good, "value": "1024x1024"}}))
    with pytest.raises(ConfigurationError, match=r"defaults\.size: 'source' must be"):
        load_price_file(_price_file(tmp_path, {"size": {"value": "512x512"}}))
    with pytest.raises(ConfigurationError, match=r"defaults\.style: one of size, quality"):
        load_price_file(_price_file(tmp_path, {"style": good}))
