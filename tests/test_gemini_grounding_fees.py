"""Grounding with Google Search's fee where a user sees and sets it: ``tracking prices list``
shows each entry's tool fees (table and JSON); ``register_prices(..., tools=...)`` and a
deployment's ``model_info`` (LiteLLM's ``search_context_cost_per_query`` with
``web_search_billing_unit``) give a fee of their own, so a grounded call on the user's own prices
is billed whole, not estimated ``+estimate:google_search-unpriced``. Bad fees are typed errors
naming the key.

Calls go to the fake Gemini upstream on loopback (tracking.testing.fake_gemini).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import tracking
from tests.conftest import make_png
from tests.gemini_support import GEMINI_KEY
from tests.proxy_support import ProxyProcess, write_config
from tests.test_gemini_tool_use_tokens import GROUNDED, MILLION, PROMPT, PROMPT_TOKENS
from tracking.cli import main
from tracking.errors import ConfigurationError
from tracking.pricing import billing_entry
from tracking.router import Router
from tracking.testing.fake_gemini import (
    INPUT_IMAGE_TOKENS,
    OUTPUT_IMAGE_TOKENS,
    SEARCH_QUERIES,
    TOOL_USE_PROMPT_TOKENS,
    FakeGemini,
)

MODEL = "gemini/gemini-3.1-flash-image"
#: the user's own token prices (per 1M): input, image output; other than the packaged ones
OWN_INPUT, OWN_OUTPUT = Decimal(1), Decimal(50)


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


def _tokens(input_price: Decimal, output_price: Decimal) -> Decimal:
    """A grounded 1K edit's tokens: prompt, input image and search results in; the image out."""
    inputs = PROMPT_TOKENS + INPUT_IMAGE_TOKENS + TOOL_USE_PROMPT_TOKENS
    out = OUTPUT_IMAGE_TOKENS["gemini-3.1-flash-image"]["1K"]
    return (inputs * input_price + out * output_price) / MILLION


OWN_TOKENS = _tokens(OWN_INPUT, OWN_OUTPUT)
PACKAGED_TOKENS = _tokens(Decimal("0.50"), Decimal("60.00"))


def _grounded_edit(gemini: FakeGemini, model: str = MODEL) -> tracking.ImageResponse:
    return tracking.image_edit(
        image=make_png(64, 64),
        prompt=PROMPT,
        model=model,
        api_base=gemini.url,
        api_key=GEMINI_KEY,
        extra_body=GROUNDED,
    )


# -- tracking prices list ---------------------------------------------------------------------


def _list(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["prices", "list", *argv]) == 0
    return capsys.readouterr().out


def test_prices_list_shows_each_entrys_tool_fee(capsys):
    """Before, the list had no column for the fee: a grounded call's cost could not be read
    off the table that priced it."""
    lines = {line.split()[0]: line for line in _list(capsys).splitlines() if line}
    assert "tool fees" in lines["model"]
    assert "google_search $14/1000 search_query" in lines["gemini-3.1-flash-image"]
    assert "google_search $14/1000 search_query" in lines["gemini-3-pro-image"]
    assert "google_search $35/1000 grounded_prompt" in lines["gemini-2.5-flash-image"]
    assert "google_search" not in lines["gpt-image-2"]


def test_prices_list_json_gives_the_fee_per_1000_in_plain_digits(capsys, tmp_path: Path):
    rows = {row["model"]: row for row in json.loads(_list(capsys, "--json"))}
    assert rows["gemini-3.1-flash-image"]["tools"] == {
        "google_search": {"per": "search_query", "usd_per_1000": "14"}
    }
    assert rows["gemini-2.5-flash-image"]["tools"] == {
        "google_search": {"per": "grounded_prompt", "usd_per_1000": "35"}
    }
    assert rows["gpt-image-2"]["tools"] == {}
    # a prices file's own fee, small and round, is listed as written (never 1.25E+1)
    figure = {"source": "https://prices.example/", "retrieved": "2026-12-06"}
    entry = {
        "model": "my-grounded-model",
        "provider": "gemini",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "tokens_per_million": {"input_text": {"usd": "1", **figure, "confidence": "official"}},
        "tools": {
            "google_search": {
                "per": "search_query",
                "usd_per_1000": "12.50",
                **figure,
                "confidence": "official",
            }
        },
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"schema": 1, "currency": "USD", "entries": [entry]}), "utf-8")
    listed = {
        row["model"]: row for row in json.loads(_list(capsys, "--prices-file", str(path), "--json"))
    }
    assert listed["my-grounded-model"]["tools"]["google_search"]["usd_per_1000"] == "12.5"
    table = _list(capsys, "--prices-file", str(path))
    assert "google_search $12.5/1000 search_query" in table


# -- register_prices(..., tools=...) ----------------------------------------------------------


def test_own_prices_with_a_search_fee_bill_a_grounded_call_whole(gemini):
    """Before, ``tools`` was an unknown field, and own token prices left the fee out:
    ``+estimate:google_search-unpriced``."""
    tracking.register_prices(
        MODEL,
        tokens_per_million={
            "input_text": OWN_INPUT,
            "input_image": OWN_INPUT,
            "output_image": OWN_OUTPUT,
        },
        tools={"google_search": {"per": "search_query", "usd_per_1000": "12"}},
    )
    response = _grounded_edit(gemini)
    assert response.cost_usd == OWN_TOKENS + SEARCH_QUERIES * Decimal("0.012")


def test_a_search_fee_alone_keeps_the_packaged_token_prices(gemini):
    """A negotiated search rate for a packaged model, registered under the deployment's name
    (provider and all): the tokens stay at the packaged prices, the fee is the user's."""
    tracking.register_prices(
        MODEL, tools={"google_search": {"per": "search_query", "usd_per_1000": Decimal("10")}}
    )
    response = _grounded_edit(gemini)
    assert response.cost_usd == PACKAGED_TOKENS + SEARCH_QUERIES * Decimal("0.010")


def test_a_base_models_fee_is_replaced_by_the_one_given_beside_it(gemini):
    tracking.register_prices(
        "my-nano",
        base_model="gemini-3.1-flash-image",
        tools={"google_search": {"per": "grounded_prompt", "usd_per_1000": 20}},
    )
    entry = billing_entry("my-nano")
    assert entry is not None and entry.tokens["output_image"] == Decimal("60.00")
    assert entry.tools["google_search"].per == "grounded_prompt"
    assert entry.tools["google_search"].usd == Decimal("0.020")


def test_a_discount_on_a_deployments_name_applies_to_the_packaged_prices_and_fee():
    """``register_prices("gemini/gemini-3.1-flash-image", discount=...)`` (a deployment's
    ``model_info.discount``) found no packaged entry under the name with its provider and was
    silently ignored: the calls were billed at the full packaged prices."""
    tracking.register_prices(MODEL, discount="0.5")
    entry = billing_entry(MODEL)
    assert entry is not None
    assert entry.tokens["output_image"] == Decimal("30.0000")
    assert entry.tools["google_search"].usd == Decimal("0.007")


@pytest.mark.parametrize(
    ("tools", "named"),
    [
        ({"google_search": {"per": "search_query", "usd_per_1000": "-1"}}, "usd_per_1000"),
        ({"google_search": {"per": "search_query", "usd_per_1000": "NaN"}}, "usd_per_1000"),
        ({"google_search": {"per": "search_query", "usd_per_1000": "Infinity"}}, "usd_per_1000"),
        ({"google_search": {"per": "search_query", "usd_per_1000": "1e9"}}, "usd_per_1000"),
        ({"google_search": {"per": "search_query", "usd_per_1000": True}}, "usd_per_1000"),
        ({"google_search": {"per": "search_query", "usd_per_1000": [1]}}, "usd_per_1000"),
        ({"google_search": {"per": "per_query", "usd_per_1000": "14"}}, "tools.google_search.per:"),
        ({"google_search": {"per": "search_query"}}, "google_search"),
        (
            {"google_search": {"per": "search_query", "usd_per_1000": "1", "usd": "1"}},
            "google_search",
        ),
        ({"google_maps": {"per": "search_query", "usd_per_1000": "14"}}, "google_maps"),
        ({"google_search": "14"}, "google_search"),
        ("14", "tools: expected"),
        ({}, "tools: expected"),
    ],
)
def test_a_bad_search_fee_is_a_configuration_error_naming_it(tools: Any, named: str):
    with pytest.raises(ConfigurationError) as caught:
        tracking.register_prices(MODEL, tools=tools)
    assert named in caught.value.message


# -- a deployment's model_info: LiteLLM's keys ------------------------------------------------


def _router(gemini: FakeGemini, info: dict[str, Any]) -> Router:
    params = {"model": MODEL, "api_key": GEMINI_KEY, "api_base": gemini.url}
    return Router([{"model_name": "nano", "litellm_params": params, "model_info": info}])


def routed_grounded_edit(gemini: FakeGemini, info: dict[str, Any]) -> tracking.ImageResponse:
    """A grounded edit through a router whose one deployment has ``info`` as its model_info."""
    with _router(gemini, info) as router:
        return router.image_edit(
            model="nano", image=make_png(64, 64), prompt=PROMPT, extra_body=GROUNDED
        )


LITELLM_TOKENS = {
    "input_cost_per_token": "0.000001",  # $1 / 1M
    "output_cost_per_image_token": "0.00005",  # $50 / 1M
}


def test_model_info_search_context_cost_per_query_bills_each_query(gemini):
    """LiteLLM's keys, as its Gemini cost calculator reads them: the medium size's USD per
    query, ``per_query`` for Gemini 3. Before, they were ignored and the call estimated."""
    info = {
        **LITELLM_TOKENS,
        "search_context_cost_per_query": {
            "search_context_size_low": 0.011,
            "search_context_size_medium": 0.011,
            "search_context_size_high": 0.011,
        },
        "web_search_billing_unit": "per_query",
    }
    response = routed_grounded_edit(gemini, info)
    assert response.cost_usd == OWN_TOKENS + SEARCH_QUERIES * Decimal("0.011")


def test_model_info_per_prompt_bills_one_grounded_prompt(gemini):
    info = {
        **LITELLM_TOKENS,
        "search_context_cost_per_query": {"search_context_size_medium": "0.03"},
        "web_search_billing_unit": "per_prompt",
    }
    response = routed_grounded_edit(gemini, info)
    assert response.cost_usd == OWN_TOKENS + Decimal("0.03")


def test_model_info_native_tools_key_is_read_as_register_prices_takes_it(gemini):
    info = {
        **LITELLM_TOKENS,
        "tools": {"google_search": {"per": "search_query", "usd_per_1000": "9"}},
    }
    response = routed_grounded_edit(gemini, info)
    assert response.cost_usd == OWN_TOKENS + SEARCH_QUERIES * Decimal("0.009")


MEDIUM = {"search_context_size_medium": 0.014}


@pytest.mark.parametrize(
    ("info", "named"),
    [
        # LiteLLM would take a missing unit as per_prompt: one fee for a Gemini 3 call's queries
        ({"search_context_cost_per_query": MEDIUM}, "web_search_billing_unit"),
        (
            {"search_context_cost_per_query": MEDIUM, "web_search_billing_unit": "per_call"},
            "web_search_billing_unit",
        ),
        ({"web_search_billing_unit": "per_query"}, "web_search_billing_unit"),
        (
            {"search_context_cost_per_query": 0.014, "web_search_billing_unit": "per_query"},
            "search_context_cost_per_query",
        ),
        (
            {
                "search_context_cost_per_query": {"search_context_size_low": 0.01},
                "web_search_billing_unit": "per_query",
            },
            "search_context_size_medium",
        ),
        (
            {
                "search_context_cost_per_query": {"search_context_size_meduim": 0.01},
                "web_search_billing_unit": "per_query",
            },
            "search_context_size_meduim",
        ),
        (
            {
                "search_context_cost_per_query": {"search_context_size_medium": -0.01},
                "web_search_billing_unit": "per_query",
            },
            "search_context_size_medium",
        ),
        (
            {
                "search_context_cost_per_query": {"search_context_size_medium": "nan"},
                "web_search_billing_unit": "per_query",
            },
            "search_context_size_medium",
        ),
        (
            {
                "search_context_cost_per_query": {"search_context_size_medium": 1e7},
                "web_search_billing_unit": "per_query",
            },
            "search_context_size_medium",
        ),
        (
            {
                "search_context_cost_per_query": {"search_context_size_medium": False},
                "web_search_billing_unit": "per_query",
            },
            "search_context_size_medium",
        ),
        (
            {
                "search_context_cost_per_query": MEDIUM,
                "web_search_billing_unit": "per_query",
                "tools": {"google_search": {"per": "search_query", "usd_per_1000": "14"}},
            },
            "keep one",
        ),
    ],
)
def test_a_bad_model_info_search_fee_is_a_configuration_error_naming_it(
    gemini, info: dict[str, Any], named: str
):
    with pytest.raises(ConfigurationError) as caught:
        _router(gemini, {**LITELLM_TOKENS, **info}).close()
    assert named in caught.value.message
    assert "model_list[0]" in caught.value.message or "model_info" in caught.value.message


def test_the_proxy_bills_a_grounded_call_at_its_model_info_search_fee(gemini, tmp_path: Path):
    """A LiteLLM config with the search fee in ``model_info``: the proxy's answer header carries
    it. Before, the keys were ignored: the call was recorded at its tokens alone, flagged
    ``+estimate:google_search-unpriced``."""
    params = {"model": MODEL, "api_key": GEMINI_KEY, "api_base": gemini.url}
    info = {
        **LITELLM_TOKENS,
        "search_context_cost_per_query": {"search_context_size_medium": 0.013},
        "web_search_billing_unit": "per_query",
    }
    config = write_config(
        tmp_path / "config.yaml",
        {
            "model_list": [{"model_name": "nano", "litellm_params": params, "model_info": info}],
            "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        },
    )
    with (
        ProxyProcess(config) as proxy,
        openai.OpenAI(base_url=proxy.url, api_key="sk-anything", max_retries=0) as client,
    ):
        raw = client.images.with_raw_response.generate(
            model="nano", prompt=PROMPT, extra_body=GROUNDED
        )
    inputs = PROMPT_TOKENS + TOOL_USE_PROMPT_TOKENS
    out = OUTPUT_IMAGE_TOKENS["gemini-3.1-flash-image"]["1K"]
    tokens = (inputs * OWN_INPUT + out * OWN_OUTPUT) / MILLION
    assert Decimal(raw.headers["x-tracking-response-cost"]) == tokens + SEARCH_QUERIES * Decimal(
        "0.013"
    )
