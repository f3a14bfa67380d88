"""The price table's audit of 2026-12-07: one added live model, one added retired model, and the
retired-model policy checked for every retired entry.

- ``gemini-nano-banana-2.1`` (Nano Banana 2.1, generally available since 2026-10-06): $1.50 per
  1M text and image input tokens, $7.50 text output, $30 image output; $0.0336 per 1K image and
  $0.1134 per 4K image (sources in ``tracking/pricing/prices.json``). The fake Gemini upstream
  reports ``ceil(len(prompt) / 4)`` text tokens, 258 tokens per input image and 1,120 / 1,680 /
  3,780 image output tokens at 1K / 2K / 4K.
- ``gemini-3.1-flash-lite-image`` (Nano Banana 2 Lite, generally available since 2026-06-30):
  $0.25 per 1M text and image input tokens, $1.50 text output, $30 image output; 1K output
  alone, $0.0336 per image (1,120 tokens).
- ``dall-e-3``, shut down on 2026-05-12 and never in the table: a call naming it was neither
  warned of nor counted as a call to a retired model. Its per-image prices are OpenAI's published
  ones ($0.040 / $0.080 standard, $0.080 / $0.120 hd, square / tall or wide).

Every expected cost below is worked out by hand from those figures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tests.gemini_support import GEMINI_KEY
from tests.recorder import watch_prometheus
from tests.test_pricing import answer
from tracking.errors import NotFoundError
from tracking.pricing import (
    billing_entry,
    estimate_call_cost,
    price_call,
    price_table,
    shutdown_date,
)
from tracking.request import parse_call
from tracking.testing.fake_gemini import FakeGemini

AUDIT_DAY = date(2026, 12, 7)
NANO = "gemini-nano-banana-2.1"
LITE = "gemini-3.1-flash-lite-image"
RETIRED_METRIC = "image_edit_retired_model_requests_total"


pytestmark = pytest.mark.usefixtures("fresh_prices")


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


@pytest.fixture
def gemini_upstream(gemini: FakeGemini) -> dict[str, str]:
    return {"api_base": gemini.url, "api_key": GEMINI_KEY}


def _edit_at_size(
    gemini: FakeGemini, upstream: dict[str, str], model: str, size: str
) -> tuple[Any, dict[str, str]]:
    """An edit of ``model`` at ``size`` through the fake: its answer, and the imageConfig sent."""
    response = tracking.image_edit(
        image=make_png(), prompt="a red hat", model=f"gemini/{model}", size=size, **upstream
    )
    return response, gemini.requests[-1].body["generationConfig"]["imageConfig"]


# -- gemini-nano-banana-2.1 ------------------------------------------------------------------


def test_a_nano_banana_2_1_edit_is_priced_from_its_tokens(gemini_upstream):
    response = tracking.image_edit(
        image=make_png(), prompt="a red hat", model=f"gemini/{NANO}", **gemini_upstream
    )
    # "a red hat": 9 chars -> 3 text tokens x $1.50; one input image, 258 tokens x $1.50; a 1K
    # image, 1,120 tokens x $30: 4.5 + 387 + 33,600 = 33,991.5 per 1M -> $0.0339915
    assert response.cost_usd == Decimal("0.0339915")


def test_a_nano_banana_2_1_generation_is_priced_from_its_tokens(gemini_upstream):
    response = tracking.image_generation(
        prompt="a red hat", model=f"gemini/{NANO}", **gemini_upstream
    )
    # 3 text tokens x $1.50 + 1,120 image tokens x $30 = 4.5 + 33,600 = 33,604.5 per 1M
    assert response.cost_usd == Decimal("0.0336045")


def test_a_2k_nano_banana_2_1_image_is_asked_at_2k_and_priced_from_its_tokens(
    gemini, gemini_upstream
):
    response, config = _edit_at_size(gemini, gemini_upstream, NANO, "2048x2048")
    assert config == {"aspectRatio": "1:1", "imageSize": "2K"}  # not left at Google's 1K
    # 3 x $1.50 + 258 x $1.50 + 1,680 x $30 = 4.5 + 387 + 50,400 = 50,791.5 per 1M
    assert response.cost_usd == Decimal("0.0507915")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024x1024", "0.0336"),  # the listed 1K price (1,120 tokens x $30 / 1M)
        ("4096x4096", "0.1134"),  # the listed 4K price (3,780 tokens x $30 / 1M)
        ("2048x2048", "0.1134"),  # no 2K price is published: the 4K one, an upper bound
    ],
)
def test_a_nano_banana_2_1_estimate_takes_the_listed_tier_price(size, expected):
    cost = estimate_call_cost(NANO, size)
    assert cost.usd == Decimal(expected)
    assert cost.source == "estimate"
    assert cost.price_ref == f"packaged:{NANO}#secondary"


def test_a_grounded_nano_banana_2_1_call_pays_the_gemini_3_search_fee(gemini_upstream):
    response = tracking.image_generation(
        prompt="a red hat",
        model=f"gemini/{NANO}",
        extra_body={"tools": [{"googleSearch": {}}]},
        **gemini_upstream,
    )
    # 3 prompt tokens + 311 tool-use prompt tokens, text, x $1.50 = 471; 1,120 image tokens x
    # $30 = 33,600: 34,071 per 1M = $0.034071; plus 2 search queries x $14 / 1,000 = $0.028
    assert response.cost_usd == Decimal("0.062071")
    assert billing_entry(f"gemini/{NANO}", None, AUDIT_DAY).shutdown is None  # live


# -- gemini-3.1-flash-lite-image ---------------------------------------------------------------


def test_a_nano_banana_2_lite_edit_is_priced_from_its_tokens_at_1k_whatever_the_size(
    gemini, gemini_upstream
):
    response, config = _edit_at_size(gemini, gemini_upstream, LITE, "2048x1152")
    assert config == {"aspectRatio": "16:9"}  # the model makes 1K alone: no imageSize is sent
    # 3 text tokens x $0.25 + 258 image tokens x $0.25 + 1,120 x $30 = 0.75 + 64.5 + 33,600
    # = 33,665.25 per 1M
    assert response.cost_usd == Decimal("0.03366525")


def test_a_nano_banana_2_lite_estimate_is_its_1k_price():
    cost = estimate_call_cost(LITE, "2048x2048")
    assert cost.usd == Decimal("0.0336")  # 1,120 tokens x $30 / 1M: the only tier it makes
    assert cost.price_ref == f"packaged:{LITE}#secondary"


# -- dall-e-3: retired, now known as such ------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "quality", "expected"),
    [("1024x1024", "standard", "0.040"), ("1792x1024", "hd", "0.120")],
)
def test_a_dall_e_3_image_is_priced_from_its_published_per_image_price(size, quality, expected):
    request, _ = parse_call(
        prompt="a red hat",
        model="dall-e-3",
        size=size,
        quality=quality,
        operation="image_generation",
    )
    cost = price_call(request, answer(1), day=date(2026, 5, 1))  # a call before its shutdown
    assert cost.usd == Decimal(expected) and cost.source == "table"


def test_a_dall_e_3_call_is_warned_of_and_counted_as_retired(upstream, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tracking")
    registry = watch_prometheus(monkeypatch)
    with pytest.raises(NotFoundError):  # the upstream's own answer reaches the caller
        tracking.image_generation(prompt="a red hat", model="dall-e-3", **upstream)
    assert tracking.flush(10)
    warnings = [r.getMessage() for r in caplog.records if "shut down" in r.getMessage()]
    assert warnings == [
        "tracking: 'dall-e-3' was shut down by its provider on 2026-05-12; its answer is passed "
        "on as it is and the call is priced from the price history. Move to a live model "
        "(tracking prices list)."
    ]
    assert registry.get_sample_value(RETIRED_METRIC, {"model": "dall-e-3"}) == 1


# -- the policy, for every retired entry ---------------------------------------------------------

RETIRED = sorted(
    (model, entry.provider)
    for model, (_, packaged) in price_table().items()
    for entry in packaged
    if entry.shutdown is not None and entry.shutdown <= AUDIT_DAY
)


def test_every_retirement_the_audit_confirmed_is_in_the_table():
    names = {model for model, _ in RETIRED}
    assert {
        "dall-e-2",
        "dall-e-3",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "chatgpt-image-latest",
        "gemini-3.1-flash-image-preview",
        "gemini-3-pro-image-preview",
        "gemini-2.5-flash-image",
    } <= names
    for live in ("gpt-image-2", "gpt-image-2.6-flare", "gemini-3.1-flash-image", NANO, LITE):
        assert shutdown_date(live, AUDIT_DAY) is None


@pytest.mark.parametrize(("model", "provider"), RETIRED)
def test_a_call_to_a_retired_model_is_warned_of_by_name_and_date(model, provider, caplog):
    caplog.set_level(logging.WARNING, logger="tracking")
    name = model if provider in (None, "openai") else f"{provider}/{model}"
    request, _ = parse_call(prompt="a red hat", model=name, operation="image_generation")
    shutdown = shutdown_date(name, AUDIT_DAY)
    assert shutdown is not None and shutdown <= AUDIT_DAY
    cost = price_call(request, None, day=AUDIT_DAY)  # refused upstream: an error, not billed
    assert cost.usd == 0
    warnings = [r.getMessage() for r in caplog.records if "shut down" in r.getMessage()]
    assert len(warnings) == 1
    # the model asked, and the one it is billed as when that is another (a snapshot's)
    assert f"'{name}'" in warnings[0]
    assert f"was shut down by its provider on {shutdown.isoformat()}" in warnings[0]
