"""A deployment's ``model_info.output_cost_per_image`` (LiteLLM's price of one output image) and
``output_cost_per_image_by_size`` bill its calls, not only rank it for cost-based routing.

They were read by the router alone: a deployment of a model the price table does not know was
routed as the cheapest and its calls recorded as unpriced. Each call here goes to the fake
upstream over loopback and is priced from the config as the proxy registers it at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.pricing import reset_prices
from tracking.proxy.prices import config_prices, register_config_prices
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
