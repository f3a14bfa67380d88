"""gemini-3.1-flash-image's 512 px tier: asked for (``imageSize: "512"``) for a small ``size``,
priced from its usage, and, without usage, estimated at its own price (747 output tokens at the
table's $60 per 1M, Google's Vertex AI page), never at the 1K price; no size still means 1K."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

import tracking
from tests.conftest import make_png
from tracking.families import resolution_tier, tier_side
from tracking.pricing import estimate_call_cost, find_entry
from tracking.providers.gemini import image_config
from tracking.testing import recording
from tracking.testing.fake_gemini import FakeGemini

GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
PNG = make_png(64, 64)
PROMPT = "add a red hat"  # 13 characters: 4 text tokens in the fake's convention
FLASH = "gemini/gemini-3.1-flash-image"
#: 747 x $60 / 1M
PRICE_512 = Decimal("0.04482")


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


@pytest.fixture
def upstream(gemini: FakeGemini) -> dict[str, str]:
    return {"api_base": gemini.url, "api_key": GEMINI_KEY}


def test_the_table_prices_the_512_tier_at_747_tokens():
    from datetime import date

    entry = find_entry(["gemini-3.1-flash-image"], date(2026, 12, 5))
    assert entry is not None
    assert entry.per_image["standard"]["512"] == PRICE_512
    assert Decimal(747) * entry.tokens["output_image"] / 1_000_000 == PRICE_512


@pytest.mark.parametrize(
    ("size", "tier"),
    [("512x512", "512"), ("768x512", "512"), ("384x768", "512"), ("1024x1024", "1K")],
)
def test_small_sizes_ask_for_the_512_tier(size, tier):
    config, billed = image_config(size, "gemini-3.1-flash-image")
    assert config["imageSize"] == tier and billed == tier


def test_models_without_a_512_tier_keep_1k():
    assert image_config("512x512", "gemini-3-pro-image") == (
        {"aspectRatio": "1:1", "imageSize": "1K"},
        "1K",
    )
    assert tier_side("512") == 512 and tier_side("1K") == 1024 and tier_side("512K") == 524288
    assert resolution_tier(512, 512, ("1K", "2K", "4K")) == "1K"


def test_a_512_edit_is_sent_as_512_and_priced_from_its_usage(gemini, upstream):
    response = tracking.image_edit(
        image=PNG, prompt=PROMPT, model=FLASH, size="512x512", **upstream
    )
    sent = gemini.requests[-1].body["generationConfig"]["imageConfig"]
    assert sent == {"aspectRatio": "1:1", "imageSize": "512"}
    assert response.usage is not None and response.usage.output_image_tokens == 747
    # 4 text and 258 image tokens in at $0.50, 747 image tokens out at $60, per 1M
    assert response.cost_usd == (4 * Decimal("0.5") + 258 * Decimal("0.5") + 747 * 60) / 1_000_000


def test_a_512_answer_without_usage_is_estimated_at_the_512_price(gemini, upstream):
    with recording() as events:
        response = tracking.image_edit(
            image=PNG,
            prompt=PROMPT,
            model=FLASH,
            size="512x512",
            extra_headers={"x-fake-fault": "code=no_usage"},
            **upstream,
        )
    assert response.usage is None
    assert response.cost_usd == PRICE_512  # not the 1K price, $0.067
    assert events.last.cost_source == "estimate"


def test_without_a_size_the_estimate_stays_at_1k(gemini, upstream):
    response = tracking.image_edit(
        image=PNG,
        prompt=PROMPT,
        model=FLASH,
        extra_headers={"x-fake-fault": "code=no_usage"},
        **upstream,
    )
    assert "imageConfig" not in gemini.requests[-1].body["generationConfig"]
    assert response.cost_usd == Decimal("0.067")  # Gemini's default tier, not the smallest
    assert estimate_call_cost(FLASH).usd == Decimal("0.067")
    assert estimate_call_cost(FLASH, "512x512").usd == PRICE_512
