"""Tool-use prompt tokens (``usageMetadata.toolUsePromptTokenCount``: the results of a tool such
as Grounding with Google Search, fed back to the model as input) are billed as input tokens at
the input rates, on the Gemini API and on Vertex AI; the ledger row counts them and their cost.
Everything runs against the fake Gemini upstream on loopback and a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import make_png
from tests.gemini_support import GEMINI_KEY
from tests.recorder import record_events
from tracking.integrations.sql import SqlLedger, spend_logs
from tracking.providers.gemini import openai_usage
from tracking.testing.fake_gemini import (
    INPUT_IMAGE_TOKENS,
    OUTPUT_IMAGE_TOKENS,
    SEARCH_QUERIES,
    TOOL_USE_PROMPT_TOKENS,
    FakeGemini,
)

PROMPT = "add a red hat"  # 13 characters: 4 text tokens in the fake's convention
PROMPT_TOKENS = 4
#: gemini-3.1-flash-image's prices in tracking/pricing/prices.json, USD per 1M tokens
INPUT, IMAGE_OUT = Decimal("0.50"), Decimal("60.00")
MILLION = Decimal(1_000_000)
OUTPUT_TOKENS = OUTPUT_IMAGE_TOKENS["gemini-3.1-flash-image"]["1K"]
GROUNDED = {"tools": [{"googleSearch": {}}]}
#: the call's cost with the search results billed as input text tokens, and its search queries'
#: own fee ($14 per 1,000: tests/test_gemini_grounding.py)
GROUNDED_COST = (
    (PROMPT_TOKENS + INPUT_IMAGE_TOKENS + TOOL_USE_PROMPT_TOKENS) * INPUT / MILLION
    + OUTPUT_TOKENS * IMAGE_OUT / MILLION
    + SEARCH_QUERIES * Decimal("0.014")
)


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


def _edit(model: str, api_base: str, **params: Any) -> tracking.ImageResponse:
    return tracking.image_edit(
        image=make_png(64, 64), prompt=PROMPT, model=model, api_base=api_base, **params
    )


def test_a_grounded_gemini_edit_bills_its_tool_use_tokens_as_input(monkeypatch, gemini):
    events = record_events(monkeypatch)
    response = _edit(
        "gemini/gemini-3.1-flash-image", gemini.url, api_key=GEMINI_KEY, extra_body=GROUNDED
    )
    assert gemini.requests[-1].body["tools"] == [{"googleSearch": {}}]
    event = events.last
    assert event.usage is not None
    assert response.usage is not None
    assert response.usage.input_tokens == (
        PROMPT_TOKENS + INPUT_IMAGE_TOKENS + TOOL_USE_PROMPT_TOKENS
    )
    assert event.usage.input_text_tokens == PROMPT_TOKENS + TOOL_USE_PROMPT_TOKENS
    assert event.usage.input_image_tokens == INPUT_IMAGE_TOKENS
    assert event.cost_source == "usage"
    assert response.cost_usd == event.cost_usd == GROUNDED_COST


def test_a_grounded_vertex_ai_edit_bills_its_tool_use_tokens_as_input(monkeypatch, gemini):
    monkeypatch.setenv("VERTEXAI_PROJECT", "my-project")
    monkeypatch.setenv("VERTEXAI_LOCATION", "us-central1")
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", GEMINI_KEY)
    response = _edit("vertex_ai/gemini-3.1-flash-image", gemini.url, extra_body=GROUNDED)
    assert response.usage is not None
    assert response.usage.input_text_tokens == PROMPT_TOKENS + TOOL_USE_PROMPT_TOKENS
    assert response.cost_usd == GROUNDED_COST


def test_the_ledger_row_counts_and_costs_the_tool_use_tokens(gemini, tmp_path: Path):
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", mode="durable", auto_migrate=True)
    tracking.callbacks.append(ledger)
    try:
        response = _edit(
            "gemini/gemini-3.1-flash-image", gemini.url, api_key=GEMINI_KEY, extra_body=GROUNDED
        )
    finally:
        tracking.callbacks.remove(ledger)
    with ledger.engine.connect() as conn:
        row = conn.execute(
            sa.select(spend_logs).where(spend_logs.c.request_id == response.request_id)
        ).one()
    ledger.shutdown(10)
    assert row.input_text_tokens == PROMPT_TOKENS + TOOL_USE_PROMPT_TOKENS
    assert row.input_image_tokens == INPUT_IMAGE_TOKENS
    assert row.total_tokens == (
        PROMPT_TOKENS + INPUT_IMAGE_TOKENS + TOOL_USE_PROMPT_TOKENS + OUTPUT_TOKENS
    )
    assert (row.cost_usd, row.cost_source) == (GROUNDED_COST, "usage")


def test_tool_use_tokens_by_modality_and_untrusted_counts():
    """Image tokens of a tool's results are input image tokens; a count that cannot be trusted
    (a string, details above the total) leaves the usage unread: the call is estimated."""
    base = {"promptTokenCount": 10, "candidatesTokenCount": 1120, "totalTokenCount": 1230}
    usage = openai_usage(
        {
            **base,
            "toolUsePromptTokenCount": 100,
            "toolUsePromptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 60},
                {"modality": "IMAGE", "tokenCount": 40},
            ],
        }
    )
    assert usage is not None
    assert usage["input_tokens"] == 110
    assert usage["input_tokens_details"] == {"text_tokens": 70, "image_tokens": 40}
    # no details: counted as text, the tool's results being text (search results)
    usage = openai_usage({**base, "toolUsePromptTokenCount": 100})
    assert usage is not None and usage["input_tokens_details"]["text_tokens"] == 110
    # without a totalTokenCount the total counts them too
    usage = openai_usage({"promptTokenCount": 10, "toolUsePromptTokenCount": 5})
    assert usage is not None and usage["total_tokens"] == 15
    assert openai_usage({**base, "toolUsePromptTokenCount": "100"}) is None
    above = [{"modality": "IMAGE", "tokenCount": 101}]
    assert (
        openai_usage({**base, "toolUsePromptTokenCount": 100, "toolUsePromptTokensDetails": above})
        is None
    )
