"""Pricing to the cent: a table of cases worked out by hand, asserted with exact Decimal equality.

Token counts from the fake upstream (see ``tracking/testing/fake_openai.py``): text tokens are
``ceil(len(prompt) / 4)``, 323 tokens per input image, and output tokens per image of 272 / 1056 /
4160 (low / medium / high, 1024x1024), 408 / 1584 / 6240 (1024x1536), 400 / 1568 / 6208
(1536x1024). Token prices are per 1M tokens: gpt-image-1 $5 text, $1.25 cached text, $10 image,
$2.50 cached image, $40 output; gpt-image-1-mini $2, $0.20, $2.50, $0.25, $8.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import date
from decimal import Decimal

import pytest

import tracking
from tests.conftest import make_png
from tracking.pricing import (
    NOT_BILLED,
    price_call,
    register_prices,
    reset_prices,
    use_prices_file,
)
from tracking.pricing.litellm_import import from_litellm
from tracking.pricing.table import load_packaged, load_price_file, parse_price_data
from tracking.proxy.errors import ProxyError
from tracking.proxy.json_io import optional_money
from tracking.request import parse_call
from tracking.response import ImageResponse
from tracking.testing import EventRecorder


@pytest.fixture(autouse=True)
def _fresh_prices():
    reset_prices()
    yield
    reset_prices()


def request_for(model: str, **params):
    request, _ = parse_call(image=make_png(), prompt="a red hat", model=model, **params)
    return request


def answer(images: int = 1, usage: dict | None = None, **fields) -> ImageResponse:
    raw: dict = {"created": 1, "data": [{"b64_json": "AA=="} for _ in range(images)], **fields}
    if usage is not None:
        raw["usage"] = usage
    return ImageResponse(raw=raw)


# -- usage present: real calls through the fake upstream ----------------------------------------

# (model, prompt, size, quality, n, expected total, expected per image), worked out by hand:
USAGE_CASES = [
    # "a red hat": 9 chars -> 3 text tokens; 323 image tokens; low square -> 272 output tokens.
    # 3*5 + 323*10 + 272*40 = 15 + 3230 + 10880 = 14125 -> $0.014125
    ("gpt-image-1", "a red hat", "1024x1024", "low", 1, "0.014125", "0.014125"),
    # mini: 3*2 + 323*2.5 + 272*8 = 6 + 807.5 + 2176 = 2989.5 -> $0.0029895
    ("gpt-image-1-mini", "a red hat", "1024x1024", "low", 1, "0.0029895", "0.0029895"),
    # "abcdefgh": 2 text tokens; high landscape 6208 x 2 images = 12416 output tokens.
    # 2*5 + 323*10 + 12416*40 = 10 + 3230 + 496640 = 499880 -> $0.49988, $0.24994 per image
    ("gpt-image-1", "abcdefgh", "1536x1024", "high", 2, "0.49988", "0.24994"),
    # auto size and quality: the fake answers medium and, for a square input, 1024x1024: 1056.
    # "abcd": 1 token. 1*5 + 3230 + 1056*40 = 5 + 3230 + 42240 = 45475 -> $0.045475
    ("gpt-image-1", "abcd", "auto", "auto", 1, "0.045475", "0.045475"),
    # mini, medium portrait, n=3: 1584*3 = 4752 output tokens; "abcd" 1 token.
    # 1*2 + 323*2.5 + 4752*8 = 2 + 807.5 + 38016 = 38825.5 -> $0.0388255, /3 = $0.01294183...
    ("gpt-image-1-mini", "abcd", "1024x1536", "medium", 3, "0.0388255", "0.012941833333"),
]


@pytest.fixture
def recorder(monkeypatch):
    rec = EventRecorder()
    monkeypatch.setattr(tracking, "callbacks", [rec])
    return rec


@pytest.mark.parametrize(("model", "prompt", "size", "quality", "n", "total", "each"), USAGE_CASES)
def test_usage_priced_calls(recorder, upstream, model, prompt, size, quality, n, total, each):
    response = tracking.image_edit(
        image=make_png(),
        prompt=prompt,
        model=model,
        size=size,
        quality=quality,
        n=n,
        **upstream,
    )
    assert response.cost_usd == Decimal(total)
    assert isinstance(response.cost_usd, Decimal)
    assert response._hidden_params["response_cost"] == float(Decimal(total))
    (event,) = recorder.events
    assert event.cost_usd == Decimal(total)
    assert event.cost_per_image_usd == Decimal(each)
    assert event.images_returned == n


def test_event_carries_cost_per_image_source_and_ref(recorder, upstream):
    tracking.image_edit(
        image=make_png(), prompt="abcd", model="gpt-image-1-mini", size="1024x1536",
        quality="medium", n=3, **upstream,
    )  # fmt: skip
    (event,) = recorder.events
    assert event.cost_usd == Decimal("0.0388255")
    assert event.cost_per_image_usd == Decimal("0.012941833333")
    assert event.cost_source == "usage"
    assert event.price_ref == "packaged:gpt-image-1-mini#official"
    assert event.to_dict()["cost_usd"] == "0.0388255"


def test_dall_e_2_is_priced_per_image_by_the_size_billed(upstream):
    response = tracking.image_edit(
        image=make_png(), prompt="a hat", model="dall-e-2", size="512x512", n=2, **upstream
    )
    assert response.cost_usd == Decimal("0.036")  # 2 x $0.018


# -- usage absent: the per-image table, every shipped model, size and quality --------------------
# dall-e-2 is billed per image ("table"); the GPT image models are billed by tokens, so without
# usage their per-image price is an estimate ("estimate"), never a silent 0 or None.

TABLE_CASES = [
    ("gpt-image-1", "low", "1024x1024", "0.011"),
    ("gpt-image-1", "low", "1024x1536", "0.016"),
    ("gpt-image-1", "low", "1536x1024", "0.016"),
    ("gpt-image-1", "medium", "1024x1024", "0.042"),
    ("gpt-image-1", "medium", "1024x1536", "0.063"),
    ("gpt-image-1", "medium", "1536x1024", "0.063"),
    ("gpt-image-1", "high", "1024x1024", "0.167"),
    ("gpt-image-1", "high", "1024x1536", "0.25"),
    ("gpt-image-1", "high", "1536x1024", "0.25"),
    ("gpt-image-1-mini", "low", "1024x1024", "0.005"),
    ("gpt-image-1-mini", "low", "1024x1536", "0.006"),
    ("gpt-image-1-mini", "low", "1536x1024", "0.006"),
    ("gpt-image-1-mini", "medium", "1024x1024", "0.011"),
    ("gpt-image-1-mini", "medium", "1024x1536", "0.015"),
    ("gpt-image-1-mini", "medium", "1536x1024", "0.015"),
    ("gpt-image-1-mini", "high", "1024x1024", "0.036"),
    ("gpt-image-1-mini", "high", "1024x1536", "0.052"),
    ("gpt-image-1-mini", "high", "1536x1024", "0.052"),
    ("dall-e-2", None, "256x256", "0.016"),
    ("dall-e-2", None, "512x512", "0.018"),
    ("dall-e-2", None, "1024x1024", "0.020"),
]


#: What an estimate adds for :func:`request_for`'s input (9 prompt characters, one image
#: allowed 1,000 tokens) at the model's input prices per 1M tokens, as an attempt whose outcome
#: is unknown counts it: gpt-image-1 $5 text / $10 image, gpt-image-1-mini $2 / $2.50,
#: gpt-image-2 and 2.6 Flare $5 / $8; nothing for a model priced per image (dall-e-2).
INPUT_ALLOWANCE = {
    "gpt-image-1": Decimal("0.000045") + Decimal("0.010"),
    "gpt-image-1-mini": Decimal("0.000018") + Decimal("0.0025"),
    "gpt-image-2": Decimal("0.000045") + Decimal("0.008"),
    "gpt-image-2.6-flare": Decimal("0.000045") + Decimal("0.008"),
    "dall-e-2": Decimal(0),
}


@pytest.mark.parametrize(("model", "quality", "size", "each"), TABLE_CASES)
def test_per_image_table_when_usage_is_absent(model, quality, size, each):
    fields = {"size": size} if quality is None else {"size": size, "quality": quality}
    cost = price_call(request_for(model, size=size), answer(1, **fields))
    assert cost.usd == Decimal(each) + INPUT_ALLOWANCE[model]
    assert cost.per_image_usd == cost.usd
    assert cost.source == ("table" if model == "dall-e-2" else "estimate")


def test_table_bills_the_size_and_quality_the_response_resolved_not_auto():
    request = request_for("gpt-image-1", size="auto", quality="auto")
    cost = price_call(request, answer(3, size="1024x1536", quality="high"))
    assert cost.usd == Decimal("0.75") + INPUT_ALLOWANCE["gpt-image-1"]  # 3 x $0.25, the input
    assert cost.per_image_usd == Decimal("0.253348333333")  # a third of it, to 12 places


def test_table_counts_images_returned_not_requested():
    request = request_for("gpt-image-1", size="1024x1024", quality="low", n=4)
    cost = price_call(request, answer(2, size="1024x1024", quality="low"))
    assert cost.usd == Decimal("0.022") + INPUT_ALLOWANCE["gpt-image-1"]


def test_auto_without_a_resolved_value_is_estimated_at_the_dearest_price_never_zero():
    request = request_for("gpt-image-1", size="auto", quality="auto")
    cost = price_call(request, answer(1))
    # the dearest listed (high, 1024x1536 / 1536x1024) and the input
    assert cost.usd == Decimal("0.25") + INPUT_ALLOWANCE["gpt-image-1"]
    assert cost.source == "estimate"


# -- cached tokens ------------------------------------------------------------------------------


def test_cached_tokens_with_a_text_image_split():
    usage = {
        "input_tokens": 1100,
        "input_tokens_details": {
            "text_tokens": 100,
            "image_tokens": 1000,
            "cached_tokens": 600,
            "cached_tokens_details": {"text_tokens": 40, "image_tokens": 560},
        },
        "output_tokens": 1056,
        "total_tokens": 2156,
    }
    cost = price_call(request_for("gpt-image-1"), answer(1, usage))
    # 60*5 + 40*1.25 + 440*10 + 560*2.5 + 1056*40 = 300 + 50 + 4400 + 1400 + 42240 = 48390
    assert cost.usd == Decimal("0.04839")
    assert cost.source == "usage"


def test_cached_tokens_without_a_split_count_as_text_first():
    usage = {
        "input_tokens": 1100,
        "input_tokens_details": {"text_tokens": 100, "image_tokens": 1000, "cached_tokens": 600},
        "output_tokens": 1056,
        "total_tokens": 2156,
    }
    cost = price_call(request_for("gpt-image-1-mini"), answer(1, usage))
    # text: 0 full + 100 cached; image: 500 full + 500 cached
    # 100*0.20 + 500*2.50 + 500*0.25 + 1056*8 = 20 + 1250 + 125 + 8448 = 9843
    assert cost.usd == Decimal("0.009843")


# -- unknown models, overrides and their precedence ---------------------------------------------


def test_unknown_model_is_unpriced_and_warned_once(caplog):
    caplog.set_level(logging.WARNING, logger="tracking")
    request = request_for("my-own-model")
    for _ in range(3):
        cost = price_call(request, answer(1, size="1024x1024", quality="low"))
        assert cost.usd is None and cost.per_image_usd is None
        assert cost.source == "unpriced"
    warnings = [r for r in caplog.records if "unpriced" in r.getMessage()]
    assert len(warnings) == 1
    assert "my-own-model" in warnings[0].getMessage()


def test_unknown_model_through_a_call_has_no_cost(upstream):
    response = tracking.image_edit(
        image=make_png(), prompt="x", model="openai/some-new-model", **upstream
    )
    assert response.cost_usd is None
    assert response._hidden_params["response_cost"] is None


def test_registered_prices_price_an_unknown_model():
    register_prices("my-own-model", per_image={"low": {"1024x1024": "0.5"}})
    cost = price_call(request_for("my-own-model"), answer(2, size="1024x1024", quality="low"))
    assert cost.usd == Decimal("1.0")
    assert cost.source == "custom"
    assert cost.price_ref == "custom:my-own-model"


def test_registered_prices_override_the_packaged_file():
    register_prices("gpt-image-1", tokens_per_million={"input_text": 1, "output_image": "20"})
    usage = {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110}
    # 10*1 + 100*20 = 2010 per 1M (no image tokens reported: text only)
    cost = price_call(request_for("gpt-image-1"), answer(1, usage))
    assert cost.usd == Decimal("0.00201")
    assert cost.source == "custom"


def test_azure_deployment_maps_to_a_base_model_with_a_discount():
    register_prices("azure/images-prod", base_model="gpt-image-1", discount="0.2")
    request = request_for("azure/images-prod")
    cost = price_call(request, answer(1, size="1024x1024", quality="high"))
    # (0.167 and the input) x 0.8 (no usage in the answer: an estimate)
    assert cost.usd == (Decimal("0.167") + INPUT_ALLOWANCE["gpt-image-1"]) * Decimal("0.8")
    assert cost.source == "estimate"
    assert cost.price_ref == "custom:azure/images-prod->gpt-image-1"


def test_a_discount_alone_applies_to_the_packaged_prices_of_that_model():
    register_prices({"gpt-image-1-mini": {"discount": "0.5"}})
    cost = price_call(request_for("gpt-image-1-mini"), answer(1, size="1536x1024", quality="low"))
    assert cost.usd == (Decimal("0.006") + INPUT_ALLOWANCE["gpt-image-1-mini"]) / 2


def test_the_most_specific_registered_name_wins():
    register_prices("gpt-image-1", per_image={"low": {"1024x1024": "1"}})
    register_prices("openai/gpt-image-1", per_image={"low": {"1024x1024": "2"}})
    request = request_for("openai/gpt-image-1")
    assert price_call(request, answer(1, size="1024x1024", quality="low")).usd == Decimal("2")
    plain = request_for("gpt-image-1")
    # "gpt-image-1" as asked is also "openai/gpt-image-1" with its provider: the specific one wins
    assert price_call(plain, answer(1, size="1024x1024", quality="low")).usd == Decimal("2")


def test_registered_prices_outside_their_window_do_not_apply():
    register_prices("gpt-image-1", per_image={"low": {"1024x1024": "9"}}, effective_to="2026-01-31")
    request = request_for("gpt-image-1")
    before = price_call(request, answer(1, size="1024x1024", quality="low"), day=date(2026, 1, 1))
    after = price_call(request, answer(1, size="1024x1024", quality="low"), day=date(2026, 2, 1))
    assert before.usd == Decimal("9")
    assert after.usd == Decimal("0.011") + INPUT_ALLOWANCE["gpt-image-1"]  # no usage: estimated


def test_a_discount_or_base_model_outside_its_window_does_not_apply():
    register_prices("gpt-image-2", discount="0.5", effective_from="2026-12-10")
    register_prices(
        "azure/img", base_model="gpt-image-2", discount="0.5", effective_to="2026-11-30"
    )
    day, later = date(2026, 12, 5), date(2026, 12, 10)
    usage = {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110}
    full = price_call(request_for("openai/gpt-image-2"), answer(1, usage), day=day).usd
    halved = price_call(request_for("openai/gpt-image-2"), answer(1, usage), day=later).usd
    assert full is not None and halved == full / 2  # the discount starts on its first day
    # the deployment's own window has ended: priced as if never registered, never at half
    assert price_call(request_for("azure/img"), answer(1, usage), day=day).price_ref != (
        "custom:azure/img->gpt-image-2"
    )
    with pytest.raises(tracking.ConfigurationError, match="before effective_from"):
        register_prices("x", discount="0.1", effective_from="2026-02-01", effective_to="2026-01-01")


def test_register_prices_rejects_bad_input_clearly():
    with pytest.raises(tracking.ConfigurationError, match="unknown field"):
        register_prices("m", per_imgae={})
    with pytest.raises(tracking.ConfigurationError, match="input_txt: unknown"):
        register_prices("m", tokens_per_million={"input_txt": "1"})
    with pytest.raises(tracking.ConfigurationError, match="non-negative"):
        register_prices("m", per_image={"low": {"1024x1024": "-1"}})
    with pytest.raises(tracking.ConfigurationError, match="discount"):
        register_prices("m", base_model="gpt-image-1", discount="1.5")


# -- failed calls -------------------------------------------------------------------------------


def test_a_failed_call_costs_zero(monkeypatch, fake):
    events = []
    monkeypatch.setattr(tracking, "failure_callback", [lambda k, r, s, e: events.append(k)])
    with pytest.raises(tracking.AuthenticationError):
        tracking.image_edit(
            image=make_png(), prompt="x", model="gpt-image-1", api_base=fake.url, api_key="sk-no"
        )
    assert tracking.flush(5)
    (kwargs,) = events
    assert kwargs["tracking_event"].cost_usd == Decimal(0)
    assert kwargs["response_cost"] == 0.0
    assert price_call(None, None) == NOT_BILLED


# -- the price file -----------------------------------------------------------------------------


def test_packaged_file_loads_with_provenance_and_dates():
    table = load_packaged()
    live = {"gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst"}
    live |= {"gpt-image-2.6-flare", "gpt-image-2.6-sunburst"}
    snapshots = {"gpt-image-2-2026-04-21", "gpt-image-2.5-flare-2026-09-08"}
    snapshots |= {"gpt-image-2.5-sunburst-2026-09-08", "gpt-image-1.5-2025-12-16"}
    retired = {"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"}
    assert live | snapshots | retired | {"dall-e-2", "gemini-3.1-flash-image"} <= set(table)
    (g1,) = table["gpt-image-1"]
    assert g1.tokens["cached_input_image"] == Decimal("2.50")
    assert g1.shutdown == date(2026, 10, 23)
    assert all(e.shutdown is None for m in live for e in table[m])
    assert all(e.shutdown is not None for m in retired for e in table[m])
    assert table["gpt-image-2-2026-04-21"] == table["gpt-image-2"]
    assert table["gpt-image-2.6-sunburst"][0].confidence == "official"
    assert table["gpt-image-2"][0].confidence == "secondary"
    raw = json.loads(
        (__import__("pathlib").Path(tracking.__file__).parent / "pricing/prices.json").read_text()
    )
    for entry in raw["entries"]:
        figures = list(entry.get("tokens_per_million", {}).values())
        figures += [f for sizes in entry.get("per_image", {}).values() for f in sizes.values()]
        for figure in figures:
            assert figure["source"].startswith("https://")
            assert date.fromisoformat(figure["retrieved"])
            official = figure["source"].startswith(OFFICIAL_PAGES)
            notes = entry.get("notes", "")
            if official:  # a figure derived from an official page is as sure as its weakest input
                assert figure["confidence"] == "official" or "derived" in notes
            else:
                assert figure["confidence"] in ("secondary", "unconfirmed")
            if figure["confidence"] == "unconfirmed":  # its notes say what it is inferred from
                assert "inferred" in notes


#: The providers' own pages: a figure read there is "official", any other "secondary".
OFFICIAL_PAGES = (
    "https://developers.openai.com/",
    "https://ai.google.dev/",
    "https://cloud.google.com/",
    "https://docs.cloud.google.com/",
    "https://docs.bfl.ml/",
    "https://stability.ai/",
    "https://www.recraft.ai/",
    "https://docs.x.ai/",
)


def _doc(figure):
    return {
        "schema": 1,
        "currency": "USD",
        "entries": [
            {
                "model": "m",
                "effective_from": None,
                "effective_to": None,
                "shutdown": None,
                "per_image": {"low": {"1024x1024": figure}},
            }
        ],
    }


def test_price_file_schema_refuses_a_figure_without_provenance():
    good = {
        "usd": "0.01",
        "source": "https://example.test/p",
        "retrieved": "2026-01-01",
        "confidence": "secondary",
    }
    assert parse_price_data(_doc(good), origin="t")["m"][0].per_image["low"]["1024x1024"] == (
        Decimal("0.01")
    )
    with pytest.raises(tracking.ConfigurationError, match="'source' must be the URL"):
        parse_price_data(_doc({"usd": "0.01", "retrieved": "2026-01-01"}), origin="t")
    with pytest.raises(tracking.ConfigurationError, match="retrieved"):
        parse_price_data(_doc({"usd": "0.01", "source": "https://e.test"}), origin="t")
    with pytest.raises(tracking.ConfigurationError, match="'confidence' must be one of"):
        parse_price_data(_doc({**good, "confidence": "sure"}), origin="t")
    with pytest.raises(tracking.ConfigurationError, match="decimal string"):
        parse_price_data(_doc({**good, "usd": 0.01}), origin="t")


@pytest.mark.parametrize("text", ["1_0", "\u0661\u0660"])  # with "_"; Arabic-Indic "10"
def test_money_written_with_an_underscore_or_other_digits_is_no_number(text):
    # Decimal("1_0") is 10: a price file, registered price, LiteLLM rate or management amount
    # so written was read as 10.
    figure = {"source": "https://e.test/p", "retrieved": "2026-01-01", "confidence": "secondary"}
    with pytest.raises(tracking.ConfigurationError, match="is not a number"):
        parse_price_data(_doc({**figure, "usd": text}), origin="t")
    with pytest.raises(tracking.ConfigurationError, match="is not a number"):
        register_prices("m", tokens_per_million={"input_text": text})
    litellm = {"acme": {"mode": "image_generation", "input_cost_per_token": text}}
    with pytest.raises(tracking.ConfigurationError, match="is not a number"):
        from_litellm(litellm, source="https://e.test/map.json", today=date(2026, 12, 5))
    with pytest.raises(ProxyError, match="expected an amount in USD"):
        optional_money({"max_budget": text}, "max_budget")


def test_price_file_from_disk_with_a_clear_error(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text("{not json")
    with pytest.raises(tracking.ConfigurationError, match="cannot read it as JSON"):
        load_price_file(path)


def test_a_prices_file_entry_leaving_out_packaged_prices_is_warned_naming_them(tmp_path, caplog):
    def entry(model: str, kinds: tuple[str, ...]) -> dict[str, object]:
        figure = {
            "usd": "27.00",
            "source": "https://example.com/contract",
            "retrieved": "2026-12-03",
            "confidence": "secondary",
        }
        return {
            "model": model,
            "effective_from": None,
            "effective_to": None,
            "shutdown": None,
            "tokens_per_million": {kind: figure for kind in kinds},
        }

    packaged = next(e for e in load_packaged()["gpt-image-2"] if e.covers(date.today()))
    assert len(packaged.tokens) > 1
    path = tmp_path / "prices.json"
    document = {
        "schema": 1,
        "currency": "USD",
        "entries": [entry("gpt-image-2", ("output_image",))],
    }
    path.write_text(json.dumps(document))
    try:
        with caplog.at_level(logging.WARNING, logger="tracking"):
            use_prices_file(path)
        (record,) = [r for r in caplog.records if "prices file's entry" in r.getMessage()]
        assert "gpt-image-2" in record.getMessage() and "tokens.input_text" in record.getMessage()
        caplog.clear()
        document["entries"] = [entry("gpt-image-2", tuple(packaged.tokens))]
        path.write_text(json.dumps(document))
        with caplog.at_level(logging.WARNING, logger="tracking"):
            use_prices_file(path)
        (record,) = [r for r in caplog.records if "prices file's entry" in r.getMessage()]
        assert "tokens." not in record.getMessage()  # only the per-image prices are left out
        assert "per_image price(s)" in record.getMessage()
    finally:
        use_prices_file(None)


def test_prices_load_lazily():
    code = "import sys, tracking; print('tracking.pricing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
