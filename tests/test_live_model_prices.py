"""Today's models priced to the cent, estimates instead of silence, and the price tooling.

Token counts from the fake upstream for gpt-image-2 and the 2.5 / 2.6 models (see
``tracking/testing/fake_openai.py``): ``ceil(len(prompt) / 4)`` text tokens, 323 tokens per input
image, and per output image 200 / 1767 / 7024 tokens (low / medium / high, 1024x1024), scaled by
area for other sizes. Every live model costs $5 per 1M text input tokens, $8 per 1M image input
tokens and $30 per 1M image output tokens (tracking/pricing/prices.json). Each expected cost
below is worked out by hand.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import date
from decimal import Decimal

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.recorder import watch_prometheus
from tests.test_pricing import INPUT_ALLOWANCE, answer, request_for
from tracking.cli import main as cli
from tracking.pricing import estimate_call_cost, price_call, reset_prices, use_prices_file
from tracking.pricing.commands import prices_import
from tracking.request import parse_call

LIVE_MODELS = [
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.6-flare",
    "gpt-image-2.6-sunburst",
]
# "a red hat": 9 chars -> 3 text tokens (x $5); one input image -> 323 tokens (x $8).
# low:    3*5 + 323*8 +  200*30 = 15 + 2584 +   6000 =   8599 -> $0.008599
# medium: 3*5 + 323*8 + 1767*30 = 15 + 2584 +  53010 =  55609 -> $0.055609
# high:   3*5 + 323*8 + 7024*30 = 15 + 2584 + 210720 = 213319 -> $0.213319
BY_QUALITY = {"low": "0.008599", "medium": "0.055609", "high": "0.213319"}


pytestmark = pytest.mark.usefixtures("fresh_prices")


# -- every live model, priced exactly from the usage the fake reports ---------------------------


@pytest.mark.parametrize("quality", ["low", "medium", "high"])
@pytest.mark.parametrize("model", LIVE_MODELS)
def test_every_live_model_is_priced_exactly(upstream, model, quality):
    response = tracking.image_edit(
        image=make_png(), prompt="a red hat", model=model, size="1024x1024", quality=quality,
        **upstream,
    )  # fmt: skip
    assert response.cost_usd == Decimal(BY_QUALITY[quality])
    assert response._hidden_params["response_cost"] == float(Decimal(BY_QUALITY[quality]))


def test_a_custom_gpt_image_2_size_is_priced_from_its_tokens(upstream, monkeypatch):
    events = []
    monkeypatch.setattr(tracking, "success_callback", [lambda k, r, s, e: events.append(k)])
    response = tracking.image_edit(
        image=make_png(), prompt="a red hat", model="gpt-image-2", size="2048x1152",
        quality="high", n=2, **upstream,
    )  # fmt: skip
    # 2048x1152 is 2.25 x 1024x1024: 7024 * 2.25 = 15804 output tokens per image, 31608 for two.
    # 3*5 + 323*8 + 31608*30 = 15 + 2584 + 948240 = 950839 -> $0.950839, $0.4754195 each
    assert response.cost_usd == Decimal("0.950839")
    assert tracking.flush(5)
    (kwargs,) = events
    event = kwargs["tracking_event"]
    assert event.cost_per_image_usd == Decimal("0.4754195")
    assert event.cost_source == "usage"
    assert event.price_ref == "packaged:gpt-image-2#secondary"


def test_the_official_price_is_named_as_such():
    usage = {
        "input_tokens": 326,
        "input_tokens_details": {"text_tokens": 3, "image_tokens": 323},
        "output_tokens": 7024,
        "total_tokens": 7350,
    }
    cost = price_call(request_for("gpt-image-2.6-sunburst"), answer(1, usage))
    assert cost.usd == Decimal("0.213319")  # 3*5 + 323*8 + 7024*30 = 213319 per 1M
    assert cost.price_ref == "packaged:gpt-image-2.6-sunburst#official"


def test_an_input_reported_unsplit_is_priced_at_the_dearer_input_rate():
    # input_tokens without its text / image split: an edit sent an image, so its input is
    # priced at the image rate ($8, dearer than text's $5), never under-billed; a generation
    # sent none, so its input is text.
    unsplit = {"input_tokens": 326, "output_tokens": 1767, "total_tokens": 2093}
    edit = price_call(request_for("gpt-image-2"), answer(1, unsplit))
    assert edit.usd == Decimal("0.055618")  # 326*8 + 1767*30 = 55618 per 1M
    assert edit.source == "usage"
    for details in (None, {}):  # null or empty details: unsplit too
        odd = price_call(
            request_for("gpt-image-2"), answer(1, {**unsplit, "input_tokens_details": details})
        )
        assert odd.usd == edit.usd
    generation, _ = parse_call(prompt="a cat", model="gpt-image-2", operation="image_generation")
    assert price_call(generation, answer(1, unsplit)).usd == Decimal("0.05464")  # 326*5 + ...
    split = {**unsplit, "input_tokens_details": {"text_tokens": 3, "image_tokens": 323}}
    assert price_call(request_for("gpt-image-2"), answer(1, split)).usd == Decimal("0.055609")


def test_tokens_the_details_leave_unaccounted_are_billed_at_the_image_rates():
    # output_tokens 7024 with details naming 10 text tokens and no image tokens were billed as
    # 10 text tokens ($0.0001, not $0.21); input 326 with details of 3 text tokens as 3.
    usage = {
        "input_tokens": 326,
        "input_tokens_details": {"text_tokens": 3},
        "output_tokens": 7024,
        "output_tokens_details": {"text_tokens": 10},
    }
    cost = price_call(request_for("gpt-image-2"), answer(1, usage))
    assert cost.usd == Decimal("0.213119")  # 3*5 + 323*8 + 10*10 + 7014*30 per 1M
    assert cost.source == "usage"


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param(
            {
                "input_tokens": 326,
                "input_tokens_details": {"text_tokens": 300, "image_tokens": 300},
                "output_tokens": 7024,
            },
            id="input-details-above-the-total",
        ),
        pytest.param(
            {
                "input_tokens": 326,
                "output_tokens": 7024,
                "output_tokens_details": {"image_tokens": 9000, "text_tokens": 0},
            },
            id="output-details-above-the-total",
        ),
    ],
)
def test_details_above_their_total_are_not_trusted(usage):
    """Usage contradicting itself is priced by estimate (flagged), as cached tokens above the
    input are: which of the two figures was billed cannot be known."""
    cost = price_call(
        request_for("gpt-image-2", size="1024x1024", quality="high"),
        answer(1, usage, size="1024x1024", quality="high"),
    )
    assert cost.source == "estimate"
    assert cost.usd == Decimal("0.211") + INPUT_ALLOWANCE["gpt-image-2"]  # the image and input


def test_an_image_answered_with_no_image_output_tokens_is_estimated():
    # An image came back, but the usage reports only text output (10 tokens): it was priced
    # at $0.0001 from that, labelled usage; the image's tokens are missing, so it is estimated.
    usage = {
        "input_tokens": 326,
        "input_tokens_details": {"text_tokens": 3, "image_tokens": 323},
        "output_tokens": 10,
        "output_tokens_details": {"text_tokens": 10, "image_tokens": 0},
    }
    cost = price_call(
        request_for("gpt-image-2", size="1024x1024", quality="high"),
        answer(1, usage, size="1024x1024", quality="high"),
    )
    assert cost.source == "estimate"
    assert cost.usd == Decimal("0.211") + INPUT_ALLOWANCE["gpt-image-2"]  # the image and input


# -- usage we cannot read: an estimate, never $0 or None ----------------------------------------

ODD_USAGE = [
    pytest.param(None, id="no-usage"),
    pytest.param({}, id="empty"),
    pytest.param({"total_tokens": 7350}, id="only-total"),
    pytest.param(
        {"prompt_tokens": 326, "completion_tokens": 7024, "total_tokens": 7350}, id="chat"
    ),
    pytest.param({"input_tokens": "326", "output_tokens": "7024"}, id="strings"),
    pytest.param([326, 7024], id="not-an-object"),
]


@pytest.mark.parametrize("usage", ODD_USAGE)
def test_odd_usage_on_a_model_with_per_image_prices_is_that_price_estimated(usage):
    cost = price_call(
        request_for("gpt-image-2", size="1024x1024", quality="high"),
        answer(2, usage, size="1024x1024", quality="high"),
    )
    # 2 x $0.211, gpt-image-2's per-image price, and the input
    assert cost.usd == Decimal("0.422") + INPUT_ALLOWANCE["gpt-image-2"]
    assert cost.per_image_usd == cost.usd / 2
    assert cost.source == "estimate"
    assert cost.price_ref == "packaged:gpt-image-2#secondary"


@pytest.mark.parametrize("usage", ODD_USAGE)
def test_odd_usage_on_a_token_only_model_is_a_token_estimate(usage):
    cost = price_call(
        request_for("gpt-image-2.6-flare", size="1024x1024", quality="medium"),
        answer(1, usage, size="1024x1024", quality="medium"),
    )
    # 1767 reference tokens x $30 per 1M, and the input
    assert cost.usd == Decimal("0.05301") + INPUT_ALLOWANCE["gpt-image-2.6-flare"]
    assert cost.source == "estimate"


def test_an_unreadable_success_answer_is_estimated_from_the_request(fake, monkeypatch):
    events = []
    monkeypatch.setattr(tracking, "failure_callback", [lambda k, r, s, e: events.append(k)])
    fake.inject(malformed=True)
    with pytest.raises(tracking.APIResponseError):
        tracking.image_edit(
            image=make_png(), prompt="a red hat", model="gpt-image-2.5-sunburst",
            size="1536x1024", quality="low", n=3, api_base=fake.url, api_key=API_KEY,
        )  # fmt: skip
    assert tracking.flush(5)
    (kwargs,) = events
    event = kwargs["tracking_event"]
    # No per-image price for 2.5: 200 reference tokens x 1.5 (1536x1024) = 300 tokens, x $30
    # per 1M = $0.009 an image, x 3 requested; plus the input allowance of any unknown outcome:
    # 9 prompt characters at $5 per 1M and 1,000 tokens for the input image at $8 per 1M.
    assert event.cost_usd == Decimal("0.027") + Decimal("0.000045") + Decimal("0.008")
    assert event.cost_source == "estimate"
    assert event.price_ref == "estimate:outcome-unknown:packaged:gpt-image-2.5-sunburst#secondary"
    assert event.status == "failure" and event.error_type == "invalid_response"


def test_an_error_answer_is_still_not_billed(fake, monkeypatch):
    events = []
    monkeypatch.setattr(tracking, "failure_callback", [lambda k, r, s, e: events.append(k)])
    fake.inject(status=500)
    with pytest.raises(tracking.APIError):
        tracking.image_edit(
            image=make_png(), prompt="x", model="gpt-image-2", api_base=fake.url,
            api_key=API_KEY, max_retries=0,
        )  # fmt: skip
    assert tracking.flush(5)
    assert events[0]["tracking_event"].cost_usd == Decimal(0)


def test_estimate_call_cost_for_other_billed_outcomes():
    custom = estimate_call_cost("gpt-image-2", "2048x2048", "high", 1)
    assert custom.usd == Decimal("0.84288")  # 7024 x 4 tokens x $30 per 1M
    assert custom.source == "estimate"
    listed = estimate_call_cost("openai/gpt-image-2", "1024x1536", "low", 4)
    assert listed.usd == Decimal("0.020") and listed.per_image_usd == Decimal("0.005")
    auto = estimate_call_cost("gpt-image-2", "auto", "auto", 1)
    assert auto.usd == Decimal("0.211")  # the dearest listed price
    unknown = estimate_call_cost("acme-image-edit-1", "1024x1024", "low", 1)
    assert unknown.usd is None and unknown.source == "unpriced"


# -- retired models: priced from history, one warning, counted --------------------------------


def test_a_retired_model_warns_once_and_is_counted(upstream, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tracking")
    registry = watch_prometheus(monkeypatch)
    for _ in range(3):
        response = tracking.image_edit(
            image=make_png(), prompt="x", model="gpt-image-1", quality="low", **upstream
        )
        assert response.cost_usd is not None and response.images_returned == 1
    tracking.image_edit(image=make_png(), prompt="x", model="gpt-image-2", **upstream)
    assert tracking.flush(5)
    warnings = [r.getMessage() for r in caplog.records if "shut down" in r.getMessage()]
    assert len(warnings) == 1
    assert "'gpt-image-1'" in warnings[0] and "2026-10-23" in warnings[0]
    metric = "image_edit_retired_model_requests_total"
    assert registry.get_sample_value(metric, {"model": "gpt-image-1"}) == 3
    assert registry.get_sample_value(metric, {"model": "gpt-image-2"}) is None


def test_models_check_reads_shutdown_dates_from_the_upstream(fake, tmp_path, capsys):
    # Without a config: the price table's models, retired ones kept for their history. The
    # table knows every date the upstream gives, so nothing fails.
    assert cli(["models", "check", "--api-base", fake.url, "--api-key", API_KEY]) == 0
    out = capsys.readouterr().out
    assert "gpt-image-1  " in out and "retired 2026-10-23" in out
    assert "gpt-image-2.6-sunburst" in out and "live" in out
    assert "7 retired; 0 the price table does not know of" in out  # dall-e-3 since 2026-12-07
    # A table that does not know a retirement is out of date: that fails.
    tracking.register_prices("gpt-image-1", tokens_per_million={"output_image": "40"})
    try:
        assert cli(["models", "check", "--api-base", fake.url, "--api-key", API_KEY]) == 1
    finally:
        reset_prices()
    out = capsys.readouterr().out
    assert "retired 2026-10-23; the price table does not say so" in out
    assert "1 the price table does not know of" in out
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": name,
                        "litellm_params": {"model": name, "api_base": fake.url, "api_key": API_KEY},
                    }
                    for name in ("gpt-image-2", "openai/gpt-image-2.5-flare")
                ]
            }
        )
    )
    assert cli(["models", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "gpt-image-2.5-flare" in out and "0 retired" in out


@pytest.mark.parametrize("variable", ["OPENAI_BASE_URL", "OPENAI_API_BASE"])
def test_models_check_finds_the_upstream_where_the_sdk_does(fake, capsys, monkeypatch, variable):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, fake.url)  # the fake, not api.openai.com
    assert cli(["models", "check", "--api-key", API_KEY]) == 0
    out = capsys.readouterr().out
    assert f"checked against {fake.url}/models" in out and "retired 2026-10-23" in out


# -- prices without a release: LiteLLM import, diff, list, the SDK reads the file ---------------

# Our own small LiteLLM-shaped map: per-token prices, two per-image keys (one with LiteLLM's
# misleading input_cost_per_image, which holds the output image's price), a per-pixel model, a
# chat model to skip, and a cheaper gpt-image-2 output price that must win over the packaged one.
LITELLM_FIXTURE = {
    "sample_spec": {"mode": "chat", "input_cost_per_token": 0},
    "acme-image-1": {
        "mode": "image_generation",
        "litellm_provider": "openai",
        "input_cost_per_token": 4e-06,
        "cache_read_input_token_cost": 1e-06,
        "input_cost_per_image_token": 6e-06,
        "output_cost_per_image_token": 2.4e-05,
    },
    "low/1024-x-1024/acme-image-1": {"mode": "image_generation", "input_cost_per_image": 0.004},
    "high/1024-x-1024/acme-image-1": {"mode": "image_generation", "output_cost_per_image": 0.15},
    "512-x-512/acme-pixel-1": {
        "mode": "image_generation",
        "input_cost_per_pixel": 6.866455078125e-08,
        "deprecation_date": "2027-01-31",
    },
    "gpt-image-2": {
        "mode": "image_generation",
        "input_cost_per_token": 5e-06,
        "input_cost_per_image_token": 8e-06,
        "output_cost_per_image_token": 2.5e-05,
    },
    "some-chat-model": {"mode": "chat", "input_cost_per_token": 1e-06},
}


def test_litellm_import_round_trip(tmp_path, capsys, monkeypatch):
    source = tmp_path / "model_prices.json"
    source.write_text(json.dumps(LITELLM_FIXTURE))
    override = tmp_path / "my-prices.json"
    assert cli(["prices", "import", str(source), "--out", str(override)]) == 0
    assert "imported 3 model(s) from LiteLLM data" in capsys.readouterr().out
    written = json.loads(override.read_text())
    by_model = {e["model"]: e for e in written["entries"]}
    assert set(by_model) == {"acme-image-1", "acme-pixel-1", "gpt-image-2"}
    acme = by_model["acme-image-1"]
    assert acme["tokens_per_million"]["input_text"]["usd"] == "4"
    assert acme["tokens_per_million"]["cached_input_text"]["usd"] == "1"
    assert acme["per_image"]["low"]["1024x1024"]["usd"] == "0.004"  # the output price
    assert acme["per_image"]["high"]["1024x1024"]["confidence"] == "secondary"
    assert acme["per_image"]["high"]["1024x1024"]["source"] == source.resolve().as_uri()
    pixel = by_model["acme-pixel-1"]
    assert pixel["per_image"]["standard"]["512x512"]["usd"] == "0.018"  # x 512 x 512
    assert pixel["shutdown"]["date"] == "2027-01-31"

    # Importing the written file again (our format) into another file keeps every figure.
    again = tmp_path / "again.json"
    assert cli(["prices", "import", str(override), "--out", str(again)]) == 0
    assert "from tracking data" in capsys.readouterr().out
    assert json.loads(again.read_text())["entries"] == written["entries"]

    assert cli(["prices", "diff", str(override)]) == 0
    diff = capsys.readouterr().out
    assert "~ gpt-image-2 tokens.output_image: $30.00 -> $25" in diff
    assert "+ acme-image-1: not in the packaged table" in diff

    assert cli(["prices", "list", "--prices-file", str(override), "--json"]) == 0
    listed = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["gpt-image-2"]["origin"] == "override"
    assert listed["gpt-image-2.6-sunburst"]["origin"] == "packaged"

    # The SDK reads the file named by TRACKING_PRICES_FILE; the user's price wins.
    reset_prices()
    monkeypatch.setenv("TRACKING_PRICES_FILE", str(override))
    usage = {
        "input_tokens": 326,
        "input_tokens_details": {"text_tokens": 3, "image_tokens": 323},
        "output_tokens": 7024,
        "total_tokens": 7350,
    }
    # 3*5 + 323*8 + 7024*25 = 15 + 2584 + 175600 = 178199 -> $0.178199
    cost = price_call(request_for("gpt-image-2"), answer(1, usage))
    assert cost.usd == Decimal("0.178199")
    assert cost.price_ref == "override:gpt-image-2#secondary"
    # 3*4 + 323*6 + 1000*24 = 12 + 1938 + 24000 = 25950 -> $0.02595
    usage["output_tokens"] = 1000
    assert price_call(request_for("acme-image-1"), answer(1, usage)).usd == Decimal("0.02595")
    use_prices_file(None)  # back to the packaged price for the test's other calls
    monkeypatch.delenv("TRACKING_PRICES_FILE")
    reset_prices()
    assert price_call(request_for("gpt-image-2"), answer(1, usage)).usd == Decimal("0.032599")


def test_import_refuses_what_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"whatever": 1}))
    err = io.StringIO()
    with pytest.raises(tracking.ConfigurationError, match="neither a tracking prices file"):
        prices_import(str(bad), err, target=str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_prices_list_shows_status_prices_confidence_and_source(capsys):
    assert cli(["prices", "list"]) == 0
    out = capsys.readouterr().out
    (line,) = [row for row in out.splitlines() if row.startswith("gpt-image-2.6-sunburst ")]
    assert "live" in line and "$30.00" in line and "official" in line
    assert "https://developers.openai.com/" in line
    (retired,) = [row for row in out.splitlines() if row.startswith("gpt-image-1 ")]
    assert "retired 2026-10-23" in retired


def test_the_price_dates_are_today_or_earlier():
    raw = json.loads(
        (__import__("pathlib").Path(tracking.__file__).parent / "pricing/prices.json").read_text()
    )
    for entry in raw["entries"]:
        figures = [f for sizes in entry.get("per_image", {}).values() for f in sizes.values()]
        figures += entry.get("per_megapixel", {}).values()  # FLUX.2
        for figure in figures:
            assert date.fromisoformat(figure["retrieved"]) <= date(2026, 12, 7)


def test_the_2_5_and_2_6_qualities_are_accepted_and_others_refused(upstream):
    response = tracking.image_edit(
        image=make_png(), prompt="a red hat", model="gpt-image-2.6-flare", size="1024x1024",
        quality="xhigh", **upstream,
    )  # fmt: skip
    # The fake's own xhigh count, 1.5 x high: 10536 tokens. 15 + 2584 + 10536*30 = 318679
    assert response.cost_usd == Decimal("0.318679")
    with pytest.raises(tracking.ValidationError, match="quality"):
        tracking.image_edit(
            image=make_png(), prompt="x", model="gpt-image-2.5-sunburst", quality="ultra",
            **upstream,
        )  # fmt: skip
    with pytest.raises(tracking.ValidationError, match="quality"):
        tracking.image_edit(
            image=make_png(), prompt="x", model="gpt-image-2", quality="max", **upstream
        )


def test_import_from_a_url(fake, tmp_path, capsys):
    # The fake upstream serves any bytes it holds under /files/: here, a LiteLLM-shaped map.
    fake.state.files["prices.json"] = json.dumps(LITELLM_FIXTURE).encode()
    url = f"{fake.base_url}/files/prices.json"
    out = tmp_path / "from-url.json"
    assert cli(["prices", "import", url, "--out", str(out)]) == 0
    assert "imported 3 model(s)" in capsys.readouterr().out
    entries = json.loads(out.read_text())["entries"]
    assert {e["model"] for e in entries} == {"acme-image-1", "acme-pixel-1", "gpt-image-2"}
    assert entries[0]["tokens_per_million"]["input_text"]["source"] == url


def test_import_refuses_to_add_to_a_broken_file(tmp_path, capsys):
    source = tmp_path / "litellm.json"
    source.write_text(json.dumps(LITELLM_FIXTURE))
    broken = tmp_path / "mine.json"
    broken.write_text("{not json")
    assert cli(["prices", "import", str(source), "--out", str(broken)]) == 1
    assert "cannot read it as JSON" in capsys.readouterr().err
    assert broken.read_text() == "{not json"


def test_import_from_a_file_url(tmp_path, capsys):
    """``file://`` URLs were read as a literal path (``file:/...`` not found)."""
    source = tmp_path / "lite llm.json"
    source.write_text(json.dumps(LITELLM_FIXTURE))
    out = tmp_path / "from-file-url.json"
    assert cli(["prices", "import", source.as_uri(), "--out", str(out)]) == 0
    assert "imported 3 model(s)" in capsys.readouterr().out
    entries = json.loads(out.read_text())["entries"]
    assert entries[0]["tokens_per_million"]["input_text"]["source"] == source.as_uri()
    remote = f"file://elsewhere.example{source}"
    assert cli(["prices", "import", remote, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "must name a file on this machine" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("usd", "message"),
    [("1e400", "above the $1,000,000 a price may be"), ("1_0", "is not a number")],
)
def test_import_refuses_absurd_and_grouped_prices(tmp_path, capsys, usd, message):
    """A price of 1e400 per million tokens was accepted and priced a call at $1.8e397, which
    the ledger then refused (the call missing from spend_logs); "1_0" was read as 10."""
    figure = {
        "usd": usd,
        "source": "https://example.com/prices",
        "retrieved": "2026-12-05",
        "confidence": "official",
    }
    document = {
        "schema": 1,
        "currency": "USD",
        "entries": [
            {
                "model": "acme-image-9",
                "provider": "acme",
                "effective_from": None,
                "effective_to": None,
                "shutdown": None,
                "tokens_per_million": {"output_image": figure},
            }
        ],
    }
    source = tmp_path / "prices.json"
    source.write_text(json.dumps(document))
    assert cli(["prices", "import", str(source), "--out", str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("per_token", ["1e-400", "1e-999999999", "1e-30"])
def test_a_litellm_price_too_small_to_be_real_is_refused_not_read_as_free(
    tmp_path, capsys, per_token
):
    """A JSON float reads 1e-400 as 0.0: LiteLLM's map priced the model at $0, so its billed
    calls were recorded as free. Numbers are read as Decimal now, and a price other than 0
    below $1e-18 per unit (here per million tokens) is refused, naming it."""
    source = tmp_path / "model_prices.json"
    entry = {"mode": "image_edit", "litellm_provider": "acme", "input_cost_per_token": 5e-06}
    text = json.dumps({"acme-image-7": {**entry, "output_cost_per_image_token": 1.5}})
    source.write_text(text.replace("1.5", per_token))  # a number, as LiteLLM's file holds it
    out = tmp_path / "out.json"
    assert cli(["prices", "import", str(source), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "a price other than 0 may be" in err and err.count("\n") == 1
    assert "acme-image-7" in err and not out.exists()


def test_import_of_deeply_nested_json_is_one_line(tmp_path, capsys):
    source = tmp_path / "deep.json"
    source.write_text("[" * 100_000 + "]" * 100_000)
    assert cli(["prices", "import", str(source), "--out", str(tmp_path / "out.json")]) == 1
    err = capsys.readouterr().err
    assert "not JSON" in err and err.count("\n") == 1
