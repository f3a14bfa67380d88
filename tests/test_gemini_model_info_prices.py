"""A Gemini or Vertex AI deployment whose ``model_info`` gives token prices and a per-image price
(LiteLLM's Gemini entries do: ``input_cost_per_token``, ``output_cost_per_token`` for the text
output, ``output_cost_per_image_token``, ``output_cost_per_image``).

Google bills an output image as its output image tokens at the image-output rate; its per-image
price is that bill for one image at the default resolution ("1290 tokens per image ... equating
to $0.039 per image", https://ai.google.dev/gemini-api/docs/pricing, as quoted in Google's forum,
read 2026-12-06). So the tokens bill a call whose usage is reported, the text output (thinking)
at ``output_cost_per_token``, and the per-image price is kept for what has no usage: the estimate
of an answer without ``usageMetadata`` and cost-based ranking. A per-image price beside
``output_cost_per_token`` with no image-output token price is ambiguous (in LiteLLM's Gemini
entries that key is the text rate, in OpenAI-style configs the image's): refused at start. A
lone per-image price of a model billed by resolution tier is the 1K image's, other tiers scaled
by the packaged ratio; beside input-token prices alone it bills the call whole with them.
Everything runs against the fake Gemini upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tests.price_files import write_prices_file
from tracking.errors import ConfigurationError, ContentPolicyError
from tracking.pricing import reset_prices, use_prices_file
from tracking.router import Router
from tracking.router.strategies import CallShape, model_info_cost
from tracking.testing import EventRecorder
from tracking.testing.fake_gemini import (
    INPUT_IMAGE_TOKENS,
    OUTPUT_IMAGE_TOKENS,
    THOUGHTS_TOKENS,
    FakeGemini,
)

GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
MODEL = "gemini/gemini-3.1-flash-image"
PROMPT = "add a red hat"  # 4 text tokens in the fake's convention
PROMPT_TOKENS = 4
MILLION = Decimal(1_000_000)
#: LiteLLM-shaped prices, deliberately other than the packaged ones (so the test sees which bill)
LITELLM_GEMINI = {
    "input_cost_per_token": "0.000001",  # $1 / 1M input tokens
    "output_cost_per_token": "0.000004",  # $4 / 1M text output tokens (thinking)
    "output_cost_per_image_token": "0.00005",  # $50 / 1M image output tokens
    "output_cost_per_image": "0.056",  # 1,120 tokens x $50 / 1M: one 1K image
}
INPUT_COST = (PROMPT_TOKENS + INPUT_IMAGE_TOKENS) * Decimal(1) / MILLION


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


@pytest.fixture(autouse=True)
def _forget_prices() -> Iterator[None]:
    yield
    reset_prices()


def _router(gemini: FakeGemini, info: dict[str, Any], model: str = MODEL) -> Router:
    params = {"model": model, "api_key": GEMINI_KEY, "api_base": gemini.url}
    return Router([{"model_name": "nano", "litellm_params": params, "model_info": info}])


def _edit(
    router: Router, fault: str | None = None, size: str | None = None
) -> tracking.ImageEditEvent:
    """One edit through the router; its event (also when it failed: a safety block raises)."""
    recorder = EventRecorder()
    tracking.callbacks.append(recorder)
    headers = {"x-fake-fault": fault} if fault else {}
    try:
        router.image_edit(
            model="nano", image=make_png(64, 64), prompt=PROMPT, extra_headers=headers, size=size
        )
    except ContentPolicyError:
        assert fault == "code=image_safety"
    finally:
        tracking.callbacks.remove(recorder)
    return recorder.events[-1]


def test_the_tokens_bill_a_call_whose_usage_is_reported(gemini):
    with _router(gemini, LITELLM_GEMINI) as router:
        event = _edit(router)
    tokens = OUTPUT_IMAGE_TOKENS["gemini-3.1-flash-image"]["1K"]
    assert event.cost_source == "custom"
    assert event.cost_usd == INPUT_COST + tokens * Decimal(50) / MILLION


def test_an_answer_without_usage_is_estimated_at_the_per_image_price(gemini):
    """Before, the per-image price was dropped and the estimate was a gpt-image reference count
    of output tokens at the image rate: several times what Google bills for one 1K image."""
    with _router(gemini, LITELLM_GEMINI) as router:
        event = _edit(router, "code=no_usage")
    assert event.cost_source == "estimate"
    # and the input: the prompt's characters and 1,000 tokens for the image, at $1 per 1M
    assert event.cost_usd == Decimal("0.056") + (len(PROMPT) + 1000) * Decimal(1) / MILLION


def test_thinking_tokens_are_billed_at_the_text_output_price(gemini):
    """A withheld image reports the prompt and the thinking: the thinking is text output, at
    ``output_cost_per_token``. Before, the text output had no price and the call was estimated
    as a whole image."""
    with _router(gemini, LITELLM_GEMINI) as router:
        event = _edit(router, "code=image_safety")
    assert event.status == "failure" and event.error_type == "content_policy"
    assert event.cost_source == "custom"
    assert event.cost_usd == INPUT_COST + THOUGHTS_TOKENS * Decimal(4) / MILLION


def test_the_deployment_is_ranked_at_its_per_image_price(gemini):
    """Cost-based routing ranks it at the per-image price, as an answer without usage is billed,
    with its prices registered or not (``register_prices=False``, for a model the price table
    does not know, reads its model_info: before, a Gemini deployment was ranked unpriced)."""
    shape = CallShape("nano", size="1024x1024", input_images=0)
    with _router(gemini, LITELLM_GEMINI) as router:
        (deployment,) = router.deployments
        assert model_info_cost(deployment, shape) == Decimal("0.056")
    reset_prices()
    params = {"model": "gemini/gemini-9-image", "api_key": GEMINI_KEY, "api_base": gemini.url}
    listed = [{"model_name": "nano", "litellm_params": params, "model_info": LITELLM_GEMINI}]
    with Router(listed, register_prices=False) as router:
        (deployment,) = router.deployments
        assert model_info_cost(deployment, shape) == Decimal("0.056")


@pytest.mark.parametrize("model", [MODEL, "vertex_ai/gemini-3.1-flash-image"])
def test_a_per_image_price_beside_an_output_token_price_of_unknown_kind_is_refused(
    gemini, vertex, model
):
    info = {key: LITELLM_GEMINI[key] for key in ("output_cost_per_token", "output_cost_per_image")}
    with pytest.raises(ConfigurationError, match="output_cost_per_image_token"):
        _router(gemini, info, model)


# -- one output_cost_per_image for a model Google bills by resolution tier ---------------------
# gemini-3.1-flash-image's 1K / 2K / 4K images are $0.067 / $0.101 / $0.151 in the packaged table
# (1,120 / 1,680 / 2,520 image tokens). LiteLLM's one figure priced every tier: a 2K or 4K image
# was billed at the 1K price, an under-bill of a third or more. It is now the 1K image's price,
# each other tier at it times the packaged ratio of the tier's price to the 1K one.

#: 0.8 of the packaged 1K price ($0.067): a negotiated 20% off
FLAT = {"output_cost_per_image": "0.0536"}


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1024x1024", "0.0536"), ("2048x2048", "0.0808"), ("4096x4096", "0.1208")],
    ids=["1K", "2K", "4K"],
)
def test_one_per_image_price_is_the_1k_price_and_larger_tiers_scale(gemini, size, expected):
    with _router(gemini, FLAT) as router:
        event = _edit(router, size=size)
    assert event.images_returned == 1
    assert event.cost_usd == Decimal(expected)  # 0.8 x the packaged tier price
    assert event.cost_source == "custom"
    assert event.price_ref == f"custom:{MODEL}"


def test_an_answer_without_usage_is_estimated_at_its_tiers_price(gemini):
    """Beside token prices the per-image price bills what has no usage: a 4K answer without
    ``usageMetadata`` was estimated at the 1K figure."""
    info = {**FLAT, "input_cost_per_token": "0.0000005", "output_cost_per_image_token": "0.00006"}
    with _router(gemini, info) as router:
        event = _edit(router, "code=no_usage", "4096x4096")
    # and the input: the prompt's characters and 1,000 tokens for the image, at $0.50 per 1M
    inputs = (len(PROMPT) + 1000) * Decimal("0.5") / MILLION
    assert (event.cost_usd, event.cost_source) == (Decimal("0.1208") + inputs, "estimate")


def test_cost_based_ranking_prices_the_tier_as_billed(gemini):
    """A 4096x4096 call is ranked at the 4K tier's price, as it is billed (it was $0.0536)."""
    shape = CallShape("nano", size="4096x4096", input_images=0)
    with _router(gemini, FLAT) as router:
        (deployment,) = router.deployments
        assert model_info_cost(deployment, shape) == Decimal("0.1208")


def test_the_tiers_ratio_is_read_from_the_prices_file_that_prices_the_model(gemini, tmp_path):
    """A user's prices file pricing the model by tier (2K twice, 4K four times the 1K price)
    gives the ratio, not the bundled table (whose 2K is some 1.5 times the 1K price)."""

    tiers = {"1K": "0.05", "2K": "0.1", "4K": "0.2"}
    path = write_prices_file(tmp_path, "gemini-3.1-flash-image", {"standard": tiers}, "gemini")
    try:
        use_prices_file(path)
        with _router(gemini, FLAT) as router:
            event = _edit(router, size="2048x2048")
    finally:
        use_prices_file(None)
    assert (event.cost_usd, event.cost_source) == (Decimal("0.1072"), "custom")  # 2 x 0.0536


def test_input_token_prices_beside_a_per_image_price_bill_the_call_whole(gemini):
    """``input_cost_per_token`` and ``output_cost_per_image``, no image-output token price: the
    per-image price is Google's bill for the image's output tokens, so the call is its input
    tokens plus the image. It was an estimate of the image alone, the input left out."""
    info = {**FLAT, "input_cost_per_token": "0.000001"}  # $1 per 1M input tokens
    with _router(gemini, info) as router:
        event = _edit(router, size="2048x2048")
    inputs = (PROMPT_TOKENS + INPUT_IMAGE_TOKENS) * Decimal("0.000001")
    assert event.cost_usd == inputs + Decimal("0.0808")
    assert event.cost_per_image_usd == event.cost_usd
    assert (event.cost_source, event.price_ref) == ("custom", f"custom:{MODEL}")
