"""Grounding with Google Maps and Google Image Search on Gemini's image models.

Maps: Google lists no image model among those that take the ``googleMaps`` tool, so no price entry
gives its fee; a call asking for it was sent and billed its tokens alone, the fee Google charges for
a Maps-grounded prompt missing from the ledger. It is now refused before sending
(``UnsupportedParamsError``, nothing sent, nothing billed) through the SDK, Vertex AI and the
proxy; ``drop_params=True`` drops the tool and sends the rest.

Image search: no page says whether Google bills ``groundingMetadata.imageSearchQueries`` or at what
rate, so only the web search queries are priced (docs/gemini.md); the fake answers image search
queries as Google's API reference describes them, and the tests pin the decision.

Calls go to the fake Gemini upstream on loopback (tracking.testing.fake_gemini).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import make_png
from tests.gemini_support import GEMINI_KEY
from tests.proxy_support import ProxyProcess, write_config
from tests.recorder import record_events
from tests.test_gemini_grounding import PER_QUERY, token_cost
from tests.test_gemini_tool_use_tokens import PROMPT
from tracking.errors import UnsupportedParamsError
from tracking.integrations.prometheus import PrometheusLogger
from tracking.testing.fake_gemini import (
    IMAGE_SEARCH_QUERIES,
    MAPS_PLACES,
    SEARCH_QUERIES,
    FakeGemini,
)

MODEL = "gemini/gemini-3.1-flash-image"
MAPS = {"tools": [{"googleMaps": {}}]}
#: Google Search with both of its search types (Gemini 3.1 Flash Image's image search)
#: the fake's fault that leaves groundingMetadata out of the answer
NO_GROUNDING = {"x-fake-fault": "code=no_grounding"}
IMAGE_SEARCH = {"tools": [{"googleSearch": {"searchTypes": {"webSearch": {}, "imageSearch": {}}}}]}


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


def _edit(gemini: FakeGemini, model: str = MODEL, **params: Any) -> tracking.ImageResponse:
    if model.startswith("gemini/"):
        params.setdefault("api_key", GEMINI_KEY)
    return tracking.image_edit(
        image=make_png(64, 64), prompt=PROMPT, model=model, api_base=gemini.url, **params
    )


def _ask_the_fake(gemini: FakeGemini, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The fake's answer to a text-to-image request with ``tools``, sent by hand (the SDK
    refuses a Maps tool before sending)."""
    body = {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"responseModalities": ["IMAGE"]},
        "tools": tools,
    }
    url = f"{gemini.url}/v1beta/models/gemini-3.1-flash-image:generateContent"
    headers = {"x-goog-api-key": GEMINI_KEY}
    answer: dict[str, Any] = httpx.post(url, headers=headers, json=body, timeout=60).json()
    return answer


# -- Grounding with Google Maps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "extra_body"),
    [
        (MODEL, MAPS),
        ("gemini/gemini-3-pro-image", {"tools": [{"google_maps": {"enableWidget": True}}]}),
        ("vertex_ai/gemini-3.1-flash-image", {"tools": [{"googleSearch": {}}, {"googleMaps": {}}]}),
    ],
)
def test_a_maps_grounded_call_is_refused_before_anything_is_sent(
    monkeypatch, gemini, vertex, model, extra_body
):
    """Before, the call was sent and billed its tokens alone: the Maps fee was never counted."""
    events = record_events(monkeypatch)
    hits = gemini.hits
    with pytest.raises(UnsupportedParamsError) as caught:
        _edit(gemini, model, extra_body=extra_body)
    assert caught.value.param == "extra_body"
    assert "Google Maps" in str(caught.value)
    assert "drop_params=True" in str(caught.value)
    assert gemini.hits == hits  # nothing reached the upstream
    event = events.last
    assert event.cost_usd == Decimal(0)  # refused before sending: not billed


def test_drop_params_drops_the_maps_tool_and_bills_the_search_it_keeps(monkeypatch, gemini):
    events = record_events(monkeypatch)
    extra_body = {"tools": [{"googleSearch": {}}, {"googleMaps": {"enableWidget": True}}]}
    response = _edit(gemini, extra_body=extra_body, drop_params=True)
    assert gemini.requests[-1].body["tools"] == [{"googleSearch": {}}]
    expected = token_cost("gemini-3.1-flash-image") + SEARCH_QUERIES * PER_QUERY
    assert response.cost_usd == events.last.cost_usd == expected
    assert events.last.cost_source == "usage"


def test_drop_params_leaves_no_empty_tools_member(monkeypatch, gemini):
    events = record_events(monkeypatch)
    response = _edit(gemini, extra_body={"tools": [{"google_maps": {}}]}, drop_params=True)
    assert "tools" not in gemini.requests[-1].body
    expected = token_cost("gemini-3.1-flash-image", grounded=False)
    assert response.cost_usd == events.last.cost_usd == expected


def test_the_fake_answers_maps_grounding_as_googles_guide_shows_it(gemini):
    """The fake (written from Google's Maps grounding guide) answers a Maps-grounded request
    with places in groundingChunks and, with enableWidget, the widget's context token."""
    answer = _ask_the_fake(gemini, [{"googleMaps": {"enableWidget": True}}])
    metadata = answer["candidates"][0]["groundingMetadata"]
    places = [chunk["maps"] for chunk in metadata["groundingChunks"]]
    assert len(places) == MAPS_PLACES
    assert all(place["uri"] and place["title"] and place["placeId"] for place in places)
    assert metadata["googleMapsWidgetContextToken"]
    assert "webSearchQueries" not in metadata
    assert answer["usageMetadata"]["toolUsePromptTokenCount"] > 0


def test_the_proxy_refuses_a_maps_grounded_call(gemini, tmp_path):
    model = {"model": MODEL, "api_key": GEMINI_KEY, "api_base": gemini.url}
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [{"model_name": "nano-banana", "litellm_params": model}],
            "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        },
    )
    hits = gemini.hits
    with (
        ProxyProcess(config) as proxy,
        openai.OpenAI(base_url=proxy.url, api_key="sk-anything", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.images.generate(model="nano-banana", prompt=PROMPT, extra_body=MAPS)
    assert "Google Maps" in json.dumps(caught.value.body)
    assert gemini.hits == hits


# -- Grounding with Google Image Search ------------------------------------------------------


def test_the_fake_answers_image_search_queries_beside_the_web_ones(gemini):
    metadata = _ask_the_fake(gemini, IMAGE_SEARCH["tools"])["candidates"][0]["groundingMetadata"]
    assert len(metadata["imageSearchQueries"]) == IMAGE_SEARCH_QUERIES
    images = [chunk["image"] for chunk in metadata["groundingChunks"] if "image" in chunk]
    assert len(images) == IMAGE_SEARCH_QUERIES
    assert all(image["imageUri"] and image["sourceUri"] for image in images)
    assert len([query for query in metadata["webSearchQueries"] if query]) == SEARCH_QUERIES


def test_image_search_queries_are_not_billed_only_the_web_ones(monkeypatch, gemini):
    """The decision docs/gemini.md states: no source says how Google bills image search
    queries, so the fee counts the answer's web search queries alone."""
    events = record_events(monkeypatch)
    response = _edit(gemini, extra_body=IMAGE_SEARCH)
    sent = gemini.requests[-1].body["tools"][0]["googleSearch"]
    assert "imageSearch" in sent["searchTypes"]
    expected = token_cost("gemini-3.1-flash-image") + SEARCH_QUERIES * PER_QUERY
    assert response.cost_usd == events.last.cost_usd == expected
    assert events.last.cost_source == "usage"
    assert events.last.price_ref is not None
    assert events.last.price_ref.endswith(f"+google_search:{SEARCH_QUERIES}xsearch_query")


# -- the Prometheus series of grounding uses -------------------------------------------------


def _grounding_uses(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["served_model"], sample.labels["unit"]): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "image_edit_search_grounding_uses_total"
    }


def test_prometheus_counts_the_search_queries_and_grounded_prompts_billed(
    monkeypatch, gemini, vertex
):
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [logger])
    monkeypatch.setattr(tracking, "failure_callback", [logger])
    _edit(gemini, extra_body={"tools": [{"googleSearch": {}}]})
    _edit(gemini, extra_body=IMAGE_SEARCH)  # image search queries are not billed, not counted
    _edit(gemini)  # no search: nothing counted, the series is there at 0
    _edit(gemini, "vertex_ai/gemini-2.5-flash-image", extra_body={"tools": [{"googleSearch": {}}]})
    with pytest.raises(UnsupportedParamsError):  # refused before sending: nothing billed
        _edit(gemini, extra_body=MAPS)
    assert _grounding_uses(registry) == {
        ("gemini-3.1-flash-image", "search_query"): 2 * SEARCH_QUERIES,
        ("gemini-2.5-flash-image", "grounded_prompt"): 1,
    }


def test_prometheus_counts_an_unreported_search_as_its_estimated_query(monkeypatch, gemini):
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [logger])
    _edit(gemini, extra_body={"tools": [{"googleSearch": {}}]}, extra_headers=NO_GROUNDING)
    assert _grounding_uses(registry) == {("gemini-3.1-flash-image", "search_query"): 1}
