"""A deployment's ``model_info.output_cost_per_image`` (LiteLLM's price of one output image) and
``output_cost_per_image_by_size`` bill its calls, not only rank it for cost-based routing.

They were read by the router alone: a deployment of a model the price table does not know was
routed as the cheapest and its calls recorded as unpriced. Each call here goes to the fake
upstream over loopback and is priced from the config as the proxy registers it at start.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.pricing import register_prices, reset_prices
from tracking.pricing.estimate import entry_estimate
from tracking.pricing.table import PriceEntry, load_price_file, per_image_price
from tracking.proxy.prices import config_prices, register_config_prices
from tracking.router import CallShape, Router
from tracking.router.strategies import model_info_cost
from tracking.testing import EventRecorder, FakeOpenAI

MODEL = "openai/house-image-1"  # no price in the packaged table


def _config(info: dict[str, Any]) -> Any:
    deployment = {"model_name": "house", "litellm_params": {"model": MODEL}, "model_info": info}
    return parse_config({"model_list": [deployment]})


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(extra_models=["house-image-1"]) as served:
        yield served


@pytest.fixture(autouse=True)
def clean_prices() -> Iterator[None]:
    yield
    reset_prices()


def _cost(fake: FakeOpenAI, **params: Any) -> tuple[Decimal | None, str]:
    recorder = EventRecorder()
    tracking.success_callback = [recorder]
    try:
        tracking.image_edit(
            model=MODEL,
            prompt="a hat",
            image=make_png(16, 16),
            api_key=API_KEY,
            api_base=fake.url,
            **params,
        )
    finally:
        tracking.success_callback = []
    (event,) = recorder.events
    return event.cost_usd, event.cost_source


def test_output_cost_per_image_bills_every_size_and_quality(fake: FakeOpenAI) -> None:
    register_config_prices(_config({"output_cost_per_image": 0.03}))
    assert _cost(fake, size="1024x1024", quality="low") == (Decimal("0.03"), "custom")
    assert _cost(fake, size="1536x1024", quality="high", n=2) == (Decimal("0.06"), "custom")


def test_prices_by_size_and_quality_win_over_the_flat_one(fake: FakeOpenAI) -> None:
    info = {
        "output_cost_per_image": "0.03",
        "output_cost_per_image_by_size": {"1024x1536": "0.05", "1024x1536/high": "0.25"},
    }
    register_config_prices(_config(info))
    assert _cost(fake, size="1024x1536", quality="high") == (Decimal("0.25"), "custom")
    assert _cost(fake, size="1024x1536", quality="low") == (Decimal("0.05"), "custom")
    assert _cost(fake, size="1024x1024", quality="high") == (Decimal("0.03"), "custom")


def test_a_size_without_a_price_is_an_estimate_never_zero(fake: FakeOpenAI) -> None:
    register_config_prices(_config({"output_cost_per_image_by_size": {"1024x1536/high": "0.25"}}))
    cost, source = _cost(fake, size="1024x1024", quality="low")
    assert source == "estimate" and cost is not None and cost > 0


def test_per_image_given_twice_is_refused_naming_both() -> None:
    both = _config({"output_cost_per_image": 0.03, "per_image": {"high": {"1024x1024": "0.2"}}})
    with pytest.raises(ConfigurationError, match=r"model_list\[0\]\.model_info: per_image and"):
        config_prices(both)


# -- ranking equals billing: the router's cost-based routing reads the same table -------------

#: Tables a deployment's model_info may write, and calls to price by them.
_TABLES = [
    {"output_cost_per_image_by_size": {"1024x1024/high": "0.25"}},  # one quality: every quality
    {"output_cost_per_image_by_size": {"1024x1024/high": "0.25", "1024x1536/low": "0.02"}},
    {"output_cost_per_image": "0.03", "output_cost_per_image_by_size": {"1024x1024/low": "0"}},
    {"output_cost_per_image_by_size": {"1024x1024": "0.04", "1024x1024/medium": "0.07"}},
    # "any" written as a quality or a size is the table's own word for every one
    {"output_cost_per_image_by_size": {"1024x1024/any": "0.06", "1024x1024/high": "0.2"}},
    {"output_cost_per_image_by_size": {"any/high": "0.3", "1024x1536": "0.05"}},
]
_CALLS = [("1024x1024", "low"), ("1024x1024", "high"), ("1024x1024", "medium")]


@pytest.mark.parametrize("info", _TABLES)
def test_a_call_is_ranked_at_what_it_is_billed(fake: FakeOpenAI, info: dict[str, Any]) -> None:
    """The router's reading of model_info alone (nothing registered, MODEL in no price table)
    ranks each call at the price the proxy bills it from the same model_info."""
    from tracking.router import CallShape, Router
    from tracking.router.strategies import model_info_cost

    params = {"model": MODEL, "api_key": API_KEY}
    entry = {"model_name": "house", "litellm_params": params, "model_info": info}
    (deployment,) = Router([entry], register_prices=False).deployments
    ranked = {
        call: model_info_cost(deployment, CallShape("house", n=2, size=call[0], quality=call[1]))
        for call in _CALLS
    }
    register_config_prices(_config(info))
    for size, quality in _CALLS:
        billed, source = _cost(fake, size=size, quality=quality, n=2)
        if source == "custom":  # billed from the table
            assert ranked[size, quality] == billed, (size, quality)
        else:  # the table prices no such call: estimated, and the router has no price for it
            assert source == "estimate" and ranked[size, quality] is None, (size, quality)


def test_a_table_naming_one_quality_ranks_every_quality_at_its_price(fake: FakeOpenAI) -> None:
    """Billed at its one quality's price whatever the quality asked, such a deployment was
    ranked unpriced (last) for any other quality: the dearer flat-priced one won every call."""
    from tracking.router import Router

    one_quality = {"id": "one-quality", "output_cost_per_image_by_size": {"1024x1024/high": "0.01"}}
    flat = {"id": "flat", "output_cost_per_image": "0.05"}
    params = {"model": MODEL, "api_key": API_KEY, "api_base": fake.url}
    model_list = [
        {"model_name": "house", "litellm_params": params, "model_info": info}
        for info in (one_quality, flat)
    ]
    recorder = EventRecorder()
    tracking.success_callback = [recorder]
    try:
        with Router(model_list, routing_strategy="cost-based-routing") as router:
            for _ in range(3):
                router.image_edit(
                    model="house",
                    prompt="a hat",
                    image=make_png(16, 16),
                    size="1024x1024",
                    quality="low",
                )
    finally:
        tracking.success_callback = []
    assert [e.deployment_id for e in recorder.events] == ["one-quality"] * 3


# -- ranked by the rule it is billed by ------------------------------------------------------
# Two gaps the router's reading of model_info left. A deployment whose model_info gave token
# prices and a per-image price was billed by its tokens and ranked by the per-image price, so a
# cheap per-image figure won every call that its tokens then billed dearer. And an ``auto`` size
# (or quality) written as a per-image key ranked the calls asking ``auto`` at its price while no
# call was ever billed by it: an answer is billed at the size it reports.


def _deployment(fake: FakeOpenAI, info: dict[str, Any], **params: Any) -> dict[str, Any]:
    litellm_params = {"model": MODEL, "api_key": API_KEY, "api_base": fake.url, **params}
    return {"model_name": "house", "litellm_params": litellm_params, "model_info": info}


def _routed(router: Router, calls: int, **params: Any) -> list[tracking.ImageEditEvent]:
    recorder = EventRecorder()
    tracking.success_callback = [recorder]
    try:
        for _ in range(calls):
            router.image_generation(model="house", prompt="a hat", **params)
    finally:
        tracking.success_callback = []
    return list(recorder.events)


#: LiteLLM's per-token prices ($5 / 1M in, $40 / 1M out) beside a per-image price of $0.001
_TOKENS_AND_IMAGE = {
    "id": "tokens",
    "input_cost_per_token": "0.000005",
    "output_cost_per_token": "0.00004",
    "output_cost_per_image": "0.001",
}


def test_token_prices_win_over_a_per_image_price_in_billing_and_ranking(fake: FakeOpenAI) -> None:
    """Billed by its tokens ($0.17 for a high 1024x1024 on the fake), the deployment was ranked
    at its $0.001 per image and took every call from one billing $0.02 per image."""
    flat = {"id": "flat", "output_cost_per_image": "0.02"}
    model_list = [_deployment(fake, _TOKENS_AND_IMAGE), _deployment(fake, flat)]
    with Router(model_list, routing_strategy="cost-based-routing") as router:
        events = _routed(router, 4, size="1024x1024", quality="high")
        assert [e.deployment_id for e in events] == ["flat"] * 4
        assert {e.cost_usd for e in events} == {Decimal("0.02")}
        tokens = next(d for d in router.deployments if d.id == "tokens")
        shape = CallShape("house", n=2, size="1024x1024", quality="high", input_images=0)
        ranked = model_info_cost(tokens, shape)
    # ranked at the price table's estimate of its tokens, the rule a call of it whose usage
    # cannot be read is billed by: never at the per-image price it is not billed at
    assert ranked is not None and ranked > Decimal("0.04")

    with Router([_deployment(fake, _TOKENS_AND_IMAGE)]) as router:
        (event,) = _routed(router, 1, size="1024x1024", quality="high")
    # its tokens as the upstream reported them, at its registered ("custom") prices
    assert event.cost_source == "custom" and event.usage is not None
    expected = (event.usage.input_text_tokens * 5 + event.usage.output_tokens * 40) / Decimal(10**6)
    assert event.cost_usd == expected > Decimal("0.1")


def test_per_image_price_beside_only_input_token_prices_still_prices_the_images(
    fake: FakeOpenAI,
) -> None:
    """With no price for the output tokens, the per-image price is what the images cost; the
    input tokens the answer reports are billed beside them (the call is priced whole, not an
    estimate), and the ranking, which knows no tokens before the call, prices the images."""
    info = {"id": "cheap", "input_cost_per_token": "0.000005", "output_cost_per_image": "0.01"}
    with Router([_deployment(fake, info)], routing_strategy="cost-based-routing") as router:
        (event,) = _routed(router, 1, size="1024x1024", quality="high", n=2)
        (deployment,) = router.deployments
        shape = CallShape("house", n=2, size="1024x1024", input_images=0)
        ranked = model_info_cost(deployment, shape)
    assert ranked == Decimal("0.02")
    assert event.usage is not None and event.cost_source != "estimate"
    inputs = event.usage.input_text_tokens + event.usage.input_image_tokens
    assert inputs > 0
    assert event.cost_usd == Decimal("0.02") + inputs * Decimal("0.000005")


def test_a_prices_section_price_ranks_the_deployment_as_it_bills(fake: FakeOpenAI) -> None:
    """A price registered for the deployment's model (the proxy's prices: section) bills its
    calls: the router ranks it by that price, not by the model_info it overrides."""
    info = {"id": "listed", "output_cost_per_image": "0.001"}
    with Router([_deployment(fake, info)], register_prices=False) as router:
        (deployment,) = router.deployments
        register_prices(MODEL, per_image={"any": {"any": "0.05"}})
        (event,) = _routed(router, 1, size="1024x1024", quality="low")
        ranked = model_info_cost(deployment, CallShape("house", size="1024x1024", quality="low"))
    assert event.cost_usd == ranked == Decimal("0.05")


# -- auto: what a call asks, never what it is billed at ---------------------------------------


@pytest.mark.parametrize(
    "by_size",
    [{"auto": "0.01"}, {"auto/high": "0.01"}, {"1024x1024/auto": "0.01"}],
)
def test_an_auto_key_in_model_info_is_refused(fake: FakeOpenAI, by_size: dict[str, str]) -> None:
    info = {"id": "a", "output_cost_per_image": "0.03", "output_cost_per_image_by_size": by_size}
    with pytest.raises(ConfigurationError, match=r"model_info.output_cost_per_image_by_size.*auto"):
        Router([_deployment(fake, info)])


@pytest.mark.parametrize("per_image", [{"any": {"auto": "0.01"}}, {"auto": {"1024x1024": "0.01"}}])
def test_an_auto_key_in_registered_prices_is_refused(per_image: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="auto"):
        register_prices("house-image-1", per_image=per_image)


def test_an_auto_key_in_a_price_file_is_refused(tmp_path: Any) -> None:
    figure = {
        "usd": "0.01",
        "source": "https://example.com/prices",
        "retrieved": "2026-12-06",
        "confidence": "official",
    }
    entry = {
        "model": "house-image-1",
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "per_image": {"any": {"auto": figure}},
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"schema": 1, "currency": "USD", "entries": [entry]}))
    with pytest.raises(ConfigurationError, match=r"per_image\.any\.auto"):
        load_price_file(path)


def test_an_auto_call_is_ranked_at_the_dearest_size_it_may_be_billed(fake: FakeOpenAI) -> None:
    """Asked at size=auto, a call is billed at the size the answer reports: the by-size
    deployment was ranked unpriced (last) for it, or at an ``auto`` key's price it never bills."""
    by_size = {"1024x1024": "0.05", "1536x1024": "0.09"}
    info = {
        "id": "by-size",
        "output_cost_per_image": "0.03",
        "output_cost_per_image_by_size": by_size,
    }
    with Router([_deployment(fake, info)], routing_strategy="cost-based-routing") as router:
        (deployment,) = router.deployments
        ranked = model_info_cost(deployment, CallShape("house", size="auto", quality="low"))
        (event,) = _routed(router, 1, size="auto", quality="low")
    assert ranked == Decimal("0.09")
    assert event.cost_usd == Decimal("0.05")  # the fake makes a generation's auto 1024x1024
    assert event.cost_usd <= ranked


def test_an_auto_quality_is_ranked_at_the_dearest_quality_and_billed_as_answered(
    fake: FakeOpenAI,
) -> None:
    """The fake answers quality=auto as medium, which the table does not list: the call is
    billed by estimate at the dearest listed price, the price it is now ranked at."""
    by_size = {"1024x1024/low": "0.01", "1024x1024/high": "0.2"}
    info = {"id": "by-quality", "output_cost_per_image_by_size": by_size}
    with Router([_deployment(fake, info)], routing_strategy="cost-based-routing") as router:
        (deployment,) = router.deployments
        ranked = model_info_cost(deployment, CallShape("house", size="1024x1024", quality="auto"))
        (event,) = _routed(router, 1, size="1024x1024", quality="auto")
    assert event.cost_usd == ranked == Decimal("0.2")


def test_auto_in_a_per_image_lookup_takes_the_dearest_price() -> None:
    table = {
        "low": {"1024x1024": Decimal("0.01"), "1536x1024": Decimal("0.09")},
        "any": {"any": Decimal("0.04")},
    }
    assert per_image_price(table, "auto", "low") == Decimal("0.09")  # 1536x1024 at low
    assert per_image_price(table, "1024x1024", "auto") == Decimal("0.04")  # at high: any
    assert per_image_price(table, "auto", "auto") == Decimal("0.09")
    assert per_image_price({"low": {"1024x1024": Decimal("0.01")}}, "auto", "auto") == Decimal(
        "0.01"
    )
    # the price table's estimate of an auto size agrees on a table of sizes alone
    entry = PriceEntry("house-image-1", per_image={"any": {"1024x1024": Decimal("0.05")}})
    assert entry_estimate(entry, 1, None, "auto") == per_image_price(entry.per_image, "auto", None)


@pytest.mark.parametrize(
    "tokens",
    [
        {"output_cost_per_token": "0.00004"},
        {"output_cost_per_image_token": "0.00004"},
        {"tokens_per_million": {"output_image": "40"}},
    ],
)
def test_the_proxy_registers_no_per_image_price_beside_output_token_prices(
    tokens: dict[str, Any],
) -> None:
    """What the proxy registers at start: the output tokens price the images, alone."""
    info = {"output_cost_per_image": "0.001", "output_cost_per_image_by_size": {"any/high": "1"}}
    ((where, spec),) = config_prices(_config({**info, **tokens})).values()
    assert where == "model_list[0]" and "per_image" not in spec
    assert Decimal(spec["tokens_per_million"]["output_image"]) == 40
    # beside input token prices alone, the per-image prices still price the images
    ((_, spec),) = config_prices(_config({**info, "input_cost_per_token": "0.000005"})).values()
    assert spec["per_image"] == {"any": {"any": "0.001"}, "high": {"any": "1"}}
