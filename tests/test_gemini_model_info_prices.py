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
entries that key is the text rate, in OpenAI-style configs the image's): refused at start.
Everything runs against the fake Gemini upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tracking.errors import ConfigurationError, ContentPolicyError
from tracking.pricing import reset_prices
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


def _edit(router: Router, fault: str | None = None) -> tracking.ImageEditEvent:
    """One edit through the router; its event (also when it failed: a safety block raises)."""
    recorder = EventRecorder()
    tracking.callbacks.append(recorder)
    headers = {"x-fake-fault": fault} if fault else {}
    try:
        router.image_edit(
            model="nano", image=make_png(64, 64), prompt=PROMPT, extra_headers=headers
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
    assert event.cost_usd == Decimal("0.056")


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
def test_a_per_image_price_beside_an_output_token_price_of_unknown_kind_is_refused(gemini, model):
    info = {key: LITELLM_GEMINI[key] for key in ("output_cost_per_token", "output_cost_per_image")}
    with pytest.raises(ConfigurationError, match="output_cost_per_image_token"):
        _router(gemini, info, model)
