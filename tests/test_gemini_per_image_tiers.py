"""A Gemini deployment's one ``model_info.output_cost_per_image`` (LiteLLM's spelling) for a model
Google bills by resolution tier: gemini-3.1-flash-image's 1K / 2K / 4K images are $0.067 /
$0.101 / $0.151 in the packaged table (1,120 / 1,680 / 2,520 image tokens).

The one figure priced every tier: a 2K or 4K image was billed at the 1K price, an under-bill of
a third or more. It is now the 1K image's price, and each other tier costs it times the packaged
ratio of the tier's price to the 1K one. Input-token prices beside it bill the call whole (the
per-image price covers the image's output tokens), where it was an estimate. Everything runs
against the fake Gemini upstream on loopback, through the SDK's Router (which registers the
deployment's prices as the proxy does).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

import tracking
from tests.conftest import make_png
from tracking.pricing import reset_prices
from tracking.router import Router
from tracking.router.strategies import CallShape, model_info_cost
from tracking.testing import EventRecorder
from tracking.testing.fake_gemini import INPUT_IMAGE_TOKENS, FakeGemini

GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
MODEL = "gemini/gemini-3.1-flash-image"
#: 0.8 of the packaged 1K price ($0.067): a negotiated 20% off
FLAT = {"output_cost_per_image": "0.0536"}
PROMPT = "add a red hat"  # 4 text tokens in the fake's convention


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


@pytest.fixture(autouse=True)
def _forget_prices() -> Iterator[None]:
    yield
    reset_prices()


def _router(gemini: FakeGemini, info: dict[str, str]) -> Router:
    params = {"model": MODEL, "api_key": GEMINI_KEY, "api_base": gemini.url}
    return Router([{"model_name": "nano", "litellm_params": params, "model_info": info}])


def _edit(router: Router, size: str, fault: str | None = None) -> tracking.ImageEditEvent:
    recorder = EventRecorder()
    tracking.callbacks.append(recorder)
    headers = {"x-fake-fault": fault} if fault else {}
    try:
        router.image_edit(
            model="nano", image=make_png(), prompt=PROMPT, size=size, extra_headers=headers
        )
    finally:
        tracking.callbacks.remove(recorder)
    (event,) = recorder.events
    return event


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1024x1024", "0.0536"), ("2048x2048", "0.0808"), ("4096x4096", "0.1208")],
    ids=["1K", "2K", "4K"],
)
def test_one_per_image_price_is_the_1k_price_and_larger_tiers_scale(gemini, size, expected):
    with _router(gemini, FLAT) as router:
        event = _edit(router, size)
    assert event.images_returned == 1
    assert event.cost_usd == Decimal(expected)  # 0.8 x the packaged tier price
    assert event.cost_source == "custom"
    assert event.price_ref == f"custom:{MODEL}"


def test_an_answer_without_usage_is_estimated_at_its_tiers_price(gemini):
    """Beside token prices the per-image price bills what has no usage: a 4K answer without
    ``usageMetadata`` was estimated at the 1K figure."""
    info = {**FLAT, "input_cost_per_token": "0.0000005", "output_cost_per_image_token": "0.00006"}
    with _router(gemini, info) as router:
        event = _edit(router, "4096x4096", "code=no_usage")
    assert (event.cost_usd, event.cost_source) == (Decimal("0.1208"), "estimate")


def test_cost_based_ranking_prices_the_tier_as_billed(gemini):
    """A 4096x4096 call is ranked at the 4K tier's price, as it is billed (it was $0.0536)."""
    shape = CallShape("nano", size="4096x4096", input_images=0)
    with _router(gemini, FLAT) as router:
        (deployment,) = router.deployments
        assert model_info_cost(deployment, shape) == Decimal("0.1208")


def test_input_token_prices_beside_a_per_image_price_bill_the_call_whole(gemini):
    """``input_cost_per_token`` and ``output_cost_per_image``, no image-output token price: the
    per-image price is Google's bill for the image's output tokens, so the call is its input
    tokens plus the image. It was an estimate of the image alone, the input left out."""
    info = {**FLAT, "input_cost_per_token": "0.000001"}  # $1 per 1M input tokens
    with _router(gemini, info) as router:
        event = _edit(router, "2048x2048")
    inputs = (4 + INPUT_IMAGE_TOKENS) * Decimal("0.000001")
    assert event.cost_usd == inputs + Decimal("0.0808")
    assert event.cost_per_image_usd == event.cost_usd
    assert (event.cost_source, event.price_ref) == ("custom", f"custom:{MODEL}")
