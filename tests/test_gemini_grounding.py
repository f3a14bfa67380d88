"""Grounding with Google Search's own fee on Gemini and Vertex AI image calls: Gemini 3 models are
charged per search query the answer reports (its non-empty ``groundingMetadata.webSearchQueries``),
Gemini 2.5 per grounded prompt, at ``tools.google_search`` of the price entry, besides the
tokens of the search results (tests/test_gemini_tool_use_tokens.py). An answer that does not say
what it ran is estimated at one query, never at $0. Free allowances are not deducted.

Everything runs against the fake Gemini upstream on loopback, with the ledger in PostgreSQL and
in the proxy's SQLite file. Gemini calls are not streamed (the provider refuses ``stream=True``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import tracking
from tests.conftest import make_png
from tests.gemini_support import GEMINI_KEY
from tests.proxy_support import ProxyProcess, write_config
from tests.recorder import record_events
from tests.test_gemini_tool_use_tokens import GROUNDED, MILLION, PROMPT, PROMPT_TOKENS
from tracking.errors import ConfigurationError, ContentPolicyError
from tracking.integrations.prometheus import PrometheusLogger
from tracking.integrations.sql import SqlLedger, create_ledger_engine, spend_logs
from tracking.pricing import estimate_call_cost, load_price_file
from tracking.pricing.estimate import max_expected_cost
from tracking.testing.fake_gemini import (
    INPUT_IMAGE_TOKENS,
    OUTPUT_IMAGE_TOKENS,
    SEARCH_QUERIES,
    THOUGHTS_TOKENS,
    TOOL_USE_PROMPT_TOKENS,
    FakeGemini,
)

#: tools.google_search in tracking/pricing/prices.json: USD per search query (Gemini 3) and per
#: grounded prompt (Gemini 2.5)
PER_QUERY, PER_PROMPT = Decimal("14.00") / 1000, Decimal("35.00") / 1000
#: input and image output prices per 1M tokens in prices.json, by model
PRICES = {
    "gemini-3.1-flash-image": (Decimal("0.50"), Decimal("60.00")),
    "gemini-3-pro-image": (Decimal("2.00"), Decimal("120.00")),
    "gemini-2.5-flash-image": (Decimal("0.30"), Decimal("30.00")),
}


def token_cost(model: str, *, grounded: bool = True, with_image: bool = True) -> Decimal:
    """The call's tokens by hand: the prompt, the input image, the search results (when
    grounded) at the input price; the 1K image's output tokens at the image output price."""
    input_price, output_price = PRICES[model]
    inputs = PROMPT_TOKENS + INPUT_IMAGE_TOKENS * with_image + TOOL_USE_PROMPT_TOKENS * grounded
    return (inputs * input_price + OUTPUT_IMAGE_TOKENS[model]["1K"] * output_price) / MILLION


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


def _edit(model: str, gemini: FakeGemini, **params: Any) -> tracking.ImageResponse:
    if model.startswith("gemini/"):
        params.setdefault("api_key", GEMINI_KEY)
    return tracking.image_edit(
        image=make_png(64, 64), prompt=PROMPT, model=model, api_base=gemini.url, **params
    )


def test_a_grounded_gemini_3_edit_pays_each_search_query_it_ran(monkeypatch, gemini):
    events = record_events(monkeypatch)
    response = _edit("gemini/gemini-3.1-flash-image", gemini, extra_body=GROUNDED)
    answer = gemini.requests[-1]
    assert answer.body["tools"] == [{"googleSearch": {}}]
    event = events.last
    fee = SEARCH_QUERIES * PER_QUERY  # the empty query the fake also reports is not billed
    assert response.cost_usd == event.cost_usd == token_cost("gemini-3.1-flash-image") + fee
    assert event.cost_source == "usage"
    assert event.price_ref is not None
    assert event.price_ref.endswith(f"+google_search:{SEARCH_QUERIES}xsearch_query")
    assert event.cost_per_image_usd == event.cost_usd  # one image


def test_without_search_no_fee_is_added(monkeypatch, gemini):
    events = record_events(monkeypatch)
    response = _edit("gemini/gemini-3.1-flash-image", gemini)
    assert "tools" not in gemini.requests[-1].body
    assert response.cost_usd == token_cost("gemini-3.1-flash-image", grounded=False)
    assert events.last.price_ref is not None and "google_search" not in events.last.price_ref


async def test_a_grounded_vertex_ai_edit_pays_its_search_queries(monkeypatch, gemini, vertex):
    events = record_events(monkeypatch)
    response = await tracking.aimage_edit(
        image=make_png(64, 64),
        prompt=PROMPT,
        model="vertex_ai/gemini-3-pro-image",
        api_base=gemini.url,
        extra_body={"tools": [{"google_search": {}}]},
    )
    assert "/publishers/google/models/gemini-3-pro-image:" in gemini.requests[-1].path
    fee = SEARCH_QUERIES * PER_QUERY
    assert response.cost_usd == events.last.cost_usd == token_cost("gemini-3-pro-image") + fee
    assert events.last.cost_source == "usage"


def test_gemini_2_5_pays_one_grounded_prompt_whatever_the_queries(monkeypatch, gemini, vertex):
    events = record_events(monkeypatch)
    response = _edit("vertex_ai/gemini-2.5-flash-image", gemini, extra_body=GROUNDED)
    assert response.cost_usd == token_cost("gemini-2.5-flash-image") + PER_PROMPT
    assert events.last.price_ref is not None
    assert events.last.price_ref.endswith("+google_search:1xgrounded_prompt")


@pytest.mark.parametrize("code", ["no_grounding", "bad_grounding"])
def test_an_answer_that_does_not_say_what_it_searched_is_estimated_at_one_query(
    monkeypatch, gemini, code
):
    """No ``groundingMetadata``, or ``webSearchQueries`` that is not a list of texts: the
    search may have run, so one query is priced and the cost flagged an estimate."""
    events = record_events(monkeypatch)
    response = _edit(
        "gemini/gemini-3.1-flash-image",
        gemini,
        extra_body=GROUNDED,
        extra_headers={"x-fake-fault": f"code={code}"},
    )
    event = events.last
    assert response.cost_usd == event.cost_usd == token_cost("gemini-3.1-flash-image") + PER_QUERY
    assert event.cost_source == "estimate"
    assert event.price_ref is not None
    assert event.price_ref.endswith("+estimate:google_search:1xsearch_query")


def test_a_price_without_a_search_fee_flags_the_grounded_call_an_estimate(monkeypatch, gemini):
    """A deployment priced by its own token prices, which give no search fee: the tokens are
    priced, and the call is flagged an estimate rather than recorded as the whole bill."""
    tracking.register_prices(
        "gemini/gemini-3.1-flash-image",
        tokens_per_million={"input_text": "0.50", "input_image": "0.50", "output_image": "60"},
    )
    events = record_events(monkeypatch)
    response = _edit("gemini/gemini-3.1-flash-image", gemini, extra_body=GROUNDED)
    assert response.cost_usd == token_cost("gemini-3.1-flash-image")
    assert events.last.cost_source == "estimate"
    assert events.last.price_ref is not None
    assert events.last.price_ref.endswith("+estimate:google_search-unpriced")


def test_a_discount_on_the_packaged_prices_applies_to_the_search_fee(monkeypatch, gemini):
    tracking.register_prices("gemini-3.1-flash-image", discount="0.5")
    response = _edit("gemini/gemini-3.1-flash-image", gemini, extra_body=GROUNDED)
    fee = SEARCH_QUERIES * PER_QUERY
    assert response.cost_usd == (token_cost("gemini-3.1-flash-image") + fee) / 2


def test_a_withheld_image_still_pays_the_searches_it_ran(monkeypatch, gemini):
    """A safety block after the search: the tokens the answer reports and its queries."""
    events = record_events(monkeypatch)
    with pytest.raises(ContentPolicyError):
        _edit(
            "gemini/gemini-3.1-flash-image",
            gemini,
            extra_body=GROUNDED,
            extra_headers={"x-fake-fault": "code=image_safety"},
        )
    input_price, _ = PRICES["gemini-3.1-flash-image"]
    inputs = PROMPT_TOKENS + INPUT_IMAGE_TOKENS + TOOL_USE_PROMPT_TOKENS
    tokens = (inputs * input_price + THOUGHTS_TOKENS * Decimal("3.00")) / MILLION
    event = events.last
    assert event.status == "failure"
    assert event.cost_usd == tokens + SEARCH_QUERIES * PER_QUERY
    assert event.price_ref is not None
    assert event.price_ref.endswith(f"+google_search:{SEARCH_QUERIES}xsearch_query")


def test_the_ledger_row_records_the_fee_in_its_cost_and_price_ref(gemini, postgres_url):
    ledger = SqlLedger(postgres_url, mode="durable", auto_migrate=True)
    tracking.callbacks.append(ledger)
    try:
        response = _edit("gemini/gemini-3-pro-image", gemini, extra_body=GROUNDED)
    finally:
        tracking.callbacks.remove(ledger)
    assert ledger.flush(10)
    with ledger.engine.connect() as conn:
        row = conn.execute(
            sa.select(spend_logs).where(spend_logs.c.request_id == response.request_id)
        ).one()
    ledger.shutdown(10)
    expected = token_cost("gemini-3-pro-image") + SEARCH_QUERIES * PER_QUERY
    assert (Decimal(row.cost_usd), row.cost_source) == (expected, "usage")
    assert row.price_ref.endswith(f"+google_search:{SEARCH_QUERIES}xsearch_query")


def test_the_prometheus_cost_series_counts_the_fee(monkeypatch, gemini):
    registry = CollectorRegistry()
    events = record_events(monkeypatch)
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "success_callback", [events, logger])
    _edit("gemini/gemini-3.1-flash-image", gemini, extra_body=GROUNDED)
    spent = [
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "image_edit_cost_usd_total"
    ]
    expected = token_cost("gemini-3.1-flash-image") + SEARCH_QUERIES * PER_QUERY
    assert events.last.cost_usd == expected
    assert spent == [float(expected)]


# -- the proxy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(gemini: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("gemini-grounding-proxy")
    model = {"model": "gemini/gemini-3.1-flash-image", "api_key": GEMINI_KEY}
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                {"model_name": "nano-banana", "litellm_params": {**model, "api_base": gemini.url}}
            ],
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


def test_a_grounded_generation_through_the_proxy_answers_and_records_the_fee(proxy, gemini):
    with openai.OpenAI(base_url=proxy.url, api_key="sk-anything", max_retries=0) as client:
        raw = client.images.with_raw_response.generate(
            model="nano-banana", prompt=PROMPT, extra_body=GROUNDED
        )
    assert gemini.requests[-1].body["tools"] == [{"googleSearch": {}}]
    expected = token_cost("gemini-3.1-flash-image", with_image=False) + SEARCH_QUERIES * PER_QUERY
    assert Decimal(raw.headers["x-tracking-response-cost"]) == expected
    engine = create_ledger_engine(f"sqlite:///{proxy.config.parent / 'ledger.db'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(spend_logs).where(
                    spend_logs.c.request_id == raw.headers["x-tracking-request-id"]
                )
            ).one()
    finally:
        engine.dispose()
    assert Decimal(row.cost_usd) == expected
    assert row.price_ref.endswith(f"+google_search:{SEARCH_QUERIES}xsearch_query")


# -- the price file --------------------------------------------------------------------------


def _price_file(tmp_path: Path, google_search: Any) -> Path:
    figure = {"source": "https://example.com", "retrieved": "2026-12-06", "confidence": "official"}
    entry = {
        "model": "my-gemini",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "tokens_per_million": {"output_image": {"usd": "60", **figure}},
        "tools": {"google_search": {**figure, **google_search}},
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"schema": 1, "currency": "USD", "entries": [entry]}))
    return path


def test_a_price_file_gives_the_fee_per_1000_uses(tmp_path):
    path = _price_file(tmp_path, {"per": "grounded_prompt", "usd_per_1000": "25"})
    (entry,) = load_price_file(path)["my-gemini"]
    assert entry.tools["google_search"].per == "grounded_prompt"
    assert entry.tools["google_search"].usd == Decimal("0.025")
    assert entry.figures()["tools.google_search"] == Decimal("0.025")


@pytest.mark.parametrize(
    ("google_search", "named"),
    [
        ({"per": "search_query", "usd_per_1000": 14.0}, "usd_per_1000"),
        ({"per": "search_query", "usd_per_1000": "-1"}, "usd_per_1000"),
        ({"per": "request", "usd_per_1000": "14"}, ".per"),
        ({"per": "search_query", "usd_per_1000": "14", "source": "ftp://x"}, "source"),
    ],
)
def test_a_price_file_with_a_bad_fee_is_refused(tmp_path, google_search, named):
    with pytest.raises(ConfigurationError, match=named):
        load_price_file(_price_file(tmp_path, google_search))


def test_a_price_file_with_an_unknown_tool_is_refused(tmp_path):
    path = _price_file(tmp_path, {"per": "search_query", "usd_per_1000": "14"})
    document = json.loads(path.read_text())
    tools = document["entries"][0]["tools"]
    tools["google_maps"] = tools.pop("google_search")
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match="google_maps"):
        load_price_file(path)


# -- estimates made without the answer ------------------------------------------------------


def test_a_grounded_attempt_whose_answer_was_lost_is_estimated_with_one_query(monkeypatch, gemini):
    """The connection closed once the request was read: the attempt may have searched and been
    billed, so its estimate counts one search query beside its tokens."""
    events = record_events(monkeypatch)
    with pytest.raises(tracking.APIConnectionError):
        _edit(
            "gemini/gemini-3.1-flash-image",
            gemini,
            extra_body=GROUNDED,
            max_retries=0,
            extra_headers={"x-fake-fault": "drop"},
        )
    without_search = estimate_call_cost(
        "gemini/gemini-3.1-flash-image", prompt_chars=len(PROMPT), input_images=1
    )
    assert without_search.usd is not None
    event = events.last
    assert event.cost_source == "estimate"
    assert event.cost_usd == without_search.usd + PER_QUERY
    assert event.price_ref is not None
    assert event.price_ref.endswith("+estimate:google_search:1xsearch_query")


def test_a_budget_holds_one_search_fee_for_a_grounded_call():
    params = {"prompt": PROMPT, "image": make_png(64, 64)}
    plain = max_expected_cost(["gemini/gemini-3.1-flash-image"], params)
    grounded = max_expected_cost(
        ["gemini/gemini-3.1-flash-image"], {**params, "extra_body": GROUNDED}
    )
    assert plain is not None and grounded == plain + PER_QUERY
    two_five = max_expected_cost(["vertex_ai/gemini-2.5-flash-image"], params)
    assert two_five is not None
    assert (
        max_expected_cost(["vertex_ai/gemini-2.5-flash-image"], {**params, "extra_body": GROUNDED})
        == two_five + PER_PROMPT
    )
    # a model whose price gives no search fee holds nothing for it
    assert max_expected_cost(["gpt-image-2"], {**params, "extra_body": GROUNDED}) == (
        max_expected_cost(["gpt-image-2"], params)
    )
