"""FLUX.2 edits against the fake BFL API: one and several references, sync and async, the cost
BFL's submission answers (credits) as the call's cost, the per-megapixel table when it answers
none, FLUX.2's parameters refused before sending, and the proxy with the official client and
its ledger row.

Every expected cost is worked by hand from BFL's formula (its integration guide): credits =
first output MP + (output MP - 1) x per MP + input MP x per MP, each image's megapixels (of
1024 x 1024 = 1,048,576 pixels) rounded up, 1 credit = $0.01."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import make_half_mask, make_png
from tests.proxy_support import (
    ProxyProcess,
    edit_through_proxy,
    ledger_row,
    one_deployment_config,
    write_config,
)
from tests.recorder import record_events
from tracking.errors import APIResponseError, ConfigurationError, ValidationError
from tracking.integrations.sql import spend_logs
from tracking.pricing import estimate_call_cost
from tracking.pricing.table import parse_price_data
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
ONE_MP = make_png(1024, 1024)  # 1,048,576 pixels: exactly 1 MP
WIDE = make_png(1536, 1024)  # 1,572,864 pixels: 1.5 MP, rounded up to 2
SMALL = make_png(640, 480)  # 307,200 pixels: 0.29 MP, rounded up to 1


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as server:
        yield server


@pytest.fixture
def upstream(bfl: FakeBFL) -> dict[str, str]:
    return {"api_base": bfl.url, "api_key": BFL_KEY}


def _new_job(bfl: FakeBFL, before: int):
    (job,) = list(bfl.jobs.values())[before:]
    return job


def test_a_flux2_pro_edit_is_billed_what_bfl_answered(monkeypatch, bfl, upstream):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    response = tracking.image_edit(
        image=ONE_MP,
        prompt="a red hat",
        model="black_forest_labs/flux-2-pro",
        size="1024x1024",
        **upstream,
    )
    job = _new_job(bfl, before)
    assert job.model == "flux-2-pro"
    assert base64.b64decode(job.body["input_image"]) == ONE_MP
    assert (job.body["width"], job.body["height"]) == (1024, 1024)
    assert "aspect_ratio" not in job.body  # FLUX.2 takes width and height
    # [pro]: 3 credits (first output MP) + 0 x 1.5 (no further output MP) + 1 x 1.5 (one
    # 1 MP input) = 4.5 credits = $0.045
    assert job.cost == Decimal("4.5")
    assert response.cost_usd == Decimal("0.045")
    event = events.last
    assert (event.status, event.provider, event.model) == (
        "success",
        "black_forest_labs",
        "black_forest_labs/flux-2-pro",
    )
    assert (event.cost_usd, event.cost_source) == (Decimal("0.045"), "usage")
    assert event.price_ref == "provider:black_forest_labs"


async def test_async_flux2_max_with_several_references(monkeypatch, bfl, upstream):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    response = await tracking.aimage_edit(
        image=[ONE_MP, WIDE, SMALL],
        prompt="the hat of image 2 on the cat of image 1, in the room of image 3",
        model="black_forest_labs/flux-2-max",
        size="1920x1088",
        **upstream,
    )
    job = _new_job(bfl, before)
    assert [base64.b64decode(job.body[k]) for k in ("input_image", "input_image_2")] == [
        ONE_MP,
        WIDE,
    ]
    assert base64.b64decode(job.body["input_image_3"]) == SMALL
    # [max]: output 1920 x 1088 = 2,088,960 pixels = 1.99 MP -> 2; inputs 1 + 2 + 1 = 4 MP.
    # 7 + (2 - 1) x 3 + 4 x 3 = 22 credits = $0.22
    assert response.cost_usd == Decimal("0.22")
    assert (events.last.cost_usd, events.last.cost_source) == (Decimal("0.22"), "usage")


async def test_async_klein_takes_four_references(bfl, upstream):
    before = len(bfl.jobs)
    response = await tracking.aimage_edit(
        image=[SMALL] * 4, prompt="p", model="black_forest_labs/flux-2-klein-4b", **upstream
    )
    job = _new_job(bfl, before)
    assert "input_image_4" in job.body and "width" not in job.body  # auto: the input's size
    # [klein] 4B: output 640 x 480 (the input's) -> 1 MP; inputs 4 x 1 MP.
    # 1.4 + 0 x 0.1 + 4 x 0.1 = 1.8 credits = $0.018
    assert response.cost_usd == Decimal("0.018")


def test_without_a_cost_in_the_answer_the_megapixel_table_prices_it(monkeypatch, bfl, upstream):
    events = record_events(monkeypatch)
    response = tracking.image_edit(
        image=ONE_MP,
        prompt="p",
        model="black_forest_labs/flux-2-flex",
        extra_body={"steps": "20", "guidance": 3.5, "seed": 7},  # text, as a proxy's form field
        extra_headers={"x-fake-fault": "code=no_cost"},
        **upstream,
    )
    # the table, from the result's size as downloaded (1024 x 1024, the input's) and the input:
    # [flex] $0.05 (first output MP) + 0 x $0.05 + 1 x $0.05 (one 1 MP input) = $0.10
    assert response.cost_usd == Decimal("0.10")
    event = events.last
    assert (event.cost_source, event.price_ref) == ("table", "packaged:flux-2-flex#official")


def test_a_job_that_fails_after_it_was_accepted_costs_what_bfl_answered(monkeypatch, upstream):
    events = record_events(monkeypatch)
    with pytest.raises(APIResponseError):
        tracking.image_edit(
            image=WIDE,
            prompt="p",
            model="black_forest_labs/flux-2-pro",
            extra_headers={"x-fake-fault": "code=error"},
            **upstream,
        )
    # [pro], auto size: the output is the input's 1536 x 1024 -> 2 MP; input 2 MP.
    # 3 + 1 x 1.5 + 2 x 1.5 = 7.5 credits = $0.075, billed though the job ended Error
    event = events.last
    assert (event.status, event.cost_usd, event.cost_source) == (
        "failure",
        Decimal("0.075"),
        "usage",
    )


@pytest.mark.parametrize(
    ("model", "edit", "param"),
    [
        ("flux-2-pro", {"extra_body": {"steps": 20}}, "extra_body"),  # a [flex] field
        ("flux-2-max", {"extra_body": {"guidance": 4}}, "extra_body"),
        ("flux-2-flex", {"extra_body": {"steps": 0}}, "extra_body"),
        ("flux-2-flex", {"extra_body": {"steps": 51}}, "extra_body"),
        ("flux-2-flex", {"extra_body": {"steps": 20.5}}, "extra_body"),
        ("flux-2-flex", {"extra_body": {"guidance": 1.4}}, "extra_body"),
        ("flux-2-flex", {"extra_body": {"guidance": "ten"}}, "extra_body"),
        ("flux-2-flex", {"extra_body": {"steps": "60"}}, "extra_body"),  # a form field's text
        ("flux-2-pro", {"extra_body": {"safety_tolerance": 6}}, "extra_body"),
        ("flux-2-pro", {"extra_body": {"seed": 7.5}}, "extra_body"),
        ("flux-2-pro", {"extra_body": {"input_image_2": "aGk="}}, "extra_body"),  # an image
        ("flux-2-pro", {"extra_body": {"width": 2048, "height": 2048}}, "extra_body"),
        ("flux-2-pro", {"size": "1000x1000"}, "size"),  # not multiples of 16
        ("flux-2-pro", {"size": "4096x4096"}, "size"),  # above 4 MP
        ("flux-2-pro", {"size": "32x2048"}, "size"),  # a side under 64
        ("flux-2-pro", {"n": 2}, "n"),
        ("flux-2-pro", {"mask": make_half_mask(64)}, "mask"),  # FLUX.2 takes no mask
        ("flux-2-pro", {"image": [SMALL] * 9}, "image"),  # at most 8
        ("flux-2-klein-9b", {"image": [SMALL] * 5}, "image"),  # at most 4
    ],
)
def test_invalid_parameters_are_refused_before_sending(bfl, upstream, model, edit, param):
    before = len(bfl.jobs)
    edit = {"image": make_png(64, 64), **edit}
    with pytest.raises(ValidationError) as caught:
        tracking.image_edit(
            prompt="p", model=f"black_forest_labs/{model}", size=edit.pop("size", None),
            **edit, **upstream,
        )  # fmt: skip
    assert caught.value.param == param
    assert len(bfl.jobs) == before  # nothing was submitted


def test_the_official_client_edits_with_flux2_through_the_proxy(tmp_path: Path):
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as fake:
        params = {"model": "black_forest_labs/flux-2-pro", "api_key": BFL_KEY, "api_base": fake.url}
        raw = edit_through_proxy(
            tmp_path,
            "flux2",
            params,
            image=[("cat.png", ONE_MP), ("room.png", SMALL)],
            prompt="the cat of image 1 in the room of image 2",
            size="1024x1024",
        )
        (job,) = fake.jobs.values()
    assert base64.b64decode(job.body["input_image_2"]) == SMALL
    assert raw.parse().data[0].b64_json
    # [pro]: output 1 MP; inputs 1 + 1 MP. 3 + 0 x 1.5 + 2 x 1.5 = 6 credits = $0.06
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.06")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        with engine.connect() as conn:
            (row,) = conn.execute(sa.select(spend_logs)).all()
    finally:
        engine.dispose()
    assert (row.status, row.provider, row.model_group) == ("success", "black_forest_labs", "flux2")
    assert (row.cost_usd, row.cost_source) == (Decimal("0.06"), "usage")
    assert row.price_ref == "provider:black_forest_labs"


def test_megapixels_are_whole_and_rounded_up_in_decimal():
    from tracking.pricing.megapixels import megapixel_cost, megapixels

    assert [megapixels(p) for p in (0, 1, 1024 * 1024, 1024 * 1024 + 1, 1920 * 1080)] == [
        0,
        1,
        1,
        2,
        2,
    ]
    prices = {
        "first_output": Decimal("0.03"),
        "output": Decimal("0.015"),
        "input": Decimal("0.015"),
    }
    # 2048 x 2048 = 4 MP out, inputs 1 MP and 9 pixels (1 MP): 0.03 + 3 x 0.015 + 2 x 0.015
    assert megapixel_cost(prices, 2048 * 2048, [1024 * 1024, 9]) == Decimal("0.105")


def test_an_estimate_before_the_answer_counts_unknown_sizes_at_the_most():
    # a budget's hold: the output asked (1 MP) and one input of unknown size, counted 4 MP:
    # [pro] 0.03 + 0 x 0.015 + 4 x 0.015 = $0.09
    cost = estimate_call_cost("black_forest_labs/flux-2-pro", "1024x1024", input_images=1)
    assert (cost.usd, cost.source) == (Decimal("0.09"), "estimate")
    # size auto, input unknown: the output is counted 4 MP too. 0.03 + 3 x 0.015 + 4 x 0.015
    assert estimate_call_cost("black_forest_labs/flux-2-pro", "auto", input_images=1).usd == (
        Decimal("0.135")
    )


def test_a_per_megapixel_entry_needs_its_three_prices_with_their_sources():
    figure = {"usd": "0.03", "source": "https://example.com", "retrieved": "2026-12-07"}
    entry = {
        "model": "m",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "per_megapixel": {"first_output": {**figure, "confidence": "official"}},
    }
    with pytest.raises(ConfigurationError, match="per_megapixel"):
        parse_price_data({"schema": 1, "currency": "USD", "entries": [entry]}, origin="test")


# -- FLUX.2 generations: the same endpoints without an input image -------------------------------


def test_a_flux2_generation_sends_no_image_and_is_billed_what_bfl_answered(
    monkeypatch, bfl, upstream
):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    response = tracking.image_generation(
        prompt="a fox in snow", model="black_forest_labs/flux-2-pro", size="1920x1088", **upstream
    )
    job = _new_job(bfl, before)
    assert job.model == "flux-2-pro"
    assert job.body == {
        "prompt": "a fox in snow",
        "output_format": "png",
        "width": 1920,
        "height": 1088,
    }
    assert base64.b64decode(response.data[0].b64_json or "").startswith(b"\x89PNG")
    # 1920 x 1088 = 2,088,960 pixels = 1.99 MP, rounded up to 2; no input.
    # [pro]: 3 credits + (2 - 1) x 1.5 = 4.5 credits = $0.045
    assert response.cost_usd == Decimal("0.045")
    event = events.last
    assert (event.operation, event.call_type) == ("image_generation", "image_generation")
    assert (event.cost_usd, event.cost_source) == (Decimal("0.045"), "usage")


async def test_an_async_klein_generation_without_a_size_is_made_at_1024(bfl, upstream):
    before = len(bfl.jobs)
    response = await tracking.aimage_generation(
        prompt="a lamp", model="black_forest_labs/flux-2-klein-4b", **upstream
    )
    job = _new_job(bfl, before)
    assert (job.body["width"], job.body["height"]) == (1024, 1024)
    assert "input_image" not in job.body
    # [klein] 4B: 1.4 credits for the first (and only) output MP = $0.014
    assert response.cost_usd == Decimal("0.014")


def test_a_generation_without_a_cost_is_priced_by_its_output_megapixels(monkeypatch, bfl, upstream):
    events = record_events(monkeypatch)
    response = tracking.image_generation(
        prompt="p",
        model="black_forest_labs/flux-2-max",
        size="1024x1024",
        extra_headers={"x-fake-fault": "code=no_cost"},
        **upstream,
    )
    # the table, from the result as downloaded (the fake's small preview: at least one whole
    # MP) and no input: [max] $0.07 for the first output MP, nothing for inputs
    assert response.cost_usd == Decimal("0.07")
    assert (events.last.cost_source, events.last.price_ref) == (
        "table",
        "packaged:flux-2-max#official",
    )


@pytest.mark.parametrize("model", ["flux-kontext-pro", "flux-kontext-max", "flux-pro-1.0-fill"])
def test_flux1_models_are_refused_a_generation_before_sending(monkeypatch, bfl, upstream, model):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    with pytest.raises(tracking.UnsupportedOperationError) as refused:
        tracking.image_generation(prompt="p", model=f"black_forest_labs/{model}", **upstream)
    assert (refused.value.operation, refused.value.provider) == (
        "image_generation",
        "black_forest_labs",
    )
    assert f"with {model!r}" in str(refused.value)  # the provider generates, not this model
    assert len(bfl.jobs) == before
    assert (events.last.status, events.last.cost_usd) == ("failure", 0)


def test_a_router_generates_only_on_its_flux2_deployment(bfl, upstream):
    models = ("black_forest_labs/flux-kontext-pro", "black_forest_labs/flux-2-klein-9b")
    router = tracking.Router(
        [{"model_name": "flux", "litellm_params": {"model": m, **upstream}} for m in models]
    )
    with router:
        for _ in range(3):
            before = len(bfl.jobs)
            response = router.image_generation(prompt="p", model="flux", size="1024x1024")
            assert _new_job(bfl, before).model == "flux-2-klein-9b"
            assert response.cost_usd == Decimal("0.015")  # [klein] 9B: 1.5 credits, 1 MP


def test_the_official_client_generates_with_flux2_through_the_proxy(bfl, tmp_path: Path):
    ledger = {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"}
    config = one_deployment_config(
        bfl.url,
        model_name="flux2",
        model="black_forest_labs/flux-2-flex",
        api_key=BFL_KEY,
        general_settings=ledger,
    )
    with (
        ProxyProcess(write_config(tmp_path / "config.yaml", config)) as proxy,
        openai.OpenAI(base_url=proxy.url, api_key="sk-any", max_retries=0) as client,
    ):
        before = len(bfl.jobs)
        raw = client.images.with_raw_response.generate(
            model="flux2", prompt="a poster", size="1024x1536"
        )
        assert raw.parse().data[0].b64_json
        assert _new_job(bfl, before).body["height"] == 1536
        # [flex]: 1024 x 1536 = 1.5 MP, rounded up to 2: 5 + 1 x 5 = 10 credits = $0.10
        assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.10")
        row = ledger_row(proxy, raw.headers["x-tracking-request-id"])
    assert (row["call_type"], row["status"]) == ("aimage_generation", "success")
    assert Decimal(str(row["cost_usd"])) == Decimal("0.10")
