"""A Gemini answer whose ``usageMetadata`` cannot be trusted is priced by estimate (a QA pass's
finding).

Gemini's reader turned each count that was a string, a float or negative into 0 and priced the
call from the rest as ``cost_source="usage"``: ``"promptTokenCount": "5000"`` billed the image
without its 5,000 input tokens. Such a usage is now not trusted, as an OpenAI-shaped answer's
is (``tests/test_untrusted_usage.py``): the call is estimated and the event carries no usage.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tests.recorder import record_events
from tests.scripted_upstream import Reply, ScriptedUpstream, scripted_upstream
from tracking.errors import ContentPolicyError

PNG = make_png(64, 64)
IMAGE = base64.b64encode(PNG).decode()
GOOD: dict[str, Any] = {
    "promptTokenCount": 5000,
    "candidatesTokenCount": 1120,
    "totalTokenCount": 6120,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5000}],
    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
}
UNTRUSTED = {
    "prompt count a string": {**GOOD, "promptTokenCount": "5000", "promptTokensDetails": None},
    "prompt count negative": {**GOOD, "promptTokenCount": -5000, "promptTokensDetails": None},
    "prompt count a float": {**GOOD, "promptTokenCount": 5000.0, "promptTokensDetails": None},
    "prompt count a bool": {**GOOD, "promptTokenCount": True, "promptTokensDetails": None},
    "prompt count past any call": {**GOOD, "promptTokenCount": 10**12},
    "output count a string": {**GOOD, "candidatesTokenCount": "1120"},
    "thinking count a string": {**GOOD, "thoughtsTokenCount": "200000"},
    "cached count negative": {**GOOD, "cachedContentTokenCount": -1},
    "total count a float": {**GOOD, "totalTokenCount": 6120.5},
    "details not a list": {**GOOD, "promptTokensDetails": {"modality": "TEXT"}},
    "detail count a string": {
        **GOOD,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": "1120"}],
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted_upstream() as server:
        yield server


def _answer(usage: dict[str, Any], *, image: bool = True) -> dict[str, Any]:
    parts = [{"inlineData": {"mimeType": "image/png", "data": IMAGE}}] if image else []
    finish = "STOP" if image else "IMAGE_SAFETY"
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}],
        "usageMetadata": usage,
    }


def test_a_trusted_usage_is_priced_from_its_tokens(monkeypatch, upstream):
    events = record_events(monkeypatch)
    upstream.reply = Reply(_answer(GOOD))
    tracking.image_edit(image=PNG, **upstream.params("gemini"))
    event = events.last
    assert event.cost_source == "usage" and event.usage is not None
    assert event.usage.input_text_tokens == 5000 and event.usage.output_tokens == 1120


@pytest.mark.parametrize("case", sorted(UNTRUSTED))
def test_an_untrusted_usage_is_priced_by_estimate(monkeypatch, upstream, case):
    events = record_events(monkeypatch)
    upstream.reply = Reply(_answer(UNTRUSTED[case]))
    response = tracking.image_edit(image=PNG, **upstream.params("gemini"))
    event = events.last
    assert event.status == "success" and event.usage is None
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > Decimal("0.05")  # the image's price
    assert response.usage is None  # nothing untrusted is handed on as the call's usage


def test_a_safety_block_with_untrusted_usage_is_estimated_not_priced_from_it(monkeypatch, upstream):
    events = record_events(monkeypatch)
    upstream.reply = Reply(_answer(UNTRUSTED["prompt count a string"], image=False))
    with pytest.raises(ContentPolicyError):
        tracking.image_edit(image=PNG, **upstream.params("gemini"))
    event = events.last
    assert event.cost_source == "estimate" and event.usage is None
