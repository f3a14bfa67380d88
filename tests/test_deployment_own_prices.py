"""Two deployments of one model priced differently in their ``model_info``: each call is billed
at the prices of the deployment that served it.

Prices were registered per model name, process-wide: the later deployment's replaced the
earlier's (with a warning), so the calls of a deployment under a cheaper contract were billed,
held against budgets and ranked at the dearer one's prices. Each such deployment now registers
its own prices under a name of its own, which its calls are priced as, in the SDK's ``Router``
and in the proxy; a model the proxy's ``prices:`` section names is still priced by it alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import API_KEY, make_png
from tracking.config import parse_config
from tracking.pricing.estimate import max_expected_cost
from tracking.proxy.models import build_dispatcher
from tracking.proxy.prices import register_config_prices
from tracking.router import Router
from tracking.testing import FakeOpenAI

MODEL = "openai/house-image-1"  # no price in the packaged table


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=["house-image-1"]) as served:
        yield served


def _model_list(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """One model under two contracts: a group each, at $0.03 and $0.05 an image."""
    return [
        {
            "model_name": group,
            "litellm_params": {"model": MODEL, "api_base": fake.url, "api_key": API_KEY},
            "model_info": {"id": group, "output_cost_per_image": price},
        }
        for group, price in (("cheap", "0.03"), ("dear", "0.05"))
    ]


def test_the_sdk_router_bills_each_call_at_its_deployments_prices(fake):
    router = Router(_model_list(fake))
    for group, price in (("cheap", "0.03"), ("dear", "0.05"), ("cheap", "0.03")):
        response = router.image_edit(image=make_png(), prompt="a hat", model=group, n=2)
        assert response.cost_usd == 2 * Decimal(price), group
        assert response._hidden_params["deployment_id"] == group


def _proxy_costs(config: Any, *groups: str) -> list[Decimal | None]:
    """The cost of one call to each of ``groups``, priced and routed as the proxy does."""
    register_config_prices(config)
    dispatcher = build_dispatcher(config)

    async def cost(group: str) -> Decimal | None:
        response = await dispatcher.aimage_edit(model=group, image=make_png(), prompt="a hat")
        return response.cost_usd

    try:
        return [asyncio.run(cost(group)) for group in groups]
    finally:
        dispatcher.close()


def test_the_proxy_bills_holds_and_prices_each_deployment_at_its_own(fake):
    config = parse_config({"model_list": _model_list(fake)})
    assert _proxy_costs(config, "cheap", "dear") == [Decimal("0.03"), Decimal("0.05")]
    # a call's budget hold is the most its group's deployments may cost, each at its own
    from tracking.proxy.prices import priced_models

    for group, price in (("cheap", "0.03"), ("dear", "0.05")):
        held = max_expected_cost(priced_models(config, group), {"n": 1, "prompt": "a hat"})
        assert held == Decimal(price), group


def test_the_proxys_prices_section_still_prices_the_model_for_every_deployment(fake):
    config = parse_config(
        {
            "model_list": _model_list(fake),
            "prices": {MODEL: {"per_image": {"any": {"any": "0.04"}}}},
        }
    )
    assert _proxy_costs(config, "cheap", "dear") == [Decimal("0.04")] * 2
    from tracking.proxy.prices import priced_models

    assert priced_models(config, "cheap") == [MODEL]


def test_cost_based_routing_ranks_each_deployment_at_its_own_token_prices(fake):
    """Token prices in ``litellm_params`` (LiteLLM's per-token keys) rank by the price table:
    both deployments were ranked at the later one's, a tie drawn at random."""

    def priced(id: str, per_token: str) -> dict[str, Any]:
        params = {"model": MODEL, "api_base": fake.url, "api_key": API_KEY}
        params |= {"input_cost_per_token": per_token, "output_cost_per_token": per_token}
        return {"model_name": "edits", "litellm_params": params, "model_info": {"id": id}}

    router = Router(
        [priced("cheap", "0.000001"), priced("dear", "0.00004")],
        routing_strategy="cost-based-routing",
    )
    served = {
        router.image_edit(image=make_png(), prompt="a hat", model="edits")._hidden_params[
            "deployment_id"
        ]
        for _ in range(12)
    }
    assert served == {"cheap"}
