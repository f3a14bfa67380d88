"""LiteLLM's web search fee keys, read into our ``tools.google_search`` with an explicit unit.

``tracking prices import`` of a LiteLLM price map used to drop ``search_context_cost_per_query``
and ``web_search_cost_per_request``: the override file it wrote replaced the packaged entry and
its search fee, so a grounded call on the imported prices was recorded at its tokens alone
(``+estimate:google_search-unpriced``). A deployment's ``model_info`` now also takes
``web_search_cost_per_request``. Both need ``web_search_billing_unit`` (``per_query`` or
``per_prompt``): in a ``model_info`` a fee without it is refused; an imported entry with a fee and
no unit is imported without the fee and named in a warning (LiteLLM's whole map must not fail
for one entry); an unknown unit, or two keys giving two fees, is refused naming them.

Grounded calls go to the fake Gemini upstream on loopback (tracking.testing.fake_gemini).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.gemini_support import GEMINI_KEY
from tests.recorder import record_events
from tests.test_gemini_grounding_fees import (
    MODEL,
    OWN_TOKENS,
    _grounded_edit,
    _router,
    routed_grounded_edit,
)
from tracking.cli import main
from tracking.errors import ConfigurationError
from tracking.pricing import use_prices_file
from tracking.testing.fake_gemini import SEARCH_QUERIES, FakeGemini

#: the imported token prices per token (LiteLLM's unit): $1 and $50 per 1M, as OWN_TOKENS prices
PER_TOKEN = {
    "input_cost_per_token": 0.000001,
    "input_cost_per_image_token": 0.000001,
    "output_cost_per_image_token": 0.00005,
}


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_keys=[GEMINI_KEY]) as server:
        yield server


def _import(tmp_path: Path, entries: dict[str, Any]) -> tuple[int, Path, str]:
    source = tmp_path / "model_prices_and_context_window.json"
    source.write_text(json.dumps(entries), encoding="utf-8")
    out = tmp_path / "override.json"
    code = main(["prices", "import", str(source), "--out", str(out)])
    return code, out, source.as_uri()


# -- tracking prices import -------------------------------------------------------------------


def test_an_imported_per_query_fee_bills_each_query_of_a_grounded_call(tmp_path, gemini, capsys):
    entries = {
        MODEL: {
            "mode": "image_generation",
            "litellm_provider": "gemini",
            **PER_TOKEN,
            "search_context_cost_per_query": {
                "search_context_size_low": 0.02,
                "search_context_size_medium": 0.02,
                "search_context_size_high": 0.02,
            },
            "web_search_billing_unit": "per_query",
        }
    }
    code, out, _ = _import(tmp_path, entries)
    assert code == 0, capsys.readouterr().err
    written = json.loads(out.read_text(encoding="utf-8"))["entries"][0]
    fee = written["tools"]["google_search"]
    assert (fee["per"], fee["usd_per_1000"], fee["confidence"]) == (
        "search_query",
        "20",
        "secondary",
    )
    assert fee["source"] and fee["retrieved"]
    use_prices_file(out)  # as TRACKING_PRICES_FILE names it
    try:
        response = _grounded_edit(gemini)
    finally:
        use_prices_file(None)
    assert response.cost_usd == OWN_TOKENS + SEARCH_QUERIES * Decimal("0.02")


def test_an_imported_vertex_per_request_fee_bills_one_grounded_prompt(tmp_path, capsys):
    entries = {
        "vertex_ai/gemini-2.5-flash-image": {
            "mode": "image_generation",
            "litellm_provider": "vertex_ai-language-models",
            **PER_TOKEN,
            "web_search_cost_per_request": 0.035,
            "web_search_billing_unit": "per_prompt",
        }
    }
    code, out, _ = _import(tmp_path, entries)
    assert code == 0, capsys.readouterr().err
    fee = json.loads(out.read_text(encoding="utf-8"))["entries"][0]["tools"]["google_search"]
    assert (fee["per"], fee["usd_per_1000"]) == ("grounded_prompt", "35")


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        (
            {
                "web_search_cost_per_request": 0.035,
                "search_context_cost_per_query": {"search_context_size_medium": 0.014},
                "web_search_billing_unit": "per_query",
            },
            "give different search fees",
        ),
        ({"web_search_cost_per_request": 0.014, "web_search_billing_unit": "daily"}, "per_prompt"),
        ({"web_search_cost_per_request": 0.014, "web_search_billing_unit": None}, "per_prompt"),
    ],
)
def test_an_import_whose_search_fee_has_no_clear_unit_is_refused(tmp_path, capsys, keys, named):
    entries = {MODEL: {"mode": "image_generation", **PER_TOKEN, **keys}}
    code, out, _ = _import(tmp_path, entries)
    err = capsys.readouterr().err
    assert code != 0
    assert named in err and MODEL in err
    assert not out.exists()  # nothing half-imported


@pytest.mark.parametrize(
    "keys",
    [
        {"search_context_cost_per_query": {"search_context_size_medium": 0.014}},
        {"web_search_cost_per_request": 0.014},
    ],
)
def test_an_imported_fee_without_a_unit_is_left_out_with_a_warning(
    tmp_path, gemini, capsys, monkeypatch, keys
):
    """LiteLLM's map gives some entries a fee and no unit (its default, per prompt, would bill a
    Gemini 3 call's queries as one): the rest of the map is imported, the entry named, and its
    grounded calls carry the fee as an estimate, never a fee per a guessed unit."""
    entries = {
        MODEL: {"mode": "image_generation", "litellm_provider": "gemini", **PER_TOKEN, **keys},
        "gpt-image-2": {"mode": "image_generation", "output_cost_per_image_token": 0.00003},
    }
    code, out, _ = _import(tmp_path, entries)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning:" in err and MODEL in err and next(iter(keys)) in err
    written = {e["model"]: e for e in json.loads(out.read_text(encoding="utf-8"))["entries"]}
    assert set(written) == {MODEL, "gpt-image-2"}
    assert "tools" not in written[MODEL]
    events = record_events(monkeypatch)
    use_prices_file(out)
    try:
        response = _grounded_edit(gemini)
    finally:
        use_prices_file(None)
    assert response.cost_usd == OWN_TOKENS
    assert events.last.cost_source == "estimate"
    assert events.last.price_ref is not None
    assert events.last.price_ref.endswith("+estimate:google_search-unpriced")


# -- a deployment's model_info ------------------------------------------------------------------


def test_model_info_web_search_cost_per_request_bills_each_query(gemini):
    info = {
        **PER_TOKEN,
        "web_search_cost_per_request": 0.012,
        "web_search_billing_unit": "per_query",
    }
    response = routed_grounded_edit(gemini, info)
    assert response.cost_usd == OWN_TOKENS + SEARCH_QUERIES * Decimal("0.012")


def test_model_info_web_search_cost_per_request_without_a_unit_is_refused(gemini):
    with pytest.raises(ConfigurationError) as caught:
        _router(gemini, {**PER_TOKEN, "web_search_cost_per_request": 0.012}).close()
    assert "web_search_billing_unit" in caught.value.message
    assert "web_search_cost_per_request" in caught.value.message
